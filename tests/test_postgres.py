"""What only the PostgreSQL engine has: a server that goes away and comes back,
connections killed under us, a password in STORE_URL, processes migrating
one database at once. Each test that stops a server has a cluster of its own."""

import json
import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from ltfsee_globus import pgcluster
from ltfsee_globus.config import ConfigError, Settings, load_settings
from ltfsee_globus.store import open_store
from ltfsee_globus.store.db import StoreUnavailable, migration_scripts
from ltfsee_globus.store.leases import LeaseLost
from ltfsee_globus.store.postgres import IDLE_IN_TRANSACTION
from ltfsee_globus.store.postgres_changes import ChangeCache, path_key

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


on_postgres = pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
PATH = "/gpfs/a/file"


def dbname_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


@on_postgres
def test_a_polls_read_is_kept_until_a_change_notice_names_its_file(
    make_store, store_url, pg_cluster, wait_for
):
    here, there = make_store(), make_store()  # two processes (two nodes) on one database
    assert here.polls.lookup(PATH, "globus", "t1") is None
    wait_for(lambda: here.db.changes.live, 10, "listening")
    assert here.polls.lookup(PATH, "globus", "t1") is None
    assert here.db.changes.kept() == 1
    there.polls.request(PATH, "lib1", "globus", "t1")  # another node queues the file
    rec = wait_for(lambda: here.polls.lookup(PATH, "globus", "t1"), 5, "the change notice")
    assert (rec.status, rec.known) == ("queued", True)
    # a change that sends no notice (triggers off) is not seen: the answer is memory's
    pg_cluster.sql(
        "SET session_replication_role = replica; UPDATE files SET status = 'failed'",
        dbname_of(store_url),
    )
    assert here.polls.lookup(PATH, "globus", "t1").status == "queued"
    there.polls.note_requester(PATH, "globus", "t2")  # a change with its notice
    wait_for(lambda: here.polls.lookup(PATH, "globus", "t1").status == "failed", 5, "notice")


@on_postgres
def test_a_process_sees_its_own_writes_at_once(make_store, wait_for):
    store = make_store()
    assert store.polls.lookup(PATH, "globus", "t1") is None
    wait_for(lambda: store.db.changes.live, 10, "listening")
    assert store.polls.lookup(PATH, "globus", "t1") is None  # now kept
    store.polls.request(PATH, "lib1", "globus", "t1")
    assert store.polls.lookup(PATH, "globus", "t1").status == "queued"  # no notice awaited


@on_postgres
def test_a_read_that_overlapped_a_change_is_not_kept(make_store, wait_for):
    store = make_store()
    cache = store.db.changes
    store.polls.lookup(PATH)
    wait_for(lambda: cache.live, 10, "listening")
    store.polls.lookup(PATH)
    assert cache.kept() == 1

    def read_while_it_changes():
        cache.drop(path_key("/gpfs/b"))  # the notice comes while the read runs
        return "old"

    assert cache.get("/gpfs/b", "k", read_while_it_changes) == "old"
    assert cache.kept() == 1
    assert cache.get("/gpfs/b", "k", lambda: "new") == "new"
    assert cache.get("/gpfs/b", "k", lambda: "newer") == "new" and cache.kept() == 2


@on_postgres
def test_a_statement_that_changes_many_files_drops_every_answer(
    make_store, store_url, pg_cluster, wait_for
):
    here, there = make_store(), make_store()
    for n in range(70):
        there.polls.request(f"/gpfs/many/{n}", "lib1", "globus", "t1")
    for n in range(70):
        here.polls.lookup(f"/gpfs/many/{n}", "globus", "t1")
    wait_for(lambda: here.db.changes.live, 10, "listening")
    for n in range(70):
        here.polls.lookup(f"/gpfs/many/{n}", "globus", "t1")
    assert here.db.changes.kept() == 70
    pg_cluster.sql("UPDATE files SET attempts = attempts + 1", dbname_of(store_url))
    wait_for(lambda: here.db.changes.kept() == 0, 5, "the notice to drop everything")


@on_postgres
def test_no_answer_is_kept_while_the_notices_are_lost(
    make_store, store_url, pg_cluster, wait_for, caplog
):
    store = make_store()
    store.polls.lookup(PATH)
    wait_for(lambda: store.db.changes.live, 10, "listening")
    store.polls.lookup(PATH)
    assert store.db.changes.kept() == 1
    caplog.set_level(logging.INFO, "ltfsee_globus.store.postgres_changes")
    assert pg_cluster.terminate(dbname_of(store_url)) > 0  # the listener's connection too
    wait_for(lambda: "change notices lost" in caplog.text, 10, "the listener to notice")
    wait_for(lambda: store.db.changes.live, 10, "listening again")
    assert store.db.changes.kept() == 0  # what was kept before the gap is gone
    assert store.polls.lookup(PATH) is None  # and reads work on


def test_an_answer_is_kept_no_longer_than_max_age(pg_cluster, clock, wait_for):
    url = pg_cluster.create_database("maxage")
    cache = ChangeCache(lambda: psycopg.connect(url, autocommit=True), max_age=5.0, clock=clock)
    try:
        cache.get(PATH, "k", lambda: "first")
        wait_for(lambda: cache.live, 10, "listening")
        assert cache.get(PATH, "k", lambda: "kept") == "kept"
        assert cache.get(PATH, "k", lambda: "second") == "kept"
        clock.advance(5.0)
        assert cache.get(PATH, "k", lambda: "third") == "third"
    finally:
        cache.close()


def test_a_leader_frozen_inside_a_transaction_does_not_hold_off_a_take_over(pg_cluster, tmp_path):
    """The fence share-locks the lease row to its commit: a leader stopped
    inside a fenced transaction (SIGSTOP, a paused VM) must lose its session,
    else no standby could take the lease until it woke."""
    url = pg_cluster.create_database(f"frozen{time.monotonic_ns()}")
    frozen, standby = (
        open_store(Settings(STATE_DIR=str(tmp_path / name), STORE_URL=url))
        for name in ("frozen", "standby")
    )
    try:
        epoch = frozen.leases.take("a:1", "n1", 0.5)
        inside, wake = threading.Event(), threading.Event()

        def stopped_mid_transaction(c):
            frozen.leases.check(c, "a:1", epoch)  # the share lock of a fenced write
            inside.set()
            wake.wait(60)

        with ThreadPoolExecutor(1) as pool:
            leader = pool.submit(frozen.db.write, stopped_mid_transaction)
            assert inside.wait(10)
            time.sleep(0.6)  # the lease has run out
            began = time.monotonic()
            assert standby.leases.take("b:2", "n2", 30) == epoch + 1
            took = time.monotonic() - began
            wake.set()
            with pytest.raises((StoreUnavailable, LeaseLost)):
                leader.result(30)  # what it did inside is not kept
        assert took < IDLE_IN_TRANSACTION + 3
        assert standby.leases.current().node == "n2"
    finally:
        frozen.close()
        standby.close()
