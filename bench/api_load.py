"""Hot-path poll throughput and latency of the Globus endpoint, measured with wrk.

Starts the real service (gunicorn, embedded stager) on a small simulated
library whose `eeadm recall` never finishes, then drives the stage app's
request at 8 and 64 concurrent connections for two files: one resident
(answered from the state cache) and one whose recall is in flight (answered
from the store). It also counts the eeadm calls made during the in-flight run.

    apt-get install wrk
    python bench/api_load.py [--seconds 10] [--workers 2] [--threads 8]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from harness import devserver

from ltfsee_globus.sim.library import Layout, Library, Timing, init_library

ROOT = Path(__file__).resolve().parent.parent
RECALL = "/api/v0.5/globus_recall/globus_recall"
KEY = "bench-key"

LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-KEY"] = "{key}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(url: str, body: dict, connections: int, seconds: int, tmp: Path) -> dict:
    script = tmp / "post.lua"
    script.write_text(LUA.format(body=json.dumps(body), key=KEY))
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url + RECALL,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "connections": connections,
        "rps": round(rps),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("api_load: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="api-load-") as d:
        tmp = Path(d)
        fs = init_library(tmp / "lib", Layout(time_scale=1.0), Timing())
        resident, migrated = (Library.list_paths(tmp / "lib", s)[0] for s in ("R", "M"))
        calls = tmp / "calls.log"
        command = devserver.eeadm_wrapper(
            tmp / "eeadm",
            tmp / "lib",
            calls,
            before='if [ "$1" = recall ]; then exec sleep 3600; fi\n',  # stays in flight
        )
        env = {
            "AUTH_KEY": KEY,
            "EEADM_COMMAND": command[0],
            "MANAGED_ROOTS": str(fs),
            "STATE_DIR": str(tmp / "state"),
            "WORKERS": str(args.workers),
            "THREADS": str(args.threads),
            "BATCH_WINDOW": "0",
            "BATCH_QUIET": "0",
            "PREFETCH": "false",
            "LOGLEVEL": "WARNING",
            "CACHE_DEFAULT_TIMEOUT": "3600",
            "ACCESS_LOG": "false",
        }
        server = devserver.start(env, tmp / "gunicorn.log")
        url = server.url
        try:
            hdr = {"X-API-KEY": KEY}
            body_in_flight = {"path": migrated, "globus_taskid": "load"}
            requests.post(url + RECALL, json=body_in_flight, headers=hdr, timeout=10)
            for _ in range(100):  # wait until the stager has the recall running
                if "recall" in (calls.read_text() if calls.exists() else ""):
                    break
                time.sleep(0.1)
            for _ in range(4):  # warm every worker's cache for the resident file
                requests.post(url + RECALL, json={"path": resident}, headers=hdr, timeout=10)
            rows = []
            for name, body in (
                ("resident", {"path": resident, "globus_taskid": "load"}),
                ("in flight", body_in_flight),
            ):
                for conns in (8, 64):
                    before = len(calls.read_text().splitlines())
                    r = wrk(url, body, conns, args.seconds, tmp)
                    r.update(file=name, eeadm_calls=len(calls.read_text().splitlines()) - before)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            server.stop()
            devserver.kill_recalls(server.env)  # the never-ending recall
    print("\n| file | connections | requests/s | p50 ms | p99 ms | non-2xx | eeadm calls |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['file']} | {r['connections']} | {r['rps']} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['non_2xx']} | {r['eeadm_calls']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
