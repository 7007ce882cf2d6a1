"""Who leads, and who is there: the stager lease and the node table.

Exactly one stager across every node that shares the store runs recalls. It
holds the lease row `stager`, timed by the database's clock (PostgreSQL's
`clock_timestamp()`; SQLite's is the one host's), renewed every few seconds.
Each take-over adds one to its epoch. The leader's writes go through a fenced
database (`Fenced`): each transaction first checks, under a share lock on the
lease row, that the lease is still its own, unexpired, at its epoch, so a
leader that was frozen, partitioned or slow cannot change anything once
another took over (LeaseLost, logged by the stager that steps down). Every process
with a stager thread, leader or standby, also keeps a row in `members` (its
node, role, version, heartbeat), which the status page, `/api/status`,
`/metrics` and `ltfsee-globus status` show per node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from .db import Database, Tx

T = TypeVar("T")

STAGER = "stager"
LEADER, STANDBY = "leader", "standby"


class LeaseLost(Exception):
    """This stager's lease was taken over or ran out: it may change nothing
    more as leader, and steps down."""


@dataclass(frozen=True)
class Lease:
    """The stager lease as the database sees it now."""

    holder: str | None  # host:pid of the leading process
    node: str | None
    epoch: int
    remaining: float  # seconds left by the database's clock; <= 0: free to take
    taken_at: float | None  # when the last take-over was, by the database's clock
    held_for: float | None  # seconds since then

    @property
    def running(self) -> bool:
        return self.holder is not None and self.remaining > 0


@dataclass(frozen=True)
class Member:
    """One process with a stager thread (leader or standby)."""

    owner: str  # host:pid
    node: str
    role: str  # leader, standby
    version: str
    started_at: float
    heartbeat_at: float
    age: float  # seconds since its heartbeat, by the database's clock
    epoch: int | None  # its lease's epoch while it leads


class Leases:
    """The lease row and the members table."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.now = db.now_sql  # the database's clock, in seconds since the epoch

    def take(self, holder: str, node: str, seconds: float) -> int | None:
        """The lease for `holder` if it is free or ran out: its new epoch, else None."""
        row = self.db.write(
            lambda c: c.one(
                f"UPDATE leases SET holder = ?, node = ?, epoch = epoch + 1, "
                f"expires_at = {self.now} + ?, taken_at = {self.now} "
                f"WHERE name = ? AND (holder IS NULL OR expires_at <= {self.now}) "
                "RETURNING epoch",
                (holder, node, seconds, STAGER),
            ),
            polls=False,
        )
        return None if row is None else int(row[0])

    def renew(self, holder: str, epoch: int, seconds: float) -> bool:
        """Extend the lease `holder` holds at `epoch`; False when it ran out or
        was taken (then it is lost for good: take() again as a standby)."""
        row = self.db.write(
            lambda c: c.one(
                f"UPDATE leases SET expires_at = {self.now} + ? WHERE name = ? AND holder = ? "
                f"AND epoch = ? AND expires_at > {self.now} RETURNING epoch",
                (seconds, STAGER, holder, epoch),
            ),
            polls=False,
        )
        return row is not None

    def release(self, holder: str, epoch: int) -> None:
        """Give the lease up (a clean stop): a standby takes it at its next try."""
        self.db.write(
            lambda c: c.execute(
                "UPDATE leases SET holder = NULL, expires_at = 0 "
                "WHERE name = ? AND holder = ? AND epoch = ?",
                (STAGER, holder, epoch),
            ),
            polls=False,
        )

    def current(self) -> Lease:
        row = self.db.one(
            f"SELECT holder, node, epoch, expires_at - {self.now}, taken_at, "
            f"{self.now} - taken_at FROM leases WHERE name = ?",
            (STAGER,),
        )
        assert row is not None  # the migration inserts it
        holder, node, epoch, remaining, taken_at, held_for = row
        return Lease(
            holder, node, int(epoch), float(remaining) if holder else 0.0, taken_at, held_for
        )

    # -- the fence -----------------------------------------------------------------
    def check(self, c: Tx, holder: str, epoch: int) -> None:
        """In the caller's transaction: LeaseLost unless `holder` still holds the
        lease at `epoch`. The row stays share-locked to the commit (PostgreSQL),
        so a take-over waits for a write already checked; SQLite's one writer
        gives the same order."""
        ok = c.one(
            f"SELECT 1 FROM leases WHERE name = ? AND holder = ? AND epoch = ? "
            f"AND expires_at > {self.now}{self.db.share_row}",
            (STAGER, holder, epoch),
        )
        if ok is None:
            raise LeaseLost(f"the stager lease (epoch {epoch}) is no longer ours: write refused")

    # -- members -----------------------------------------------------------------
    def heartbeat(self, owner: str, node: str, role: str, version: str, epoch: int | None) -> None:
        self.db.write(
            lambda c: c.execute(
                "INSERT INTO members (owner, node, role, version, epoch, started_at, "
                f"heartbeat_at) VALUES (?, ?, ?, ?, ?, {self.now}, {self.now}) "
                "ON CONFLICT (owner) DO UPDATE SET role = excluded.role, "
                "epoch = excluded.epoch, heartbeat_at = excluded.heartbeat_at",
                (owner, node, role, version, epoch),
            ),
            polls=False,
        )

    def leave(self, owner: str) -> None:
        self.db.write(
            lambda c: c.execute("DELETE FROM members WHERE owner = ?", (owner,)), polls=False
        )

    def members(self) -> list[Member]:
        """Every process seen, newest heartbeat first per node."""
        return self.db.records(
            Member,
            f"SELECT owner, node, role, version, started_at, heartbeat_at, "
            f"{self.now} - heartbeat_at AS age, epoch FROM members "
            "ORDER BY node, heartbeat_at DESC",
        )

    def forget_members(self, silent_for: float) -> int:
        """Drop processes whose heartbeat stopped `silent_for` seconds ago."""
        return self.db.write(
            lambda c: (
                c.execute(
                    f"DELETE FROM members WHERE heartbeat_at < {self.now} - ?", (silent_for,)
                ).rowcount
            ),
            polls=False,
        )


class Fenced(Database):
    """A database whose every write first checks the stager's lease (see
    Leases.check); reads pass through. What the leading stager writes with."""

    def __init__(self, inner: Database, leases: Leases, holder: str, epoch: int) -> None:
        self.inner, self.leases, self.holder, self.epoch = inner, leases, holder, epoch
        self.engine = inner.engine
        self.lock_rows, self.lock_row = inner.lock_rows, inner.lock_row
        self.share_row, self.now_sql = inner.share_row, inner.now_sql
        self.in_list = inner.in_list

    def listed(self, values: Iterable[str]) -> object:
        return self.inner.listed(values)

    def write(self, work: Callable[[Tx], T], *, polls: bool = True) -> T:
        def fenced(c: Tx) -> T:
            self.leases.check(c, self.holder, self.epoch)
            return work(c)

        return self.inner.write(fenced, polls=polls)

    def read(self, work: Callable[[Tx], T]) -> T:
        return self.inner.read(work)

    def close(self) -> None:
        """The inner database belongs to its opener."""

    def describe(self) -> str:
        return self.inner.describe()
