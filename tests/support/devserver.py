"""Run the service as deployed (gunicorn with this repository's config) for tests
and benchmarks, and a logging `eeadm` wrapper over a simulated library.

Test and benchmark harness, not part of the package: it binds to loopback on
a free port. The tests import it as `support.devserver` (pytest puts tests/
on the path); bench/ scripts put tests/ on their path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from ltfsee_globus.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]


def eeadm_wrapper(script: Path, library: Path, calls: Path, *, before: str = "") -> list[str]:
    """Write an `eeadm` that logs each call ("$*") to `calls`, runs the shell
    lines `before`, then execs eeadm-sim over `library`. Returns its command."""
    script.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> '{calls}'\n"
        f"{before}"
        f"EEADM_SIM_DIR='{library}' exec '{sys.executable}' -m ltfsee_globus.sim.cli \"$@\"\n"
    )
    script.chmod(0o755)
    return [str(script)]


@dataclass
class Gunicorn:
    """A running gunicorn (its own process group) and its URL."""

    url: str
    proc: subprocess.Popen
    env: dict[str, str]
    log: Path  # its stdout and stderr

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal master and workers at once; wait for the master."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=60)


def start(
    env: Mapping[str, str],
    log: Path,
    *,
    timeout: float = 30,
    root: Path = ROOT,
    config: Path | None = None,
    app: str = "ltfsee_globus:create_app()",
) -> Gunicorn:
    """Start gunicorn with `env` over the environment; TLS when CERTFILE is set.

    `root` is the source tree whose gunicorn.conf.py and package run (the
    benchmark runs an earlier release from a git worktree this way); `config`
    and `app` serve another application (api_load.py's bare baseline), which
    must answer /healthz too."""
    port = free_port()
    full = {**os.environ, **env, "BIND": f"127.0.0.1:{port}"}
    if root != ROOT:
        full["PYTHONPATH"] = str(root)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(config or root / "gunicorn.conf.py"),
                app,
            ],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
    cert = full.get("CERTFILE")
    url = f"https://localhost:{port}" if cert else f"http://127.0.0.1:{port}"
    server = Gunicorn(url, proc, full, log)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=2, verify=cert or True).ok:
                    return server
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or busy
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{log.read_text(errors='replace')}")
    except BaseException:
        server.stop(signal.SIGKILL)  # never leave a server behind
        raise


def open_store(env: Mapping[str, str]):
    """The store a server or stager started with environment `env` uses."""
    from ltfsee_globus.config import Settings
    from ltfsee_globus.store import open_store as open_configured

    return open_configured(Settings(STATE_DIR=env["STATE_DIR"], STORE_URL=env.get("STORE_URL", "")))


def kill_recalls(env: Mapping[str, str]) -> None:
    """Kill the `eeadm recall` processes of batches still running in the store
    of a server with environment `env` (they run in their own session, so
    stopping gunicorn leaves them)."""
    store = open_store(env)
    try:
        for batch in store.queue.running_batches():
            if batch.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(batch.pid, signal.SIGKILL)
    finally:
        store.close()
