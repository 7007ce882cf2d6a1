"""A year of data: does a big store slow the service, and does retention stop its growth?

Part 1 (cost): the real service (gunicorn, embedded stager, shipped
defaults) over an empty store and over one pre-filled with `--records`
file records finished a day ago (each with its requester), on a simulated library
whose recalls never end. Measured on each: polls of a file whose recall is
in flight (answered from the store) from 8 threads for `--seconds`, and 300
sequential GETs of /metrics and /api/status (ROUTE_GETS).

Part 2 (growth): the pre-filled store's records are then dated 30 days
back, so the shipped RETENTION_DAYS (14) applies to them. The service runs while this
script adds finished records at `--rate` per second straight through the
store's API (as recalls would), for `--minutes`, once with the shipped
retention and once with RETENTION_DAYS=36500 (kept 100 years); the store's
size (database + WAL) is sampled every 10 s.

    python bench/bigstore.py [--records 10000000] [--seconds 10] [--minutes 3]
                             [--engine sqlite|postgresql]

With `--engine postgresql` each store is a database of a throwaway cluster
(Debian's defaults, durable) and its size is pg_database_size; the
pre-filled records are inserted with the tally triggers off and the tallies
set once after (the same end state, minutes faster).

Leaves out: VACUUM (SQLite reuses freed pages; the file never shrinks;
PostgreSQL's autovacuum runs as configured), a disk slower than this
machine's, a network between the service and PostgreSQL, and the stager's
own recalls during part 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from harness import devserver, pgcluster

from ltfsee_globus.config import STORE_FILE
from ltfsee_globus.sim.library import Layout, Library, Timing, init_library
from ltfsee_globus.store import DONE, Update

RECALL = "/api/v0.5/globus_recall/globus_recall"
KEY = "bench-key"
HDR = {"X-API-KEY": KEY}
DAY = 86400.0
#: GETs of /metrics and /api/status per store: p99 of 50 was one outlier
ROUTE_GETS = 300


class SqliteStores:
    """Stores as STATE_DIRs: STATE_DIR/ltfsee-globus.db and its WAL."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def env(self, name: str) -> dict[str, str]:
        (self.tmp / name).mkdir(exist_ok=True)
        return {"STATE_DIR": str(self.tmp / name)}

    def prefill(self, name: str, n: int, finished_at: float) -> float:
        return prefill(self.tmp / name / STORE_FILE, n, finished_at)

    def redate(self, name: str, finished_at: float) -> None:
        redate(self.tmp / name / STORE_FILE, finished_at)

    def copy(self, src: str, dst: str) -> None:
        shutil.copytree(self.tmp / src, self.tmp / dst)

    def size(self, name: str) -> int:
        return sum(p.stat().st_size for p in (self.tmp / name).glob(STORE_FILE + "*"))

    def close(self) -> None:
        pass


class PostgresStores(SqliteStores):
    """Stores as databases of one throwaway cluster (their STATE_DIRs hold the rest)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.cluster = pgcluster.start(durable=True)
        self.made: set[str] = set()

    def env(self, name: str) -> dict[str, str]:
        if name not in self.made:
            self.cluster.create_database(name)
            self.made.add(name)
        return {**super().env(name), "STORE_URL": self.cluster.url(name)}

    def prefill(self, name: str, n: int, finished_at: float) -> float:
        devserver.open_store(self.env(name)).close()  # the schema
        t = time.monotonic()
        sql = self.cluster.sql
        sql("ALTER TABLE files DISABLE TRIGGER USER", name)
        sql(
            "INSERT INTO files (path, status, attempts, requested, size, tape, queued_at, "
            "created_at, updated_at, finished_at) SELECT format('/gpfs/old/d%%s/f%%s', "
            "lpad((i / 1000)::text, 5, '0'), lpad(i::text, 9, '0')), 'done', 1, true, "
            "1000000000, 'T00001L8', %(t)s - 600, %(t)s - 600, %(t)s, %(t)s "
            "FROM generate_series(1, %(n)s) i",
            name,
            {"t": finished_at, "n": n},
        )
        sql("ALTER TABLE files ENABLE TRIGGER USER", name)
        sql(
            "INSERT INTO requesters (path, kind, ref, created_at) SELECT path, 'globus', "
            "'task-' || (substr(path, 20)::bigint / 5000), created_at FROM files",
            name,
        )
        sql("SELECT tally('files:done', %s)", name, (n,))
        sql("VACUUM ANALYZE", name)
        sql("CHECKPOINT")  # the load's dirty pages on disk before anything is timed
        return time.monotonic() - t

    def redate(self, name: str, finished_at: float) -> None:
        self.cluster.sql(
            "UPDATE files SET finished_at = %s WHERE finished_at IS NOT NULL", name, (finished_at,)
        )
        self.cluster.sql("VACUUM ANALYZE files", name)

    def copy(self, src: str, dst: str) -> None:
        self.cluster.sql(f'CREATE DATABASE "{dst}" TEMPLATE "{src}" OWNER {pgcluster.ROLE}')
        self.made.add(dst)
        super().env(dst)

    def size(self, name: str) -> int:
        return int(self.cluster.sql(f"SELECT pg_database_size('{name}')")[0][0])

    def close(self) -> None:
        self.cluster.destroy()


def prefill(db: Path, n: int, finished_at: float) -> float:
    """n done files (and their requesters), finished at `finished_at`; seconds taken."""
    devserver.open_store({"STATE_DIR": str(db.parent)}).close()  # the schema
    t = time.monotonic()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1) "
        "INSERT INTO files (path, status, attempts, requested, size, tape, queued_at, "
        "created_at, updated_at, finished_at) SELECT printf('/gpfs/old/d%05d/f%09d', i / 1000, i), "
        "'done', 1, 1, 1000000000, 'T00001L8', ?2 - 600, ?2 - 600, ?2, ?2 FROM c",
        (n, finished_at),
    )
    conn.execute(
        "INSERT INTO requesters (path, kind, ref, created_at) "
        "SELECT path, 'globus', 'task-' || (CAST(substr(path, -9) AS INTEGER) / 5000), "
        "created_at FROM files"
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the load in the database file
    conn.close()
    return time.monotonic() - t


def redate(db: Path, finished_at: float) -> None:
    """Move every finished record's date to `finished_at`."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE files SET finished_at = ? WHERE finished_at IS NOT NULL", (finished_at,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)


def library(tmp: Path) -> tuple[Path, list[str], str]:
    fs = init_library(tmp / "lib", Layout(files=300, premigrated=0, resident=0), Timing())
    migrated = Library.list_paths(tmp / "lib", "M")
    command = devserver.eeadm_wrapper(
        tmp / "eeadm",
        tmp / "lib",
        tmp / "calls.log",
        before='if [ "$1" = recall ]; then exec sleep 3600; fi\n',  # in flight for good
    )
    return fs, migrated, command[0]


def serve(tmp: Path, where: dict, fs: Path, command: str, **extra: str) -> devserver.Gunicorn:
    env = {
        "AUTH_KEY": KEY,
        "EEADM_COMMAND": command,
        "MANAGED_ROOTS": str(fs),
        "LOGLEVEL": "WARNING",
        "ACCESS_LOG": "false",
        **where,
        **extra,
    }
    log = tmp / f"gunicorn-{Path(where['STATE_DIR']).name}.log"
    return devserver.start(env, log, timeout=300)


def cost(tmp: Path, where: dict, fs: Path, migrated: list[str], command: str, secs: float) -> dict:
    server = serve(tmp, where, fs, command)
    try:
        url = server.url
        body = {"path": migrated[0], "globus_taskid": "bench"}
        assert requests.post(url + RECALL, json=body, headers=HDR, timeout=30).status_code == 201
        stop = threading.Event()
        polls: list[float] = []

        def client() -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    t = time.monotonic()
                    r = s.post(url + RECALL, json=body, headers=HDR, timeout=30)
                    polls.append(time.monotonic() - t)
                    assert r.status_code == 201, r.text

        with ThreadPoolExecutor(8) as pool:
            jobs = [pool.submit(client) for _ in range(8)]
            time.sleep(secs)
            stop.set()
            for j in jobs:
                j.result()
        out: dict = {"polls": len(polls), "poll_p50_ms": pct(polls, 0.5)}
        out["poll_p99_ms"] = pct(polls, 0.99)
        for route in ("/metrics", "/api/status"):
            times = []
            for _ in range(ROUTE_GETS):
                t = time.monotonic()
                assert requests.get(url + route, headers=HDR, timeout=30).ok
                times.append(time.monotonic() - t)
            out[f"{route}_p50_ms"] = pct(times, 0.5)
            out[f"{route}_p99_ms"] = pct(times, 0.99)
        return out
    finally:
        server.stop()
        devserver.kill_recalls(server.env)


def growth(stores, name: str, fs: Path, command: str, rate: int, minutes: float, **extra):
    """Store size every 10 s while finished records arrive at `rate` per second."""
    server = serve(stores.tmp, stores.env(name), fs, command, **extra)
    store = devserver.open_store(server.env)
    samples = [(0, stores.size(name))]
    try:
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < minutes * 60:
            tick = time.monotonic()
            paths = [f"/gpfs/new/{name}/f{n + i:09d}" for i in range(rate)]
            n += rate
            for p in paths:
                store.polls.request(p, "", "globus", "bench", size=10**9, tape="T00002L8")
            batch = store.queue.claim("", rate)
            if batch is not None:
                store.queue.finish_batch(
                    batch[0],
                    outcome="succeeded",
                    detail="",
                    eeadm_task_id=None,
                    updates=[Update(p, DONE) for p in batch[1]],
                )
            elapsed = time.monotonic() - t0
            if elapsed >= len(samples) * 10:
                samples.append((round(elapsed), stores.size(name)))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        counts = store.ops.counts().files
    finally:
        store.close()
        server.stop()
        devserver.kill_recalls(server.env)
    return {"added": n, "files_left": counts, "size_mb": [(t, s // 10**6) for t, s in samples]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--rate", type=int, default=100, help="finished records per second")
    ap.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--parts", nargs="+", choices=("cost", "growth"), default=["cost", "growth"])
    args = ap.parse_args(argv)
    result: dict = {"engine": args.engine, "records": args.records}
    with tempfile.TemporaryDirectory(prefix="bigstore-", dir="/var/tmp") as d:
        tmp = Path(d)
        stores = PostgresStores(tmp) if args.engine == "postgresql" else SqliteStores(tmp)
        try:
            fs, migrated, command = library(tmp)
            result["prefill_s"] = round(stores.prefill("full", args.records, time.time() - DAY), 1)
            result["full_size_mb"] = stores.size("full") // 10**6
            print(json.dumps(result), flush=True)
            for name in ("empty", "full") if "cost" in args.parts else ():
                result[name] = cost(tmp, stores.env(name), fs, migrated, command, args.seconds)
                print(json.dumps(result[name]), flush=True)
            if "growth" in args.parts:
                stores.redate("full", time.time() - 30 * DAY)  # now past retention
                stores.copy("full", "kept")  # the same store for part 2's other mode
                result["retention_14d"] = growth(
                    stores, "full", fs, command, args.rate, args.minutes
                )
                print(json.dumps(result["retention_14d"]), flush=True)
                result["kept_100y"] = growth(
                    stores, "kept", fs, command, args.rate, args.minutes, RETENTION_DAYS="36500"
                )
                print(json.dumps(result["kept_100y"]), flush=True)
        finally:
            stores.close()
    ok = True
    if "cost" in args.parts:
        e, f = result["empty"], result["full"]
        ratios = {k: round(f[k] / e[k], 2) for k in e if k.endswith("_ms") and e[k]}
        result["full_over_empty"] = ratios
        ok = all(ratios[k] <= 1.2 for k in ratios if "p99" in k)
    print(json.dumps(result, indent=2))
    if "growth" in args.parts:
        # from the second sample on: the first is taken before the WAL reaches its working size
        grew = [s for _, s in result["retention_14d"]["size_mb"]][1:]
        ok = ok and grew[-1] <= grew[0]
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
