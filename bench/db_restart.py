"""PostgreSQL restarted under load: what do clients see, and is anything lost?

The real service (gunicorn, embedded stager, shipped defaults) on a
throwaway PostgreSQL cluster (Debian's defaults, durable) and a simulated
library. For `--seconds`, `--clients` threads poll random migrated files
as the stage app does (each poll on a new connection) and one thread posts
a WLCG stage request of 10 files every second and polls the ones it got.
At a third of the run the cluster is restarted (`pg_ctl restart -m fast`);
at two thirds it is stopped with `-m immediate` (a crash: no checkpoint),
left down for `--down` seconds, and started (recovery from the WAL).

Afterwards: every file a poll was answered 201 for (archived or resident)
must reach disk, and every stage request answered 201 must exist and
complete, with no further restart; the counts of answers by status and the
seconds from each restart's end to the next 201 are printed.

    python bench/db_restart.py [--seconds 120] [--clients 8]

Leaves out: a database on another host (loopback here, so a restart is
seen as a refused connection at once, not a time-out), a standby taking
over (the site's own PostgreSQL high availability), and the stager's
leadership (one node here).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from harness import devserver, pgcluster

from ltfsee_globus.sim.library import Layout, Library, Timing, init_library

RECALL = "/api/v0.5/globus_recall/globus_recall"
KEY = "bench-key"
HDR = {"X-API-KEY": KEY, "Connection": "close"}


class Load:
    """The clients, and everything they were told."""

    def __init__(self, url: str, files: list[str]) -> None:
        self.url, self.files = url, files
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str, int]] = []  # (time, kind, status)
        self.accepted: set[str] = set()  # files a poll got 201 for
        self.requests: dict[str, list[str]] = {}  # stage requests answered 201

    def note(self, kind: str, status: int) -> None:
        with self.lock:
            self.answers.append((time.monotonic(), kind, status))

    def poller(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            path = rng.choice(self.files)
            body = {"path": path, "globus_taskid": f"task{seed}"}
            try:
                r = requests.post(self.url + RECALL, json=body, headers=HDR, timeout=60)
            except requests.RequestException:
                self.note("poll", -1)
                continue
            self.note("poll", r.status_code)
            if r.status_code == 201:
                with self.lock:
                    self.accepted.add(path)
            elif r.status_code == 503:
                time.sleep(min(float(r.headers.get("Retry-After", 1)), 1.0))

    def stager(self) -> None:
        rng = random.Random(99)
        while not self.stop.is_set():
            paths = rng.sample(self.files, 10)
            body = {"files": [{"path": p} for p in paths]}
            try:
                r = requests.post(self.url + "/api/v1/stage", json=body, headers=HDR, timeout=60)
            except requests.RequestException:
                self.note("stage", -1)
                continue
            self.note("stage", r.status_code)
            if r.status_code == 201:
                with self.lock:
                    self.requests[r.json()["requestId"]] = paths
            for rid in list(self.requests)[-3:]:  # FTS polls what it submitted
                try:
                    s = requests.get(f"{self.url}/api/v1/stage/{rid}", headers=HDR, timeout=60)
                    self.note("stage poll", s.status_code)
                except requests.RequestException:
                    self.note("stage poll", -1)
            time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--down", type=float, default=10.0, help="seconds of the second outage")
    args = ap.parse_args(argv)
    cluster = pgcluster.start(durable=True)
    restarts: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="db-restart-") as d:
        tmp = Path(d)
        fs = init_library(
            tmp / "lib", Layout(files=2000, dirs=20, tapes=10, drives=4, time_scale=200.0), Timing()
        )
        files = Library.list_paths(tmp / "lib", "M")
        command = devserver.eeadm_wrapper(tmp / "eeadm", tmp / "lib", tmp / "calls.log")
        env = {
            "AUTH_KEY": KEY,
            "EEADM_COMMAND": command[0],
            "MANAGED_ROOTS": str(fs),
            "STATE_DIR": str(tmp / "state"),
            "STORE_URL": cluster.create_database("restart"),
            "LOGLEVEL": "WARNING",
            "ACCESS_LOG": "false",
        }
        server = devserver.start(env, tmp / "gunicorn.log")
        load = Load(server.url, files)
        try:
            threads = [threading.Thread(target=load.poller, args=(i,)) for i in range(args.clients)]
            threads.append(threading.Thread(target=load.stager))
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for n, mode in enumerate(("restart -m fast", "crash, down, start"), start=1):
                time.sleep(max(0.0, t0 + args.seconds * n / 3 - time.monotonic()))
                began = time.monotonic()
                if n == 1:
                    cluster.restart("fast")
                else:
                    cluster.stop("immediate")
                    time.sleep(args.down)
                    cluster.start()
                restarts.append((mode, began, time.monotonic()))
            time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
            load.stop.set()
            for t in threads:
                t.join()
            # nothing accepted is lost: every file and request reaches its end
            deadline = time.monotonic() + 600
            pending = set(load.accepted)
            while pending and time.monotonic() < deadline:
                for path in list(pending):
                    r = requests.post(
                        server.url + RECALL, json={"path": path}, headers=HDR, timeout=60
                    )
                    if r.status_code == 201 and r.json()["state"] == "resident":
                        pending.discard(path)
                time.sleep(2)
            unfinished_requests = 0
            for rid in load.requests:
                while time.monotonic() < deadline:
                    r = requests.get(f"{server.url}/api/v1/stage/{rid}", headers=HDR, timeout=60)
                    states = {f["state"] for f in r.json()["files"]} if r.ok else {"missing"}
                    if states <= {"COMPLETED", "FAILED"}:
                        break
                    time.sleep(2)
                unfinished_requests += not (r.ok and states == {"COMPLETED"})
            log = (tmp / "gunicorn.log").read_text(errors="replace")
        finally:
            server.stop()
            cluster.destroy()
    by = Counter((kind, status) for _, kind, status in load.answers)
    others = sum(n for (_, status), n in by.items() if status not in (200, 201, 503))
    first_after = []
    for mode, _began, ended in restarts:
        ok = [t for t, _, s in load.answers if s in (200, 201) and t >= ended]
        first_after.append((mode, round(min(ok) - ended, 2) if ok else None))
    result = {
        "seconds": args.seconds,
        "clients": args.clients,
        "answers": {f"{k} {s}": n for (k, s), n in sorted(by.items())},
        "answers_503": sum(n for (_, s), n in by.items() if s == 503),
        "answers_other_than_200_201_503": others,
        "restart_seconds": [(m, round(e - b, 2)) for m, b, e in restarts],
        "seconds_to_first_success_after_restart": first_after,
        "files_accepted": len(load.accepted),
        "files_accepted_not_on_disk": len(pending),
        "stage_requests_accepted": len(load.requests),
        "stage_requests_not_completed": unfinished_requests,
        "tracebacks_in_log": log.count("Traceback"),
    }
    print(json.dumps(result, indent=2))
    ok = (
        others == 0
        and not pending
        and unfinished_requests == 0
        and result["tracebacks_in_log"] == 0
        and all(s is not None and s <= 30 for _, s in first_after)
    )
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
