"""WLCG Tape REST stage requests and their files."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .db import Database, Tx
from .files import add_requester, confirm, enqueue, lock_file, requester
from .records import (
    CANCELLED,
    FINAL,
    QUEUED,
    RECALLING,
    STARTED,
    SUBMITTED,
    RequestFile,
    RequestSummary,
    StageRequest,
)


def settle(c: Tx, outcomes: Sequence[tuple[str, str, str | None]], now: float) -> None:
    """Give the stage-request files of these paths (path, state, error) their
    final state (the stager, when a recall's files are verified)."""
    c.executemany(
        "UPDATE request_files SET state = ?, error = ?, finished_at = ?, "
        "started_at = coalesce(started_at, ?) "
        "WHERE path = ? AND checked AND state IN (?, ?)",
        [(state, error, now, now, path, SUBMITTED, STARTED) for path, state, error in outcomes],
    )


class Requests:
    """Stage requests: created by the API, taken in by the stager."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock

    def recent(self, limit: int) -> list[RequestSummary]:
        """The newest stage requests, with who made each and its files' progress."""
        return self.db.records(
            RequestSummary,
            "SELECT r.id, r.owner, r.created_at, count(f.path) AS files, "
            "count(CASE WHEN f.state = 'COMPLETED' THEN 1 END) AS completed, "
            "count(CASE WHEN f.state = 'FAILED' THEN 1 END) AS failed, "
            "count(CASE WHEN f.state = 'CANCELLED' THEN 1 END) AS cancelled "
            "FROM (SELECT * FROM stage_requests ORDER BY created_at DESC LIMIT ?) r "
            "LEFT JOIN request_files f ON f.request_id = r.id "
            "GROUP BY r.id, r.owner, r.created_at ORDER BY r.created_at DESC",
            (limit,),
        )

    def create(
        self,
        request_id: str,
        owner: str,
        files: Sequence[tuple[str, str, str | None]],
        priority: int = 0,
    ) -> None:
        """Record a stage request: (as the client wrote it, normalised path,
        error) per distinct string the client sent; a file with an error is
        FAILED at once, the others wait for the stager's intake (which chooses
        each file's library from its copies)."""
        now = self.clock()

        def work(c: Tx) -> None:
            c.execute(
                "INSERT INTO stage_requests (id, owner, created_at, priority) VALUES (?, ?, ?, ?)",
                (request_id, owner, now, priority),
            )
            c.executemany(
                "INSERT INTO request_files (request_id, asked_as, path, position, state, "
                "checked, error, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        request_id,
                        asked_as,
                        path,
                        n,
                        "FAILED" if err else SUBMITTED,
                        bool(err),
                        err,
                        now if err else None,
                        now if err else None,
                    )
                    for n, (asked_as, path, err) in enumerate(files)
                ],
            )

        self.db.write(work)

    def get(self, request_id: str) -> tuple[StageRequest, list[RequestFile]] | None:
        """A request and its files, in the order they were asked for."""

        def read(c: Tx) -> tuple[StageRequest, list[RequestFile]] | None:
            req = c.record(StageRequest, "SELECT * FROM stage_requests WHERE id = ?", (request_id,))
            if req is None:
                return None
            files = c.records(
                RequestFile,
                "SELECT * FROM request_files WHERE request_id = ? ORDER BY position",
                (request_id,),
            )
            return req, files

        return self.db.read(read)

    def unchecked(self, limit: int) -> list[tuple[str, str]]:
        """(request id, path) of request files not looked at yet, oldest first
        (once per path, however many ways the client wrote it)."""
        rows = self.db.all(
            "SELECT rf.request_id, rf.path FROM request_files rf "
            "JOIN stage_requests r ON r.id = rf.request_id "
            "WHERE NOT rf.checked ORDER BY r.created_at, rf.position LIMIT ?",
            (limit,),
        )
        return list(dict.fromkeys(rows))

    def intake(
        self,
        request_id: str,
        path: str,
        state: str | None,
        error: str | None,
        placement: tuple[str | None, str | None] = (None, None),
        size: int | None = None,
    ) -> None:
        """Settle one request file after its first look: on disk (COMPLETED),
        failed (FAILED + error) or to recall from `placement` (library, tape)
        (state None: queued, or joined to a recall already queued or running)."""
        library, tape = placement

        def work(c: Tx) -> None:
            now = self.clock()
            new_state = state
            if new_state is None:
                priority = c.scalar(
                    "SELECT priority FROM stage_requests WHERE id = ?", (request_id,)
                )
                status, fresh = enqueue(
                    c,
                    path,
                    library,
                    prefetched=False,
                    size=size,
                    tape=tape,
                    now=now,
                    owner=requester("wlcg", request_id),
                    priority=priority or 0,
                )
                if not fresh:
                    confirm(c, path)
                add_requester(c, path, "wlcg", request_id, now)
                new_state = STARTED if status == RECALLING else SUBMITTED
            final = new_state in FINAL
            c.execute(
                "UPDATE request_files SET checked = TRUE, state = ?, error = ?, "
                "started_at = CASE WHEN ? THEN ? END, finished_at = CASE WHEN ? THEN ? END "
                "WHERE request_id = ? AND path = ? AND NOT checked",
                (new_state, error, new_state != SUBMITTED, now, final, now, request_id, path),
            )
            c.execute(
                "UPDATE stage_requests SET started_at = coalesce(started_at, ?) WHERE id = ?",
                (now, request_id),
            )

        self.db.write(work)

    def cancel_files(self, request_id: str, paths: Sequence[str]) -> None:
        """Cancel files of a request: drop its claim on each, and forget a queued
        file nobody else wants. A running recall is never disturbed."""

        def work(c: Tx) -> None:
            now = self.clock()
            for path in paths:
                lock_file(c, self.db, path)  # no requester joins between count and delete
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
                if not c.one("SELECT 1 FROM requesters WHERE path = ? LIMIT 1", (path,)):
                    c.execute("DELETE FROM files WHERE path = ? AND status = ?", (path, QUEUED))

        self.db.write(work)

    def release_files(self, request_id: str, paths: Sequence[str]) -> None:
        self.db.write(
            lambda c: c.executemany(
                "UPDATE request_files SET released = TRUE WHERE request_id = ? AND path = ?",
                [(request_id, p) for p in paths],
            )
        )

    def delete(self, request_id: str) -> None:
        def work(c: Tx) -> None:
            c.execute("DELETE FROM request_files WHERE request_id = ?", (request_id,))
            c.execute("DELETE FROM stage_requests WHERE id = ?", (request_id,))

        self.db.write(work)
