"""What only the SQLite engine has: its file, WAL, and a full STATE_DIR."""

import json
import sqlite3
import threading
import time

from ltfsee_globus.api.context import services
from ltfsee_globus.store import QUEUED
from ltfsee_globus.store.sqlite import SqliteDatabase
from ltfsee_globus.store.sqlite_changes import CommitMark, KeptReads

RECALL = "/api/v0.5/globus_recall/globus_recall"


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
