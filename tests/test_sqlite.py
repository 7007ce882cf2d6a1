"""What only the SQLite engine has: its file, WAL, and a full STATE_DIR."""

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ltfsee_globus.api.context import services
from ltfsee_globus.config import STORE_FILE
from ltfsee_globus.store import DONE, FAILED, QUEUED, RECALLING, Update
from ltfsee_globus.store.db import migration_scripts
from ltfsee_globus.store.queue import TAPES, WALK
from ltfsee_globus.store.sqlite import SqliteDatabase
from ltfsee_globus.store.sqlite_changes import CommitMark, KeptReads

RECALL = "/api/v0.5/globus_recall/globus_recall"
T1, T2 = "T00001L8@pool1@lib1", "T00002L8@pool1@lib1"


def test_a_fresh_store_waits_for_a_writer_instead_of_failing(tmp_path):
    """Gunicorn boots its workers together on an empty STATE_DIR. Switching a
    new file to WAL answers "database is locked" at once (no busy handler)
    while another connection writes; the worker that lost must wait, not die."""
    db = tmp_path / "s.db"
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, writer.execute, ("COMMIT",))
    started = time.monotonic()
    release.start()
    try:
        store = SqliteDatabase(db)
    finally:
        release.join()
        writer.close()
    waited = time.monotonic() - started
    mode = store.scalar("PRAGMA journal_mode")
    store.close()
    assert (mode, waited >= 0.4) == ("wal", True)


def poll_app(client, headers, path, task="t1"):
    return client.post(
        RECALL,
        data=json.dumps({"path": path, "globus_taskid": task}),
        headers=headers,
        content_type="application/json",
    )


def test_a_full_state_dir_refuses_new_work_loses_nothing_and_recovers(make_app, make_sim, headers):
    """SQLite's own page limit stands in for a full file system: the same
    SQLITE_FULL a full STATE_DIR gives, on this thread's connection (the
    test client's requests run on it)."""
    sim = make_sim("many", files=200, dirs=4, tapes=2, premigrated=0, resident=0)
    app = make_app(EEADM_COMMAND=sim.command, MANAGED_ROOTS=[str(sim.fs)], PREFETCH=False)
    store = services(app).store
    client = app.test_client()
    conn = store.db.connection()  # SQLite's own: this test is SQLite's
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    accepted, refused = [], None
    for path in sim.files("M"):
        resp = poll_app(client, headers, path)
        if resp.status_code != 201:
            refused = path, resp
            break
        accepted.append(path)
    assert refused is not None, "the page limit was never reached"
    path, resp = refused
    assert resp.status_code == 503 and resp.mimetype == "application/problem+json"
    assert "STATE_DIR" in resp.get_json()["detail"] and int(resp.headers["Retry-After"]) > 0
    assert store.polls.lookup(path) is None  # nothing half-written
    assert [store.polls.lookup(p).status for p in accepted] == [QUEUED] * len(accepted)
    if accepted:  # a poll the store answers needs no write
        assert poll_app(client, headers, accepted[0]).get_json() == {"state": "archived"}
    conn.execute("PRAGMA max_page_count = 1073741823")  # space is back
    assert poll_app(client, headers, path).get_json() == {"state": "archived"}
    assert store.polls.lookup(path).status == QUEUED


PATH = "/gpfs/a/file"


def test_a_polls_read_is_kept_until_any_process_commits(make_store, tmp_path):
    """Two stores on one file (two processes of one host): what a poll read
    is used again until a commit anywhere sets a new commit mark; a change
    made behind the package's back (no mark) is not seen meanwhile."""
    here, there = make_store(), make_store()
    assert here.polls.lookup(PATH, "globus", "t1") is None
    there.polls.request(PATH, "lib1", "globus", "t1")  # another process queues it
    rec = here.polls.lookup(PATH, "globus", "t1")
    assert (rec.status, rec.known) == (QUEUED, True)  # seen at once: the mark moved
    raw = sqlite3.connect(here.db.path)
    raw.execute("UPDATE files SET status = 'failed'")  # no mark: the kept answer stays
    raw.commit()
    raw.close()
    assert here.polls.lookup(PATH, "globus", "t1").status == QUEUED
    here.polls.note_requester(PATH, "globus", "t2")  # our own commit: read afresh
    assert here.polls.lookup(PATH, "globus", "t1").status == "failed"


def test_a_kept_answer_dies_with_an_overlapping_commit_or_its_age(tmp_path, clock):
    mark = CommitMark(tmp_path / "m", tmp_path)
    kept = KeptReads(mark, max_age=5.0, clock=clock)

    def read_while_a_commit_lands():
        mark.set_new()
        return "old"

    assert kept.get(PATH, "k", read_while_a_commit_lands) == "old"
    assert kept.get(PATH, "k", lambda: "new") == "new"  # tagged before the commit: gone
    assert kept.get(PATH, "k", lambda: "newer") == "new"
    clock.advance(5.0)
    assert kept.get(PATH, "k", lambda: "newest") == "newest"
    assert CommitMark(tmp_path / "m", tmp_path).read() == mark.read()  # one mark per file


#: A store of schema 16 (before files were kept in tape order): its files,
#: (path, status, tape, requested, queued_at), written as that release wrote them.
BEFORE_TAPE_ORDER = [
    ("/gpfs/a", QUEUED, None, True, 3.0),
    ("/gpfs/b", QUEUED, T1, False, 1.0),
    ("/gpfs/c", QUEUED, T1, True, 2.0),
    ("/gpfs/d", DONE, T1, True, 0.0),
]


def store_before_tape_order(state: Path) -> Path:
    """The SQLite store of schema 16 holding BEFORE_TAPE_ORDER, made by the
    scripts up to 16; its file."""
    state.mkdir()
    db = state / STORE_FILE
    old = sqlite3.connect(db, isolation_level=None)
    for script in migration_scripts("sqlite")[:16]:
        old.executescript(script)
    old.execute("PRAGMA user_version = 16")
    old.executemany(
        "INSERT INTO files (path, library, status, tape, requested, size, owner, queued_at, "
        "created_at, updated_at) VALUES (?, 'lib1', ?, ?, ?, 10, 'globus:t', ?, 1, 1)",
        BEFORE_TAPE_ORDER,
    )
    old.close()
    return db


def test_a_store_from_before_files_were_kept_in_tape_order_comes_through(make_store, tmp_path):
    """Migration 17 rebuilds files keyed by tape and path (a tape not known
    kept as ''): each file keeps its state and its tape, the queue summary
    and the tallies stay true, and the old rows are claimed, queued afresh
    and given a tape as new ones are."""
    store_before_tape_order(tmp_path / "store")
    rows = BEFORE_TAPE_ORDER
    store = make_store()
    assert "WITHOUT ROWID" in store.db.scalar("SELECT sql FROM sqlite_master WHERE name = 'files'")
    assert [(f.status, f.tape) for f in map(store.polls.lookup, [r[0] for r in rows])] == [
        (QUEUED, None),
        (QUEUED, T1),
        (QUEUED, T1),
        (DONE, T1),
    ]
    assert {(q.tape, q.files, q.asked, q.bytes) for q in store.queue.tapes()} == {
        ("", 1, 1, 10),
        (T1, 2, 1, 20),
    }
    assert store.ops.counts().files == {QUEUED: 3, RECALLING: 0, DONE: 1, FAILED: 0}
    assert store.queue.claim("lib1", 10, tape=T1)[1] == ["/gpfs/b", "/gpfs/c"]  # oldest first
    batch_id, taken = store.queue.claim("lib1", 10, tape="")
    assert taken == ["/gpfs/a"] and store.queue.tapes() == []
    # its tape learned as it is read: the row moves to that tape's place
    store.queue.finish_batch(
        batch_id,
        outcome="succeeded",
        detail="",
        eeadm_task_id=None,
        updates=[Update("/gpfs/a", DONE, tape=T2)],
    )
    # queued afresh without a tape named, a file keeps the one it had
    assert store.polls.request("/gpfs/d", "lib1", "globus", "t2") == QUEUED
    assert store.polls.request("/gpfs/e", "lib1", "globus", "t2") == QUEUED
    assert {p: store.polls.lookup(p).tape for p in ("/gpfs/a", "/gpfs/d", "/gpfs/e")} == {
        "/gpfs/a": T2,
        "/gpfs/d": T1,
        "/gpfs/e": None,
    }
    assert {(q.tape, q.files) for q in store.queue.tapes()} == {(T1, 1), ("", 1)}


@pytest.mark.parametrize("analyzed", [False, True])
def test_the_stagers_reads_seek_their_index_with_or_without_statistics(store, analyzed):
    """The summary's oldest-file seek and a claim's walk read one tape's
    ready files in age order from files_ready, never sorting a tape: with
    the table keyed by (library, tape, path), ANALYZE's statistics made
    SQLite skip-scan files_tape and sort (0.55 s a claim at a million
    queued). An operator may run ANALYZE; the plan must not depend on it."""
    for n in range(2000):
        store.polls.request(
            f"/gpfs/d{n % 40}/f{n}", "lib1", "globus", f"t{n % 3}", tape=f"T{n % 10}"
        )
    conn = store.db.connection()
    if analyzed:
        conn.execute("ANALYZE")
    plans = {
        name: " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        for name, sql, params in [
            ("summary", TAPES, (0,)),
            ("walk", WALK.format(only="", lock=""), ("lib1", "T1", 0, 5000)),
            ("asked", WALK.format(only=" AND requested", lock=""), ("lib1", "T1", 0, 5)),
        ]
    }
    assert {k: ("files_ready" in v, "TEMP B-TREE" in v) for k, v in plans.items()} == {
        "summary": (True, False),
        "walk": (True, False),
        "asked": (True, False),
    }, plans


def test_gunicorns_master_migrates_the_store_before_any_worker_starts(tmp_path):
    """gunicorn's on_starting hook (the master, before it forks) brings the
    schema up to date: a rebuild of ten million files takes about a minute,
    longer than a worker may take to boot, and a worker giving up its wait
    for the lock made gunicorn stop every worker, the migrating one too, so
    the store never got past version 16. Run as gunicorn runs the hook: in
    a process of its own, the settings from the environment."""
    db = store_before_tape_order(tmp_path / "store")
    hook = (
        "import logging, types\n"
        "from ltfsee_globus import gunicorn_conf\n"
        "gunicorn_conf.on_starting(types.SimpleNamespace(log=logging.getLogger('gunicorn')))\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "AUTH_KEY": "k",
        "EEADM_COMMAND": "/bin/true",
        "STATE_DIR": str(tmp_path / "store"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    done = subprocess.run(
        [sys.executable, "-c", hook], env=env, capture_output=True, text=True, timeout=60
    )
    conn = sqlite3.connect(db)
    version, files = conn.execute(
        "SELECT (SELECT user_version FROM pragma_user_version), count(*) FROM files"
    ).fetchone()
    conn.close()
    assert (done.returncode, version, files) == (0, 17, len(BEFORE_TAPE_ORDER)), done.stderr
