"""Replay Globus transfers against the real service on a simulated tape library.

For each layout (clustered, random), each task count K and each mode
(baseline, batched, batched+prefetch) it builds a fresh library (same seed),
starts gunicorn with the embedded stager, and plays K concurrent Globus
transfer tasks: each walks its files in path order, keeps at most 64
outstanding, polls each every P simulated seconds with the stage app's request
and backfills as files come online. It also measures the lower bound: the same
files given to the simulator in one recall.

    python bench/globus_replay.py       # the full table: N=2000, 20 tapes, 4 drives
    python bench/globus_replay.py --files 200 --tapes 4 --tasks 1 --layouts clustered

Writes bench/results/replay-<time>.json and .png and prints a Markdown table.
Times are simulated seconds; the service's own timers (batch window, stager
poll) are scaled to simulated time so they weigh what they would on site.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from ltfsee_globus import devserver
from ltfsee_globus.sim.library import Layout, Library, Timing, init_library

ROOT = Path(__file__).resolve().parent.parent
RECALL = "/api/v0.5/globus_recall/globus_recall"
KEY = "bench-key"
OUTSTANDING = 64

#: Service settings per mode (BATCH_WINDOW in simulated seconds, scaled at start).
MODES = {
    "baseline": {
        "BATCH_MAX_FILES": 1,
        "BATCH_WINDOW": 0,
        "PREFETCH": "false",
        "RECALL_CONCURRENCY": 64,
    },
    "batched": {
        "BATCH_MAX_FILES": 5000,
        "BATCH_WINDOW": 60,
        "PREFETCH": "false",
        "RECALL_CONCURRENCY": 4,
    },
    "batched+prefetch": {
        "BATCH_MAX_FILES": 5000,
        "BATCH_WINDOW": 60,
        "PREFETCH": "true",
        "RECALL_CONCURRENCY": 4,
    },
}


@dataclass
class Scenario:
    files: int
    tapes: int
    drives: int
    tasks: int
    layout: str
    poll: float  # simulated seconds between polls of one file
    time_scale: float
    seed: int = 7
    min_size: int = 1 * 10**9
    max_size: int = 4 * 10**9

    def library_layout(self) -> Layout:
        return Layout(
            files=self.files,
            dirs=max(self.files // 50, 4),
            tapes=self.tapes,
            drives=self.drives,
            placement=self.layout,
            premigrated=0.0,
            resident=0.0,
            min_size=self.min_size,
            max_size=self.max_size,
            time_scale=self.time_scale,
            seed=self.seed,
            subdir="project",
            groups=4,
        )


@dataclass
class TaskResult:
    files: int
    done: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    polls: int = 0
    latencies: list[float] = field(default_factory=list)
    finished_at: float = 0.0  # simulated


def make_library(where: Path, sc: Scenario) -> list[str]:
    """A fresh library under `where`; returns its files in path order."""
    init_library(where, sc.library_layout(), Timing())
    lib = Library(where)
    files = [r[0] for r in lib.conn.execute("SELECT path FROM files ORDER BY path")]
    lib.close()
    return files


def task_files(files: list[str], k: int, tasks: int) -> list[str]:
    """Task k's share: the files of every `tasks`-th top-level set, in path order."""
    sets = sorted({f.split("/set", 1)[1].split("/", 1)[0] for f in files})
    mine = set(sets[k::tasks])
    return [f for f in files if f.split("/set", 1)[1].split("/", 1)[0] in mine]


def start_service(
    tmp: Path, lib_root: Path, command: list[str], mode: str, sc: Scenario
) -> devserver.Gunicorn:
    settings = dict(MODES[mode])
    settings["BATCH_WINDOW"] = settings["BATCH_WINDOW"] / sc.time_scale
    settings["PROGRESS_INTERVAL"] = 60 / sc.time_scale
    settings["BATCH_QUIET"] = settings["BATCH_WINDOW"]
    settings["BATCH_MAX_WAIT"] = 10 * settings["BATCH_WINDOW"]
    env = {
        "AUTH_KEY": KEY,
        "EEADM_COMMAND": " ".join(command),
        "MANAGED_ROOTS": str(lib_root),
        "STATE_DIR": str(tmp / "state"),
        "WORKERS": "2",
        "STAGER_POLL": "0.05",
        "RECALL_RETRY_DELAY": "1",
        "CACHE_DEFAULT_TIMEOUT": "5",
        "LOGLEVEL": "WARNING",
        **{k: str(v) for k, v in settings.items()},
    }
    return devserver.start(env, tmp / "gunicorn.log")


def play_task(
    url: str, taskid: str, files: list[str], lib: Library, sc: Scenario, result: TaskResult
) -> None:
    """One Globus transfer: ≤64 outstanding, each polled every sc.poll simulated seconds."""
    pending = list(reversed(files))
    due: dict[str, float] = {}
    session = requests.Session()
    period = sc.poll / sc.time_scale

    def poll(path: str) -> tuple[str, str]:
        t0 = time.monotonic()
        try:
            r = session.post(
                url + RECALL,
                json={"path": path, "globus_taskid": taskid},
                headers={"X-API-KEY": KEY},
                timeout=30,
            )
            state = r.json().get("state") if r.status_code == 201 else f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            state = type(exc).__name__
        result.latencies.append(time.monotonic() - t0)
        return path, state

    with ThreadPoolExecutor(OUTSTANDING) as pool:  # Globus runs each stage app at once
        while pending or due:
            while pending and len(due) < OUTSTANDING:
                due[pending.pop()] = 0.0
            now = time.monotonic()
            ready = [p for p, t in due.items() if t <= now]
            for path, state in pool.map(poll, ready):
                result.polls += 1
                if state == "archived":
                    due[path] = time.monotonic() + period
                    continue
                del due[path]
                if state == "resident":
                    result.done += 1
                else:
                    result.errors += 1
                    result.error_kinds[state] = result.error_kinds.get(state, 0) + 1
            if due:
                time.sleep(max(min(due.values()) - time.monotonic(), 0.0))
    result.finished_at = lib.sim_now()


def run_mode(sc: Scenario, mode: str, work: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=f"{sc.layout}-{sc.tasks}-{mode}-"))
    lib_root = tmp / "lib"
    files = make_library(lib_root, sc)
    calls = tmp / "calls.log"
    command = devserver.eeadm_wrapper(tmp / "eeadm", lib_root, calls)
    server = start_service(tmp, lib_root, command, mode, sc)
    url = server.url
    lib = Library(lib_root)
    try:
        start = lib.sim_now()
        results = [TaskResult(0) for _ in range(sc.tasks)]
        threads = []
        for k in range(sc.tasks):
            mine = task_files(files, k, sc.tasks)
            results[k].files = len(mine)
            t = threading.Thread(
                target=play_task, args=(url, f"task-{k}", mine, lib, sc, results[k])
            )
            threads.append(t)
            t.start()
        for t in threads:
            t.join()
        makespan = max(r.finished_at for r in results) - start
        stats = lib.stats()
    finally:
        server.stop()
        lib.close()
    invocations: dict[str, int] = {}
    for line in calls.read_text().splitlines() if calls.exists() else []:
        sub = "recall" if line.startswith("recall") else " ".join(line.split()[:2])
        invocations[sub] = invocations.get(sub, 0) + 1
    lat = sorted(x for r in results for x in r.latencies)
    tapes = len(set(tape_of(lib_root, files)))
    return {
        "mode": mode,
        "makespan": round(makespan, 1),
        "mounts": stats["counters"]["mounts"],
        "optimum_mounts": tapes,
        "files_done": sum(r.done for r in results),
        "errors": sum(r.errors for r in results),
        "error_kinds": {
            k: sum(r.error_kinds.get(k, 0) for r in results)
            for k in {k for r in results for k in r.error_kinds}
        },
        "polls": sum(r.polls for r in results),
        "eeadm": invocations,
        "first_recall_at": round(
            min((t["created"] for t in stats["tasks"]), default=start) - start, 1
        ),
        "last_recall_end": round(
            max((t["finished"] or 0 for t in stats["tasks"]), default=start) - start, 1
        ),
        "latency_ms_p50": round(1000 * lat[len(lat) // 2], 1) if lat else None,
        "latency_ms_p99": round(1000 * lat[int(len(lat) * 0.99)], 1) if lat else None,
    }


def tape_of(lib_root: Path, files: list[str]) -> list[str]:
    lib = Library(lib_root)
    try:
        return [
            lib.conn.execute("SELECT tape FROM files WHERE path = ?", (f,)).fetchone()[0]
            for f in files
        ]
    finally:
        lib.close()


def lower_bound(sc: Scenario, work: Path) -> float:
    """Makespan of one recall of every file, straight to the simulator."""
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=f"{sc.layout}-lb-"))
    lib_root = tmp / "lib"
    files = make_library(lib_root, sc)
    subprocess.run(
        [sys.executable, "-m", "ltfsee_globus.sim.cli", "recall"],
        input="\n".join(files),
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "EEADM_SIM_DIR": str(lib_root)},
    )
    lib = Library(lib_root)
    try:
        [task] = lib.stats()["tasks"]
    finally:
        lib.close()
    return task["finished"] - task["created"]


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({(r["layout"], r["tasks"]) for r in rows})
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(modes)
    for ax, metric, title in (
        (axes[0], "makespan_ratio", "makespan / lower bound"),
        (axes[1], "mounts_ratio", "mounts / optimum"),
    ):
        for i, mode in enumerate(modes):
            values = [
                next(
                    r[metric] for r in rows if (r["layout"], r["tasks"]) == s and r["mode"] == mode
                )
                for s in scenarios
            ]
            ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=mode)
        ax.set_xticks([x + width for x in range(len(scenarios))])
        ax.set_xticklabels([f"{lay}\nK={k}" for lay, k in scenarios])
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(modes))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)


def table(rows: list[dict]) -> str:
    head = (
        "| layout | K | mode | mounts | mounts/opt | makespan (h) | makespan/LB "
        "| recall calls | file state calls | p50/p99 ms | errors |"
    )
    out = [head, "|" + "---|" * 11]
    for r in rows:
        out.append(
            f"| {r['layout']} | {r['tasks']} | {r['mode']} | {r['mounts']} "
            f"| {r['mounts_ratio']:.2f} | {r['makespan'] / 3600:.2f} "
            f"| {r['makespan_ratio']:.2f} | {r['eeadm'].get('recall', 0)} "
            f"| {r['eeadm'].get('file state', 0)} | {r['latency_ms_p50']}/{r['latency_ms_p99']} "
            f"| {r['errors']} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--tapes", type=int, default=20)
    ap.add_argument("--drives", type=int, default=4)
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--layouts", nargs="+", default=["clustered", "random"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--poll", type=float, default=60.0, help="simulated s between polls")
    ap.add_argument("--time-scale", type=float, default=200.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="replay-") as work_dir:
        work = Path(work_dir)
        for layout in args.layouts:
            for k in args.tasks:
                sc = Scenario(
                    args.files, args.tapes, args.drives, k, layout, args.poll, args.time_scale
                )
                lb = lower_bound(sc, work)
                for mode in args.modes:
                    r = run_mode(sc, mode, work)
                    r.update(
                        layout=layout,
                        tasks=k,
                        lower_bound=round(lb, 1),
                        makespan_ratio=r["makespan"] / lb,
                        mounts_ratio=r["mounts"] / r["optimum_mounts"],
                        scenario=asdict(sc),
                    )
                    rows.append(r)
                    print(
                        f"{layout} K={k} {mode}: mounts {r['mounts']}/{r['optimum_mounts']}, "
                        f"makespan {r['makespan']:.0f}s / LB {lb:.0f}s, "
                        f"recalls {r['eeadm'].get('recall', 0)}, errors {r['errors']}",
                        flush=True,
                    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"replay-{stamp}.json").write_text(json.dumps(rows, indent=2))
    chart(rows, args.out / f"replay-{stamp}.png")
    print(table(rows))
    print(f"\nwrote {args.out}/replay-{stamp}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
