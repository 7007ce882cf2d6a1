"""`ltfsee-globus demo`: the service on a simulated library, ready to try.

One node (the default) replaces this process with gunicorn over SQLite in
`DIR/state`. With `--nodes N` it starts a throwaway PostgreSQL cluster
(pgcluster.py; as an unprivileged user when run as root) and N nodes over
one simulated library, each on its own port and STATE_DIR, prints how to
drive them and how to watch a take-over, and stops them all (the database
too) on Ctrl-C. A node that dies comes back after RESTART_AFTER seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import pgcluster
from .sim.library import FS_ROOT, Layout, Library, Timing, init_library, store_path

GUNICORN_ARGS = ["-c", "python:ltfsee_globus.gunicorn_conf", "ltfsee_globus:create_app()"]
#: Seconds before the cluster demo starts a node again that died (was killed).
RESTART_AFTER = 10.0


class DemoError(Exception):
    """The demo cannot start; says why."""


@dataclass
class Demo:
    """A demo directory: its simulated library, its key, the programs it runs."""

    base: Path
    key: str
    eeadm_sim: str
    gunicorn: str

    @property
    def library(self) -> Path:
        return self.base / "library"

    def env(self, **more: str) -> dict[str, str]:
        return {
            "AUTH_KEY": self.key,
            "EEADM_COMMAND": self.eeadm_sim,
            "EEADM_SIM_DIR": str(self.library),
            "MANAGED_ROOTS": str(self.library / FS_ROOT),
            "BATCH_WINDOW": "2",
            **more,
        }

    def first_migrated(self) -> str:
        return Library.list_paths(self.library, "M")[0]


def prepare(directory: str) -> Demo:
    """Make (once) the demo's library and key under `directory`."""
    base = Path(directory).resolve()
    sim = base / "library"
    if not store_path(sim).exists():
        init_library(sim, Layout(), Timing())
    key_file = base / "auth_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(24) + "\n")
        key_file.chmod(0o600)
    eeadm_sim, gunicorn = shutil.which("eeadm-sim"), shutil.which("gunicorn")
    if not eeadm_sim or not gunicorn:
        raise DemoError("eeadm-sim and gunicorn must be installed (run: make setup)")
    return Demo(base, key_file.read_text().strip(), eeadm_sim, gunicorn)


def _url(bind: str, tls: bool) -> str:
    host, _, port = bind.rpartition(":")
    shown = host if host not in ("0.0.0.0", "") else "localhost"  # noqa: S104
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def _stage_app() -> Path | None:
    """The stage app of the source checkout this runs from (not in the wheel)."""
    client = Path(__file__).resolve().parent.parent / "clients" / "simple_client.py"
    return client if client.is_file() else None


def serve_one(directory: str, bind: str) -> None:
    """Print how to use the demo, then become gunicorn (does not return)."""
    demo = prepare(directory)
    os.environ.update(demo.env(STATE_DIR=str(demo.base / "state"), BIND=bind))
    # with TLS the demo's own (self-signed) certificate is what clients trust
    cert = os.environ.get("CERTFILE")
    ca = str(Path(cert).resolve()) if cert else None
    url = _url(bind, bool(cert))
    path = demo.first_migrated()
    body = json.dumps({"path": path, "globus_taskid": "demo"})
    cacert = f"--cacert {ca} " if ca else ""
    print(
        f"\nltfsee-globus demo\n  URL:      {url}  (status page: log in with the key)\n"
        f"  AUTH_KEY: {demo.key}\n"
        f"  library:  {demo.library} (simulated eeadm, time x{Layout().time_scale:g})\n"
        f"  try:      curl -s {cacert}-H 'X-API-KEY: {demo.key}' -d '{body}' "
        f"{url}/api/v0.5/globus_recall/globus_recall\n",
        flush=True,
    )
    client = _stage_app()
    if client:
        print(
            f"  or the stage app: LTFSEE_URL={url} AUTH_KEY={demo.key} GLOBUS_STAGE_TASKID=demo "
            f"GLOBUS_STAGE_PATH={path} {f'CA_BUNDLE={ca} ' if ca else ''}"
            f"{sys.executable} {client}\n",
            flush=True,
        )
    print(
        f"  ready?    ltfsee-globus ready --url {url}{f' --cafile {ca}' if ca else ''}\n",
        flush=True,
    )
    print("  (archived at first; ask again after a few seconds: resident)\n", flush=True)
    os.execv(demo.gunicorn, [demo.gunicorn, *GUNICORN_ARGS])  # noqa: S606 - no shell


@dataclass
class Node:
    name: str
    url: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    died_at: float | None = None

    def start(self, gunicorn: str) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [gunicorn, *GUNICORN_ARGS],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.died_at = None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_cluster(directory: str, bind: str, count: int) -> int:
    """N nodes over one throwaway PostgreSQL and one simulated library, until
    interrupted; everything is stopped on the way out."""
    demo = prepare(directory)
    host, _, port = bind.rpartition(":")
    try:
        pg = pgcluster.start()
    except pgcluster.NoPostgres as exc:
        raise DemoError(f"{exc} (the cluster demo needs Debian's postgresql)") from None
    nodes: list[Node] = []
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        store_url = pg.create_database("ltfsee")
        env_file = demo.base / "cluster.env"  # for the CLI: `ltfsee-globus status` and friends
        env_file.write_text(
            "".join(
                f"{k}={v}\n"
                for k, v in demo.env(STORE_URL=store_url, STATE_DIR=str(demo.base / "cli")).items()
            )
        )
        env_file.chmod(0o600)
        for i in range(count):
            name, bound = f"node{i + 1}", f"{host}:{int(port) + i}"
            env = {
                **os.environ,
                **demo.env(
                    STORE_URL=store_url,
                    NODE_NAME=name,
                    STATE_DIR=str(demo.base / f"state-{name}"),
                    BIND=bound,
                ),
            }
            nodes.append(Node(name, _url(bound, False), env, demo.base / f"{name}.log"))
        for node in nodes:
            node.start(demo.gunicorn)
        _print_cluster(demo, nodes, env_file, pg)
        while True:
            time.sleep(1.0)
            for node in nodes:
                _look_after(node, demo.gunicorn)
    except KeyboardInterrupt:
        print("\nstopping the nodes and the database", flush=True)
        return 0
    finally:
        for node in nodes:
            node.stop()
        pg.destroy()


def _look_after(node: Node, gunicorn: str) -> None:
    """Say when a node died, and start it again RESTART_AFTER seconds later."""
    assert node.proc is not None
    if node.died_at is None and node.proc.poll() is not None:
        node.died_at = time.monotonic()
        print(
            f"{node.name} exited ({node.proc.returncode}); it starts again in "
            f"{RESTART_AFTER:g} s, as a standby",
            flush=True,
        )
    elif node.died_at is not None and time.monotonic() - node.died_at >= RESTART_AFTER:
        node.start(gunicorn)
        print(f"{node.name} started again (pid {node.proc.pid})", flush=True)


def _print_cluster(demo: Demo, nodes: list[Node], env_file: Path, pg: pgcluster.Cluster) -> None:
    urls = ",".join(n.url for n in nodes)
    lines = [
        f"\nltfsee-globus cluster demo: {len(nodes)} nodes, one PostgreSQL, one simulated library",
        *(
            f"  {n.name}: {n.url}  (gunicorn pid {n.proc.pid if n.proc else '-'}, log {n.log})"
            for n in nodes
        ),
        f"  AUTH_KEY: {demo.key}",
        f"  library:  {demo.library} (simulated eeadm, time x{Layout().time_scale:g})",
        f"  database: PostgreSQL on 127.0.0.1:{pg.port}, data in {pg.base} (removed at the end)",
    ]
    client = _stage_app()
    if client:
        lines.append(
            f"  stage app: LTFSEE_URL={urls} AUTH_KEY={demo.key} GLOBUS_STAGE_TASKID=demo "
            f"GLOBUS_STAGE_PATH={demo.first_migrated()} {sys.executable} {client}"
        )
    lines += [
        f"  who leads: ltfsee-globus --env-file {env_file} status"
        " (or any node's status page, log in with the key)",
        "  take-over: kill -9 -- -PID with the leader's gunicorn pid above; a standby leads",
        "             within STAGER_LEASE (10 s) and follows its recalls; the node comes back",
        "  Ctrl-C stops every node and the database",
        "",
    ]
    print("\n".join(lines), flush=True)
