"""What operators see and change: listings, counts, eeadm health, and the
CLI's retry, cancel and forget (each recorded: who, when, what)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..parse import Drive
from ..placement import Placement
from .db import Database, Tx, process_owner
from .queue import TAPES
from .records import (
    CANCELLED,
    FAILED,
    PREFETCH_FIELDS,
    QUEUED,
    STARTED,
    STATUSES,
    SUBMITTED,
    TOTALS,
    Backlog,
    Batch,
    Counts,
    EeadmHealth,
    FileRecord,
    OperatorAction,
    QueuedTape,
    TapeDrive,
    TapeQueue,
)


class Operators:
    """The status page's, the CLI's, /metrics' and /readyz's view of the store."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        self.owner = process_owner()

    # -- what is there ------------------------------------------------------------
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
    ) -> list[FileRecord]:
        """File records matching every filter given, oldest queued first.
        `retrying`: only files that have had a failed attempt."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("library", library), ("tape", tape)):
            if value is not None:
                where.append(f"f.{column} = ?")
                params.append(value)
        if task is not None:
            where.append("EXISTS (SELECT 1 FROM requesters r WHERE r.path = f.path AND r.ref = ?)")
            params.append(task)
        if prefix is not None:
            where.append("substr(f.path, 1, ?) = ?")
            params += [len(prefix), prefix]
        if retrying:
            where.append("f.last_error IS NOT NULL")
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        return self.db.records(
            FileRecord,
            f"SELECT * FROM files f {clause}ORDER BY f.queued_at, f.path LIMIT ?",
            (*params, limit),
        )

    def batches(self, limit: int = 20) -> list[Batch]:
        """The newest batches, running ones first, with files on disk so far."""
        return self.db.records(
            Batch,
            "SELECT b.*, (SELECT count(*) FROM files f WHERE f.batch_id = b.id "
            "AND f.status = 'done') AS files_done FROM batches b "
            "ORDER BY b.status = 'running' DESC, b.id DESC LIMIT ?",
            (limit,),
        )

    def queue_by_tape(self) -> list[TapeQueue]:
        """Queued files per library and tape, with the oldest ready one's age
        (the queue's summary rows: as cheap at a million files as at ten)."""
        now = self.clock()
        tapes: dict[tuple[str, str], list[QueuedTape]] = {}
        for q in self.db.records(QueuedTape, TAPES, (now,)):
            tapes.setdefault((q.library, q.tape), []).append(q)
        out = [
            TapeQueue(
                library=library,
                tape=tape,
                files=sum(q.files for q in rows),
                bytes=sum(q.bytes for q in rows),
                oldest_age=max((now - q.oldest for q in rows if q.oldest is not None), default=0.0),
            )
            for (library, tape), rows in tapes.items()
        ]
        return sorted(out, key=lambda q: -q.oldest_age)

    def queue_by_library(self) -> list[Backlog]:
        """Queued files per library, with the oldest ready one's age."""
        by_library: dict[str, Backlog] = {}
        for q in self.queue_by_tape():
            was = by_library.get(q.library, Backlog(q.library, 0, 0.0))
            by_library[q.library] = Backlog(
                q.library, was.files + q.files, max(was.oldest_age, q.oldest_age)
            )
        return [by_library[k] for k in sorted(by_library)]

    def counts(self) -> Counts:
        """Totals kept by the store's triggers (a scrape costs the same at ten
        million records as at ten)."""

        def read(c: Tx) -> tuple[dict[str, int], float | None]:
            tally = dict(c.all("SELECT name, CAST(sum(n) AS BIGINT) FROM tallies GROUP BY name"))
            rows = c.records(QueuedTape, TAPES, (self.clock(),))
            oldest = min((q.oldest for q in rows if q.oldest is not None), default=None)
            return tally, oldest

        tally, oldest = self.db.read(read)
        return Counts(
            files={s: tally.get(f"files:{s}", 0) for s in STATUSES},
            batches={s: tally.get(f"batches:{s}", 0) for s in ("running", "done")},
            prefetch={f: tally.get(f"prefetch:{f}", 0) for f in PREFETCH_FIELDS},
            totals={t: tally.get(f"total:{t}", 0) for t in TOTALS},
            oldest_queued_age=None if oldest is None else max(self.clock() - oldest, 0.0),
        )

    # -- health -------------------------------------------------------------------
    def probe(self, name: str) -> None:
        """A small write (StoreUnavailable when the store takes none): readiness.
        Each process writes its own row, so checks from many nodes never queue
        on one."""
        self.db.write(
            lambda c: c.execute(
                "INSERT INTO probes (name, at) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET at = excluded.at",
                (f"{name}@{self.owner}", self.clock()),
            ),
            polls=False,
        )

    def note_eeadm(self, subcommand: str, outcome: str, seconds: float, error: str | None) -> None:
        """Record how an eeadm run went (the status page's eeadm health)."""
        now = self.clock()
        failed = outcome != "ok"
        self.db.write(
            lambda c: c.execute(
                "INSERT INTO eeadm_health (subcommand, at, outcome, seconds, calls, failures, "
                "last_error, last_error_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?) "
                "ON CONFLICT (subcommand) DO UPDATE SET at = excluded.at, "
                "outcome = excluded.outcome, seconds = excluded.seconds, "
                "calls = eeadm_health.calls + 1, "
                "failures = eeadm_health.failures + excluded.failures, "
                "last_error = coalesce(excluded.last_error, eeadm_health.last_error), "
                "last_error_at = coalesce(excluded.last_error_at, eeadm_health.last_error_at)",
                (subcommand, now, outcome, seconds, int(failed), error, now if failed else None),
            ),
            polls=False,
        )

    def set_drives(self, drives: Sequence[Drive]) -> None:
        """Replace the drives on record with what `eeadm drive list` said now."""

        def work(c: Tx) -> None:
            now = self.clock()
            c.execute("DELETE FROM tape_drives")
            c.executemany(
                "INSERT INTO tape_drives (id, library, status, state, role, tape, recall, "
                "seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (d.id, d.library, d.status, d.state, d.role, d.tape, d.serves_recalls, now)
                    for d in drives
                ],
            )

        self.db.write(work, polls=False)

    def drives(self) -> list[TapeDrive]:
        """The drives on record, by library."""
        return self.db.records(
            TapeDrive,
            "SELECT *, ? - seen_at AS age FROM tape_drives ORDER BY library, id",
            (self.clock(),),
        )

    def eeadm_health(self) -> list[EeadmHealth]:
        """Per subcommand: the last run (when, outcome, seconds), runs, failures, last error."""
        return self.db.records(
            EeadmHealth,
            "SELECT *, ? - at AS age FROM eeadm_health ORDER BY subcommand",
            (self.clock(),),
        )

    def actions(self, limit: int = 20) -> list[OperatorAction]:
        return self.db.records(
            OperatorAction,
            "SELECT at, who, action, target, files FROM operator_actions ORDER BY id DESC LIMIT ?",
            (limit,),
        )

    # -- changes ------------------------------------------------------------------
    def retry(self, placed: Mapping[str, Placement], who: str, target: str | None = None) -> int:
        """Queue failed files afresh, attempts reset, each from the library and
        copy it was placed on now (the one it failed in may be why it failed).
        Recorded as an operator action on `target` (default: the paths)."""

        def work(c: Tx) -> int:
            now = self.clock()
            n = c.executemany(
                "UPDATE files SET status = ?, attempts = 0, not_before = 0, last_error = NULL, "
                "batch_id = NULL, finished_at = NULL, queued_at = ?, updated_at = ?, "
                "library = ?, tape = coalesce(?, tape) WHERE status = ? AND path = ?",
                [
                    (QUEUED, now, now, p.library or "", p.tape, FAILED, path)
                    for path, p in placed.items()
                ],
            )
            self._record(c, who, "retry", target or ", ".join(placed), n)
            return n

        return self.db.write(work)

    def cancel(self, paths: Sequence[str] | None, task: str | None, who: str) -> int:
        """Forget queued files (not those a running recall holds): the given
        paths, or every file only task `task` asked for. WLCG requests holding
        them see them CANCELLED."""

        def work(c: Tx) -> int:
            now = self.clock()
            if task is not None:
                c.execute(
                    "DELETE FROM requesters WHERE ref = ? AND kind IN ('globus', 'prefetch')",
                    (task,),
                )
                rows = c.all(
                    "SELECT path FROM files f WHERE status = ? AND NOT EXISTS "
                    f"(SELECT 1 FROM requesters r WHERE r.path = f.path){self.db.lock_rows}",
                    (QUEUED,),
                )
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

        return self.db.write(work)

    def forget(self, paths: Sequence[str], who: str) -> int:
        """Drop failed records, so the next poll of each file starts afresh."""

        def work(c: Tx) -> int:
            n = c.executemany(
                "DELETE FROM files WHERE path = ? AND status = ?", [(p, FAILED) for p in paths]
            )
            c.executemany(
                "DELETE FROM requesters WHERE path = ? AND NOT EXISTS "
                "(SELECT 1 FROM files WHERE files.path = requesters.path)",
                [(p,) for p in paths],
            )
            self._record(c, who, "forget", ", ".join(paths), n)
            return n

        return self.db.write(work)

    def _record(self, c: Tx, who: str, action: str, target: str, n: int) -> None:
        c.execute(
            "INSERT INTO operator_actions (at, who, action, target, files) VALUES (?, ?, ?, ?, ?)",
            (self.clock(), who, action, target[:1000], n),
        )
