"""The web tier while `eeadm file state` hangs: is everything else still quick?

Starts the real service (gunicorn, embedded stager, shipped defaults but for
EEADM_TIMEOUT, shortened so a run takes a minute) on a simulated library,
queues one file (its polls are answered from the store), then makes every
`eeadm file state` hang and runs 64 clients that each poll a file the
service has never seen, once a second. Meanwhile a probe asks for /healthz
and polls the queued file every 50 ms. Then `eeadm` is made to answer
again, and the time until an unknown file's poll succeeds is measured (the
breaker's probe).

    python bench/hang.py [--seconds 30] [--eeadm-timeout 10]

Figures: answers of the 64 clients by status and their slowest answer
(goal: within EEADM_TIMEOUT + 1 s), p50/p99/max of /healthz and of the
store-answered poll (goal: p99 < 100 ms). Leaves out: a real `eeadm`'s
memory and process table use while it hangs, and other clients of the
machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
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
KEY = "bench-key"
HDR = {"X-API-KEY": KEY}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--eeadm-timeout", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hang-") as d:
        tmp = Path(d)
        layout = Layout(files=4000, dirs=40, time_scale=1.0, premigrated=0, resident=0)
        fs = init_library(tmp / "lib", layout, Timing())
        migrated = Library.list_paths(tmp / "lib", "M")
        hang = tmp / "hang"
        command = devserver.eeadm_wrapper(
            tmp / "eeadm",
            tmp / "lib",
            tmp / "calls.log",
            before=(
                f"if [ \"$1 $2\" = 'file state' ] && [ -e '{hang}' ]; then exec sleep 3600; fi\n"
                'if [ "$1" = recall ]; then exec sleep 3600; fi\n'  # the queued file stays so
            ),
        )
        env = {
            "AUTH_KEY": KEY,
            "EEADM_COMMAND": command[0],
            "EEADM_TIMEOUT": str(args.eeadm_timeout),
            "MANAGED_ROOTS": str(fs),
            "STATE_DIR": str(tmp / "state"),
            "LOGLEVEL": "WARNING",
            "ACCESS_LOG": "false",
        }
        server = devserver.start(env, tmp / "gunicorn.log")
        url = server.url
        try:
            queued = migrated.pop(0)
            first = requests.post(url + RECALL, json={"path": queued}, headers=HDR, timeout=30)
            assert first.json() == {"state": "archived"}, first.text
            hang.touch()
            stop = threading.Event()
            health: list[float] = []
            store_polls: list[float] = []
            probe_errors: Counter = Counter()

            def probe() -> None:
                while not stop.is_set():
                    t = time.monotonic()
                    r = requests.get(url + "/healthz", timeout=30)
                    health.append(time.monotonic() - t)
                    t = time.monotonic()
                    p = requests.post(url + RECALL, json={"path": queued}, headers=HDR, timeout=30)
                    store_polls.append(time.monotonic() - t)
                    if not r.ok or p.status_code != 201:
                        probe_errors[(r.status_code, p.status_code)] += 1
                    stop.wait(0.05)

            files = iter(migrated)
            lock = threading.Lock()
            answers: list[tuple[int, float, str | None]] = []

            def client() -> None:
                while not stop.is_set():
                    with lock:
                        path = next(files, None)
                    if path is None:
                        raise SystemExit("hang.py: ran out of unknown files; use a shorter run")
                    t = time.monotonic()
                    r = requests.post(url + RECALL, json={"path": path}, headers=HDR, timeout=300)
                    answers.append(
                        (r.status_code, time.monotonic() - t, r.headers.get("Retry-After"))
                    )
                    stop.wait(1.0)

            with ThreadPoolExecutor(args.clients + 1) as pool:
                jobs = [pool.submit(probe)] + [pool.submit(client) for _ in range(args.clients)]
                time.sleep(args.seconds)
                stop.set()
                for j in jobs:
                    j.result()
            hang.unlink()
            t0 = time.monotonic()
            recovered = None
            while time.monotonic() - t0 < 300:
                r = requests.post(
                    url + RECALL, json={"path": next(files)}, headers=HDR, timeout=300
                )
                if r.status_code == 201:
                    recovered = time.monotonic() - t0
                    break
                time.sleep(1.0)
        finally:
            server.stop()
            devserver.kill_recalls(server.env)
    by_status = Counter(a[0] for a in answers)
    slowest = max(a[1] for a in answers)
    no_retry_after = sum(1 for a in answers if a[0] == 503 and not a[2])
    result = {
        "eeadm_timeout_s": args.eeadm_timeout,
        "clients": args.clients,
        "seconds": args.seconds,
        "unknown_polls": dict(sorted(by_status.items())),
        "unknown_slowest_s": round(slowest, 2),
        "503_without_retry_after": no_retry_after,
        "healthz_ms": {
            "n": len(health),
            "p50": round(pct(health, 0.5), 1),
            "p99": round(pct(health, 0.99), 1),
            "max": round(max(health) * 1000, 1),
        },
        "store_poll_ms": {
            "n": len(store_polls),
            "p50": round(pct(store_polls, 0.5), 1),
            "p99": round(pct(store_polls, 0.99), 1),
            "max": round(max(store_polls) * 1000, 1),
        },
        "probe_errors": {str(k): v for k, v in probe_errors.items()},
        "recovered_after_s": None if recovered is None else round(recovered, 1),
        "mean_unknown_s": round(statistics.mean(a[1] for a in answers), 3),
    }
    print(json.dumps(result, indent=2))
    ok = (
        slowest < args.eeadm_timeout + 1
        and result["healthz_ms"]["p99"] < 100
        and result["store_poll_ms"]["p99"] < 100
        and not probe_errors
        and not no_retry_after
    )
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
