"""Hot-path poll throughput and latency of the Globus endpoint, measured with wrk.

Starts the real service (gunicorn, embedded stager, shipped defaults but for
the settings below) once per store engine, each on its own small simulated
library whose `eeadm recall` never finishes, then drives the stage app's
request at 8 and 64 concurrent clients, each poll on a new connection as the
stage app makes it (`--keep-alive` reuses them), over `--files` distinct
files of each kind in turn: resident files (answered from the state cache)
and files whose recall is in flight (answered from the store). Beside them
runs `bare`: the least any Flask handler of this API can do (bare_app.py:
parse the body, check the key in constant time, answer resident) under the
same gunicorn settings. The servers run side by side and take turns: each
figure (file, connections) is measured on every server back to back, round
after round (`--rounds`), each round starting with the next server, so a
noisy machine hits all alike and none always runs first. The tables give
each figure's median over the rounds and, for each engine against the bare
handler (and PostgreSQL against SQLite), the median of the rounds' ratios,
each round's beside it. `--against REF` adds the build at git REF (on
SQLite, exported from git) as one more server taking its turn, so a change
is measured against the build before it in the same run.
It also counts the eeadm calls made during each run.

    apt-get install wrk postgresql
    python bench/api_load.py [--seconds 10] [--rounds 3] [--modes sqlite postgresql bare]
    python bench/api_load.py --modes sqlite bare --against HEAD~3   # this build against another

Settings changed from the shipped defaults, the same for every engine:
BATCH_WINDOW=0 and PREFETCH=false (the one in-flight file goes at once),
CACHE_DEFAULT_TIMEOUT=3600 (the resident file stays cached), LOGLEVEL=WARNING
and ACCESS_LOG=false (no log I/O in the figures). Leaves out: TLS, a network
between client and server and between the service and PostgreSQL (all
loopback on one 2-core machine, wrk included), and PostgreSQL tuning (the
cluster runs Debian's defaults, durable).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from harness import devserver, pgcluster, source_tree

from ltfsee_globus.sim.library import Layout, Library, Timing, init_library

ROOT = Path(__file__).resolve().parent.parent
RECALL = "/api/v0.5/globus_recall/globus_recall"
KEY = "bench-key"
FILES = ("resident", "in flight")

LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-KEY"] = "{key}"
{close}bodies = {{ {bodies} }}
n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[n % #bodies + 1])
end
"""


def lua_string(text: str) -> str:
    """`text` as a Lua string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def wrk(
    url: str,
    bodies: list[dict],
    connections: int,
    seconds: int,
    tmp: Path,
    *,
    keep_alive: bool = False,
) -> dict:
    """One wrk run, each thread posting `bodies` in turn. Without keep_alive
    each request comes on a new connection, as the stage app's do (one
    process per poll): gunicorn's workers then share the load request by
    request, where a few kept-alive connections can all land on one worker
    and leave the other idle."""
    script = tmp / "post.lua"
    close = "" if keep_alive else 'wrk.headers["Connection"] = "close"\n'
    listed = ", ".join(lua_string(json.dumps(b)) for b in bodies)
    script.write_text(LUA.format(bodies=listed, key=KEY, close=close))
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


def serve(
    tmp: Path, name: str, store_url: str, args: argparse.Namespace, root: Path = ROOT
) -> dict:
    """A service (from source tree `root`) on its own library and state; its
    URL, calls log and the bodies of its polls: `args.files` resident files
    (each already looked up) and as many in flight (one recall that never
    ends, the rest queued)."""
    base = tmp / name
    n = args.files
    fs = init_library(base / "lib", Layout(files=10 * n, time_scale=1.0), Timing())
    resident, migrated = (Library.list_paths(base / "lib", s)[:n] for s in ("R", "M"))
    calls = base / "calls.log"  # a line per eeadm call
    calls.touch()
    command = devserver.eeadm_wrapper(
        base / "eeadm",
        base / "lib",
        calls,
        before='if [ "$1" = recall ]; then exec sleep 3600; fi\n',  # stays in flight
    )
    env = {
        "AUTH_KEY": KEY,
        "EEADM_COMMAND": command[0],
        "MANAGED_ROOTS": str(fs),
        "STATE_DIR": str(base / "state"),
        "STORE_URL": store_url,
        "WORKERS": str(args.workers),
        "THREADS": str(args.threads),
        "BATCH_WINDOW": "0",
        "BATCH_QUIET": "0",
        "PREFETCH": "false",
        "LOGLEVEL": "WARNING",
        "CACHE_DEFAULT_TIMEOUT": "3600",
        "ACCESS_LOG": "false",
    }
    server = devserver.start(env, base / "gunicorn.log", root=root)
    bodies = {
        "resident": [{"path": p, "globus_taskid": "load"} for p in resident],
        "in flight": [{"path": p, "globus_taskid": "load"} for p in migrated],
    }
    hdr = {"X-API-KEY": KEY}
    for body in bodies["in flight"]:
        requests.post(server.url + RECALL, json=body, headers=hdr, timeout=10)
    for _ in range(100):  # wait until the stager has the recall running
        if "recall" in calls.read_text():
            break
        time.sleep(0.1)
    for body in bodies["in flight"]:
        r = requests.post(server.url + RECALL, json=body, headers=hdr, timeout=10)
        assert r.json() == {"state": "archived"}, r.text
    # every worker looks each resident file up: short runs over all of them
    # until one makes no eeadm call
    for _ in range(30):
        before = calls.read_text().count("file state")
        wrk(server.url, bodies["resident"], 8, 1, base)
        if calls.read_text().count("file state") == before:
            break
    return {"server": server, "calls": calls, "bodies": bodies}


def serve_bare(tmp: Path, args: argparse.Namespace) -> dict:
    """bare_app.py under the service's gunicorn settings (bare_gunicorn.py)."""
    here = Path(__file__).resolve().parent
    env = {
        "AUTH_KEY": KEY,
        "WORKERS": str(args.workers),
        "THREADS": str(args.threads),
        "ACCESS_LOG": "false",
        "PYTHONPATH": str(here),
    }
    server = devserver.start(
        env, tmp / "bare.log", config=here / "bare_gunicorn.py", app="bare_app:create_app()"
    )
    calls = tmp / "bare-calls.log"  # it runs no eeadm
    calls.write_text("")
    paths = [f"/gpfs/any/file{i:05d}.dat" for i in range(args.files)]
    bodies = [{"path": p, "globus_taskid": "load"} for p in paths]
    return {"server": server, "calls": calls, "bodies": dict.fromkeys(FILES, bodies)}


def ratio_table(runs: dict, over: str, base: str, title: str) -> None:
    """`over`'s requests/s and p99 against `base`'s, per file and connections:
    the median of each round's ratio (the two ran back to back)."""
    print(f"\n| file | connections | {title} requests/s | p99 {title} | rounds |")
    print("|---|---|---|---|---|")
    for (mode, name, conns), rs in runs.items():
        if mode == over:
            pairs = list(zip(rs, runs[(base, name, conns)], strict=True))
            rps = statistics.median(o["rps"] / b["rps"] for o, b in pairs)
            p99 = statistics.median(o["p99_ms"] / b["p99_ms"] for o, b in pairs)
            each = " ".join(f"{o['rps'] / b['rps']:.2f}" for o, b in pairs)
            print(f"| {name} | {conns} | {rps:.2f} | {p99:.2f} | {each} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument(
        "--files", type=int, default=100, help="distinct files each run polls in turn, per kind"
    )
    ap.add_argument(
        "--modes",
        nargs="+",
        choices=("sqlite", "postgresql", "bare"),
        default=["sqlite", "postgresql", "bare"],
        help="the service on each store engine, and the bare Flask handler",
    )
    ap.add_argument(
        "--against",
        metavar="REF",
        help="also run the build at git REF on SQLite (mode `against`), paired like the rest",
    )
    ap.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse each connection (FTS-like) instead of one per poll (the stage app's)",
    )
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("api_load: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    runs: dict[tuple[str, str, int], list[dict]] = {}
    services: dict[str, dict] = {}
    cluster = pgcluster.start(durable=True) if "postgresql" in args.modes else None
    with tempfile.TemporaryDirectory(prefix="api-load-") as d:
        tmp = Path(d)
        try:
            for mode in args.modes:
                if mode == "bare":
                    services[mode] = serve_bare(tmp, args)
                    continue
                url = cluster.create_database("load") if mode == "postgresql" else ""
                services[mode] = serve(tmp, mode, url, args)
            if args.against:
                services["against"] = serve(
                    tmp, "against", "", args, root=source_tree(tmp, args.against)
                )
            for n in range(args.rounds):
                for name in FILES:
                    for conns in (8, 64):
                        order = list(services.items())  # back to back, each round
                        k = n % len(order)  # starting one further on: no mode always first
                        for mode, svc in order[k:] + order[:k]:
                            before = len(svc["calls"].read_text().splitlines())
                            r = wrk(
                                svc["server"].url,
                                svc["bodies"][name],
                                conns,
                                args.seconds,
                                tmp,
                                keep_alive=args.keep_alive,
                            )
                            made = len(svc["calls"].read_text().splitlines()) - before
                            r.update(round=n + 1, mode=mode, file=name, eeadm_calls=made)
                            runs.setdefault((mode, name, conns), []).append(r)
                            print(json.dumps(r), flush=True)
        finally:
            for mode, svc in services.items():
                svc["server"].stop()
                if mode != "bare":
                    devserver.kill_recalls(svc["server"].env)  # the never-ending recall
            if cluster:
                cluster.destroy()
    print(f"\nmedian of {args.rounds} interleaved round(s) of {args.seconds} s each")
    print("| mode | file | connections | requests/s | p50 ms | p99 ms | non-2xx | eeadm calls |")
    print("|---|---|---|---|---|---|---|---|")
    med: dict[tuple[str, str, int], dict] = {}
    for key, rs in runs.items():
        engine, name, conns = key
        m = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
        m.update(
            non_2xx=sum(r["non_2xx"] for r in rs), eeadm_calls=sum(r["eeadm_calls"] for r in rs)
        )
        med[key] = m
        print(
            f"| {engine} | {name} | {conns} | {m['rps']:.0f} | {m['p50_ms']:.2f} "
            f"| {m['p99_ms']:.2f} | {m['non_2xx']} | {m['eeadm_calls']} |"
        )
    modes = set(services)
    for engine, title in (
        ("sqlite", "SQLite / bare"),
        ("postgresql", "PostgreSQL / bare"),
        ("against", f"{args.against} / bare"),
    ):
        if {engine, "bare"} <= modes:
            ratio_table(runs, engine, "bare", title)
    if {"sqlite", "postgresql"} <= modes:
        ratio_table(runs, "postgresql", "sqlite", "PostgreSQL / SQLite")
    if {"sqlite", "against"} <= modes:
        ratio_table(runs, "sqlite", "against", f"SQLite / {args.against}")
    return 0 if all(m["non_2xx"] == 0 for m in med.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
