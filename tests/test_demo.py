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


def start_demo(env: dict, where: Path, port: int, *more: str, stderr: int) -> subprocess.Popen:
    """`ltfsee-globus demo` in `where` on `port` (and the next ports), its output piped."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ltfsee_globus.cli",
            "demo",
            "--dir",
            str(where),
            "--bind",
            f"127.0.0.1:{port}",
            *more,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


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
    proc = start_demo(env, tmp_path / "d", port, stderr=subprocess.DEVNULL)
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


def test_the_cluster_demo_runs_nodes_that_take_over_and_cleans_up(pg_cluster, tmp_path, wait_for):
    """`demo --nodes 2`: its own PostgreSQL, two nodes, the stage-app command
    with both URLs works, killing the leader hands the lease over, Ctrl-C
    (SIGTERM) stops the nodes and removes the database."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    port = free_port()
    proc = start_demo(env, tmp_path / "c", port, "--nodes", "2", stderr=subprocess.STDOUT)
    try:
        printed: dict[str, str] = {}
        for line in proc.stdout:
            if m := re.match(r"^\s+(node\d): (\S+)\s+\(gunicorn pid (\d+)", line):
                printed[m.group(1)] = m.group(3)
            for label in ("stage app:", "who leads:", "database:"):
                if line.strip().startswith(label):
                    printed[label] = line.strip()[len(label) :].strip()
            if "who leads:" in printed:
                break
        assert set(printed) >= {"node1", "node2", "stage app:", "who leads:"}, printed
        words = shlex.split(printed["stage app:"])
        app_env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
        assert app_env["LTFSEE_URL"] == f"http://127.0.0.1:{port},http://127.0.0.1:{port + 1}"
        argv = [w for w in words if not re.match(r"^[A-Z_]+=", w)]

        def stage():
            return subprocess.run(
                argv, env={"PATH": env["PATH"], **app_env}, capture_output=True, text=True
            )

        wait_for(lambda: stage().returncode == 0, 60, "the stage app")
        status = shlex.split(printed["who leads:"].split(" (", 1)[0])
        cli = [sys.executable, "-m", "ltfsee_globus.cli", *status[1:]]

        def leader() -> str | None:
            out = subprocess.run(cli, env={"PATH": env["PATH"]}, capture_output=True, text=True)
            m = re.search(r"stager: running on (node\d)", out.stdout)
            return m.group(1) if m else None

        first = wait_for(leader, 60, "a leader")
        os.killpg(int(printed[first]), signal.SIGTERM)  # a clean stop hands the lease over
        wait_for(lambda: leader() not in (None, first), 30, "the other node to lead")
        assert stage().returncode == 0  # one node down: the stage app goes to the other
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert "stopping the nodes and the database" in out
    for name in ("node1", "node2"):
        with pytest.raises(ProcessLookupError):
            os.kill(int(printed[name]), 0)
    data = re.search(r"data in (\S+)", printed["database:"]).group(1)
    assert data.startswith("/") and not Path(data).exists()
