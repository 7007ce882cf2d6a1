"""Upgrades: a store an older release made comes through the newest
migrations with every file, the queue summary and the tallies it had.

The old schema is made by the engine's own scripts up to that release's
version, its rows written by SQL as that release wrote them; then the
store opens it (migrating) and is used through its interface.
"""

import sqlite3

import psycopg
import pytest

from ltfsee_globus.config import STORE_FILE
from ltfsee_globus.store import DONE, FAILED, QUEUED, RECALLING
from ltfsee_globus.store.db import migration_scripts

pytestmark = pytest.mark.both_engines

T1 = "T00001L8@pool1@lib1"
#: The release before files were kept in tape order (a tape not known was NULL).
BEFORE_TAPE_ORDER = {"sqlite": 16, "postgresql": 7}
INSERT = (
    "INSERT INTO files (path, library, status, tape, requested, size, owner, queued_at, "
    "created_at, updated_at) VALUES (?, 'lib1', ?, ?, ?, 10, 'globus:t', ?, 1, 1)"
)


def old_store(engine: str, store_url: str, state, version: int, rows: list[tuple]) -> None:
    """A store at schema `version`, holding `rows` (path, status, tape, requested, queued_at)."""
    if engine == "sqlite":
        state.mkdir()
        conn = sqlite3.connect(state / STORE_FILE, isolation_level=None)
        for script in migration_scripts("sqlite")[:version]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.executemany(INSERT, rows)
        conn.close()
        return
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_version "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for n, script in enumerate(migration_scripts("postgresql")[:version], start=1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (n,))
        conn.cursor().executemany(INSERT.replace("?", "%s"), rows)


def test_files_of_a_store_before_tape_order_come_through(engine, store_url, tmp_path, make_store):
    """Keying files by library, tape and path (SQLite), with a tape not known
    '' and no longer NULL (both): each file keeps its state, the summary and
    the tallies stay true, and the old rows are claimed and queued afresh."""
    rows = [
        ("/gpfs/a", QUEUED, None, True, 3.0),
        ("/gpfs/b", QUEUED, T1, False, 1.0),
        ("/gpfs/c", QUEUED, T1, True, 2.0),
        ("/gpfs/d", DONE, T1, True, 0.0),
    ]
    old_store(engine, store_url, tmp_path / "store", BEFORE_TAPE_ORDER[engine], rows)
    store = make_store()
    looked = [store.polls.lookup(p) for p, *_ in rows]
    assert [(r.status, r.tape) for r in looked] == [
        (QUEUED, ""),
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
    assert store.queue.claim("lib1", 10, tape="")[1] == ["/gpfs/a"]
    assert store.queue.tapes() == []
    # a tape learned later moves the file; a poll that names none keeps it
    assert store.polls.request("/gpfs/d", "lib1", "globus", "t2", tape=None) == QUEUED
    assert store.polls.request("/gpfs/e", "lib1", "globus", "t2", tape=None) == QUEUED
    assert store.polls.request("/gpfs/e", "lib1", "globus", "t3", tape=T1) == QUEUED
    assert {p: store.polls.lookup(p).tape for p in ("/gpfs/d", "/gpfs/e")} == {
        "/gpfs/d": T1,
        "/gpfs/e": "",
    }
    assert {(q.tape, q.files) for q in store.queue.tapes()} == {("", 1), (T1, 1)}
