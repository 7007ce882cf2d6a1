"""Many processes on one store at once: do claims and enqueues stay exact?

Two races, on each engine (SQLite under a temporary STATE_DIR, and a
throwaway PostgreSQL cluster with its durable defaults):

- claim: `--files` files queued over 40 tapes; `--procs` processes claim
  batches of 50 for `--seconds`, each finishing its batch at once with
  every file queued again (so the queue never drains and every file is
  claimed over and over). Each claim is checked against the store (the
  batch holds exactly the files it was given) and, afterwards, every file's
  claim-to-finish intervals across all processes are checked for overlap:
  a file in two batches at once is a failure.
- enqueue: `--procs` processes request the same `--enqueue-files` files at
  once, each in its own shuffled order, each as its own Globus task. One
  record per file and one requester per (file, task) must remain, and the
  tallies must agree.

    python bench/store_races.py [--procs 8] [--seconds 30] [--engines sqlite postgresql]

Leaves out: the web tier (bench/api_load.py and bench/pg_load.py drive it),
other hosts (one machine: the processes share its two cores), and a
network between the service and PostgreSQL (loopback).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections import defaultdict

from harness import pgcluster

from ltfsee_globus.config import Settings
from ltfsee_globus.store import QUEUED, Update, open_store

BATCH = 50


def _open(url: str, state: str):
    return open_store(Settings(STATE_DIR=state, STORE_URL=url))


def claimer(url: str, state: str, seconds: float, start: float, out) -> None:
    store = _open(url, state)
    log, conflicts = [], 0
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < start + seconds:
        got = store.queue.claim("lib1", BATCH)
        t_claim = time.time()
        if got is None:
            continue
        batch_id, paths = got
        held = store.queue.batch_files(batch_id)
        conflicts += set(held) != set(paths)
        t_finish = time.time()
        store.queue.finish_batch(
            batch_id,
            outcome="partial",
            detail="",
            eeadm_task_id=None,
            updates=[Update(p, QUEUED, last_error="again") for p in paths],
        )
        log.append((batch_id, t_claim, t_finish, paths))
    store.close()
    out.put((log, conflicts))


def enqueuer(url: str, state: str, paths: list[str], task: str, start: float, out) -> None:
    store = _open(url, state)
    order = list(paths)
    random.Random(task).shuffle(order)
    while time.time() < start:
        time.sleep(0.001)
    answers = [store.polls.request(p, "lib1", "globus", task) for p in order]
    store.close()
    out.put(answers)


def run(target, args_for, n: int) -> list:
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=target, args=(*args_for(i), out)) for i in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return results


def claim_race(url: str, state: str, files: int, procs: int, seconds: float) -> dict:
    store = _open(url, state)
    for i in range(files):
        store.polls.request(f"/gpfs/race/f{i:06d}", "lib1", "globus", "fill", tape=f"T{i % 40}")
    store.close()
    start = time.time() + 2
    results = run(claimer, lambda i: (url, state, seconds, start), procs)
    intervals: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    conflicts = sum(c for _, c in results)
    batches = 0
    for log, _ in results:
        batches += len(log)
        for batch_id, t0, t1, paths in log:
            for p in paths:
                intervals[p].append((t0, t1, batch_id))
    overlapping = 0
    for spans in intervals.values():
        spans.sort()
        overlapping += sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    return {
        "batches": batches,
        "claims_per_s": round(batches / seconds, 1),
        "file_claims": sum(len(s) for s in intervals.values()),
        "files_in_two_batches_at_once": overlapping,
        "claims_not_matching_the_store": conflicts,
    }


def enqueue_race(url: str, state: str, files: int, procs: int) -> dict:
    paths = [f"/gpfs/same/f{i:05d}" for i in range(files)]
    start = time.time() + 2
    t = time.monotonic()
    answers = run(enqueuer, lambda i: (url, state, paths, f"task{i}", start), procs)
    took = time.monotonic() - t - 2
    store = _open(url, state)
    counts = store.ops.counts()
    per_task = {
        f"task{i}": len(store.ops.files(task=f"task{i}", limit=files * 2)) for i in range(procs)
    }
    store.close()
    return {
        "requests": files * procs,
        "seconds": round(took, 1),
        "records": counts.files[QUEUED],
        "duplicate_records": counts.files[QUEUED] - files,
        "tally_queued_total": counts.totals["queued"],
        "requesters_per_task": sorted(set(per_task.values())),
        "answers": sorted({a for answer in answers for a in answer}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--files", type=int, default=20_000, help="queued for the claim race")
    ap.add_argument("--enqueue-files", type=int, default=1000)
    ap.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    args = ap.parse_args(argv)
    rows = {}
    cluster = pgcluster.start(durable=True) if "postgresql" in args.engines else None
    try:
        for engine in args.engines:
            for race in ("claim", "enqueue"):
                with tempfile.TemporaryDirectory(prefix="races-") as state:
                    url = "" if engine == "sqlite" else cluster.create_database(race)
                    if race == "claim":
                        r = claim_race(url, state, args.files, args.procs, args.seconds)
                    else:
                        r = enqueue_race(url, state, args.enqueue_files, args.procs)
                rows[f"{engine} {race}"] = r
                print(engine, race, json.dumps(r), flush=True)
    finally:
        if cluster:
            cluster.destroy()
    bad = [
        k
        for k, r in rows.items()
        if r.get("files_in_two_batches_at_once")
        or r.get("claims_not_matching_the_store")
        or r.get("duplicate_records")
        or r.get("requesters_per_task", [args.enqueue_files]) != [args.enqueue_files]
    ]
    print("\n| engine | race | figures |\n|---|---|---|")
    for k, r in rows.items():
        engine, race = k.split()
        print(f"| {engine} | {race} | {', '.join(f'{a}: {b}' for a, b in r.items())} |")
    print("all exact" if not bad else f"FAILED: {bad}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
