"""Prefetch bookkeeping: which tasks asked for new files, what was prefetched
for each task, and what became of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .db import Database, Tx
from .files import add_requester, enqueue, requester
from .records import QUEUED, PrefetchTally


class Prefetch:
    """What the prefetcher reads and writes."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    def take_triggers(self, limit: int = 100) -> list[str]:
        """The Globus tasks that asked for new files since the last take, in order."""
        if self.db.one("SELECT 1 FROM prefetch_triggers LIMIT 1") is None:
            return []  # the usual case: no write transaction on every stager pass

        def work(c: Tx) -> list[tuple]:
            return c.all(
                "DELETE FROM prefetch_triggers WHERE id IN (SELECT id FROM prefetch_triggers "
                f"ORDER BY id LIMIT ?{self.db.lock_rows}) RETURNING id, taskid",
                (limit,),
            )

        rows = sorted(self.db.write(work))
        return list(dict.fromkeys(r[1] for r in rows))

    def task_paths(self, taskid: str) -> list[str]:
        """The files a Globus task has asked for."""
        rows = self.db.all(
            "SELECT path FROM requesters WHERE kind = 'globus' AND ref = ?", (taskid,)
        )
        return [r[0] for r in rows]

    def unconfirmed(self, taskid: str) -> tuple[int, int]:
        """Files and bytes prefetched for a task that no client asked for (yet)."""
        row = self.db.one(
            "SELECT files - asked_files - dropped_files, bytes - asked_bytes - dropped_bytes "
            "FROM prefetch_tasks WHERE taskid = ?",
            (taskid,),
        )
        return (row[0], row[1]) if row else (0, 0)

    def add(self, taskid: str, files: Sequence[tuple[str, int, str | None, str | None]]) -> int:
        """Queue prefetched files (path, size, tape, library) for a task and count
        them against it, in one transaction. Returns how many were newly queued
        (a file already queued or recalling is left as it is)."""

        def work(c: Tx) -> int:
            now = self.clock()
            n = nbytes = 0
            for path, size, tape, library in files:
                _, fresh = enqueue(
                    c,
                    path,
                    library,
                    prefetched=True,
                    size=size,
                    tape=tape,
                    now=now,
                    owner=requester("globus", taskid),
                )
                if fresh:
                    add_requester(c, path, "prefetch", taskid, now)
                    n += 1
                    nbytes += size
            c.execute(
                "INSERT INTO prefetch_tasks (taskid, files, bytes, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (taskid) DO UPDATE SET "
                "files = prefetch_tasks.files + excluded.files, "
                "bytes = prefetch_tasks.bytes + excluded.bytes, updated_at = excluded.updated_at",
                (taskid, n, nbytes, now),
            )
            return n

        return self.db.write(work)

    def drop(self, taskid: str) -> tuple[int, int]:
        """Forget a task's prefetched files that are still queued and that no
        client asked for (the evidence turned). Returns files and bytes dropped."""

        def work(c: Tx) -> tuple[int, int]:
            rows = c.all(
                "SELECT f.path, coalesce(f.size, 0) FROM files f JOIN requesters r "
                "ON r.path = f.path AND r.kind = 'prefetch' AND r.ref = ? "
                f"WHERE f.status = ? AND NOT f.requested AND f.prefetched{self.db.lock_rows}",
                (taskid, QUEUED),
            )
            listed = self.db.listed(r[0] for r in rows)
            c.execute(f"DELETE FROM requesters WHERE path {self.db.in_list}", (listed,))
            c.execute(
                f"DELETE FROM files WHERE path {self.db.in_list} AND status = ? AND NOT requested",
                (listed, QUEUED),
            )
            n, nbytes = len(rows), sum(r[1] for r in rows)
            if n:
                c.execute(
                    "UPDATE prefetch_tasks SET dropped_files = dropped_files + ?, "
                    "dropped_bytes = dropped_bytes + ?, updated_at = ? WHERE taskid = ?",
                    (n, nbytes, self.clock(), taskid),
                )
            return n, nbytes

        return self.db.write(work)

    def tasks(self, limit: int = 20) -> list[PrefetchTally]:
        """Prefetch precision of the tasks most recently prefetched for."""
        return self.db.records(
            PrefetchTally,
            "SELECT taskid, files, bytes, asked_files, asked_bytes, dropped_files, "
            "dropped_bytes FROM prefetch_tasks ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        )
