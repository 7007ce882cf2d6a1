"""Where a poll's time goes: py-spy on one gunicorn worker under wrk load.

Starts the service as api_load.py does (on `--engine`), drives in-flight polls
at `--connections` for `--seconds` with wrk, records one worker with
`py-spy record --gil` (samples only while a thread holds the GIL: its CPU in
Python), and prints each function's share of the samples, inclusive.

    pip install py-spy; apt-get install wrk
    python bench/profile_poll.py [--engine sqlite|postgresql] [--file "in flight"|resident]

Leaves out: time outside the GIL (the kernel, the database server, wrk), and
the second worker (the two share the load alike).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from api_load import serve, wrk
from harness import devserver, pgcluster


def shares(raw: Path) -> tuple[int, Counter]:
    """Samples in all, and per function (inclusive) in py-spy's raw output."""
    total, per = 0, Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for name in {frame.split(" (")[0] for frame in stack.split(";")}:
            per[name] += n
    return total, per


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--file", choices=("in flight", "resident"), default="in flight")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--files", type=int, default=100, help="distinct files polled in turn")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists() or not shutil.which("wrk"):
        print("profile_poll: needs py-spy (pip) and wrk (apt-get)", file=sys.stderr)
        return 2
    cluster = pgcluster.start(durable=True) if args.engine == "postgresql" else None
    with tempfile.TemporaryDirectory(prefix="profile-") as d:
        tmp = Path(d)
        url = cluster.create_database("profile") if cluster else ""
        settings = argparse.Namespace(workers=2, threads=8, files=args.files)
        svc = serve(tmp, args.engine, url, settings)
        server = svc["server"]
        try:
            bodies = svc["bodies"][args.file]
            load = threading.Thread(
                target=wrk, args=(server.url, bodies, args.connections, args.seconds, tmp)
            )
            load.start()
            time.sleep(2)  # past the start of the run
            worker = subprocess.run(
                ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
            ).stdout.split()[0]
            raw = tmp / "spy.txt"
            subprocess.run(
                [
                    spy,
                    "record",
                    "--gil",
                    "--nonblocking",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-d",
                    str(args.seconds - 4),
                    "-p",
                    worker,
                    "-o",
                    str(raw),
                ],
                capture_output=True,
                check=True,
            )
            load.join()
            total, per = shares(raw)
        finally:
            server.stop()
            devserver.kill_recalls(server.env)
            if cluster:
                cluster.destroy()
    print(f"{total} samples with the GIL held ({args.engine}, {args.file}, {args.connections})")
    print("| share | function |\n|---|---|")
    for name, n in per.most_common(args.top):
        print(f"| {n / total:.1%} | {name} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
