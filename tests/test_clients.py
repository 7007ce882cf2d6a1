"""The stage apps as Globus runs them: subprocesses against a real gunicorn."""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import simple_client
from advanced_client import export_from_autofs, export_from_mounts, remap
from ltfsee_globus.sim.library import Library

CLIENTS = Path(__file__).resolve().parent.parent / "clients"


def test_archived_then_resident(run_client, live_server, sim, wait_for):
    path = sim.files("M")[0]
    first = run_client(live_server.url, path)
    assert (first.returncode, first.stdout, first.stderr) == (0, "archived\n", "")
    wait_for(lambda: run_client(live_server.url, path).stdout == "resident\n", what="resident")


@pytest.mark.parametrize(
    ("case", "path", "key", "code", "words"),
    [
        ("missing file", "{fs}/no/such.dat", None, 3, "no such file"),
        ("refused path", "/etc/passwd", None, 4, "outside the managed"),
        ("relative path", "demo/x", None, 4, "must be absolute"),
        ("bad key", "{m}", "wrong", 5, "not valid"),
    ],
)
def test_error_exits(run_client, live_server, sim, case, path, key, code, words):
    path = path.format(fs=sim.fs, m=sim.files("M")[0])
    res = run_client(live_server.url, path, **({"key": key} if key else {}))
    assert res.returncode == code
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1 and words in res.stderr


def test_failed_recall_exits_server_error(run_client, start_server, sim, wait_for):
    path = sim.files("M")[0]
    lib = Library(sim.root)
    lib.damage([path])
    lib.close()
    server = start_server(RECALL_MAX_ATTEMPTS=1, PREFETCH="false")
    assert run_client(server.url, path).stdout == "archived\n"
    res = wait_for(lambda: (r := run_client(server.url, path)).returncode and r, what="failure")
    assert res.returncode == 6 and "GLESL016E" in res.stderr


def test_unreachable_server(run_client, sim):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_client(f"http://127.0.0.1:{port}", sim.files("M")[0])
    assert res.returncode == 7 and "cannot reach" in res.stderr


def test_timeout(run_client, sim):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(srv.accept()), daemon=True)
    t.start()
    try:
        port = srv.getsockname()[1]
        res = run_client(f"http://127.0.0.1:{port}", sim.files("M")[0], TIMEOUT="0.5")
    finally:
        t.join(timeout=5)
        for conn, _addr in accepted:
            conn.close()
        srv.close()
    assert res.returncode == 7 and "timed out" in res.stderr


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"GLOBUS_STAGE_PATH": ""}, "GLOBUS_STAGE_PATH"),
        ({"AUTH_KEY": ""}, "AUTH_KEY"),
        ({"TIMEOUT": "soon"}, "TIMEOUT"),
    ],
)
def test_bad_settings_exit_2(env, words):
    base = {"PATH": os.environ["PATH"], "AUTH_KEY": "k", "GLOBUS_STAGE_PATH": "/gpfs/x"}
    res = subprocess.run(
        [sys.executable, str(CLIENTS / "simple_client.py")],
        env={**base, **env},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and words in res.stderr


@pytest.mark.parametrize(("debug", "shown"), [("False", False), ("false", False), ("1", True)])
def test_debug_flag_parsing(run_client, live_server, sim, debug, shown):
    res = run_client(live_server.url, sim.files("R")[0], DEBUG=debug)
    assert (res.stdout, res.returncode) == ("resident\n", 0), res.stderr
    assert ("debug: 201" in res.stderr) is shown


MOUNTS = """\
sysfs /sys sysfs rw 0 0
nfs01:/gpfs/gpfs0/projA /nfs/dataden/projA nfs4 rw,relatime 0 0
"""
AUTOFS = """\
# export  options  location
projA  -rw,hard  nfs01:/gpfs/gpfs0/projA
*      -rw       nfs02:/gpfs/gpfs1/&
"""


@pytest.mark.parametrize(
    ("path", "autofs", "expected"),
    [
        ("/nfs/dataden/projA/run1/f.dat", None, "/gpfs/gpfs0/projA/run1/f.dat"),
        ("/nfs/dataden/projB/f.dat", None, "/nfs/dataden/projB/f.dat"),
        ("/gpfs/gpfs0/projA/f.dat", None, "/gpfs/gpfs0/projA/f.dat"),
        ("/nfs/dataden/projA/f.dat", AUTOFS, "/gpfs/gpfs0/projA/f.dat"),
        ("/nfs/dataden/other/x/y", AUTOFS, "/gpfs/gpfs1/other/x/y"),
    ],
)
def test_nfs_paths_map_to_gpfs(path, autofs, expected):
    assert remap(path, 4, MOUNTS, autofs) == expected


def test_export_lookups():
    assert export_from_mounts("/nfs/dataden/projA", MOUNTS) == "/gpfs/gpfs0/projA"
    assert export_from_mounts("/sys", MOUNTS) is None
    assert export_from_autofs("zzz", AUTOFS) == "/gpfs/gpfs1/zzz"


def test_advanced_client_end_to_end_with_autofs_map(run_client, live_server, sim, tmp_path):
    path = sim.files("R")[0]
    rest = os.path.relpath(path, sim.fs)
    amap = tmp_path / "auto.dataden"
    amap.write_text(f"tape  -rw  nfs01:{sim.fs}\n")
    res = run_client(
        live_server.url,
        f"/nfs/dataden/tape/{rest}",
        name="advanced_client.py",
        AUTOFS=str(amap),
        DEPTH="4",
    )
    assert (res.returncode, res.stdout) == (0, "resident\n"), res.stderr


@pytest.fixture
def foreign_server():
    """Start an HTTP server that answers every POST with (status, content type, body)."""
    servers = []

    def start(status: int, ctype: str, body: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize(
    ("status", "ctype", "body", "code"),
    [
        (404, "text/html", b"<h1>Not Found</h1>", 8),
        (404, "application/json", b'{"detail": "no route"}', 8),
        (404, "application/problem+json", b'{"status": 410, "title": "Gone"}', 8),
        (401, "text/html", b"login first", 8),
        (200, "text/html", b"<html>welcome to nginx</html>", 8),
        (404, "application/problem+json", b'{"status": 404, "title": "Not Found"}', 3),
        (502, "text/html", b"Bad Gateway", 6),
    ],
)
def test_only_our_own_404_means_no_such_file(
    run_client, foreign_server, sim, status, ctype, body, code
):
    url = foreign_server(status, ctype, body)
    res = run_client(url, sim.files("M")[0])
    assert (res.returncode, res.stdout) == (code, "")
    assert ("check LTFSEE_URL" in res.stderr) == (code == 8)


def documented_policy() -> dict:
    """The storage-gateway policy document clients/README.md tells sites to use."""
    text = (CLIENTS / "README.md").read_text()
    section = text.split("## GCS5 POSIX Staging storage gateway", 1)[1]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    return json.loads(block)


def test_the_documented_policy_is_what_the_posix_staging_connector_takes():
    """DATA_TYPE as the Globus SDK names POSIX Staging policies, the stage app
    one of ours, and an environment of name/value pairs our stage app reads."""
    policy = documented_policy()
    assert policy["DATA_TYPE"] == "posix_staging_storage_policies#1.0.0"
    assert set(policy) == {"DATA_TYPE", "stage_app", "environment"}
    app = Path(policy["stage_app"])
    assert app.is_absolute() and (CLIENTS / app.name).is_file()
    env = policy["environment"]
    assert isinstance(env, list) and env
    assert all(set(e) == {"name", "value"} and isinstance(e["value"], str) for e in env)
    given = {e["name"]: e["value"] for e in env}
    parsed = simple_client.settings({**given, "GLOBUS_STAGE_PATH": "/gpfs/gpfs0/f"})
    assert parsed["urls"] == [given["LTFSEE_URL"]] and parsed["key"] == given["AUTH_KEY"]
    assert parsed["verify"] == given["CA_BUNDLE"] and parsed["timeout"] == 10.0


def refused_url() -> str:
    """A URL where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def silent_url():
    """A URL that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


BUSY = b'{"status": 503, "title": "Service Unavailable", "detail": "the database is away"}'


@pytest.mark.parametrize("down", ["refused", "503", "silent"])
def test_a_node_that_is_down_is_passed_over_for_the_next(
    run_client, live_server, foreign_server, silent_url, sim, down
):
    """Whichever URL a file starts at, a node that refuses, answers 503 or
    does not answer costs a try, not the stage app's run."""
    bad = {
        "refused": refused_url(),
        "503": foreign_server(503, "application/problem+json", BUSY),
        "silent": silent_url,
    }[down]
    files = sim.files("R")[:6]  # crc32 starts some at the bad URL, some at the good
    starts = {
        simple_client.settings(
            {"GLOBUS_STAGE_PATH": p, "AUTH_KEY": "k", "LTFSEE_URL": f"{bad},{live_server.url}"}
        )["urls"][0]
        for p in files
    }
    assert starts == {bad, live_server.url}
    for path in files:
        res = run_client(f"{bad},{live_server.url}", path, TIMEOUT="1")
        assert (res.returncode, res.stdout, res.stderr) == (0, "resident\n", "")


def test_when_every_node_is_down_the_last_failure_is_reported(run_client, foreign_server, sim):
    busy = foreign_server(503, "application/problem+json", BUSY)
    res = run_client(f"{refused_url()},{busy}", sim.files("M")[0])
    assert res.returncode in (6, 7) and len(res.stderr.splitlines()) == 1
    assert "(and 1 other URL(s) failed)" in res.stderr


def test_an_empty_url_in_the_list_is_a_bad_setting():
    with pytest.raises(simple_client.StageError, match="empty entry") as err:
        simple_client.settings(
            {"GLOBUS_STAGE_PATH": "/gpfs/x", "AUTH_KEY": "k", "LTFSEE_URL": "http://a,,http://b"}
        )
    assert err.value.code == simple_client.EXIT_USAGE
