"""The shared engine: PostgreSQL, for a site that runs several nodes.

psycopg 3 with a psycopg-pool connection pool per process. STORE_URL is any
libpq connection string (`postgresql://…` or `key=value …`), so TLS
(`sslmode`, `sslrootcert`), `PGPASSFILE` and the `PG*` environment variables
work as they do for psql.

Concurrency is explicit, not SQLite's one writer:

- every transaction runs at READ COMMITTED; none reads a row and writes on
  what it read without holding that row: a claim reads the queued files
  `FOR UPDATE SKIP LOCKED` (two claims at once never take one file), enqueue
  is one `INSERT … ON CONFLICT DO UPDATE … WHERE` (two nodes enqueueing one
  file at once give one record), and a cancel locks the file's row before it
  counts who still wants it;
- a transaction that loses a race anyway (a deadlock, a serialization
  failure) is rolled back and run again, a few times, with jitter;
- a connection the server dropped (a restart, `pg_terminate_backend`) is
  replaced and the transaction run again when it failed before its COMMIT;
  otherwise the caller gets StoreUnavailable (the web tier: 503 with
  Retry-After) and the pool reconnects by itself once the server is back;
- the server ends a session left idle inside a transaction (a process
  frozen mid-transaction), so its locks never hold off the others;
- the tallies the status page and /metrics read are kept by triggers in
  per-connection shards, so no row is one that every writer updates;
- a poll's read is kept in memory until the database says the file's rows
  changed (postgres_changes.py: LISTEN/NOTIFY): the hot poll makes no round trip;
- migrations (migrations/postgresql/, `schema_version`) run in one
  transaction under an advisory lock, so processes starting at once apply
  each exactly once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..conninfo import describe, given, redact
from .db import Cursor, Database, StoreUnavailable, Tx, migration_scripts, process_owner
from .postgres_changes import ChangeCache

T = TypeVar("T")
log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key that serialises migrations ("ltfsee" in ASCII).
MIGRATION_LOCK = 0x6C7466736565
#: How often a transaction that lost a race (deadlock, serialization failure) is tried.
RACE_ATTEMPTS = 8
#: How often a transaction whose connection the server dropped is tried.
DROP_ATTEMPTS = 3
#: Seconds a request waits for a connection; once one could not be had (the
#: server is away), FAST_WAIT for the next DOWN_HOLD seconds, so that polls
#: get their 503 at once instead of queueing behind the outage.
WAIT, FAST_WAIT, DOWN_HOLD = 5.0, 0.5, 5.0
#: How long the pool keeps one chain of reconnection attempts (1, 2, 4 s …
#: apart) before the next request starts a fresh one: this bounds the time
#: from the server's return to the first connection.
RECONNECT_CHAIN = 10.0
#: Connection defaults where STORE_URL says nothing: give up connecting after
#: 5 s, and find a dead server or host through TCP keepalives within ~20 s.
#: A session idle inside a transaction for IDLE_IN_TRANSACTION seconds is
#: ended by the server: a process frozen mid-transaction (SIGSTOP, a VM
#: paused) would otherwise hold its row locks, the fence's share lock on the
#: lease among them, and no standby could take over until it woke.
IDLE_IN_TRANSACTION = 5.0
CONNECT_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "options": f"-c idle_in_transaction_session_timeout={int(IDLE_IN_TRANSACTION * 1000)}",
}


#: What a connection the server dropped raises (the idle-in-transaction
#: timeout's error is of SQL state class 25, not an OperationalError).
DROPPED = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.IdleInTransactionSessionTimeout,
)


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """Our `?` placeholders in psycopg's style (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgTx(Tx):
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if not params:
            return self.conn.execute(sql)  # type: ignore[return-value]
        return self.conn.execute(_pg_sql(sql), params)  # type: ignore[return-value]

    def mappings(self, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_pg_sql(sql) if params else sql, params or None)
            return cur.fetchall()

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> int:
        seq = list(params)
        if not seq:
            return 0
        with self.conn.cursor() as cur:
            cur.executemany(_pg_sql(sql), seq)
            return cur.rowcount


def _broken(conn: psycopg.Connection | None) -> bool:
    return conn is None or conn.closed or conn.broken


class PostgresDatabase(Database):
    """A pool of connections to the site's PostgreSQL database."""

    engine = "postgresql"
    lock_rows = " FOR UPDATE SKIP LOCKED"
    lock_row = " FOR UPDATE"
    share_row = " FOR SHARE"
    now_sql = "CAST(extract(epoch FROM clock_timestamp()) AS double precision)"
    in_list = "= ANY(?)"

    @staticmethod
    def listed(values: Iterable[str]) -> object:
        return list(values)

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._down_until = 0.0
        named = given(url)
        defaults = {**CONNECT_DEFAULTS, "application_name": f"ltfsee-globus {process_owner()}"}
        kwargs: dict[str, Any] = {k: v for k, v in defaults.items() if k not in named}
        self.changes = ChangeCache(lambda: psycopg.connect(url, autocommit=True, **kwargs))
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 1),
            kwargs={"autocommit": True, **kwargs},
            timeout=WAIT,
            reconnect_timeout=RECONNECT_CHAIN,
            open=False,
            name="ltfsee-store",
        )
        try:
            self._pool.open(wait=True, timeout=WAIT)
        except psycopg.OperationalError as exc:
            self._pool.close()
            raise self._unavailable(exc) from None
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def describe(self) -> str:
        return describe(self.url)

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(
            f"the database cannot be used ({self.describe()}): {redact(first, self.url)}"
        )

    def _connection(self) -> AbstractContextManager[psycopg.Connection]:
        """A connection from the pool (PoolTimeout when none can be had soon)."""
        away = time.monotonic() < self._down_until
        return self._pool.connection(timeout=FAST_WAIT if away else WAIT)

    def _away(self, exc: Exception) -> StoreUnavailable:
        self._down_until = time.monotonic() + DOWN_HOLD
        return self._unavailable(exc)

    def _dropped(self, exc: Exception) -> None:
        """The server dropped a connection (a restart, pg_terminate_backend):
        the others the pool holds are likely gone too, so check them all
        before the transaction runs again."""
        log.info("store: a dropped connection (%s); checking the pool", type(exc).__name__)
        self._pool.check()

    def write(self, work: Callable[[Tx], T], *, polls: bool = True) -> T:
        race = drop = 0
        while True:
            conn: psycopg.Connection | None = None
            committing = False
            try:
                with self._connection() as conn:
                    with conn.transaction():
                        result = work(_PgTx(conn))
                        committing = True
                    if polls:  # read-your-writes: before our own notice is back
                        self.changes.drop()
                    return result
            except psycopg.errors.TransactionRollback as exc:
                race += 1
                if race >= RACE_ATTEMPTS:  # the client asks again later (503)
                    raise self._unavailable(exc) from None
                time.sleep(random.uniform(0, 0.01 * 2**race))
            except PoolTimeout as exc:
                raise self._away(exc) from None
            except DROPPED as exc:
                drop += 1
                if committing or not _broken(conn) or drop >= DROP_ATTEMPTS:
                    raise self._unavailable(exc) from None
                self._dropped(exc)

    def read(self, work: Callable[[Tx], T]) -> T:
        drop = 0
        while True:
            conn: psycopg.Connection | None = None
            try:
                with self._connection() as conn:
                    return work(_PgTx(conn))
            except PoolTimeout as exc:
                raise self._away(exc) from None
            except DROPPED as exc:
                drop += 1
                if not _broken(conn) or drop >= DROP_ATTEMPTS:
                    raise self._unavailable(exc) from None
                self._dropped(exc)

    def remembered(self, path: str, key: Hashable, read: Callable[[], T]) -> T:
        return self.changes.get(path, key, read)

    def _migrate(self) -> None:
        """Bring the schema to the newest version under an advisory lock, so
        that processes starting at the same moment apply each script once."""
        scripts = migration_scripts("postgresql")

        def migrate(c: Tx) -> None:
            c.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            version = c.scalar("SELECT coalesce(max(version), 0) FROM schema_version")
            for n, script in enumerate(scripts[version:], start=version + 1):
                c.execute(script)
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (n,))
                log.info("store: schema migrated to version %d", n)

        self.write(migrate)

    def close(self) -> None:
        self.changes.close()
        self._pool.close()
