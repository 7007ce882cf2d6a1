"""What only the PostgreSQL engine has: a server that goes away and comes back,
connections killed under us, a password in STORE_URL, processes migrating
one database at once. Each test that stops a server has a cluster of its own."""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ltfsee_globus.config import ConfigError, load_settings
from ltfsee_globus.store.db import migration_scripts
from support import pgcluster

RECALL = "/api/v0.5/globus_recall/globus_recall"
STAGE = "/api/v1/stage"


@pytest.fixture
def own_cluster(pg_cluster):
    """A cluster this test may stop and restart (the session's one shows PostgreSQL is here)."""
    cluster = pgcluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_server(own_cluster, start_server):
    """A real gunicorn (embedded stager) on a database of the test's own cluster."""

    def start(**overrides):
        url = own_cluster.create_database(f"svc{len(overrides)}{time.monotonic_ns()}")
        return start_server(STORE_URL=url, PREFETCH="false", BATCH_WINDOW="1", **overrides)

    return start


def answers(server, headers, body, endpoint=RECALL):
    r = requests.post(server.url + endpoint, json=body, headers=headers, timeout=30)
    return r.status_code, r


def test_the_database_down_answers_503_and_everything_resumes_by_itself(
    own_cluster, pg_server, sim, headers, wait_for
):
    server = pg_server()
    before, during = sim.files("M")[:2]
    code, r = answers(server, headers, {"path": before, "globus_taskid": "t1"})
    assert (code, r.json()) == (201, {"state": "archived"})
    own_cluster.stop()
    try:
        for body, endpoint in (
            ({"path": during, "globus_taskid": "t1"}, RECALL),
            ({"files": [{"path": during}]}, STAGE),
        ):
            code, r = answers(server, headers, body, endpoint)
            assert code == 503, r.text
            assert r.headers["Content-Type"] == "application/problem+json"
            assert int(r.headers["Retry-After"]) > 0
            assert "database cannot be used" in r.json()["detail"]
        ready = requests.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 503 and "store" in ready.json()["checks"]
        assert ready.json()["checks"]["store"] != "ok"
    finally:
        own_cluster.start()
    back = time.monotonic()
    wait_for(
        lambda: answers(server, headers, {"path": during, "globus_taskid": "t1"})[0] == 201,
        timeout=30,
        what="polls answered again",
    )
    resumed = time.monotonic() - back
    # the file accepted before the outage was not lost: the stager recalls it
    wait_for(
        lambda: (
            answers(server, headers, {"path": before, "globus_taskid": "t1"})[1].json()
            == {"state": "resident"}
        ),
        timeout=60,
        what="the file accepted before the outage on disk",
    )
    assert resumed < 30
    log = server.gunicorn.log.read_text()
    assert "Traceback" not in log


def test_connections_killed_under_the_service_are_replaced_without_an_error(
    own_cluster, pg_server, sim, headers
):
    server = pg_server()
    files = sim.files("M")[:40]
    dbname = server.env["STORE_URL"].rsplit("/", 1)[1]

    def poll(path):
        return answers(server, headers, {"path": path, "globus_taskid": "t1"})[0]

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(poll, files)) == {201}
        for _ in range(3):
            assert own_cluster.terminate(dbname) > 0
            assert set(pool.map(poll, files)) == {201}
    assert "Traceback" not in server.gunicorn.log.read_text()


def test_the_password_in_store_url_never_shows(pg_cluster, start_server, sim, headers, tmp_path):
    url = pg_cluster.create_database("secretive")
    password = pg_cluster.password
    assert password in url
    server = start_server(STORE_URL=url, LOGLEVEL="DEBUG")
    assert answers(server, headers, {"path": sim.files("M")[0], "globus_taskid": "t"})[0] == 201
    status = requests.get(server.url + "/api/status", headers=headers, timeout=30)
    assert status.json()["store"].startswith("postgresql host=127.0.0.1")
    page = requests.get(server.url + "/", headers=headers, timeout=30)
    env = {**server.env, "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "ltfsee_globus.cli"]
    shown = [
        status.text,
        page.text,
        *(
            (lambda r: r.stdout + r.stderr)(
                subprocess.run(cli + args, env=env, capture_output=True, text=True, timeout=60)
            )
            for args in (["check-config"], ["status", "--json"], ["doctor"])
        ),
    ]
    config = json.loads(
        subprocess.run(
            [*cli, "check-config"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
    )
    where = f"host=127.0.0.1 port={pg_cluster.port} dbname=secretive user={pgcluster.ROLE}"
    assert config["STORE_URL"] == f"postgresql {where}"
    # a wrong password, and a string libpq cannot parse: their errors hide it too
    wrong = url.replace(password, password + "-wrong")
    bad = subprocess.run(
        [*cli, "status"], env={**env, "STORE_URL": wrong}, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "password authentication failed" in bad.stderr
    shown.append(bad.stderr)
    with pytest.raises(ConfigError) as unparsable:
        load_settings({**server.env, "STORE_URL": f"postgresql://u:{password}@h/x?nosuchoption=1"})
    shown.append(str(unparsable.value))
    shown.append(server.gunicorn.log.read_text())
    assert [password in text for text in shown] == [False] * len(shown)
    assert (password + "-wrong") not in bad.stderr


def test_processes_starting_together_migrate_a_fresh_database_once(pg_cluster):
    url = pg_cluster.create_database("together")
    code = (
        "import sys\n"
        "from ltfsee_globus.config import Settings\n"
        "from ltfsee_globus.store import open_store\n"
        "s = open_store(Settings(STATE_DIR='/tmp', STORE_URL=sys.argv[1]))\n"
        "s.polls.request('/gpfs/a', None, 'globus', sys.argv[2])\n"
        "print(s.polls.lookup('/gpfs/a').status)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, f"t{i}"], stdout=subprocess.PIPE, text=True
        )
        for i in range(6)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6 and set(outs) == {"queued\n"}
    versions = pg_cluster.sql("SELECT version FROM schema_version ORDER BY 1", "together")
    assert versions == [(n,) for n in range(1, len(migration_scripts("postgresql")) + 1)]
