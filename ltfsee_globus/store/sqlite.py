"""The embedded engine: one SQLite file (WAL) under STATE_DIR, one host.

Each thread has its own connection, so gunicorn's workers and threads and one
stager share the file. Every write is `BEGIN IMMEDIATE`: SQLite runs one
writer at a time, so each transaction is serializable and no read-then-write
in it can race another process. PRAGMA user_version records how far the
schema has come (migrations/sqlite/NNNN_name.sql, applied in order). A poll's
read is kept in memory until the next commit of any process on the host
(sqlite_changes.py: a commit mark beside the file).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .db import Cursor, Database, StoreUnavailable, Tx, migration_scripts
from .sqlite_changes import CommitMark, KeptReads

T = TypeVar("T")

#: SQLite errors that say the store cannot be written now, not that we erred.
_UNAVAILABLE = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_BUSY")


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a script (a trigger's body holds `;` too)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _use_wal(conn: sqlite3.Connection, wait: float = 30.0) -> None:
    """Put the file in WAL mode (persistent, so usually already done).

    Switching answers SQLITE_BUSY at once, without the busy handler, while
    another process is creating or switching the same file (two gunicorn
    workers booting on a fresh STATE_DIR), so it is retried here.
    """
    deadline = time.monotonic() + wait
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> int:
        return self.conn.executemany(sql, params).rowcount


class SqliteDatabase(Database):
    """Short transactions over the state file; safe across threads and processes."""

    engine = "sqlite"
    lock_rows = ""
    lock_row = ""
    share_row = ""
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"  # the one host's clock
    in_list = "IN (SELECT value FROM json_each(?))"

    @staticmethod
    def listed(values: Iterable[str]) -> object:
        return json.dumps(list(values))

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path.parent}: {exc.strerror}") from None
        self._mark: CommitMark | None = None  # none before the database exists
        self._migrate()
        try:
            self._mark = CommitMark(self.path.with_name(self.path.name + "-commits"), self.path)
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the commit mark: {exc.strerror}") from None
        self._kept = KeptReads(self._mark)

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 30000")
                _use_wal(conn)
                conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.OperationalError as exc:
                raise _unavailable(exc) from exc
            self._local.conn = conn
        return conn

    def write(self, work: Callable[[Tx], T], *, polls: bool = True) -> T:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(_SqliteTx(conn))
                conn.execute("COMMIT")
                if polls and self._mark is not None:  # every process's kept reads are stale
                    self._mark.set_new()
            finally:
                if conn.in_transaction:  # an error, or a COMMIT that failed
                    conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname.startswith(_UNAVAILABLE):
                raise _unavailable(exc) from exc
            raise
        return result

    def read(self, work: Callable[[Tx], T]) -> T:
        return work(_SqliteTx(self.connection()))

    def remembered(self, path: str, key: Hashable, read: Callable[[], T]) -> T:
        return self._kept.get(path, key, read)

    def _migrate(self) -> None:
        """Bring the schema to the newest version, in one transaction."""

        def migrate(c: Tx) -> None:
            version = c.scalar("PRAGMA user_version")
            for n, script in enumerate(migration_scripts("sqlite")[version:], start=version + 1):
                for statement in _statements(script):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {n}")

        self.write(migrate)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _unavailable(exc: sqlite3.OperationalError) -> StoreUnavailable:
    return StoreUnavailable(f"the store cannot be written ({exc}): is STATE_DIR full or read-only?")
