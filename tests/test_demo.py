"""`ltfsee-globus demo` as a new user runs it: the commands it prints work,
over HTTP and over TLS with the development certificate."""

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.devserver import free_port

ROOT = Path(__file__).resolve().parent.parent


def printed_commands(proc: subprocess.Popen) -> dict[str, str]:
    """The try / stage app / ready lines the demo prints, read as they come."""
    found: dict[str, str] = {}
    for line in proc.stdout:
        for label, key in (("try:", "curl"), ("or the stage app:", "app"), ("ready?", "ready")):
            if line.strip().startswith(label):
                found[key] = line.strip()[len(label) :].strip()
        if "ready" in found:
            return found
    raise AssertionError(f"the demo printed no commands: {found}")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_the_commands_the_demo_prints_work(tmp_path, tls, wait_for):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if tls:
        made = subprocess.run(
            ["sh", str(ROOT / "ssl" / "make-dev-cert.sh"), str(tmp_path)],
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        env.update(KEYFILE=str(tmp_path / "dev-key.pem"), CERTFILE=str(tmp_path / "dev-cert.pem"))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ltfsee_globus.cli",
            "demo",
            "--dir",
            str(tmp_path / "d"),
            "--bind",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        commands = printed_commands(proc)
        ready = shlex.split(commands["ready"])
        assert ready[0] == "ltfsee-globus"
        clean = {"PATH": env["PATH"]}  # a new shell: none of the demo's settings
        wait_for(
            lambda: (
                subprocess.run(
                    [sys.executable, "-m", "ltfsee_globus.cli", *ready[1:]],
                    env=clean,
                    capture_output=True,
                ).returncode
                == 0
            ),
            timeout=60,
            what="ready",
        )
        curl = subprocess.run(shlex.split(commands["curl"]), capture_output=True, text=True)
        assert curl.returncode == 0 and '"state"' in curl.stdout, curl.stderr
        words = shlex.split(commands["app"])
        app_env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
        argv = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
        app = subprocess.run(argv, env={**clean, **app_env}, capture_output=True, text=True)
        assert (app.returncode, app.stdout) in ((0, "archived\n"), (0, "resident\n")), app.stderr
        assert ("CA_BUNDLE" in app_env) == tls and ("--cacert" in commands["curl"]) == tls
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stdout.close()


def test_the_dev_certificate_script_says_why_it_fails(tmp_path):
    res = subprocess.run(
        ["sh", str(ROOT / "ssl" / "make-dev-cert.sh"), "/nonexistent/dir"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert "/nonexistent/dir is not a writable directory" in res.stderr
