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
    QueuedTape,
    Update,
)
from .requests import settle

#: The queue per library, tape and requester (queue_tapes, kept by triggers),
#: with when the tape's oldest ready file was queued: an index seek per row.
#: `q.tape || ''` drops the column's affinity, or SQLite would not seek files_ready.
TAPES = (
    "SELECT q.*, (SELECT f.queued_at FROM files f WHERE f.status = 'queued' "
    "AND f.library = q.library AND coalesce(f.tape, '') = q.tape || '' "
    "AND f.not_before <= ? ORDER BY f.queued_at LIMIT 1) AS oldest "
    "FROM queue_tapes q ORDER BY q.library, q.tape, q.owner"
)

#: A claim's walk of one tape's ready files, oldest first (files_ready);
#: {only} narrows it to asked files or the others, {lock} is the engine's row lock.
WALK = (
    "SELECT path, coalesce(size, 0), owner FROM files "
    "WHERE status = 'queued' AND library = ? AND coalesce(tape, '') = ? "
    "AND not_before <= ?{only} ORDER BY queued_at LIMIT ?{lock}"
)

#: Whether a tape has files a client asked for in the queue (the summary's count).
ASKED = "SELECT 1 FROM queue_tapes WHERE library = ? AND tape = ? AND asked > 0 LIMIT 1"


def within(rows: list[tuple[str, int, str]], max_bytes: int) -> list[tuple[str, int, str]]:
    """The first of `rows` (path, size, owner) whose sizes add up to at most
    `max_bytes`; the first row always (a file larger than the bound is read alone)."""
    total = 0
    for n, (_, size, _) in enumerate(rows):
        total += size
        if n and total > max_bytes:
            return rows[:n]
    return rows


class Queue:
    """Queued files by library and tape, claims into batches, their verdicts."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    def tapes(self) -> list[QueuedTape]:
        """The queue as the scheduler sees it: a row per library, tape and
        requester (kept by triggers), each with when its tape's oldest ready
        file was queued (an index seek per row). Costs the same with a
        thousand or a million files queued."""
        return self.db.records(QueuedTape, TAPES, (self.clock(),))

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
        """When the first file waiting for a retry is ready (files_retry: the
        literal `not_before > 0` lets both engines use the partial index)."""
        return self.db.scalar(
            "SELECT min(not_before) FROM files WHERE status = 'queued' AND not_before > 0 "
            "AND not_before > ?",
            (self.clock(),),
        )

    def claim(
        self,
        library: str,
        max_files: int,
        tape: str | None = None,
        started_by: tuple[str, int] | None = None,
        max_bytes: int = 0,
        asked_first: bool = False,
    ) -> tuple[int, list[str]] | None:
        """Move ready files of a library into a new running batch, marked
        with the (node, epoch) of the stager that starts it.

        With `tape` ("": files of unknown tape): that tape's files, oldest
        first, up to `max_files` and (when set) `max_bytes` (at least one
        file); with `asked_first`, only files a client asked for while the
        tape has any ready; with `max_bytes` alone, those first.
        Without: up to `max_files` of the library, tape by tape, the tape of
        the longest-waiting file first, so that only the last tape may be
        split. Reads only the rows it takes (an index walk per tape),
        locking them as it reads (PostgreSQL: FOR UPDATE SKIP LOCKED), so two
        claims at once never take one file."""

        def work(c: Tx) -> tuple[int, list[str]] | None:
            now = self.clock()
            if tape is not None:
                order = [tape]
            else:
                first: dict[str, float] = {}
                for q in c.records(QueuedTape, TAPES, (now,)):
                    if q.library == library and q.oldest is not None:
                        first[q.tape] = min(first.get(q.tape, q.oldest), q.oldest)
                order = sorted(first, key=lambda t: (first[t], t))
            rows: list[tuple[str, int, str]] = []
            for t in order:
                left = max_files - len(rows)
                if left <= 0:
                    break
                # a tape someone waits for beside others' work (`asked_first`)
                # gives its recall only the files clients asked for while the
                # tape has any: prefetched files between them on the tape
                # would be read first (EE reads in tape order), so they go in
                # the next recall (its drive holds the tape). A piece takes
                # the asked files first and fills up with the others: each
                # recall of a tape locates across it. A whole tape otherwise
                # goes in one pass.
                split = tape is not None and (asked_first or bool(max_bytes))
                if split and c.one(ASKED, (library, t)) is not None:
                    kinds = [" AND requested", " AND NOT requested"]
                else:
                    kinds = [""]
                for only in kinds:
                    got = c.all(
                        WALK.format(only=only, lock=self.db.lock_rows), (library, t, now, left)
                    )
                    rows += got
                    left -= len(got)
                    # a newcomer's asked files alone, unless they wait for a retry
                    if (got and asked_first) or left <= 0:
                        break
            taken = within(rows, max_bytes) if max_bytes and tape is not None else rows
            if not taken:
                return None
            paths = [p for p, _, _ in taken]
            owners = "\n".join(sorted({o for _, _, o in taken}))
            batch_id = int(
                c.scalar(
                    "INSERT INTO batches (library, status, n_files, started_at, tape, node, "
                    "epoch, owners, bytes) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?) "
                    "RETURNING id",
                    (
                        library,
                        len(paths),
                        now,
                        tape or None,
                        *(started_by or (None, None)),
                        owners,
                        sum(n for _, n, _ in taken),
                    ),
                )
            )
            listed = self.db.listed(paths)
            c.execute(
                "UPDATE files SET status = ?, batch_id = ?, attempts = attempts + 1, "
                f"updated_at = ? WHERE path {self.db.in_list} AND status = ?",
                (RECALLING, batch_id, now, listed, QUEUED),
            )
            c.execute(
                "UPDATE request_files SET state = ?, started_at = coalesce(started_at, ?) "
                f"WHERE path {self.db.in_list} AND checked AND state = ?",
                (STARTED, now, listed, SUBMITTED),
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
            rows = c.all(
                "SELECT path FROM files WHERE finished_at < ? AND status IN (?, ?) LIMIT ?",
                (before, DONE, FAILED, limit),
            )
            paths = self.db.listed(r[0] for r in rows)
            c.execute(f"DELETE FROM requesters WHERE path {self.db.in_list}", (paths,))
            gone += c.execute(f"DELETE FROM files WHERE path {self.db.in_list}", (paths,)).rowcount
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
