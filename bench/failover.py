"""The fail-over drill: three nodes on one PostgreSQL, Globus and WLCG load, faults at the leader.

Three real nodes (gunicorn, embedded stagers, shipped defaults: STAGER_LEASE
10 s) over a throwaway PostgreSQL and one simulated library. The load comes
in rounds: four Globus tasks of ROUND_FILES/4 files each, driven through the
stage app's own code (clients/simple_client.py: `settings` and `stage`, in
threads, with every node's URL, at most 64 outstanding per task as Globus
does), plus one WLCG bulk stage request per round, sent to a node that
answers. The first round runs without faults (the baseline makespan); the
next rounds run while faults hit the leader at random moments, until each
kind has hit its count:

  kill     kill -9 of the leader node's processes (gunicorn and the
           `eeadm recall` clients it started: EE's tasks go on), the node
           started again once another leads
  stop     SIGSTOP of the leader node past its lease, then SIGCONT
  drop     pg_terminate_backend of the leader's connections
  restart  pg_ctl restart -m immediate of the database

Every `eeadm` call is logged by a per-node wrapper (time, node, arguments);
each recall's batch gives its epoch. It reports, per fault kind, the
take-over (kill, stop: a new leader at a new epoch) or recovery time (drop,
restart: a leader renewing again) p50 and p99; files and requests lost;
stage-app runs that failed; recalls started under an epoch older than the
lease's at that moment (a stale leader acting); writes the fence refused;
tape reads of a file beyond its first; makespan per round; seconds from a
database restart to the next recall; and poll throughput, 1 node and 3
nodes on PostgreSQL against 1 node on SQLite (wrk, 64 connections).

    apt-get install postgresql wrk
    python bench/failover.py [--kills 20 --stops 5 --drops 5 --restarts 3] [--scale 20]

Leaves out: separate hosts (one machine: no network partition, the nodes'
clocks are one), a PostgreSQL fail-over of its own (one server, restarted),
EE's real task scheduling (the simulator's), and Globus's own retries (a
stage-app run that fails counts as a failure here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from harness import devserver, pgcluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients"))
import simple_client
from ltfsee_globus.sim.library import (
    Layout,
    Library,
    Timing,
    init_library,
    store_path,
)

KEY = "drill-key"
OUTSTANDING = 64  # Globus's window per task
GIVE_UP = 30  # failed stage-app runs of one file before the drill stops asking
ROUND_FILES = 2000
WLCG_FILES = 100  # a round's WLCG bulk request
NODES = 3


@dataclass
class Node:
    name: str
    env: dict
    log: Path
    server: devserver.Gunicorn | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def start(self) -> None:
        self.server = devserver.start(self.env, self.log, timeout=60)


@dataclass
class Drill:
    nodes: dict[str, Node]
    store: object  # the store, read as an operator would
    cluster: pgcluster.Cluster
    dbname: str
    timeline: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    epochs: list[tuple[float, int]] = field(default_factory=list)  # (time, epoch) seen
    failures: list[str] = field(default_factory=list)  # stage-app runs that failed
    given_up: list[str] = field(default_factory=list)  # files that failed GIVE_UP times
    runs: int = 0

    def leader(self) -> tuple[str | None, int]:
        try:
            lease = self.store.leases.current()
        except Exception:
            return None, -1
        return (lease.node if lease.running else None), lease.epoch

    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes.values() if n.server)


def wrapper(base: Path, name: str, library: Path, timeline: Path) -> str:
    """An eeadm for node `name` that logs each call with the time and the node."""
    return devserver.eeadm_wrapper(
        base / f"eeadm-{name}",
        library,
        base / "calls.log",
        before=f"echo \"$(date +%s.%N) {name} $*\" >> '{timeline}'\n",
    )[0]


def watch_epochs(drill: Drill, stop: threading.Event) -> None:
    """Sample the lease every 0.2 s: when each epoch was first seen."""
    while not stop.wait(0.2):
        _, epoch = drill.leader()
        if epoch >= 0 and (not drill.epochs or drill.epochs[-1][1] != epoch):
            drill.epochs.append((time.time(), epoch))


# -- the load ----------------------------------------------------------------------------
def globus_task(drill: Drill, taskid: str, files: list[str]) -> None:
    """One Globus task through the stage app: 64 outstanding, each polled
    every 2 s until resident."""
    pending, due, tries = list(reversed(files)), {}, {}

    def poll(path: str) -> tuple[str, str]:
        env = {
            "LTFSEE_URL": drill.urls(),
            "AUTH_KEY": KEY,
            "GLOBUS_STAGE_PATH": path,
            "GLOBUS_STAGE_TASKID": taskid,
            "TIMEOUT": "10",
        }
        try:
            return path, simple_client.stage(simple_client.settings(env))
        except simple_client.StageError as exc:
            return path, f"exit {exc.code}: {exc}"

    with ThreadPoolExecutor(OUTSTANDING) as pool:
        while pending or due:
            while pending and len(due) < OUTSTANDING:
                due[pending.pop()] = 0.0
            now = time.monotonic()
            for path, state in pool.map(poll, [p for p, t in due.items() if t <= now]):
                with drill.lock:
                    drill.runs += 1
                if state == "archived":
                    due[path] = time.monotonic() + 2.0
                elif state == "resident":
                    del due[path]
                else:  # a run that failed: Globus would retry it later; so do we
                    with drill.lock:
                        drill.failures.append(state)
                    tries[path] = tries.get(path, 0) + 1
                    if tries[path] >= GIVE_UP:
                        del due[path]
                        with drill.lock:
                            drill.given_up.append(path)
                    else:
                        due[path] = time.monotonic() + 2.0
            if due:
                time.sleep(max(min(due.values()) - time.monotonic(), 0.05))


def wlcg_request(drill: Drill, files: list[str]) -> int:
    """One bulk stage request, submitted and polled on whichever node answers;
    how many files it completed."""
    body = {"files": [{"path": p} for p in files]}

    def ask(method: str, path: str, **kw) -> requests.Response:
        while True:
            for node in list(drill.nodes.values()):
                if node.server is None:
                    continue
                try:
                    r = requests.request(
                        method,
                        node.url + path,
                        headers={"Authorization": f"Bearer {KEY}"},
                        timeout=10,
                        **kw,
                    )
                except requests.RequestException:
                    continue
                if r.status_code != 503:
                    return r
            time.sleep(1)

    r = ask("POST", "/api/v1/stage", json=body)
    r.raise_for_status()
    rid = r.json()["requestId"]
    while True:
        states = [f["state"] for f in ask("GET", f"/api/v1/stage/{rid}").json()["files"]]
        if all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in states):
            return states.count("COMPLETED")
        time.sleep(3)


def play_round(drill: Drill, n: int, files: list[str], wlcg: list[str]) -> dict:
    started = time.monotonic()
    quarter = len(files) // 4
    with ThreadPoolExecutor(5) as pool:
        tasks = [
            pool.submit(
                globus_task, drill, f"round{n}-task{i}", files[i * quarter : (i + 1) * quarter]
            )
            for i in range(4)
        ]
        request = pool.submit(wlcg_request, drill, wlcg)
        for t in tasks:
            t.result()
        completed = request.result()
    return {"seconds": time.monotonic() - started, "wlcg_completed": completed, "wlcg": len(wlcg)}


# -- the faults --------------------------------------------------------------------------
def wait_new_leader(drill: Drill, old: str | None, epoch: int, timeout: float = 120) -> float:
    """Seconds until a leader other than `old` leads at a newer epoch."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        node, now = drill.leader()
        if node is not None and node != old and now > epoch:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"no take-over within {timeout}s after {old} (epoch {epoch})")


def wait_renewing(drill: Drill, since: float, timeout: float = 120) -> float:
    """Seconds until a leader holds the lease with a heartbeat newer than `since`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        node, _ = drill.leader()
        if node is not None:
            with contextlib.suppress(Exception):
                members = drill.store.leases.members()
                if any(m.role == "leader" and m.heartbeat_at > since for m in members):
                    return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"no leader renewing within {timeout}s")


def crash(drill: Drill, name: str) -> None:
    node = drill.nodes[name]
    node.server.stop(signal.SIGKILL)
    for batch in drill.store.queue.running_batches():
        if batch.node == name and batch.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(batch.pid, signal.SIGKILL)
    node.server = None


def fault(drill: Drill, kind: str, lease: float) -> dict:
    old, epoch = drill.leader()
    while old is None:
        time.sleep(0.5)
        old, epoch = drill.leader()
    at = time.time()
    out = {"kind": kind, "leader": old, "epoch": epoch, "at": at}
    if kind == "kill":
        crash(drill, old)
        out["seconds"] = wait_new_leader(drill, old, epoch)
        drill.nodes[old].start()  # back, as a standby
    elif kind == "stop":
        pgid = drill.nodes[old].server.proc.pid
        os.killpg(pgid, signal.SIGSTOP)
        try:
            out["seconds"] = wait_new_leader(drill, old, epoch)
            time.sleep(max(lease + 2 - (time.time() - at), 0))  # past its lease
        finally:
            os.killpg(pgid, signal.SIGCONT)
    elif kind == "drop":
        rows = drill.cluster.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name LIKE %s",
            drill.dbname,
            params=(drill.dbname, f"%:{leader_pid(drill)}"),
        )
        out["terminated"] = int(rows[0][0])
        out["seconds"] = wait_renewing(drill, at)
    elif kind == "restart":
        drill.cluster.restart("immediate")
        out["seconds"] = wait_renewing(drill, at)
    node, now = drill.leader()
    out.update(after=node, epoch_after=now)
    print(json.dumps(out), flush=True)
    return out


def leader_pid(drill: Drill) -> str:
    lease = drill.store.leases.current()
    return (lease.holder or "").rpartition(":")[2]


def fault_loop(drill: Drill, plan: list[str], lease: float, done: threading.Event, out: list):
    for kind in plan:
        if done.wait(random.uniform(8, 20)):
            return
        out.append(fault(drill, kind, lease))


# -- the figures -------------------------------------------------------------------------
def stale_recalls(drill: Drill) -> tuple[int, int]:
    """(recalls, recalls started under an epoch older than the lease's then)."""
    epochs = {b.id: b.epoch for b in drill.store.ops.batches(limit=100000)}
    calls = stale = 0
    for line in drill.timeline.read_text().splitlines():
        t, _node, *args = line.split()
        if args[:1] != ["recall"]:
            continue
        calls += 1
        m = re.search(r"/batches/(\d+)\.list", line)
        epoch = epochs.get(int(m.group(1))) if m else None
        current = max((e for at, e in drill.epochs if at <= float(t)), default=0)
        if epoch is not None and epoch < current:
            stale += 1
    return calls, stale


def first_recall_after(timeline: Path, at: float) -> float | None:
    """Seconds from `at` to the next `eeadm recall` any node started."""
    starts = [
        float(line.split()[0])
        for line in timeline.read_text().splitlines()
        if line.split()[2:3] == ["recall"]
    ]
    later = [t for t in starts if t > at]
    return min(later) - at if later else None


def extra_reads(lib_root: Path) -> int:
    """Tape reads of a file beyond its first (successful ones), from the simulator."""
    conn = sqlite3.connect(store_path(lib_root))
    try:
        rows = conn.execute(
            "SELECT count(*) FROM task_files WHERE tape IS NOT NULL AND ok = 1 GROUP BY path"
        ).fetchall()
    finally:
        conn.close()
    return sum(n - 1 for (n,) in rows if n > 1)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(q * len(values)), len(values) - 1)] if values else float("nan")


def throughput(drill: Drill, sqlite: devserver.Gunicorn, path: str, seconds: int) -> dict:
    """Resident-poll requests/s at 64 connections: 1 node and 3 nodes on
    PostgreSQL (one wrk per node, at once), 1 node on SQLite."""
    lua = Path(tempfile.mkdtemp()) / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{json.dumps({'path': path, 'globus_taskid': 'load'})}'\n"
        f'wrk.headers["X-API-KEY"] = "{KEY}"\nwrk.headers["Connection"] = "close"\n'
    )

    def wrk(urls: list[str]) -> float:
        procs = [
            subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    f"-c{64 // len(urls)}",
                    f"-d{seconds}s",
                    "-s",
                    str(lua),
                    u + "/api/v0.5/globus_recall/globus_recall",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for u in urls
        ]
        total = 0.0
        for p in procs:
            text = p.communicate()[0]
            total += float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        return round(total)

    urls = [n.url for n in drill.nodes.values()]
    for u in [*urls, sqlite.url]:  # each worker's state cache warm
        for _ in range(4):
            requests.post(
                u + "/api/v0.5/globus_recall/globus_recall",
                json={"path": path},
                headers={"X-API-KEY": KEY},
                timeout=10,
            )
    return {
        "postgresql_1_node": wrk(urls[:1]),
        "postgresql_3_nodes": wrk(urls),
        "sqlite_1_node": wrk([sqlite.url]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--stops", type=int, default=5)
    ap.add_argument("--drops", type=int, default=5)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--scale", type=float, default=10.0, help="the simulator's time scale")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--max-rounds", type=int, default=16, help="rounds of load at most (faults end sooner)"
    )
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--round-files", type=int, default=ROUND_FILES, help="Globus files a round")
    args = ap.parse_args(argv)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # our own store's reconnects
    random.seed(args.seed)
    plan = (
        ["kill"] * args.kills
        + ["stop"] * args.stops
        + ["drop"] * args.drops
        + ["restart"] * args.restarts
    )
    random.shuffle(plan)
    lease = 10.0  # the shipped STAGER_LEASE
    cluster = pgcluster.start(durable=True)
    work = Path(tempfile.mkdtemp(prefix="failover-"))
    rounds_needed = args.max_rounds  # the library holds this many rounds of new files
    lib_root = work / "lib"
    fs = init_library(
        lib_root,
        Layout(
            files=int((args.round_files + WLCG_FILES) * rounds_needed / 0.75) + 100,
            dirs=40,
            tapes=40,
            drives=4,
            time_scale=args.scale,
            min_size=10**6,
            max_size=10**8,
        ),
        Timing(),
    )
    migrated = Library.list_paths(lib_root, "M")
    resident = Library.list_paths(lib_root, "R")[0]
    url = cluster.create_database("drill")
    timeline = work / "timeline.log"
    nodes = {}
    for i in range(NODES):
        name = f"node{i + 1}"
        env = {
            "AUTH_KEY": KEY,
            "STORE_URL": url,
            "NODE_NAME": name,
            "STATE_DIR": str(work / f"state-{name}"),
            "EEADM_COMMAND": wrapper(work, name, lib_root, timeline),
            "MANAGED_ROOTS": str(fs),
            "EEADM_SIM_DIR": str(lib_root),
            "LOGLEVEL": "INFO",
            "ACCESS_LOG": "false",
        }
        nodes[name] = Node(name, env, work / f"{name}.log")
    sqlite = None
    drill = Drill(nodes, None, cluster, "drill", timeline)
    stop_watch, done = threading.Event(), threading.Event()
    faults: list[dict] = []
    rounds: list[dict] = []
    try:
        for node in nodes.values():
            node.start()
        drill.store = devserver.open_store({"STATE_DIR": str(work / "cli"), "STORE_URL": url})
        threading.Thread(target=watch_epochs, args=(drill, stop_watch), daemon=True).start()
        per_round = args.round_files + WLCG_FILES
        for n in range(rounds_needed):
            if n > 0 and len(faults) >= len(plan):
                break
            chunk = migrated[n * per_round : (n + 1) * per_round]
            if len(chunk) < per_round:
                print("failover: the library ran out of files before the plan", file=sys.stderr)
                break
            injector = None
            if n == 1:  # faults from the second round on, until the plan is done
                injector = threading.Thread(
                    target=fault_loop, args=(drill, plan, lease, done, faults), daemon=True
                )
                injector.start()
            r = play_round(drill, n + 1, chunk[: args.round_files], chunk[args.round_files :])
            r.update(round=n + 1, faults_so_far=len(faults))
            rounds.append(r)
            print(json.dumps(r), flush=True)
        done.set()
        sqlite_env = {
            **nodes["node1"].env,
            "STORE_URL": "",
            "NODE_NAME": "sqlite",
            "STATE_DIR": str(work / "state-sqlite"),
        }
        sqlite = devserver.start(sqlite_env, work / "sqlite.log", timeout=60)
        polls = throughput(drill, sqlite, resident, args.wrk_seconds)
        calls, stale = stale_recalls(drill)
        refused = sum(n.log.read_text().count("write refused") for n in nodes.values())
        extra = extra_reads(lib_root)
        counts = drill.store.ops.counts()
    finally:
        done.set()
        stop_watch.set()
        for node in nodes.values():
            if node.server:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.server.proc.pid, signal.SIGCONT)
                node.server.stop()
                devserver.kill_recalls(node.env)
        if sqlite:
            sqlite.stop()
        if drill.store:
            drill.store.close()
        cluster.destroy()
    by_kind: dict[str, list[float]] = {}
    for f in faults:
        by_kind.setdefault(f["kind"], []).append(f["seconds"])
    print("\n| fault | count | take-over / recovery p50 s | p99 s | max s |")
    print("|---|---|---|---|---|")
    for kind, secs in by_kind.items():
        p50, p99 = statistics.median(secs), pct(secs, 0.99)
        print(f"| {kind} | {len(secs)} | {p50:.1f} | {p99:.1f} | {max(secs):.1f} |")
    base = rounds[0]["seconds"]
    faulted = [r["seconds"] for r in rounds[1:]]
    failed_files = counts.files.get("failed", 0)
    print(f"\nrounds: {len(rounds)} of {args.round_files} Globus + {WLCG_FILES} WLCG files each")
    shown = ", ".join(f"{s:.0f}" for s in faulted)
    print(f"makespan without faults {base:.0f} s; with faults {shown} s")
    failed, gave_up = len(drill.failures), len(drill.given_up)
    print(f"stage-app runs {drill.runs}, failed {failed}; files given up on {gave_up}")
    wlcg_done, wlcg_all = sum(r["wlcg_completed"] for r in rounds), sum(r["wlcg"] for r in rounds)
    print(f"WLCG files completed {wlcg_done} of {wlcg_all}")
    print(f"files failed in the store {failed_files}")
    print(f"eeadm recalls {calls}, started under a stale epoch {stale}; fence refusals {refused}")
    print(f"tape reads beyond a file's first: {extra} in all, over {len(faults)} faults")
    after_restart = [
        first_recall_after(timeline, f["at"]) for f in faults if f["kind"] == "restart"
    ]
    print(
        "database restarts: seconds to the next recall "
        + ", ".join("-" if s is None else f"{s:.1f}" for s in after_restart)
    )
    print(f"poll throughput (resident, 64 connections): {json.dumps(polls)}")
    print(f"logs and the eeadm timeline: {work}")
    if drill.failures:
        print("stage-app failures:", *sorted(set(drill.failures))[:10], sep="\n  ")
    ok = not drill.failures and not drill.given_up and stale == 0 and failed_files == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
