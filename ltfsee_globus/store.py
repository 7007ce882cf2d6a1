"""The durable store: one SQLite file (WAL) under STATE_DIR.

It holds the files to recall and who asked for them, the recall batches, and
what the prefetcher knows about each Globus task. It is the only place state
lives, so anything the API accepted survives a crash of any process. Every
operation is one short transaction; each thread has its own connection, so
many gunicorn workers and one stager can share the file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .records import Batch, FileRecord, LibraryQueue, RequestFile, StageRequest, from_row

#: File statuses: waiting for a batch, in a running recall, on disk, given up.
QUEUED, RECALLING, DONE, FAILED = "queued", "recalling", "done", "failed"
ACTIVE = (QUEUED, RECALLING)


#: The schema, one script per version in ltfsee_globus/migrations/ (NNNN_name.sql),
#: applied in order; PRAGMA user_version records how far a store has come.
def migrations() -> list[str]:
    """The migration scripts, oldest first."""
    found = sorted(
        (
            f
            for f in files("ltfsee_globus").joinpath("migrations").iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )
    return [f.read_text(encoding="utf-8") for f in found]


#: The totals migration 7 keeps (Prometheus counters).
TOTALS = (
    "queued",
    "retried",
    "recalled",
    "recalled_bytes",
    "failed",
    "batches_succeeded",
    "batches_partial",
    "batches_failed",
)

#: The store's file name in STATE_DIR.
STORE_FILE = "ltfsee-globus.db"

#: WLCG Tape REST file states.
SUBMITTED, STARTED, COMPLETED, CANCELLED = "SUBMITTED", "STARTED", "COMPLETED", "CANCELLED"
FINAL = ("COMPLETED", "FAILED", "CANCELLED")

#: What is counted per task about prefetch: queued, later asked for, dropped.
PREFETCH_FIELDS = ("files", "bytes", "asked_files", "asked_bytes", "dropped_files", "dropped_bytes")


@dataclass(frozen=True)
class Update:
    """What the stager decided for one file of a finished batch."""

    path: str
    status: str
    last_error: str | None = None
    not_before: float = 0.0
    size: int | None = None
    tape: str | None = None
    library: str | None = None  # another library's copy, for the next attempt


#: SQLite errors that say the store cannot be written now, not that we erred.
_UNAVAILABLE = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_BUSY")


class StoreUnavailable(Exception):
    """The store cannot be written now: STATE_DIR full or read-only, an I/O
    error, or locked too long. Nothing of the failed transaction was kept;
    the same call works again once the cause is gone."""


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


class Store:
    """Short transactions over the state file; safe across threads and processes."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path.parent}: {exc.strerror}") from None
        self.migrate()

    # -- plumbing -----------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            _use_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once so it never has to upgrade.

        Raises StoreUnavailable when it cannot be written (nothing of it is kept).
        """
        conn = self.conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:  # an error, or a COMMIT that failed
                    conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname.startswith(_UNAVAILABLE):
                raise StoreUnavailable(
                    f"the store cannot be written ({exc}): is STATE_DIR full or read-only?"
                ) from exc
            raise

    def migrate(self) -> None:
        """Bring the schema to the newest version (the last migration script)."""
        with self._tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            for n, script in enumerate(migrations()[version:], start=version + 1):
                for statement in _statements(script):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {n}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- the web tier -------------------------------------------------------
    def lookup(self, path: str, kind: str = "", ref: str = "") -> FileRecord | None:
        """A file's record; `known` when (kind, ref) already asked for it."""
        row = (
            self.conn()
            .execute(
                "SELECT f.*, EXISTS(SELECT 1 FROM requesters r WHERE r.path = f.path "
                "AND r.kind = ? AND r.ref = ?) AS known FROM files f WHERE f.path = ?",
                (kind, ref, path),
            )
            .fetchone()
        )
        return None if row is None else from_row(FileRecord, row)

    def request(
        self,
        path: str,
        library: str | None,
        kind: str = "",
        ref: str = "",
        *,
        size: int | None = None,
        tape: str | None = None,
        trigger_prefetch: bool = False,
    ) -> str:
        """Queue a file a client asked for, unless it is already queued or recalling.

        Records who asked. Returns the file's status afterwards. A file that
        was done or failed is queued afresh with its attempts reset.
        """
        with self._tx() as c:
            status = self._enqueue(c, path, library, kind, ref, False, size, tape)
            if trigger_prefetch and ref:
                self._trigger(c, ref, path, library or "", self.clock())
        return status

    def _enqueue(
        self,
        c: sqlite3.Connection,
        path: str,
        library: str | None,
        kind: str,
        ref: str,
        prefetched: bool,
        size: int | None,
        tape: str | None,
    ) -> str:
        """The body of request() and add_prefetched(), inside the caller's transaction."""
        now = self.clock()
        row = c.execute("SELECT status, requested FROM files WHERE path = ?", (path,)).fetchone()
        if row is not None and row["status"] in ACTIVE:
            status = row["status"]
            if not prefetched:
                self._confirm(c, path)
        else:  # new, or done/failed: queued afresh
            c.execute(
                "INSERT INTO files (path, library, status, prefetched, requested, size, tape, "
                "queued_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(path) DO UPDATE SET library = excluded.library, status = "
                "excluded.status, attempts = 0, last_error = NULL, batch_id = NULL, "
                "prefetched = excluded.prefetched, requested = excluded.requested, "
                "size = coalesce(excluded.size, size), tape = coalesce(excluded.tape, tape), "
                "queued_at = excluded.queued_at, not_before = 0, "
                "updated_at = excluded.updated_at, finished_at = NULL",
                (
                    path,
                    library or "",
                    QUEUED,
                    int(prefetched),
                    int(not prefetched),
                    size,
                    tape,
                    now,
                    now,
                    now,
                ),
            )
            status = QUEUED
        if kind:  # a Globus poll without a task id still counts as wanting the file
            c.execute(
                "INSERT OR IGNORE INTO requesters (path, kind, ref, created_at) "
                "VALUES (?, ?, ?, ?)",
                (path, kind, ref, now),
            )
        return status

    def note_requester(
        self, path: str, kind: str, ref: str, *, trigger_prefetch: bool = False
    ) -> None:
        """Record that (kind, ref) asked for a file we already track."""
        now = self.clock()
        with self._tx() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO requesters (path, kind, ref, created_at) VALUES (?,?,?,?)",
                (path, kind, ref, now),
            )
            self._confirm(c, path)
            if trigger_prefetch and ref and cur.rowcount:
                self._trigger(c, ref, path, "", now)

    @staticmethod
    def _trigger(c: sqlite3.Connection, taskid: str, path: str, library: str, now: float) -> None:
        """Tell the prefetcher that a task asked for a file it had not asked for before."""
        c.execute(
            "INSERT INTO prefetch_triggers (taskid, path, library, created_at) VALUES (?,?,?,?)",
            (taskid, path, library, now),
        )

    @staticmethod
    def _confirm(c: sqlite3.Connection, path: str) -> None:
        """Mark a file as asked for by a client; a prefetched one counts as a hit
        for the task whose prefetch queued it."""
        row = c.execute(
            "UPDATE files SET requested = 1 WHERE path = ? AND requested = 0 "
            "RETURNING prefetched, coalesce(size, 0)",
            (path,),
        ).fetchone()
        if row is not None and row[0]:
            c.execute(
                "UPDATE prefetch_tasks SET asked_files = asked_files + 1, "
                "asked_bytes = asked_bytes + ? WHERE taskid IN "
                "(SELECT ref FROM requesters WHERE path = ? AND kind = 'prefetch')",
                (row[1], path),
            )

    def lookup_running(self, delta: int) -> None:
        """Count this process's `eeadm file state` calls for polls in flight (+1 / -1):
        while some run, more files are about to be queued and a batch should wait."""
        pid, now = os.getpid(), self.clock()
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO lookups (pid, running, since) VALUES (?, 0, ?)", (pid, now)
            )
            c.execute(
                "UPDATE lookups SET running = max(running + ?, 0), "
                "since = CASE WHEN running = 0 THEN ? ELSE since END WHERE pid = ?",
                (delta, now, pid),
            )

    # -- the stager -----------------------------------------------------------
    def queued_by_library(self) -> list[LibraryQueue]:
        """Per library: files ready to go, when the oldest and the newest were queued."""
        rows = self.conn().execute(
            "SELECT library, count(*) AS n, min(queued_at) AS oldest, "
            "max(queued_at) AS newest FROM files "
            "WHERE status = ? AND not_before <= ? GROUP BY library",
            (QUEUED, self.clock()),
        )
        return [from_row(LibraryQueue, r) for r in rows]

    def lookups_running(self, max_age: float) -> bool:
        """True while a web worker runs a lookup started less than `max_age` s ago."""
        row = (
            self.conn()
            .execute(
                "SELECT 1 FROM lookups WHERE running > 0 AND since > ? LIMIT 1",
                (self.clock() - max_age,),
            )
            .fetchone()
        )
        return row is not None

    def next_retry_at(self) -> float | None:
        row = (
            self.conn()
            .execute(
                "SELECT min(not_before) FROM files WHERE status = ? AND not_before > ?",
                (QUEUED, self.clock()),
            )
            .fetchone()
        )
        return row[0]

    def queued_tapes(self, library: str) -> dict[str, tuple[int, float]]:
        """Per tape of a library (a file of unknown tape counts as its own): the
        files ready to go and when the oldest of them was queued."""
        rows = self.conn().execute(
            "SELECT coalesce(tape, path), count(*), min(queued_at) FROM files "
            "WHERE status = ? AND library = ? AND not_before <= ? GROUP BY 1",
            (QUEUED, library, self.clock()),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def claim(
        self, library: str, max_files: int, tape: str | None = None
    ) -> tuple[int, list[str]] | None:
        """Move up to max_files ready files of a library (of one tape, if given)
        into a new running batch.

        Whole tapes go together, the tape of the longest-waiting file first, so
        that when more is ready than one batch takes, no tape is split over
        two recalls (each would mount it)."""
        now = self.clock()
        with self._tx() as c:
            rows = c.execute(
                "SELECT path, coalesce(tape, path) AS t, queued_at FROM files "
                "WHERE status = ? AND library = ? AND not_before <= ? "
                "AND (?4 IS NULL OR coalesce(tape, path) = ?4)",
                (QUEUED, library, now, tape),
            ).fetchall()
            if not rows:
                return None
            since: dict[str, float] = {}
            for _, t, queued_at in rows:
                since[t] = min(since.get(t, queued_at), queued_at)
            rows.sort(key=lambda r: (since[r[1]], r[1], r[2], r[0]))
            paths = [r[0] for r in rows[:max_files]]
            cur = c.execute(
                "INSERT INTO batches (library, status, n_files, started_at, tape) "
                "VALUES (?,?,?,?,?)",
                (library, "running", len(paths), now, tape),
            )
            batch_id = int(cur.lastrowid or 0)
            c.executemany(
                "UPDATE files SET status = ?, batch_id = ?, attempts = attempts + 1, "
                "updated_at = ? WHERE path = ?",
                [(RECALLING, batch_id, now, p) for p in paths],
            )
            c.executemany(
                "UPDATE request_files SET state = ?, started_at = coalesce(started_at, ?) "
                "WHERE path = ? AND checked = 1 AND state = ?",
                [(STARTED, now, p, SUBMITTED) for p in paths],
            )
        return batch_id, paths

    def set_batch_pid(self, batch_id: int, pid: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE batches SET pid = ? WHERE id = ?", (pid, batch_id))

    def running_batches(self) -> list[Batch]:
        rows = self.conn().execute("SELECT * FROM batches WHERE status = 'running'")
        return [from_row(Batch, r) for r in rows]

    def batch(self, batch_id: int) -> Batch | None:
        row = self.conn().execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return None if row is None else from_row(Batch, row)

    def batch_files(self, batch_id: int) -> dict[str, int]:
        """The files still recalling in a batch, with the attempts each has had."""
        rows = self.conn().execute(
            "SELECT path, attempts FROM files WHERE batch_id = ? AND status = ? ORDER BY path",
            (batch_id, RECALLING),
        )
        return {r[0]: r[1] for r in rows}

    def mark_done(self, batch_id: int, done: Sequence[Update]) -> None:
        """Record files of a running batch already verified on disk (progress)."""
        now = self.clock()
        with self._tx() as c:
            c.executemany(
                "UPDATE files SET status = ?, tape = coalesce(?, tape), updated_at = ?, "
                "finished_at = ? WHERE path = ? AND batch_id = ? AND status = ?",
                [(DONE, u.tape, now, now, u.path, batch_id, RECALLING) for u in done],
            )
            self._settle_requests(c, [(u.path, COMPLETED, None) for u in done], now)

    def finish_batch(
        self,
        batch_id: int,
        *,
        outcome: str,
        detail: str,
        eeadm_task_id: int | None,
        updates: Sequence[Update],
    ) -> None:
        """Close a batch and apply the verdict for each of its files, atomically."""
        now = self.clock()
        with self._tx() as c:
            c.execute(
                "UPDATE batches SET status = 'done', ended_at = ?, outcome = ?, detail = ?, "
                "eeadm_task_id = ? WHERE id = ?",
                (now, outcome, detail, eeadm_task_id, batch_id),
            )
            for u in updates:
                c.execute(
                    "UPDATE files SET status = ?, last_error = ?, not_before = ?, "
                    "size = coalesce(?, size), tape = coalesce(?, tape), "
                    "library = coalesce(?, library), updated_at = ?, "
                    "finished_at = CASE WHEN ? IN ('done', 'failed') THEN ? END, "
                    "batch_id = CASE WHEN ? = 'queued' THEN NULL ELSE batch_id END "
                    "WHERE path = ? AND batch_id = ? AND status = ?",
                    (
                        u.status,
                        u.last_error,
                        u.not_before,
                        u.size,
                        u.tape,
                        u.library,
                        now,
                        u.status,
                        now,
                        u.status,
                        u.path,
                        batch_id,
                        RECALLING,
                    ),
                )
            final = {DONE: COMPLETED, FAILED: "FAILED"}
            self._settle_requests(
                c,
                [(u.path, final[u.status], u.last_error) for u in updates if u.status in final],
                now,
            )

    @staticmethod
    def _settle_requests(
        c: sqlite3.Connection, outcomes: Sequence[tuple[str, str, str | None]], now: float
    ) -> None:
        """Give the stage-request files of these paths their final state."""
        c.executemany(
            "UPDATE request_files SET state = ?, error = ?, finished_at = ?, "
            "started_at = coalesce(started_at, ?) "
            "WHERE path = ? AND checked = 1 AND state IN (?, ?)",
            [(state, error, now, now, path, SUBMITTED, STARTED) for path, state, error in outcomes],
        )

    # -- prefetch bookkeeping -------------------------------------------------
    def take_prefetch_triggers(self, limit: int = 100) -> list[str]:
        """The Globus tasks that asked for new files since the last take, in order."""
        if self.conn().execute("SELECT 1 FROM prefetch_triggers LIMIT 1").fetchone() is None:
            return []  # the usual case: no write transaction on every stager pass
        with self._tx() as c:
            rows = c.execute(
                "SELECT id, taskid FROM prefetch_triggers ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            c.executemany("DELETE FROM prefetch_triggers WHERE id = ?", [(r[0],) for r in rows])
        return list(dict.fromkeys(r[1] for r in rows))

    def task_paths(self, taskid: str) -> list[str]:
        rows = self.conn().execute(
            "SELECT path FROM requesters WHERE kind = 'globus' AND ref = ?", (taskid,)
        )
        return [r[0] for r in rows]

    def prefetch_unconfirmed(self, taskid: str) -> tuple[int, int]:
        """Files and bytes prefetched for a task that no client asked for (yet)."""
        row = (
            self.conn()
            .execute(
                "SELECT files - asked_files - dropped_files, bytes - asked_bytes - dropped_bytes "
                "FROM prefetch_tasks WHERE taskid = ?",
                (taskid,),
            )
            .fetchone()
        )
        return (row[0], row[1]) if row else (0, 0)

    def busy_tapes(self, tapes: Sequence[str]) -> set[str]:
        """Those of `tapes` that queued or recalling files need."""
        conn = self.conn()
        return {
            t
            for t in dict.fromkeys(tapes)
            if conn.execute(
                "SELECT 1 FROM files WHERE tape = ? AND status IN (?, ?) LIMIT 1", (t, *ACTIVE)
            ).fetchone()
        }

    def library_load(self) -> dict[str, int]:
        """Files queued or recalling per library."""
        rows = self.conn().execute(
            "SELECT library, count(*) FROM files WHERE status IN (?, ?) GROUP BY library", ACTIVE
        )
        return {r[0]: r[1] for r in rows}

    def fail(self, path: str, reason: str, kind: str, ref: str, size: int | None = None) -> None:
        """Record a file that cannot be recalled at all (no usable copy), so its
        polls answer the reason from the store, without eeadm, until
        FAILED_RETENTION. A file being recalled is left alone."""
        now = self.clock()
        with self._tx() as c:
            c.execute(
                "INSERT INTO files (path, status, last_error, requested, size, queued_at, "
                "created_at, updated_at, finished_at) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5, ?5, ?5) "
                "ON CONFLICT(path) DO UPDATE SET status = ?2, last_error = ?3, batch_id = NULL, "
                "updated_at = ?5, finished_at = ?5 WHERE status NOT IN (?6, ?7)",
                (path, FAILED, reason, size, now, *ACTIVE),
            )
            if kind:
                c.execute(
                    "INSERT OR IGNORE INTO requesters (path, kind, ref, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (path, kind, ref, now),
                )

    def active_tapes(self) -> set[str]:
        """Tapes of the files queued or recalling: they will be mounted anyway."""
        rows = self.conn().execute(
            "SELECT DISTINCT tape FROM files WHERE status IN (?, ?) AND tape IS NOT NULL", ACTIVE
        )
        return {r[0] for r in rows}

    def known(self, paths: Iterable[str]) -> dict[str, str]:
        """Status of those of `paths` we have records for."""
        out: dict[str, str] = {}
        conn = self.conn()
        for p in paths:
            row = conn.execute("SELECT status FROM files WHERE path = ?", (p,)).fetchone()
            if row:
                out[p] = row[0]
        return out

    def add_prefetched(
        self, taskid: str, files: Sequence[tuple[str, int, str | None, str | None]]
    ) -> int:
        """Queue prefetched files (path, size, tape, library) for a task and count
        them against it, in one transaction. Returns how many were newly queued."""
        n = nbytes = 0
        now = self.clock()
        with self._tx() as c:
            for path, size, tape, library in files:
                was = c.execute("SELECT status FROM files WHERE path = ?", (path,)).fetchone()
                if was is not None and was[0] in ACTIVE:
                    continue
                self._enqueue(c, path, library, "prefetch", taskid, True, size, tape)
                n += 1
                nbytes += size
            c.execute(
                "INSERT INTO prefetch_tasks (taskid, files, bytes, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(taskid) DO UPDATE SET files = files + excluded.files, "
                "bytes = bytes + excluded.bytes, updated_at = excluded.updated_at",
                (taskid, n, nbytes, now),
            )
        return n

    def drop_prefetched(self, taskid: str) -> tuple[int, int]:
        """Forget a task's prefetched files that are still queued and that no
        client asked for (the evidence turned). Returns files and bytes dropped."""
        with self._tx() as c:
            rows = c.execute(
                "SELECT f.path, coalesce(f.size, 0) FROM files f JOIN requesters r "
                "ON r.path = f.path AND r.kind = 'prefetch' AND r.ref = ? "
                "WHERE f.status = ? AND f.requested = 0 AND f.prefetched = 1",
                (taskid, QUEUED),
            ).fetchall()
            for path, _ in rows:
                c.execute("DELETE FROM requesters WHERE path = ?", (path,))
                c.execute("DELETE FROM files WHERE path = ?", (path,))
            n, nbytes = len(rows), sum(r[1] for r in rows)
            if n:
                c.execute(
                    "UPDATE prefetch_tasks SET dropped_files = dropped_files + ?, "
                    "dropped_bytes = dropped_bytes + ?, updated_at = ? WHERE taskid = ?",
                    (n, nbytes, self.clock(), taskid),
                )
        return n, nbytes

    def prefetch_tasks(self, limit: int = 20) -> list[dict]:
        """Prefetch precision of the tasks most recently prefetched for."""
        rows = self.conn().execute(
            "SELECT taskid, files, bytes, asked_files, asked_bytes, dropped_files, "
            "dropped_bytes FROM prefetch_tasks ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    # -- WLCG stage requests ----------------------------------------------------
    def create_request(
        self,
        request_id: str,
        owner: str,
        files: Sequence[tuple[str, str | None]],
    ) -> None:
        """Record a stage request: (path, error) per file; a file with an error
        is FAILED at once, the others wait for the stager's intake (which
        chooses each file's library from its copies)."""
        now = self.clock()
        with self._tx() as c:
            c.execute(
                "INSERT INTO stage_requests (id, owner, created_at) VALUES (?,?,?)",
                (request_id, owner, now),
            )
            c.executemany(
                "INSERT INTO request_files (request_id, path, position, state, checked, error, "
                "started_at, finished_at) VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        request_id,
                        path,
                        n,
                        "FAILED" if err else SUBMITTED,
                        int(bool(err)),
                        err,
                        now if err else None,
                        now if err else None,
                    )
                    for n, (path, err) in enumerate(files)
                ],
            )

    def stage_request(self, request_id: str) -> tuple[StageRequest, list[RequestFile]] | None:
        """A WLCG request and its files, in the order they were asked for."""
        conn = self.conn()
        req = conn.execute("SELECT * FROM stage_requests WHERE id = ?", (request_id,)).fetchone()
        if req is None:
            return None
        files = conn.execute(
            "SELECT * FROM request_files WHERE request_id = ? ORDER BY position", (request_id,)
        )
        return from_row(StageRequest, req), [from_row(RequestFile, f) for f in files]

    def unchecked_request_files(self, limit: int) -> list[tuple[str, str]]:
        """(request id, path) of request files not looked at yet, oldest first."""
        rows = self.conn().execute(
            "SELECT rf.request_id, rf.path FROM request_files rf "
            "JOIN stage_requests r ON r.id = rf.request_id "
            "WHERE rf.checked = 0 ORDER BY r.created_at, rf.position LIMIT ?",
            (limit,),
        )
        return [(r[0], r[1]) for r in rows]

    def intake(
        self,
        request_id: str,
        path: str,
        state: str | None,
        error: str | None,
        placement: tuple[str | None, str | None] = (None, None),
    ) -> None:
        """Settle one request file after its first look: on disk (COMPLETED),
        failed (FAILED + error) or to recall from `placement` (library, tape)
        (state None: queued, or joined to a recall already queued or running)."""
        now = self.clock()
        library, tape = placement
        with self._tx() as c:
            if state is None:
                status = self._enqueue(c, path, library, "wlcg", request_id, False, None, tape)
                state = STARTED if status == RECALLING else SUBMITTED
            final = state in FINAL
            c.execute(
                "UPDATE request_files SET checked = 1, state = ?, error = ?, "
                "started_at = CASE WHEN ? THEN ? END, finished_at = CASE WHEN ? THEN ? END "
                "WHERE request_id = ? AND path = ? AND checked = 0",
                (state, error, state != SUBMITTED, now, final, now, request_id, path),
            )
            c.execute(
                "UPDATE stage_requests SET started_at = coalesce(started_at, ?) WHERE id = ?",
                (now, request_id),
            )

    def cancel_request_files(self, request_id: str, paths: Sequence[str]) -> None:
        """Cancel files of a request: drop its claim on each, and forget a queued
        file nobody else wants. A running recall is never disturbed."""
        now = self.clock()
        with self._tx() as c:
            for path in paths:
                cur = c.execute(
                    "UPDATE request_files SET state = ?, finished_at = ? "
                    "WHERE request_id = ? AND path = ? AND state IN (?, ?)",
                    (CANCELLED, now, request_id, path, SUBMITTED, STARTED),
                )
                if not cur.rowcount:
                    continue
                c.execute(
                    "DELETE FROM requesters WHERE path = ? AND kind = 'wlcg' AND ref = ?",
                    (path, request_id),
                )
                others = c.execute(
                    "SELECT count(*) FROM requesters WHERE path = ?", (path,)
                ).fetchone()[0]
                if not others:
                    c.execute("DELETE FROM files WHERE path = ? AND status = ?", (path, QUEUED))

    def release_request_files(self, request_id: str, paths: Sequence[str]) -> None:
        with self._tx() as c:
            c.executemany(
                "UPDATE request_files SET released = 1 WHERE request_id = ? AND path = ?",
                [(request_id, p) for p in paths],
            )

    def delete_request(self, request_id: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM request_files WHERE request_id = ?", (request_id,))
            c.execute("DELETE FROM stage_requests WHERE id = ?", (request_id,))

    # -- retention --------------------------------------------------------------
    def prune(self, before: float, limit: int = 1000) -> int:
        """Forget, in one short transaction, up to `limit` records finished before
        `before`: done and failed files (with who asked for them), finished
        batches, settled stage requests, idle prefetch tallies. Returns how many
        went; the stager calls it until that is less than `limit`."""
        gone = 0
        with self._tx() as c:
            paths = c.execute(
                "SELECT path FROM files WHERE finished_at < ? AND status IN (?, ?) LIMIT ?",
                (before, DONE, FAILED, limit),
            ).fetchall()
            c.executemany("DELETE FROM requesters WHERE path = ?", paths)
            gone += c.executemany("DELETE FROM files WHERE path = ?", paths).rowcount
            gone += c.execute(
                "DELETE FROM batches WHERE id IN (SELECT id FROM batches "
                "WHERE ended_at < ? AND status = 'done' LIMIT ?)",
                (before, limit),
            ).rowcount
            requests = c.execute(
                "SELECT id FROM stage_requests r WHERE created_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM request_files f WHERE f.request_id = r.id "
                "AND (f.state NOT IN (?, ?, ?) OR f.finished_at >= ?)) LIMIT ?",
                (before, *FINAL, before, max(1, limit // 100)),
            ).fetchall()
            for (rid,) in requests:
                gone += c.execute("DELETE FROM request_files WHERE request_id = ?", (rid,)).rowcount
                gone += c.execute("DELETE FROM stage_requests WHERE id = ?", (rid,)).rowcount
            gone += c.execute(
                "DELETE FROM prefetch_tasks WHERE taskid IN (SELECT taskid FROM prefetch_tasks "
                "WHERE updated_at < ? LIMIT ?)",
                (before, limit),
            ).rowcount
            c.execute("DELETE FROM lookups WHERE running = 0 AND since < ?", (before,))
        return gone

    # -- operators --------------------------------------------------------------
    def probe(self, name: str) -> None:
        """A small write (StoreUnavailable when the store takes none): readiness."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO probes (name, at) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET at = excluded.at",
                (name, self.clock()),
            )

    def files(
        self,
        *,
        status: str | None = None,
        library: str | None = None,
        tape: str | None = None,
        task: str | None = None,
        prefix: str | None = None,
        retrying: bool = False,
        limit: int = 100,
    ) -> list[dict]:
        """File records matching every filter given, oldest queued first.
        `retrying`: only files that have had a failed attempt."""
        rows = self.conn().execute(
            "SELECT path, library, status, attempts, last_error, batch_id, prefetched, "
            "requested, size, tape, queued_at, not_before, finished_at FROM files f "
            "WHERE (?1 IS NULL OR f.status = ?1) AND (?2 IS NULL OR f.library = ?2) "
            "AND (?3 IS NULL OR f.tape = ?3) AND (?4 IS NULL OR EXISTS (SELECT 1 "
            "FROM requesters r WHERE r.path = f.path AND r.ref = ?4)) "
            "AND (?5 IS NULL OR substr(f.path, 1, length(?5)) = ?5) "
            "AND (?6 = 0 OR f.last_error IS NOT NULL) "
            "ORDER BY f.queued_at, f.path LIMIT ?7",
            (status, library, tape, task, prefix, int(retrying), limit),
        )
        return [dict(r) for r in rows]

    def note_eeadm(self, subcommand: str, outcome: str, seconds: float, error: str | None) -> None:
        """Record how an eeadm run went (the status page's eeadm health)."""
        now = self.clock()
        failed = outcome != "ok"
        with self._tx() as c:
            c.execute(
                "INSERT INTO eeadm_health (subcommand, at, outcome, seconds, calls, failures, "
                "last_error, last_error_at) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7) "
                "ON CONFLICT (subcommand) DO UPDATE SET at = ?2, outcome = ?3, seconds = ?4, "
                "calls = calls + 1, failures = failures + ?5, "
                "last_error = coalesce(?6, last_error), "
                "last_error_at = coalesce(?7, last_error_at)",
                (subcommand, now, outcome, seconds, int(failed), error, now if failed else None),
            )

    def eeadm_health(self) -> list[dict]:
        """Per subcommand: the last run (when, outcome, seconds), runs, failures, last error."""
        rows = self.conn().execute("SELECT * FROM eeadm_health ORDER BY subcommand")
        now = self.clock()
        return [{**dict(r), "age": now - r["at"]} for r in rows]

    def batches(self, limit: int = 20) -> list[dict]:
        """The newest batches, running ones first, with files on disk so far."""
        rows = self.conn().execute(
            "SELECT b.*, (SELECT count(*) FROM files f WHERE f.batch_id = b.id "
            "AND f.status = 'done') AS files_done FROM batches b "
            "ORDER BY b.status = 'running' DESC, b.id DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    def queue_by_tape(self) -> list[dict]:
        """Queued files per library and tape, with the oldest one's age."""
        rows = self.conn().execute(
            "SELECT library, coalesce(tape, '') AS tape, count(*) AS files, "
            "coalesce(sum(size), 0) AS bytes, min(queued_at) AS oldest FROM files "
            "WHERE status = ? GROUP BY library, tape ORDER BY oldest",
            (QUEUED,),
        )
        now = self.clock()
        return [{**dict(r), "oldest_age": now - r["oldest"]} for r in rows]

    def queue_by_library(self) -> list[dict]:
        """Queued files per library, with the oldest one's age."""
        rows = self.conn().execute(
            "SELECT library, count(*) AS files, min(queued_at) AS oldest FROM files "
            "WHERE status = ? GROUP BY library ORDER BY library",
            (QUEUED,),
        )
        now = self.clock()
        return [
            {"library": r["library"], "files": r["files"], "oldest_age": now - r["oldest"]}
            for r in rows
        ]

    def retry(self, paths: Sequence[str] | None, who: str) -> int:
        """Queue failed files afresh (all failed ones when `paths` is None),
        attempts reset. Recorded as an operator action."""
        now = self.clock()
        with self._tx() as c:
            sql = (
                "UPDATE files SET status = ?, attempts = 0, not_before = 0, last_error = NULL, "
                "batch_id = NULL, finished_at = NULL, queued_at = ?, updated_at = ? "
                "WHERE status = ?"
            )
            if paths is None:
                n = c.execute(sql, (QUEUED, now, now, FAILED)).rowcount
            else:
                n = c.executemany(
                    sql + " AND path = ?", [(QUEUED, now, now, FAILED, p) for p in paths]
                ).rowcount
            self._record(c, who, "retry", "all failed" if paths is None else ", ".join(paths), n)
        return n

    def cancel(self, paths: Sequence[str] | None, task: str | None, who: str) -> int:
        """Forget queued files (not those a running recall holds): the given
        paths, or every file only task `task` asked for. WLCG requests holding
        them see them CANCELLED."""
        now = self.clock()
        with self._tx() as c:
            if task is not None:
                c.execute(
                    "DELETE FROM requesters WHERE ref = ? AND kind IN ('globus', 'prefetch')",
                    (task,),
                )
                rows = c.execute(
                    "SELECT path FROM files f WHERE status = ? AND NOT EXISTS "
                    "(SELECT 1 FROM requesters r WHERE r.path = f.path)",
                    (QUEUED,),
                ).fetchall()
                targets = [r[0] for r in rows]
            else:
                targets = list(paths or [])
            n = 0
            for path in targets:
                gone = c.execute(
                    "DELETE FROM files WHERE path = ? AND status = ?", (path, QUEUED)
                ).rowcount
                if gone:
                    n += gone
                    c.execute("DELETE FROM requesters WHERE path = ?", (path,))
                    c.execute(
                        "UPDATE request_files SET state = ?, finished_at = ? "
                        "WHERE path = ? AND state IN (?, ?)",
                        (CANCELLED, now, path, SUBMITTED, STARTED),
                    )
            self._record(c, who, "cancel", f"task {task}" if task else ", ".join(targets), n)
        return n

    def forget(self, paths: Sequence[str], who: str) -> int:
        """Drop failed records, so the next poll of each file starts afresh."""
        with self._tx() as c:
            n = c.executemany(
                "DELETE FROM files WHERE path = ? AND status = ?", [(p, FAILED) for p in paths]
            ).rowcount
            c.executemany(
                "DELETE FROM requesters WHERE path = ? AND NOT EXISTS "
                "(SELECT 1 FROM files WHERE files.path = requesters.path)",
                [(p,) for p in paths],
            )
            self._record(c, who, "forget", ", ".join(paths), n)
        return n

    def _record(self, c: sqlite3.Connection, who: str, action: str, target: str, n: int) -> None:
        c.execute(
            "INSERT INTO operator_actions (at, who, action, target, files) VALUES (?,?,?,?,?)",
            (self.clock(), who, action, target[:1000], n),
        )

    def operator_actions(self, limit: int = 20) -> list[dict]:
        rows = self.conn().execute(
            "SELECT at, who, action, target, files FROM operator_actions ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    def counts(self) -> dict:
        """Totals for the status page and metrics."""
        conn = self.conn()
        tally = dict(conn.execute("SELECT name, n FROM tallies"))
        oldest = conn.execute(
            "SELECT min(queued_at) FROM files WHERE status = ?", (QUEUED,)
        ).fetchone()[0]
        return {
            "files": {s: tally.get(f"files:{s}", 0) for s in (QUEUED, RECALLING, DONE, FAILED)},
            "batches": {s: tally.get(f"batches:{s}", 0) for s in ("running", "done")},
            "prefetch": {f: tally.get(f"prefetch:{f}", 0) for f in PREFETCH_FIELDS},
            "totals": {t: tally.get(f"total:{t}", 0) for t in TOTALS},
            "oldest_queued_age": None if oldest is None else max(self.clock() - oldest, 0.0),
        }
