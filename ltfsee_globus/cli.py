"""`ltfsee-globus`: operator commands.

    ltfsee-globus check-config              validate settings, print them (keys hidden)
    ltfsee-globus stager                    run the stager standalone (its own unit)
    ltfsee-globus simulator init DIR [--demo | layout options]
    ltfsee-globus simulator stats DIR       counters and task timings as JSON
    ltfsee-globus simulator damage DIR PATH...   make files unreadable (failure drills)
    ltfsee-globus simulator migrate DIR PATH...  put files back on tape only
    ltfsee-globus demo [--dir DIR] [--bind ADDR] start gunicorn on a demo library

Exit codes: 0 ok, 1 runtime failure, 2 usage, 3 invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
from dataclasses import asdict, fields
from pathlib import Path

from .config import ConfigError, load_settings
from .sim.library import FS_ROOT, Layout, Library, SimError, Timing, init_library, store_path

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


def cmd_check_config(_args: argparse.Namespace) -> int:
    settings = load_settings()
    shown = asdict(settings)
    shown["AUTH_KEY"] = sorted(settings.AUTH_KEY)  # names only, never the keys
    print(json.dumps(shown, indent=2))
    return EXIT_OK


def cmd_stager(_args: argparse.Namespace) -> int:
    from .app import create_app

    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app()
    svc = app.extensions["ltfsee"]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from .stager import Stager

    Stager(svc.settings, svc.store, svc.eeadm).run(stop)
    return EXIT_OK


def _layout_from(args: argparse.Namespace) -> Layout:
    layout = Layout() if args.demo else Layout(files=1000, dirs=20, tapes=10, drives=4)
    for f in fields(Layout):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(layout, f.name, value)
    return layout


def cmd_sim_init(args: argparse.Namespace) -> int:
    fs = init_library(args.dir, _layout_from(args), Timing())
    print(f"simulated library in {Path(args.dir).resolve()}; files under {fs}")
    return EXIT_OK


def cmd_sim_stats(args: argparse.Namespace) -> int:
    lib = Library(args.dir)
    try:
        print(json.dumps(lib.stats(), indent=2))
    finally:
        lib.close()
    return EXIT_OK


def cmd_sim_mark(args: argparse.Namespace) -> int:
    lib = Library(args.dir)
    try:
        n = lib.damage(args.paths) if args.cmd == "damage" else lib.migrate(args.paths)
    finally:
        lib.close()
    print(f"{n} file(s) changed")
    return EXIT_OK if n else EXIT_FAIL


def cmd_demo(args: argparse.Namespace) -> int:
    """Make (once) a demo library and key, print how to use them, exec gunicorn."""
    base = Path(args.dir).resolve()
    sim = base / "library"
    if not store_path(sim).exists():
        init_library(sim, Layout(), Timing())
    key_file = base / "auth_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(24) + "\n")
        key_file.chmod(0o600)
    key = key_file.read_text().strip()
    sim_cmd = shutil.which("eeadm-sim")
    gunicorn = shutil.which("gunicorn")
    if not sim_cmd or not gunicorn:
        print("demo: eeadm-sim and gunicorn must be installed (run: make setup)", file=sys.stderr)
        return EXIT_FAIL
    env = {
        "AUTH_KEY": key,
        "EEADM_COMMAND": sim_cmd,
        "EEADM_SIM_DIR": str(sim),
        "MANAGED_ROOTS": str(sim / FS_ROOT),
        "STATE_DIR": str(base / "state"),
        "BATCH_WINDOW": "2",
        "BIND": args.bind,
    }
    os.environ.update(env)
    migrated = Library.list_paths(sim, "M")
    host, _, port = args.bind.rpartition(":")
    scheme = "https" if os.environ.get("CERTFILE") else "http"
    url = f"{scheme}://{host if host not in ('0.0.0.0', '') else 'localhost'}:{port}"  # noqa: S104
    client = Path(__file__).resolve().parent.parent / "clients" / "simple_client.py"
    print(
        f"\nltfsee-globus demo\n  URL:      {url}\n  AUTH_KEY: {key}\n"
        f"  library:  {sim} (simulated eeadm, time x{Layout().time_scale:g})\n"
        f"  try:      LTFSEE_URL={url} AUTH_KEY={key} GLOBUS_STAGE_TASKID=demo "
        f"GLOBUS_STAGE_PATH={migrated[0]} {sys.executable} {client}\n"
        f"            (archived at first; run it again after a few seconds: resident)\n",
        flush=True,
    )
    conf = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
    argv = [gunicorn, "-c", str(conf), "ltfsee_globus:create_app()"]
    os.execv(gunicorn, argv)  # noqa: S606 - replaces this process, no shell
    return EXIT_FAIL  # pragma: no cover - execv does not return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltfsee-globus", description="ltfsee-globus operator commands"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-config", help="validate the configuration").set_defaults(
        func=cmd_check_config
    )
    sub.add_parser("stager", help="run the stager standalone").set_defaults(func=cmd_stager)
    demo = sub.add_parser("demo", help="serve a demo simulated library under gunicorn")
    demo.add_argument("--dir", default="demo")
    demo.add_argument("--bind", default="127.0.0.1:5000")
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("simulator", help="the simulated tape library")
    simsub = sim.add_subparsers(dest="cmd", required=True)
    init = simsub.add_parser("init", help="create a simulated library")
    init.add_argument("dir")
    init.add_argument("--demo", action="store_true", help="the small demo library (default)")
    for name, kind in (
        ("files", int),
        ("dirs", int),
        ("tapes", int),
        ("drives", int),
        ("libraries", int),
        ("premigrated", float),
        ("resident", float),
        ("min_size", int),
        ("max_size", int),
        ("time_scale", float),
        ("seed", int),
        ("subdir", str),
    ):
        init.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    init.add_argument("--placement", choices=("clustered", "random"))
    init.set_defaults(func=cmd_sim_init)
    stats = simsub.add_parser("stats", help="counters and task timings (JSON)")
    stats.add_argument("dir")
    stats.set_defaults(func=cmd_sim_stats)
    for name in ("damage", "migrate"):
        p = simsub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("paths", nargs="+")
        p.set_defaults(func=cmd_sim_mark)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ltfsee-globus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SimError as exc:
        print(f"ltfsee-globus: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
