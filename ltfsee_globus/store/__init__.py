"""The durable store: the only place state lives, on one of two engines.

    store = open_store(settings)        # STORE_URL unset: SQLite under STATE_DIR
    store.polls.lookup(path)            # what a Globus poll needs
    store.queue.claim(library, 5000)    # what the stager needs
    store.prefetch / store.requests / store.tapes / store.ops
    store.leases                        # who leads the stagers, who is there

Each role is one class over a `Database` (db.py): the role modules hold the
SQL, written once for both engines; sqlite.py and postgres.py hold what
differs (connections, transactions, retries, locking, migrations). Every
operation is one short transaction, so anything the API accepted survives
a crash of any process, and (PostgreSQL) of any node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import STORE_FILE, Settings
from .db import Database, StoreUnavailable
from .files import Polls, Tapes
from .leases import LEADER, STANDBY, Fenced, Lease, LeaseLost, Leases, Member
from .operators import Operators
from .prefetch import Prefetch
from .queue import Queue
from .records import (
    ACTIVE,
    DONE,
    FAILED,
    FINAL,
    QUEUED,
    RECALLING,
    Batch,
    FileRecord,
    RequestFile,
    StageRequest,
    Update,
)
from .requests import Requests
from .sqlite import SqliteDatabase

__all__ = [
    "ACTIVE",
    "DONE",
    "FAILED",
    "FINAL",
    "LEADER",
    "QUEUED",
    "RECALLING",
    "STANDBY",
    "STORE_FILE",
    "Batch",
    "FileRecord",
    "Lease",
    "LeaseLost",
    "Member",
    "RequestFile",
    "StageRequest",
    "Store",
    "StoreUnavailable",
    "Update",
    "open_store",
]


@dataclass(frozen=True)
class Store:
    """The store's roles over one database."""

    db: Database
    clock: Callable[[], float]
    polls: Polls
    tapes: Tapes
    queue: Queue
    prefetch: Prefetch
    requests: Requests
    ops: Operators
    leases: Leases

    @classmethod
    def over(cls, db: Database, clock: Callable[[], float] = time.time) -> Store:
        return cls(
            db=db,
            clock=clock,
            polls=Polls(db, clock),
            tapes=Tapes(db),
            queue=Queue(db, clock),
            prefetch=Prefetch(db, clock),
            requests=Requests(db, clock),
            ops=Operators(db, clock),
            leases=Leases(db),
        )

    def fenced(self, holder: str, epoch: int) -> Store:
        """The same store, every write checked against the stager lease that
        `holder` took at `epoch` (LeaseLost once it is no longer theirs)."""
        return Store.over(Fenced(self.db, self.leases, holder, epoch), self.clock)

    @property
    def engine(self) -> str:
        return self.db.engine

    def describe(self) -> str:
        """Which database this is, for people (never a password)."""
        return self.db.describe()

    def close(self) -> None:
        self.db.close()


def open_store(settings: Settings, clock: Callable[[], float] = time.time) -> Store:
    """The store STORE_URL names (SQLite under STATE_DIR when unset), its
    schema brought up to date. StoreUnavailable when it cannot be reached."""
    if not settings.STORE_URL:
        return Store.over(SqliteDatabase(settings.state_dir / STORE_FILE), clock)
    from .postgres import PostgresDatabase  # psycopg is loaded only when used

    return Store.over(PostgresDatabase(settings.STORE_URL, pool_size=settings.store_pool), clock)
