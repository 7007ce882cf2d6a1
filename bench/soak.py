"""A long mixed run: do errors, memory or open files creep up?

Starts the real service (gunicorn, embedded stager, shipped defaults) on a
simulated library whose recalls finish (x100 time scale), and runs 64
clients for `--minutes`: 56 Globus-like ones that each pick a random file
and poll it every second until it is resident, then the next; 8 WLCG ones
that post a stage request of 20 random files, poll it until every file is
final, then delete it. Every 10 s it samples the RSS and open file
descriptors of gunicorn's processes (master and workers).

    python bench/soak.py [--minutes 10]

Goals: 0 errors; RSS growth < 10 % and descriptors flat between the sample
after the first minute (warm-up: imports, caches, thread pools) and the
last. Leaves out: gunicorn's own worker restarts (none are configured) and
other users of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from harness import devserver

from ltfsee_globus.sim.library import Layout, Library, Timing, init_library

RECALL = "/api/v0.5/globus_recall/globus_recall"
TAPE = "/api/v1"
KEY = "bench-key"
HDR = {"X-API-KEY": KEY}


def group(pgid: int) -> list[int]:
    """The processes of a process group (gunicorn's master and workers)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    out.append(int(d.name))
            except ProcessLookupError:
                continue
    return out


def sample(pgid: int) -> tuple[int, int]:
    """(RSS in kB, open descriptors) summed over the group."""
    rss = fds = 0
    for pid in group(pgid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss += int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            continue
    return rss, fds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    errors: Counter = Counter()
    done: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        tmp = Path(d)
        layout = Layout(files=3000, dirs=60, tapes=10, drives=4, time_scale=100.0)
        fs = init_library(tmp / "lib", layout, Timing())
        files = Library.list_paths(tmp / "lib")
        command = devserver.eeadm_wrapper(tmp / "eeadm", tmp / "lib", tmp / "calls.log")
        env = {
            "AUTH_KEY": KEY,
            "EEADM_COMMAND": command[0],
            "EEADM_SIM_DIR": str(tmp / "lib"),
            "MANAGED_ROOTS": str(fs),
            "STATE_DIR": str(tmp / "state"),
            "LOGLEVEL": "WARNING",
            "ACCESS_LOG": "false",
        }
        server = devserver.start(env, tmp / "gunicorn.log")
        url = server.url
        stop = threading.Event()
        lock = threading.Lock()

        def pick(n: int) -> list[str]:
            with lock:
                return rng.sample(files, n)

        def call(session, method, path, **kw):
            try:
                r = session.request(method, url + path, headers=HDR, timeout=60, **kw)
            except requests.RequestException as exc:
                errors[type(exc).__name__] += 1
                return None
            if r.status_code >= 300:
                errors[f"HTTP {r.status_code} {path.split('/')[-1]}"] += 1
                return None
            return r

        def globus(n: int) -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    path = pick(1)[0]
                    while not stop.is_set():
                        r = call(s, "POST", RECALL, json={"path": path, "globus_taskid": f"t{n}"})
                        if r is not None and r.json()["state"] == "resident":
                            done["globus"] += 1
                            break
                        stop.wait(1.0)

        def wlcg() -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    body = {"files": [{"path": p} for p in pick(20)]}
                    r = call(s, "POST", f"{TAPE}/stage", json=body)
                    if r is None:
                        stop.wait(1.0)
                        continue
                    rid = r.json()["requestId"]
                    while not stop.is_set():
                        st = call(s, "GET", f"{TAPE}/stage/{rid}")
                        if st is not None and "completedAt" in st.json():
                            done["wlcg"] += 1
                            break
                        stop.wait(2.0)
                    call(s, "DELETE", f"{TAPE}/stage/{rid}")

        samples: list[tuple[int, int, int]] = []
        try:
            pgid = server.proc.pid
            with ThreadPoolExecutor(64) as pool:
                jobs = [pool.submit(globus, n) for n in range(56)]
                jobs += [pool.submit(wlcg) for _ in range(8)]
                t0 = time.monotonic()
                while time.monotonic() - t0 < args.minutes * 60:
                    samples.append((round(time.monotonic() - t0), *sample(pgid)))
                    print(
                        json.dumps(
                            {
                                "t": samples[-1][0],
                                "rss_kb": samples[-1][1],
                                "fds": samples[-1][2],
                                "done": dict(done),
                                "errors": dict(errors),
                            }
                        ),
                        flush=True,
                    )
                    time.sleep(10)
                stop.set()
                for j in jobs:
                    j.result()
        finally:
            server.stop(signal.SIGTERM)
    warm = next((s for s in samples if s[0] >= 60), samples[0])
    last = samples[-1]
    result = {
        "minutes": args.minutes,
        "done": dict(done),
        "errors": dict(errors),
        "rss_kb_after_1min": warm[1],
        "rss_kb_last": last[1],
        "rss_growth_pct": round(100 * (last[1] - warm[1]) / warm[1], 1),
        "fds_after_1min": warm[2],
        "fds_last": last[2],
    }
    print(json.dumps(result, indent=2))
    ok = not errors and result["rss_growth_pct"] < 10 and last[2] <= warm[2] + 4
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
