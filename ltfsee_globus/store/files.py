"""File records: what a poll reads and writes, and what placement asks.

`enqueue` is the one way a file enters the queue (a Globus poll, a WLCG
request's intake, prefetch). It is a single upsert that takes a file afresh
only when it is not already queued or recalling, so two nodes enqueueing one
file at once give one record, and a file a recall holds is never reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .db import Database, Tx, process_owner
from .records import ACTIVE, FAILED, QUEUED, RECALLING, FileRecord


def enqueue(
    c: Tx,
    path: str,
    library: str | None,
    *,
    prefetched: bool,
    size: int | None,
    tape: str | None,
    now: float,
    owner: str = "",
    priority: int = 0,
) -> tuple[str, bool]:
    """Queue a file unless it is queued or recalling (then it is left alone).
    A file that was done or failed is queued afresh with its attempts reset.
    `owner` is the requester it is queued for (the scheduler shares the
    drives among them), `priority` its key's. Returns its status afterwards
    and whether this call queued it."""
    row = c.one(
        "INSERT INTO files (path, library, status, prefetched, requested, size, tape, "
        "queued_at, created_at, updated_at, owner, priority) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (path) DO UPDATE SET library = excluded.library, status = excluded.status, "
        "attempts = 0, last_error = NULL, batch_id = NULL, prefetched = excluded.prefetched, "
        "requested = excluded.requested, size = coalesce(excluded.size, files.size), "
        "tape = coalesce(nullif(excluded.tape, ''), files.tape), queued_at = excluded.queued_at, "
        "not_before = 0, updated_at = excluded.updated_at, finished_at = NULL, "
        "owner = excluded.owner, priority = excluded.priority "
        "WHERE files.status NOT IN (?, ?) RETURNING status",
        (
            path,
            library or "",
            QUEUED,
            prefetched,
            not prefetched,
            size,
            tape,
            now,
            now,
            now,
            owner,
            priority,
            *ACTIVE,
        ),
    )
    if row is not None:
        return QUEUED, True
    # active: the upsert left it (and, on PostgreSQL, locked its row)
    return c.scalar("SELECT status FROM files WHERE path = ?", (path,)), False


def requester(kind: str, ref: str) -> str:
    """The requester a file is queued for, as the scheduler counts drives:
    `globus:TASK` (a transfer, or `globus:` for polls without a task),
    `wlcg:REQUEST`; a prefetched file is its task's."""
    return f"{kind}:{ref}" if kind else ""


def lock_file(c: Tx, db: Database, path: str) -> None:
    """Hold a file's row until the transaction ends (PostgreSQL; SQLite's one
    writer holds everything). note_requester takes it before adding a
    requester (enqueue's upsert locks it too) and a cancel before it counts
    who still wants the file, so the cancel sees a requester that joins at
    the same moment, or none of it."""
    c.execute(f"SELECT 1 FROM files WHERE path = ?{db.lock_row}", (path,))


def add_requester(c: Tx, path: str, kind: str, ref: str, now: float) -> bool:
    """Record that (kind, ref) wants the file; False when it was known."""
    cur = c.execute(
        "INSERT INTO requesters (path, kind, ref, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (path, kind, ref, now),
    )
    return cur.rowcount > 0


def trigger(c: Tx, taskid: str, path: str, library: str, now: float) -> None:
    """Tell the prefetcher that a task asked for a file it had not asked for before."""
    c.execute(
        "INSERT INTO prefetch_triggers (taskid, path, library, created_at) VALUES (?, ?, ?, ?)",
        (taskid, path, library, now),
    )


def confirm(c: Tx, path: str) -> None:
    """Mark a file as asked for by a client; a prefetched one counts as a hit
    for the task whose prefetch queued it."""
    row = c.one(
        "UPDATE files SET requested = TRUE WHERE path = ? AND NOT requested "
        "RETURNING prefetched, coalesce(size, 0)",
        (path,),
    )
    if row is not None and row[0]:
        c.execute(
            "UPDATE prefetch_tasks SET asked_files = asked_files + 1, "
            "asked_bytes = asked_bytes + ? WHERE taskid IN "
            "(SELECT ref FROM requesters WHERE path = ? AND kind = 'prefetch')",
            (row[1], path),
        )


class Polls:
    """What a Globus poll reads and writes (the web tier's hot path)."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        self.owner = process_owner()

    def lookup(self, path: str, kind: str = "", ref: str = "") -> FileRecord | None:
        """A file's record; `known` when (kind, ref) already asked for it.
        What every poll reads first: kept between changes where reads cost
        a round trip (Database.remembered)."""
        return self.db.remembered(
            path,
            (kind, ref),
            lambda: self.db.record(
                FileRecord,
                "SELECT f.*, EXISTS (SELECT 1 FROM requesters r WHERE r.path = f.path "
                "AND r.kind = ? AND r.ref = ?) AS known FROM files f WHERE f.path = ?",
                (kind, ref, path),
            ),
        )

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
        priority: int = 0,
    ) -> str:
        """Queue a file a client asked for, unless it is already queued or
        recalling, and record who asked (a file it queues is theirs, at
        `priority`). Returns the file's status afterwards."""

        def work(c: Tx) -> str:
            now = self.clock()
            status, fresh = enqueue(
                c,
                path,
                library,
                prefetched=False,
                size=size,
                tape=tape,
                now=now,
                owner=requester(kind, ref),
                priority=priority,
            )
            if not fresh:  # already wanted: a prefetched one is now a hit
                confirm(c, path)
            if kind:  # a Globus poll without a task id still counts as wanting the file
                add_requester(c, path, kind, ref, now)
            if trigger_prefetch and ref:
                trigger(c, ref, path, library or "", now)
            return status

        return self.db.write(work)

    def note_requester(
        self, path: str, kind: str, ref: str, *, trigger_prefetch: bool = False
    ) -> None:
        """Record that (kind, ref) asked for a file we already track."""

        def work(c: Tx) -> None:
            now = self.clock()
            lock_file(c, self.db, path)
            fresh = add_requester(c, path, kind, ref, now)
            confirm(c, path)
            if trigger_prefetch and ref and fresh:
                trigger(c, ref, path, "", now)

        self.db.write(work)

    def fail(self, path: str, reason: str, kind: str, ref: str, size: int | None = None) -> None:
        """Record a file that cannot be recalled at all (no usable copy), so its
        polls answer the reason from the store, without eeadm, until
        FAILED_RETENTION. A file being recalled is left alone."""

        def work(c: Tx) -> None:
            now = self.clock()
            c.execute(
                "INSERT INTO files (path, status, last_error, requested, size, queued_at, "
                "created_at, updated_at, finished_at) VALUES (?, ?, ?, TRUE, ?, ?, ?, ?, ?) "
                "ON CONFLICT (path) DO UPDATE SET status = excluded.status, "
                "last_error = excluded.last_error, batch_id = NULL, "
                "updated_at = excluded.updated_at, finished_at = excluded.finished_at "
                "WHERE files.status NOT IN (?, ?)",
                (path, FAILED, reason, size, now, now, now, now, *ACTIVE),
            )
            if kind:
                add_requester(c, path, kind, ref, now)

        self.db.write(work)

    def lookup_running(self, delta: int) -> None:
        """Count this process's `eeadm file state` calls for polls in flight (+1 / -1):
        while some run, more files are about to be queued and a batch should wait."""
        now = self.clock()
        self.db.write(
            lambda c: c.execute(
                "INSERT INTO lookups (owner, running, since) VALUES (?, ?, ?) "
                "ON CONFLICT (owner) DO UPDATE SET running = CASE "
                "WHEN lookups.running + ? > 0 THEN lookups.running + ? ELSE 0 END, "
                "since = CASE WHEN lookups.running = 0 THEN excluded.since "
                "ELSE lookups.since END",
                (self.owner, max(delta, 0), now, delta, delta),
            ),
            polls=False,
        )


class Tapes:
    """Where work already is: what placement and prefetch weigh a copy by."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def busy_tapes(self, tapes: Sequence[str]) -> set[str]:
        """Those of `tapes` that queued or recalling files need."""
        rows = self.db.all(
            f"SELECT DISTINCT tape FROM files WHERE tape {self.db.in_list} AND status IN (?, ?)",
            (self.db.listed(set(tapes)), *ACTIVE),
        )
        return {r[0] for r in rows}

    def library_load(self) -> dict[str, int]:
        """Files queued or recalling per library (the queue's summary rows and
        the running batches: as cheap at a million files as at ten)."""

        def read(c: Tx) -> dict[str, int]:
            load: dict[str, int] = {}
            for library, n in c.all(
                "SELECT library, sum(files) FROM queue_tapes GROUP BY library "
                "UNION ALL SELECT library, sum(n_files) FROM batches "
                "WHERE status = 'running' GROUP BY library"
            ):
                load[library] = load.get(library, 0) + int(n)
            return load

        return self.db.read(read)

    def active_tapes(self) -> set[str]:
        """Tapes of the files queued or recalling: they will be mounted anyway."""
        rows = self.db.all(
            "SELECT tape FROM queue_tapes WHERE tape <> '' UNION "
            "SELECT DISTINCT f.tape FROM batches b JOIN files f ON f.batch_id = b.id "
            "WHERE b.status = 'running' AND f.status = ? AND coalesce(f.tape, '') <> ''",
            (RECALLING,),
        )
        return {r[0] for r in rows}

    def known(self, paths: Iterable[str]) -> dict[str, str]:
        """Status of those of `paths` we have records for."""
        rows = self.db.all(
            f"SELECT path, status FROM files WHERE path {self.db.in_list}",
            (self.db.listed(set(paths)),),
        )
        return dict(rows)
