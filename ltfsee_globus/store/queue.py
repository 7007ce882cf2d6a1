"""The recall queue and its batches: what the stager reads and writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .db import Database, Tx
from .records import (
    COMPLETED,
    DONE,
    FAILED,
    FINAL,
    QUEUED,
    RECALLING,
    STARTED,
    SUBMITTED,
    Batch,
    LibraryQueue,
    Update,
)
from .requests import settle


class Queue:
    """Queued files by library and tape, claims into batches, their verdicts."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    def queued_by_library(self) -> list[LibraryQueue]:
        """Per library: files ready to go, when the oldest and the newest were queued."""
        return self.db.records(
            LibraryQueue,
            "SELECT library, count(*) AS n, min(queued_at) AS oldest, "
            "max(queued_at) AS newest FROM files "
            "WHERE status = ? AND not_before <= ? GROUP BY library",
            (QUEUED, self.clock()),
        )

    def lookups_running(self, max_age: float) -> bool:
        """True while a web worker runs a lookup started less than `max_age` s ago."""
        return (
            self.db.one(
                "SELECT 1 FROM lookups WHERE running > 0 AND since > ? LIMIT 1",
                (self.clock() - max_age,),
            )
            is not None
        )

    def next_retry_at(self) -> float | None:
        return self.db.scalar(
            "SELECT min(not_before) FROM files WHERE status = ? AND not_before > ?",
            (QUEUED, self.clock()),
        )

    def queued_tapes(self, library: str) -> dict[str, tuple[int, float]]:
        """Per tape of a library (a file of unknown tape counts as its own): the
        files ready to go and when the oldest of them was queued."""
        rows = self.db.all(
            "SELECT coalesce(tape, path), count(*), min(queued_at) FROM files "
            "WHERE status = ? AND library = ? AND not_before <= ? GROUP BY 1",
            (QUEUED, library, self.clock()),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def claim(
        self,
        library: str,
        max_files: int,
        tape: str | None = None,
        started_by: tuple[str, int] | None = None,
    ) -> tuple[int, list[str]] | None:
        """Move up to max_files ready files of a library (of one tape, if given)
        into a new running batch, marked with the (node, epoch) of the stager
        that starts it.

        Whole tapes go together, the tape of the longest-waiting file first, so
        that when more is ready than one batch takes, no tape is split over
        two recalls (each would mount it). The files' rows are locked as they
        are read (PostgreSQL: FOR UPDATE SKIP LOCKED), so two claims at once
        never take one file."""

        def work(c: Tx) -> tuple[int, list[str]] | None:
            now = self.clock()
            one_tape = " AND coalesce(tape, path) = ?" if tape is not None else ""
            rows = c.all(
                "SELECT path, coalesce(tape, path), queued_at FROM files "
                f"WHERE status = ? AND library = ? AND not_before <= ?{one_tape}"
                f"{self.db.lock_rows}",
                (QUEUED, library, now) + ((tape,) if tape is not None else ()),
            )
            if not rows:
                return None
            since: dict[str, float] = {}
            for _, t, queued_at in rows:
                since[t] = min(since.get(t, queued_at), queued_at)
            rows.sort(key=lambda r: (since[r[1]], r[1], r[2], r[0]))
            paths = [r[0] for r in rows[:max_files]]
            batch_id = int(
                c.scalar(
                    "INSERT INTO batches (library, status, n_files, started_at, tape, node, epoch) "
                    "VALUES (?, 'running', ?, ?, ?, ?, ?) RETURNING id",
                    (library, len(paths), now, tape, *(started_by or (None, None))),
                )
            )
            c.executemany(
                "UPDATE files SET status = ?, batch_id = ?, attempts = attempts + 1, "
                "updated_at = ? WHERE path = ? AND status = ?",
                [(RECALLING, batch_id, now, p, QUEUED) for p in paths],
            )
            c.executemany(
                "UPDATE request_files SET state = ?, started_at = coalesce(started_at, ?) "
                "WHERE path = ? AND checked AND state = ?",
                [(STARTED, now, p, SUBMITTED) for p in paths],
            )
            return batch_id, paths

        return self.db.write(work)

    def set_batch_pid(self, batch_id: int, pid: int) -> None:
        self.db.write(
            lambda c: c.execute("UPDATE batches SET pid = ? WHERE id = ?", (pid, batch_id))
        )

    def set_batch_task(self, batch_id: int, task_id: str) -> None:
        """The EE task a running batch's recall created: what a stager that
        takes it over asks EE about (the recall goes on without its client)."""
        self.db.write(
            lambda c: c.execute(
                "UPDATE batches SET eeadm_task_id = ? WHERE id = ?", (task_id, batch_id)
            )
        )

    def running_batches(self) -> list[Batch]:
        return self.db.records(Batch, "SELECT * FROM batches WHERE status = 'running'")

    def batch(self, batch_id: int) -> Batch | None:
        return self.db.record(Batch, "SELECT * FROM batches WHERE id = ?", (batch_id,))

    def batch_files(self, batch_id: int) -> dict[str, int]:
        """The files still recalling in a batch, with the attempts each has had."""
        rows = self.db.all(
            "SELECT path, attempts FROM files WHERE batch_id = ? AND status = ? ORDER BY path",
            (batch_id, RECALLING),
        )
        return {r[0]: r[1] for r in rows}

    def mark_done(self, batch_id: int, done: Sequence[Update]) -> None:
        """Record files of a running batch already verified on disk (progress)."""

        def work(c: Tx) -> None:
            now = self.clock()
            c.executemany(
                "UPDATE files SET status = ?, tape = coalesce(?, tape), updated_at = ?, "
                "finished_at = ? WHERE path = ? AND batch_id = ? AND status = ?",
                [(DONE, u.tape, now, now, u.path, batch_id, RECALLING) for u in done],
            )
            settle(c, [(u.path, COMPLETED, None) for u in done], now)

        self.db.write(work)

    def finish_batch(
        self,
        batch_id: int,
        *,
        outcome: str,
        detail: str,
        eeadm_task_id: str | None,
        updates: Sequence[Update],
    ) -> None:
        """Close a batch and apply the verdict for each of its files, atomically."""

        def work(c: Tx) -> None:
            now = self.clock()
            c.execute(
                "UPDATE batches SET status = 'done', ended_at = ?, outcome = ?, detail = ?, "
                "eeadm_task_id = ? WHERE id = ?",
                (now, outcome, detail, eeadm_task_id, batch_id),
            )
            c.executemany(
                "UPDATE files SET status = ?, last_error = ?, not_before = ?, "
                "size = coalesce(?, size), tape = coalesce(?, tape), "
                "library = coalesce(?, library), updated_at = ?, "
                "finished_at = CASE WHEN ? THEN ? END, "
                "batch_id = CASE WHEN ? THEN NULL ELSE batch_id END "
                "WHERE path = ? AND batch_id = ? AND status = ?",
                [
                    (
                        u.status,
                        u.last_error,
                        u.not_before,
                        u.size,
                        u.tape,
                        u.library,
                        now,
                        u.status in (DONE, FAILED),
                        now,
                        u.status == QUEUED,
                        u.path,
                        batch_id,
                        RECALLING,
                    )
                    for u in updates
                ],
            )
            final = {DONE: COMPLETED, FAILED: "FAILED"}
            settle(
                c,
                [(u.path, final[u.status], u.last_error) for u in updates if u.status in final],
                now,
            )

        self.db.write(work)

    def prune(self, before: float, limit: int = 1000) -> int:
        """Forget, in one short transaction, up to `limit` records finished before
        `before`: done and failed files (with who asked for them), finished
        batches, settled stage requests, idle prefetch tallies. Returns how many
        went; the stager calls it until that is less than `limit`."""

        def work(c: Tx) -> int:
            gone = 0
            paths = c.all(
                "SELECT path FROM files WHERE finished_at < ? AND status IN (?, ?) LIMIT ?",
                (before, DONE, FAILED, limit),
            )
            c.executemany("DELETE FROM requesters WHERE path = ?", paths)
            gone += c.executemany("DELETE FROM files WHERE path = ?", paths)
            gone += c.execute(
                "DELETE FROM batches WHERE id IN (SELECT id FROM batches "
                "WHERE ended_at < ? AND status = 'done' LIMIT ?)",
                (before, limit),
            ).rowcount
            requests = c.all(
                "SELECT id FROM stage_requests r WHERE created_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM request_files f WHERE f.request_id = r.id "
                "AND (f.state NOT IN (?, ?, ?) OR f.finished_at >= ?)) LIMIT ?",
                (before, *FINAL, before, max(1, limit // 100)),
            )
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

        return self.db.write(work)
