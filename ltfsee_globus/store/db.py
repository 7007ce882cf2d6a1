"""What the role modules run SQL through, whichever engine is underneath.

The role modules (files, queue, prefetch, requests, operators) write their SQL
once, in the dialect both engines speak (`?` placeholders, `ON CONFLICT`,
`RETURNING`, `CAST(x AS BIGINT)`, TRUE/FALSE), and run it through a `Tx`. An
engine (sqlite.py, postgres.py) supplies the connections, the transactions
and their retries, the translation of placeholders, and the few fragments
that differ (`lock_rows`, `in_list`).
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from importlib.resources import files
from typing import Any, Protocol, TypeVar

from .records import from_row

T = TypeVar("T")
R = TypeVar("R")


class StoreUnavailable(Exception):
    """The store cannot be used now: the database is down or unreachable,
    STATE_DIR is full or read-only, an I/O error, or locked too long. Nothing
    of the failed transaction was kept; the same call works again once the
    cause is gone (the web tier answers 503 with Retry-After)."""


def process_owner() -> str:
    """This process, as rows that belong to one process name it: host:pid
    (a pid alone is not unique once several hosts share a database)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Cursor(Protocol):
    rowcount: int
    description: Any

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(ABC):
    """One connection inside one transaction (or one autocommit read)."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    @abstractmethod
    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> int:
        """Run `sql` once per parameter tuple; the rows changed in all."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        row = self.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return [tuple(r) for r in self.execute(sql, params).fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def mappings(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        """Rows as column name -> value (an engine may do it faster)."""
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def records(self, cls: type[R], sql: str, params: Sequence[Any] = ()) -> list[R]:
        """Rows as records of `cls`, by column name."""
        return [from_row(cls, row) for row in self.mappings(sql, params)]

    def record(self, cls: type[R], sql: str, params: Sequence[Any] = ()) -> R | None:
        found = self.records(cls, sql, params)
        return found[0] if found else None


class Database(ABC):
    """An engine: transactions with the right isolation and retries, and reads."""

    #: "sqlite" or "postgresql"
    engine: str
    #: appended to a SELECT whose rows the transaction will change and that a
    #: concurrent transaction must not take too (a claim): row locks where the
    #: engine has them; SQLite's one writer at a time makes it "" there
    lock_rows: str
    #: the same, waiting for a row another transaction holds instead of skipping it
    lock_row: str
    #: appended to a SELECT of a row that must not change until the commit
    #: (the fence's lease row), though other readers may share it
    share_row: str
    #: the database's clock in seconds since the epoch, as an SQL expression:
    #: what leases are timed by (one clock for every node)
    now_sql: str
    #: `x {in_list}` is true when x is one of a list passed as one parameter,
    #: `listed(values)`: one statement however long the list
    in_list: str

    @abstractmethod
    def listed(self, values: Iterable[str]) -> object:
        """`values` as the one parameter of `in_list`."""

    @abstractmethod
    def write(self, work: Callable[[Tx], T], *, polls: bool = True) -> T:
        """Run `work` in one write transaction and commit; StoreUnavailable when
        the store cannot take it. `work` may run more than once (an engine
        retries a transaction that lost a race), so it must only touch the
        database. `polls=False` says `work` changes nothing a poll's lookup
        reads (neither `files` nor `requesters`: the lease, the node table,
        eeadm's health), so the answers polls keep (`remembered`) stay."""

    @abstractmethod
    def read(self, work: Callable[[Tx], T]) -> T:
        """Run `work` on a connection that sees committed data."""

    @abstractmethod
    def close(self) -> None: ...

    def remembered(self, path: str, key: Hashable, read: Callable[[], T]) -> T:
        """`read()`, a read of `path`'s rows, or what it gave before while
        those rows have not changed since. The engines keep such reads
        (postgres.py until a change notice names the file, sqlite.py until
        the next commit); here, and so in the stager's fenced view, every
        call reads."""
        return read()

    @abstractmethod
    def describe(self) -> str:
        """Which database this is, for people (never a password)."""

    # -- one-statement reads --------------------------------------------------
    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.read(lambda c: c.one(sql, params))

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.read(lambda c: c.all(sql, params))

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.read(lambda c: c.scalar(sql, params))

    def records(self, cls: type[R], sql: str, params: Sequence[Any] = ()) -> list[R]:
        return self.read(lambda c: c.records(cls, sql, params))

    def record(self, cls: type[R], sql: str, params: Sequence[Any] = ()) -> R | None:
        return self.read(lambda c: c.record(cls, sql, params))


def migration_scripts(engine: str) -> list[str]:
    """The schema of an engine, one script per version in migrations/ENGINE/
    (NNNN_name.sql), oldest first. Each engine has its own history."""
    found = sorted(
        (
            f
            for f in files("ltfsee_globus.store").joinpath("migrations", engine).iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )
    return [f.read_text(encoding="utf-8") for f in found]
