"""What one poll costs in-process: the WSGI app called directly, no server, no socket.

api_load.py measures the service under gunicorn and wrk, where the machine's
noise is +-10 %; this isolates the part the code decides, the Python from the
WSGI call to the response body, with the same settings as api_load.py (an
in-flight poll is answered from the store, a resident one from the state
cache after the path check and the file's stat) and beside it the bare handler
(bare_app.py). Each figure is the best of `--repeat` runs of `--polls` polls
in one thread: the least the work costs, not what a busy worker sees (there
sixteen threads share one GIL and the store's reads are in other processes).

    python bench/poll_cost.py [--polls 5000] [--repeat 7] [--engines sqlite postgresql]

Leaves out: gunicorn (its parsing, the socket), metrics shared between
processes unless PROMETHEUS_MULTIPROC_DIR is set (the service sets it under
gunicorn; this script sets it to a temporary directory, as a worker has it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import pgcluster
from werkzeug.test import EnvironBuilder

RECALL = "/api/v0.5/globus_recall/globus_recall"
KEY = "bench-key"


def caller(app, path: str) -> Callable[[], bytes]:
    """One poll of `path` through `app`'s WSGI callable; returns the body."""
    body = json.dumps({"path": path, "globus_taskid": "load"}).encode()
    environ = EnvironBuilder(
        path=RECALL,
        method="POST",
        data=body,
        headers={"X-API-KEY": KEY, "Content-Type": "application/json"},
    ).get_environ()

    def start_response(status, headers, exc_info=None):
        """The answer's body is what is checked (main)."""

    def call() -> bytes:
        env = dict(environ, **{"wsgi.input": io.BytesIO(body)})
        result = app(env, start_response)
        try:
            return b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()

    return call


def best(call: Callable[[], bytes], polls: int, repeat: int) -> float:
    """Microseconds a poll, the best of `repeat` runs."""
    for _ in range(200):
        call()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(polls):
            call()
        runs.append((time.perf_counter() - started) / polls * 1e6)
    return min(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polls", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--engines", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="poll-cost-") as d:
        tmp = Path(d)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")  # as under gunicorn
        (tmp / "metrics").mkdir()
        os.environ["AUTH_KEY"] = KEY
        # imported after PROMETHEUS_MULTIPROC_DIR is set, as gunicorn's workers do
        import bare_app

        from ltfsee_globus import create_app
        from ltfsee_globus.sim.library import Layout, Library, Timing, init_library

        lib = tmp / "lib"
        fs = init_library(lib, Layout(time_scale=1.0), Timing())
        resident, migrated = (Library.list_paths(lib, s)[0] for s in ("R", "M"))
        os.environ["EEADM_SIM_DIR"] = str(lib)
        eeadm = str(Path(sys.executable).parent / "eeadm-sim")
        cluster = pgcluster.start(durable=True) if "postgresql" in args.engines else None
        try:
            cases = {"bare": caller(bare_app.create_app(), resident)}
            for engine in args.engines:
                url = cluster.create_database("cost") if engine == "postgresql" else ""
                app = create_app(
                    {
                        "AUTH_KEY": KEY,
                        "MANAGED_ROOTS": str(fs),
                        "STATE_DIR": str(tmp / engine),
                        "STORE_URL": url,
                        "EEADM_COMMAND": eeadm,
                        "BATCH_WINDOW": 0,
                        "PREFETCH": False,
                        "CACHE_DEFAULT_TIMEOUT": 3600,
                    }
                )
                for name, path in (("resident", resident), ("in flight", migrated)):
                    call = caller(app, path)
                    call()  # looks the file up once (and queues the migrated one)
                    cases[f"{engine} {name}"] = call
            answers = {name: json.loads(call()) for name, call in cases.items()}
            print("| poll | answer | us a poll (best) | / bare |")
            print("|---|---|---|---|")
            bare = best(cases["bare"], args.polls, args.repeat)
            for name, call in cases.items():
                us = bare if name == "bare" else best(call, args.polls, args.repeat)
                print(f"| {name} | {answers[name]['state']} | {us:.1f} | {us / bare:.2f} |")
        finally:
            if cluster:
                cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
