"""How close can any online policy get to the oracle on random200? A model, not the service.

bench/workloads.py measures the real service. Its random200 workload (200 files picked at
random across the 2,000-file tree, shown by Globus 64 at a time in path order) stays at
1.6-2.4x the oracle with the shipped defaults. This script asks whether another way of
sending recalls to the library would do better, by replaying the same Globus client against
submission policies written in a few lines each, on the real simulator (`ltfsee_globus.sim.library`,
its scheduler, timings and layouts) driven by a manual clock instead of the wall clock:

    python bench/online_model.py                 # seeds 7 1 2 3 4, both layouts, ~3 minutes
    python bench/online_model.py --seeds 7 --layouts clustered

Policies (each sees a file when Globus first polls it, and its tape, as `file state -s` tells):
  batches c2     the service's batch rules with its shipped defaults (window, quiet,
                 max wait, RECALL_CONCURRENCY); one multi-tape recall per batch
  batches c99    the same with no bound on recalls running at once
  tape cN        one recall per tape, at most N at once: the service with TAPE_DRIVES=N.
                 A drive that finished a tape keeps it while files for it are queued,
                 else a free one takes the tape with the most queued files (the choice
                 EE makes oldest-first; it needs N = the drives the library gives us)
  ... wW         the same with Globus showing W files at a time instead of 64 (what the
                 window costs)

Generous to every policy: the service sees a file resident the instant it is read (the
real one learns it at its next progress check), its own work takes no time, and the
drives serve nobody else. Left out: Globus's transfer of each file, drive failures. The
"tree" rows queue all 2,000 files at once (what prefetch gives a whole tree) to show what
per-tape dispatch costs when N is not the drive count.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workloads import OUTSTANDING, POLL, TREE, WORKLOADS, Tree, _dirs, make_library, oracle

from ltfsee_globus.config import Settings
from ltfsee_globus.sim.library import Library

STEP = 0.5  # simulated seconds per tick
DRIVES = TREE.drives


class ManualLibrary(Library):
    """The simulated library on a clock the model moves."""

    now = 0.0

    def sim_now(self) -> float:
        return self.now


@dataclass
class Policy:
    """When and how queued files go to `eeadm recall` (one per task id in `running`)."""

    name: str
    per_tape: bool = False
    cap: int = 2
    window: float = 10.0
    quiet: float = 2.0
    max_wait: float = 60.0
    queued: dict[str, float] = field(default_factory=dict)
    newest: float = 0.0
    running: dict[int, str | None] = field(default_factory=dict)  # task id -> tape

    def due(self, now: float) -> bool:
        """The stager's batch timer (scheduling.Window)."""
        if not self.queued:
            return False
        oldest = min(self.queued.values())
        quiet = max(oldest + self.window, self.newest + self.quiet)
        return min(quiet, oldest + max(self.max_wait, self.window)) <= now

    def step(self, lib: ManualLibrary, tape: dict[str, str], now: float) -> None:
        finished = {
            r[0] for r in lib.conn.execute("SELECT id FROM tasks WHERE finished IS NOT NULL")
        }
        freed = [self.running.pop(t) for t in list(self.running) if t in finished]
        if self.per_tape:  # the drive that read it still holds it: files for it go at once
            for t in freed:
                mine = [p for p in self.queued if tape[p] == t]
                if mine and len(self.running) < self.cap:
                    self.submit(lib, mine, t)
        if not self.due(now):
            return
        while self.queued and len(self.running) < self.cap:
            if not self.per_tape:
                self.submit(lib, list(self.queued), None)
                continue
            busy = set(self.running.values())
            by_tape: dict[str, list[str]] = {}
            for p in self.queued:
                if tape[p] not in busy:
                    by_tape.setdefault(tape[p], []).append(p)
            if not by_tape:
                return
            chosen = max(
                by_tape, key=lambda t: (len(by_tape[t]), -min(self.queued[p] for p in by_tape[t]))
            )
            self.submit(lib, by_tape[chosen], chosen)

    def submit(self, lib: ManualLibrary, paths: list[str], tape: str | None) -> None:
        self.running[lib.submit_recall(paths, None, True)] = tape
        for p in paths:
            del self.queued[p]


def globus(lib: ManualLibrary, policy: Policy, tape: dict[str, str], asked: list[str], shown: int):
    """One Globus task (bench/workloads.py's play_globus on the model clock); returns
    (makespan, mounts)."""
    pending = list(reversed(asked))
    due: dict[str, float] = {}
    seen: set[str] = set()
    while pending or due:
        while pending and len(due) < shown:
            due[pending.pop()] = lib.now
        with lib.locked():
            pass  # advance the schedule to now
        for path in [p for p, t in due.items() if t <= lib.now]:
            if is_resident(lib.conn, path):
                del due[path]
                continue
            if path not in seen:
                seen.add(path)
                policy.queued[path] = policy.newest = lib.now
            due[path] = lib.now + POLL
        policy.step(lib, tape, lib.now)
        lib.now += STEP
    return read_times(lib, asked), mounts(lib)


def all_at_once(lib: ManualLibrary, policy: Policy, tape: dict[str, str], asked: list[str]):
    """Every file queued at 0: what prefetch hands the stager for a whole tree."""
    policy.queued = dict.fromkeys(asked, 0.0)
    while policy.queued or policy.running:
        with lib.locked():
            pass
        policy.step(lib, tape, lib.now)
        lib.now += STEP
    return read_times(lib, asked), mounts(lib)


def is_resident(conn: sqlite3.Connection, path: str) -> bool:
    return conn.execute("SELECT state FROM files WHERE path = ?", (path,)).fetchone()[0] == "R"


def read_times(lib: Library, asked: list[str]) -> float:
    """When the last asked file was read."""
    done = dict(
        lib.conn.execute("SELECT path, max(done_at) FROM task_files WHERE ok = 1 GROUP BY path")
    )
    return max(done[p] for p in asked)


def mounts(lib: Library) -> int:
    row = lib.conn.execute("SELECT value FROM counters WHERE name = 'mounts'").fetchone()
    return int(row[0]) if row else 0


def policies() -> list[tuple[str, Callable[[], Policy], int]]:
    """(name, a fresh policy, files Globus shows); the batch rules are the service's defaults."""
    s = Settings()
    rules = {"window": s.BATCH_WINDOW, "quiet": s.BATCH_QUIET, "max_wait": s.BATCH_MAX_WAIT}

    def batches(cap: int) -> tuple[str, Callable[[], Policy], int]:
        name = f"batches c{cap}"
        return name, lambda: Policy(name, cap=cap, **rules), OUTSTANDING

    def tapes(cap: int, shown: int = OUTSTANDING) -> tuple[str, Callable[[], Policy], int]:
        name = f"tape c{cap}" + ("" if shown == OUTSTANDING else f" w{shown}")
        return name, lambda: Policy(name, per_tape=True, cap=cap, **rules), shown

    return [
        batches(s.RECALL_CONCURRENCY),
        batches(99),
        *(tapes(cap) for cap in (DRIVES // 2, DRIVES, DRIVES * 2)),
        tapes(DRIVES, 128),
        tapes(DRIVES, 200),
    ]


def run_one(where: Path, tree: Tree, layout: str, seed: int, make: Callable[[], Policy], shown):
    """One replay on a fresh library; returns (makespan, mounts)."""
    files = make_library(where, tree, layout, seed, 1.0)
    lib = ManualLibrary(where)
    try:
        tape = dict(lib.conn.execute("SELECT path, tape FROM files WHERE tape IS NOT NULL"))
        policy = make()
        if shown is None:
            return all_at_once(lib, policy, tape, [str(where / f) for f in files])
        [client] = random200().pick(_dirs([str(where / f) for f in files]), random.Random(seed))
        return globus(lib, policy, tape, client.files, shown)
    finally:
        lib.close()


def random200():
    return next(w for w in WORKLOADS if w.name == "random200")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 1, 2, 3, 4])
    ap.add_argument("--layouts", nargs="+", default=["clustered", "random"])
    args = ap.parse_args(argv)
    print("| layout | policy | shown | makespan / oracle (mean, min-max over seeds) | mounts |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="online-model-") as tmp:
        n = 0

        def fresh() -> Path:
            nonlocal n
            n += 1
            return Path(tmp) / f"lib{n}"

        for layout in args.layouts:
            best = {
                s: oracle(fresh(), TREE, layout, s, random200(), random.Random(s))
                for s in args.seeds
            }
            for name, make, shown in policies():
                runs = [run_one(fresh(), TREE, layout, s, make, shown) for s in args.seeds]
                ratios = [m / best[s] for (m, _), s in zip(runs, args.seeds, strict=True)]
                mean_mounts = statistics.mean(m for _, m in runs)
                print(
                    f"| {layout} | {name} | {shown} | {statistics.mean(ratios):.2f} "
                    f"({min(ratios):.2f}-{max(ratios):.2f}) | {mean_mounts:.0f} |",
                    flush=True,
                )
            tree = oracle(fresh(), TREE, layout, args.seeds[0], whole_tree(), random.Random(0))
            for name, make, _ in policies()[:5]:
                m, mo = run_one(fresh(), TREE, layout, args.seeds[0], make, None)
                print(f"| {layout} | {name} (tree, all queued) | - | {m / tree:.2f} | {mo} |")
    return 0


def whole_tree():
    return next(w for w in WORKLOADS if w.name == "tree")


if __name__ == "__main__":
    sys.exit(main())
