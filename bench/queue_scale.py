"""Do the stager's reads grow with the queue? A claim and a pass, 1,000 to 1,000,000 queued.

For each engine and queue size: a fresh store (SQLite under a temporary
STATE_DIR, or a database of a throwaway PostgreSQL cluster) with N files
queued in one library over 200 tapes (10 MB each, three requesters), then

- claim: `store.queue.claim(library, BATCH_MAX_FILES, tape=T,
  max_bytes=RECALL_MAX_BYTES)` of a different tape each time, shipped
  defaults (5,000 files and 200 GB: the files' bound comes first), so
  each claim takes a tape's whole share of the queue at 1,000,000; and a
  claim of 5 files of another tape (the same work at either size: what the
  queue's size alone adds);
- pass: `Stager.step()` of a stager with the drives known (four, all busy
  with running recalls, so a pass starts nothing and only reads: the queue
  summary, the due rule, the scheduler, the retry time, the running
  batches), prefetch off, no request files to look at.

    python bench/queue_scale.py                      # both engines, 1,000 and 1,000,000
    python bench/queue_scale.py --engines sqlite --sizes 1000 100000 --repeat 5

The files are loaded by SQL (PostgreSQL: triggers off, the summary and the
tallies set once after, the end state the triggers keep); that load is not
timed. Leaves out: a claim's eeadm recall (the stager starts it on a thread
after the claim), polls writing at the same time, a network between the
stager and PostgreSQL, VACUUM beyond what autovacuum does.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import pgcluster

from ltfsee_globus.config import STORE_FILE, load_settings
from ltfsee_globus.eeadm import Eeadm
from ltfsee_globus.stager import Stager
from ltfsee_globus.store import open_store

TAPES = 200
SIZE = 10 * 10**6
LIBRARY = "lib1"
#: The load, for both engines: N queued files, tape i % 200, requester i % 3.
FILL = (
    "INSERT INTO files (path, library, status, size, tape, queued_at, created_at, updated_at, "
    "owner) SELECT {path}, 'lib1', 'queued', {size}, {tape}, {t} + i * 0.001, {t}, {t}, "
    "{owner} FROM {series}"
)
SUMMARY = (
    "INSERT INTO queue_tapes (library, tape, owner, priority, files, bytes, newest) "
    "SELECT library, coalesce(tape, ''), owner, max(priority), count(*), "
    "sum(coalesce(size, 0)), max(queued_at) FROM files WHERE status = 'queued' GROUP BY 1, 2, 3"
)


def tape(i: int) -> str:
    return f"T{i:05d}L9@pool1@{LIBRARY}"


def fill_sqlite(state: Path, n: int, t: float) -> None:
    open_store(load_settings(settings(state, ""))).close()  # the schema
    conn = sqlite3.connect(state / STORE_FILE, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    values = FILL.format(
        path="printf('/gpfs/q/d%05d/f%09d', i / 1000, i)",
        size=SIZE,
        tape=f"printf('T%05dL9@pool1@{LIBRARY}', i % {TAPES})",
        t="?2",
        owner="'globus:task' || (i % 3)",
        series="c",
    )
    series = "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < ?1 - 1) "
    conn.execute(series + values, (n, t))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def fill_postgres(cluster: pgcluster.Cluster, name: str, state: Path, n: int, t: float) -> str:
    cluster.create_database(name)
    url = cluster.url(name)
    open_store(load_settings(settings(state, url))).close()  # the schema
    sql = cluster.sql
    sql("ALTER TABLE files DISABLE TRIGGER USER", name)
    sql(
        FILL.format(
            path="format('/gpfs/q/d%%s/f%%s', lpad((i / 1000)::text, 5, '0'), "
            "lpad(i::text, 9, '0'))",
            size=SIZE,
            tape=f"format('T%%sL9@pool1@{LIBRARY}', lpad((i %% {TAPES})::text, 5, '0'))",
            t="%(t)s",
            owner="'globus:task' || (i %% 3)",
            series="generate_series(0, %(n)s - 1) i",
        ),
        name,
        {"t": t, "n": n},
    )
    sql("ALTER TABLE files ENABLE TRIGGER USER", name)
    sql(SUMMARY, name)
    sql("SELECT tally('files:queued', %s)", name, (n,))
    sql("VACUUM ANALYZE", name)
    sql("CHECKPOINT")
    return url


def settings(state: Path, url: str, command: str = "true") -> dict:
    return {
        "AUTH_KEY": "k",
        "STATE_DIR": str(state),
        "STORE_URL": url,
        "EEADM_COMMAND": command,
        "PREFETCH": "false",
        "TAPE_DRIVES": "4",
        "PROGRESS_INTERVAL": "1e9",
        "MANAGED_ROOTS": "/gpfs",
        "STAGER_LEASE": "3600",
    }


def measure(state: Path, url: str, repeat: int, t: float) -> dict:
    s = load_settings(settings(state, url))
    store = open_store(s, clock=lambda: t + 10**6)
    try:
        small = []  # five files of a tape: what the queue's size alone costs a claim
        for k in range(repeat):
            started = time.perf_counter()
            got = store.queue.claim(LIBRARY, 5, tape=tape(TAPES - 1 - k), started_by=("x", 1))
            small.append(time.perf_counter() - started)
            assert got is not None and len(got[1]) == 5
        claims = []
        for k in range(repeat):
            started = time.perf_counter()
            got = store.queue.claim(
                LIBRARY,
                s.BATCH_MAX_FILES,
                tape=tape(k),
                started_by=("elsewhere", 1),  # another node's: this stager waits for its task
                max_bytes=s.RECALL_MAX_BYTES,
            )
            claims.append(time.perf_counter() - started)
            assert got is not None
        # the drives busy: the claims above are four of the running recalls (the
        # small ones too: eight recalls, eight tapes read, four drives)
        stager = Stager(s, store, Eeadm(s.EEADM_COMMAND, 10), clock=lambda: t + 10**6)
        stager.step()  # the first pass runs the progress check and prunes
        passes = []
        for _ in range(repeat):
            started = time.perf_counter()
            stager.step()
            passes.append(time.perf_counter() - started)
        running = store.queue.running_batches()
        assert len(running) == 2 * repeat, "a pass started a recall"
        taken = sum(b.n_files for b in running) - 5 * repeat
        return {"claim": claims, "small": small, "pass": passes, "claimed_files": taken // repeat}
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=4, help="claims and passes timed (>= 4)")
    args = ap.parse_args(argv)
    args.repeat = max(args.repeat, 4)  # four claims make the four drives busy
    t = time.time()
    cluster = pgcluster.start(durable=True) if "postgresql" in args.engines else None
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="queue-scale-") as tmp:
            for engine in args.engines:
                for n in args.sizes:
                    state = Path(tmp) / f"{engine}-{n}"
                    state.mkdir()
                    loaded = time.monotonic()
                    if engine == "sqlite":
                        fill_sqlite(state, n, t)
                        url = ""
                    else:
                        assert cluster is not None
                        url = fill_postgres(cluster, f"q{n}", state, n, t)
                    loaded = time.monotonic() - loaded
                    r = measure(state, url, args.repeat, t)
                    row = {
                        "engine": engine,
                        "queued": n,
                        "claim_ms": 1000 * statistics.median(r["claim"]),
                        "claim_max_ms": 1000 * max(r["claim"]),
                        "small_ms": 1000 * statistics.median(r["small"]),
                        "pass_ms": 1000 * statistics.median(r["pass"]),
                        "pass_max_ms": 1000 * max(r["pass"]),
                        "files": r["claimed_files"],
                    }
                    rows.append(row)
                    print(
                        f"{engine} {n:>9,} queued (loaded in {loaded:.0f} s): claim of "
                        f"{row['files']} files {row['claim_ms']:.1f} ms (max "
                        f"{row['claim_max_ms']:.1f}), of 5 files {row['small_ms']:.1f} ms, "
                        f"pass {row['pass_ms']:.1f} ms "
                        f"(max {row['pass_max_ms']:.1f})",
                        flush=True,
                    )
    finally:
        if cluster is not None:
            cluster.destroy()
    print(
        "\n| engine | queued | files a claim takes | claim (median, max) | claim of 5 files "
        "| pass (median, max) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['queued']:,} | {r['files']} | {r['claim_ms']:.1f} ms, "
            f"{r['claim_max_ms']:.1f} ms | {r['small_ms']:.1f} ms | {r['pass_ms']:.1f} ms, "
            f"{r['pass_max_ms']:.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
