"""`ltfsee-globus`: operator commands.

    ltfsee-globus check-config              validate settings, print them (keys hidden)
    ltfsee-globus stager                    run the stager standalone (its own unit)
    ltfsee-globus status [--json]           stager, queue by library and tape, batches, failures
    ltfsee-globus files [--status S] [--library L] [--tape T] [--task ID] [--prefix P]
    ltfsee-globus batches [--limit N]       newest recall batches, running first
    ltfsee-globus retry PATH... | --failed  queue failed files again (attempts reset)
    ltfsee-globus cancel PATH... | --task ID   forget queued files (never a running recall)
    ltfsee-globus forget PATH...            drop a failure, so the next poll starts afresh
    ltfsee-globus doctor                    config, roots, store, stager lease, eeadm, sudo, disk
    ltfsee-globus ready [--wait S] [--url U]   ask the running service's /readyz
    ltfsee-globus install-units [--prefix P] [--state-dir D] [--dest /]   systemd units, sudoers
    ltfsee-globus simulator init DIR [--demo | layout options]
    ltfsee-globus simulator stats DIR       counters and task timings as JSON
    ltfsee-globus simulator damage DIR PATH...   make files unreadable (failure drills)
    ltfsee-globus simulator migrate DIR PATH...  put files back on tape only
    ltfsee-globus demo [--dir DIR] [--bind ADDR] start gunicorn on a demo library

The operator commands work on the store directly, with the service up or
down; each change is recorded in the store (who, when, what) and logged.
They read the service's environment file, as its systemd units do
(`--env-file F`, default $LTFSEE_GLOBUS_ENV or /etc/ltfsee-globus/env; the
process environment wins), and refuse, as root, to change a SQLite store
another user owns (`--as-root` to insist).

Exit codes: 0 ok, 1 runtime failure (doctor: a check failed), 2 usage,
3 invalid configuration.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import pwd
import shutil
import signal
import ssl
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from . import demo
from .config import (
    STORE_FILE,
    ConfigError,
    Settings,
    findings,
    load_settings,
    missing_roots,
    share_metrics,
)
from .conninfo import describe
from .eeadm import Eeadm, EeadmError
from .health import (
    drive_list_check,
    human_age,
    passed,
    readiness,
    status_report,
    sudo_rights,
)
from .install import Layout as InstallLayout
from .install import write as write_units
from .parse import FileState
from .placement import NoCopy, Placement, place
from .sim.library import Layout, Library, SimError, Timing, init_library
from .store import FAILED, Store, StoreUnavailable, open_store
from .tokens import FETCH_ERRORS, fetch_keys

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3
#: `doctor` warns below this much free space in STATE_DIR.
DOCTOR_MIN_FREE = 1 << 30

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A command line that cannot be acted on (exit 2)."""


def cmd_check_config(_args: argparse.Namespace) -> int:
    """Every setting validated (gunicorn's too), what the paths are, no side effects."""
    settings = load_settings()
    shown = asdict(settings)
    shown["AUTH_KEY"] = sorted(settings.AUTH_KEY)  # names only, never the keys
    if settings.STORE_URL:  # the database, never its password
        shown["STORE_URL"] = describe(settings.STORE_URL)
    print(json.dumps(shown, indent=2))
    for name, found in findings(settings).items():
        print(f"{name}: {found}", file=sys.stderr)
    missing = missing_roots(settings)
    if missing:
        raise ConfigError(f"MANAGED_ROOTS not mounted or not directories: {', '.join(missing)}")
    return EXIT_OK


def _logging() -> None:
    """Log to stderr (the journal under systemd) at LOGLEVEL."""
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


#: The environment file the systemd units load; operator commands read it too.
SERVICE_ENV = "/etc/ltfsee-globus/env"


def _service_env(path: str) -> None:
    """Settings from the service's environment file (systemd's KEY=VALUE
    lines), where the process environment does not set them: an operator's
    `ltfsee-globus status` then sees the service's store and key."""
    from dotenv import dotenv_values

    try:
        with open(path, encoding="utf-8") as fh:
            values = dotenv_values(stream=fh)
    except FileNotFoundError:
        return
    except OSError as exc:
        print(f"ltfsee-globus: not reading {path}: {exc.strerror}", file=sys.stderr)
        return
    for name, value in values.items():
        if value is not None:
            os.environ.setdefault(name, value)


def _refuse_foreign_store(settings: Settings, as_root: bool) -> None:
    """Root changing a SQLite store another user owns leaves root-owned files
    (its WAL, its shared memory) the service can no longer write: refused
    unless asked for."""
    db = settings.state_dir / STORE_FILE
    if settings.STORE_URL or as_root or os.geteuid() != 0 or not db.exists():
        return
    owner = db.stat().st_uid
    if owner != 0:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise UsageError(
            f"the store {db} belongs to {name}: run this as that user "
            f"(sudo -u {name} ltfsee-globus ...), or give --as-root"
        )


@contextmanager
def _store(settings: Settings, args: argparse.Namespace) -> Iterator[Store]:
    """The store `settings` name, closed afterwards."""
    _refuse_foreign_store(settings, args.as_root)
    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


def _show(records: Sequence[Any], columns: list[str], as_json: bool) -> int:
    """Store records as JSON (every field) or as a table (`columns`)."""
    rows = [asdict(r) for r in records]
    print(json.dumps(rows, indent=2) if as_json else _table(rows, columns))
    return EXIT_OK


def _who() -> str:
    """The operator: the user behind sudo if any."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _table(rows: list[dict], columns: list[str]) -> str:
    """Rows as aligned text columns."""
    cells = [columns] + [["" if r.get(c) is None else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings()
    with _store(settings, args) as store:
        report = status_report(store, settings)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    stager = report["stager"]
    held = human_age(stager["held_for"]) if stager["held_for"] is not None else "-"
    print(
        f"stager: running on {stager['node']} (pid {stager['pid']}, lease epoch "
        f"{stager['epoch']}, for {held})"
        if stager["running"]
        else f"stager: NOT RUNNING (last take-over {held} ago)"
    )
    print(", ".join(f"{k} {v}" for k, v in report["files"].items()))
    sections = (
        (
            "nodes",
            [{**n, "heartbeat": f"{human_age(n['heartbeat_age'])} ago"} for n in report["nodes"]],
            ["node", "role", "processes", "heartbeat", "version"],
        ),
        (
            f"drives ({report['drives']['state']}: {report['drives']['says']})",
            [
                {**d, "recall": "yes" if d["recall"] else "no", "tape": d["tape"] or "-"}
                for lib in report["drives"]["libraries"]
                for d in lib["drives"]
            ],
            ["library", "id", "status", "state", "role", "tape", "recall"],
        ),
        (
            "queue by library and tape",
            [{**q, "oldest": human_age(q["oldest_age"])} for q in report["queue"]],
            ["library", "tape", "files", "bytes", "oldest"],
        ),
        (
            "running batches",
            [
                {
                    **b,
                    "done": f"{b['files_done']}/{b['n_files']}",
                    "age": human_age(b["age"]),
                    "eta": human_age(b["eta"]),
                }
                for b in report["running_batches"]
            ],
            ["id", "library", "tape", "done", "age", "eta", "pid"],
        ),
        (
            "retrying",
            [{**f, "next try": human_age(f["retry_in"])} for f in report["retrying"]],
            ["path", "attempts", "next try", "last_error"],
        ),
        ("recent failures", report["recent_failures"], ["path", "attempts", "last_error"]),
        (
            "stage requests (WLCG)",
            [
                {**q, "age": human_age(report["now"] - q["created_at"])}
                for q in report["stage_requests"]
            ],
            ["id", "owner", "age", "files", "completed", "failed", "cancelled"],
        ),
        (
            "eeadm",
            [
                {**e, "last": f"{human_age(e['age'])} ago", "secs": f"{e['seconds']:.2f}"}
                for e in report["eeadm"]
            ],
            ["subcommand", "last", "outcome", "secs", "calls", "failures", "last_error"],
        ),
    )
    for title, rows, columns in sections:
        print(f"\n{title}:")
        print(_table(rows, columns) if rows else "  none")
    return EXIT_OK


def cmd_files(args: argparse.Namespace) -> int:
    with _store(load_settings(), args) as store:
        rows = store.ops.files(
            status=args.status,
            library=args.library,
            tape=args.tape,
            task=args.task,
            prefix=args.prefix,
            limit=args.limit,
        )
    return _show(rows, ["path", "status", "library", "tape", "attempts", "last_error"], args.json)


def cmd_batches(args: argparse.Namespace) -> int:
    """The newest batches; for each that did not succeed, the command that asks
    EE for its task's details."""
    with _store(load_settings(), args) as store:
        rows = store.ops.batches(limit=args.limit)
    columns = ["id", "library", "tape", "status", "files_done", "n_files", "outcome", "task"]
    if args.json:
        return _show(rows, columns, as_json=True)
    print(_table([{**asdict(b), "task": b.eeadm_task_id} for b in rows], columns))
    for b in rows:
        if b.eeadm_task_id and b.outcome in ("partial", "failed"):
            print(f"batch {b.id} ({b.outcome}): eeadm task show {b.eeadm_task_id} -r")
    return EXIT_OK


def cmd_change(args: argparse.Namespace) -> int:
    """retry, cancel, forget: change the store, record and log who did it."""
    _logging()
    who = _who()
    settings = load_settings()
    with _store(settings, args) as store:
        if args.command == "retry":
            if bool(args.paths) == args.failed:
                raise UsageError("retry: give PATHs or --failed")
            failed = args.paths or [f.path for f in store.ops.files(status=FAILED, limit=10**9)]
            placed = _replace(settings, store, failed)
            n = store.ops.retry(placed, who, "all failed" if args.failed else None)
        elif args.command == "cancel":
            if bool(args.paths) == bool(args.task):
                raise UsageError("cancel: give PATHs or --task ID")
            n = store.ops.cancel(args.paths or None, args.task, who)
        else:
            n = store.ops.forget(args.paths, who)
    what = (
        f"--task {args.task}"
        if getattr(args, "task", None)
        else ("--failed" if getattr(args, "failed", False) else " ".join(args.paths))
    )
    log.warning("operator %s: %s %s: %d file(s)", who, args.command, what, n)
    print(f"{args.command}: {n} file(s)")
    return EXIT_OK if n else EXIT_FAIL


def _replace(settings: Settings, store: Store, paths: list[str]) -> dict[str, Placement]:
    """Where each file to retry is recalled from now: its copies as eeadm
    sees them, limited to LTFSEE_LIB (the library its failed recall named
    may be the reason it failed). A file that cannot be placed is named on
    stderr and not retried."""
    eeadm = Eeadm(settings.EEADM_COMMAND, settings.EEADM_TIMEOUT)
    placed: dict[str, Placement] = {}
    step = settings.LOOKUP_MAX_FILES
    for i in range(0, len(paths), step):
        states = eeadm.file_state(paths[i : i + step])
        for path in paths[i : i + step]:
            st = states.get(path)
            if not isinstance(st, FileState):
                why = "no such file" if st is None else st.reason
                print(f"{path}: not retried: {why}", file=sys.stderr)
                continue
            try:
                placed[path] = place(
                    st.tapes,
                    settings.LTFSEE_LIB,
                    busy=store.tapes.busy_tapes,
                    load=store.tapes.library_load,
                )
            except NoCopy as exc:
                print(f"{path}: not retried: {exc}", file=sys.stderr)
    return placed


def cmd_doctor(args: argparse.Namespace) -> int:
    """Every check an operator would make by hand, with what it found."""
    settings = load_settings()  # ConfigError: exit 3 with every problem listed
    eeadm = Eeadm(settings.EEADM_COMMAND, settings.EEADM_TIMEOUT)
    with _store(settings, args) as store:
        checks = {"config": "ok", **readiness(settings, store, eeadm)}
    checks["drivelist"] = drive_list_check(eeadm)
    checks["policy"] = policy_check(settings)
    checks["sudo"] = sudo_rights(settings)
    existing = next(p for p in (settings.state_dir, *settings.state_dir.parents) if p.exists())
    free = shutil.disk_usage(existing).free  # STATE_DIR's file system, made or to be made
    checks["disk"] = "ok" if free >= DOCTOR_MIN_FREE else f"only {free // 2**20} MiB free"
    for name, found in checks.items():
        print(f"{name:8} {found}")
    return EXIT_OK if all(passed(v) for v in checks.values()) else EXIT_FAIL


def policy_check(settings: Settings) -> str:
    """What POLICY_FILE gives, and whether each token issuer it trusts
    answers with its keys now (the service would run on the keys it has)."""
    policy = settings.policy()  # a bad file failed load_settings already
    if policy.keys is None:
        return "ok: no POLICY_FILE: every key everywhere under MANAGED_ROOTS, no tokens"
    found = [f"{len(policy.keys)} key(s)"]
    failed = []
    for url in policy.issuers:
        try:
            found.append(f"{url} {len(fetch_keys(url))} signing key(s)")
        except FETCH_ERRORS as exc:
            failed.append(f"{url} unreachable ({type(exc).__name__}: {str(exc)[:200]})")
    if failed:
        return "issuer keys not fetched: " + "; ".join(failed)
    return "ok: " + ", ".join(found)


def cmd_ready(args: argparse.Namespace) -> int:
    """Wait (up to --wait seconds) until the service answers /readyz with 200.

    The systemd unit runs it after start, so `systemctl start` returns once
    the workers answer and the journal says whether the service is ready.
    Without --url it reaches this host's service as BIND and CERTFILE say
    (a unix socket; TLS checked against CERTFILE itself)."""
    from . import ready

    try:
        target = ready.from_url(args.url, args.cafile) if args.url else ready.local(load_settings())
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise UsageError(f"cannot check readiness: {exc}") from None
    deadline = time.monotonic() + args.wait
    while True:
        ok, why = ready.ask(target)
        if ok:
            print(f"ready: {target.url}")
            return EXIT_OK
        if time.monotonic() >= deadline:
            print(f"not ready: {target.url}/readyz: {why}", file=sys.stderr)
            return EXIT_FAIL
        time.sleep(1)


def cmd_install_units(args: argparse.Namespace) -> int:
    """Write the units, the sudoers rule and env.example for this installation."""
    layout = InstallLayout(
        prefix=args.prefix,
        state_dir=args.state_dir,
        env_file=args.env,
        user=args.user,
        eeadm=args.eeadm,
        after=args.after,
    )
    try:
        written = write_units(Path(args.dest), layout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def cmd_stager(_args: argparse.Namespace) -> int:
    """The stager as its own process; its eeadm counters join the web tier's."""
    _logging()
    settings = load_settings()
    share_metrics(settings)  # before prometheus-client is imported (by .services)
    from .metrics import multiproc_dir, prepare_multiproc_dir
    from .services import build_core
    from .stager import Stager

    prepare_multiproc_dir(multiproc_dir())
    core = build_core(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Stager(core.settings, core.store, core.eeadm, core.clock).run(stop)
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
    """The demo: one node under gunicorn (exec), or --nodes N over PostgreSQL."""
    try:
        if args.nodes > 1:
            return demo.serve_cluster(args.dir, args.bind, args.nodes)
        demo.serve_one(args.dir, args.bind)
    except demo.DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
    return EXIT_FAIL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltfsee-globus", description="ltfsee-globus operator commands"
    )
    parser.add_argument(
        "--env-file",
        default=os.environ.get("LTFSEE_GLOBUS_ENV", SERVICE_ENV),
        help=f"the service's settings (default: $LTFSEE_GLOBUS_ENV or {SERVICE_ENV}); "
        "the process environment wins",
    )
    parser.add_argument(
        "--as-root", action="store_true", help="let root change a store another user owns"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-config", help="validate the configuration").set_defaults(
        func=cmd_check_config, service_env=True
    )
    sub.add_parser("stager", help="run the stager standalone").set_defaults(
        func=cmd_stager, service_env=True
    )
    status = sub.add_parser("status", help="stager, queue, batches, failures")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status, service_env=True)
    files = sub.add_parser("files", help="file records, filtered")
    files.add_argument("--status", choices=("queued", "recalling", "done", "failed"))
    files.add_argument("--library")
    files.add_argument("--tape")
    files.add_argument("--task", help="a Globus task id or WLCG request id")
    files.add_argument("--prefix", help="paths starting with this")
    files.add_argument("--limit", type=int, default=100)
    files.add_argument("--json", action="store_true")
    files.set_defaults(func=cmd_files, service_env=True)
    batches = sub.add_parser("batches", help="recall batches, running first")
    batches.add_argument("--limit", type=int, default=20)
    batches.add_argument("--json", action="store_true")
    batches.set_defaults(func=cmd_batches, service_env=True)
    retry = sub.add_parser("retry", help="queue failed files again")
    retry.add_argument("paths", nargs="*")
    retry.add_argument("--failed", action="store_true", help="every failed file")
    retry.set_defaults(func=cmd_change, service_env=True)
    cancel = sub.add_parser("cancel", help="forget queued files")
    cancel.add_argument("paths", nargs="*")
    cancel.add_argument("--task", help="every file only this task asked for")
    cancel.set_defaults(func=cmd_change, service_env=True)
    forget = sub.add_parser("forget", help="drop failures")
    forget.add_argument("paths", nargs="+")
    forget.set_defaults(func=cmd_change, service_env=True)
    sub.add_parser("doctor", help="check everything the service needs").set_defaults(
        func=cmd_doctor, service_env=True
    )
    ready = sub.add_parser("ready", help="wait until the running service is ready (/readyz)")
    ready.add_argument("--wait", type=float, default=0, help="seconds to keep asking")
    ready.add_argument("--url", help="the service's base URL (default: from BIND)")
    ready.add_argument("--cafile", help="CA bundle that signed the service's certificate")
    ready.set_defaults(func=cmd_ready, service_env=True)
    units = sub.add_parser("install-units", help="write systemd units and sudoers for this install")
    defaults = InstallLayout()
    units.add_argument("--prefix", default=defaults.prefix, help="where the package is installed")
    units.add_argument("--state-dir", default=defaults.state_dir)
    units.add_argument("--env", default=defaults.env_file, help="the environment file")
    units.add_argument("--user", default=defaults.user, help="the service account")
    units.add_argument("--eeadm", default=defaults.eeadm, help="eeadm's absolute path")
    units.add_argument("--after", default=defaults.after, help="units to start after")
    units.add_argument("--dest", default="/", help="the root to write under (a staging tree)")
    units.set_defaults(func=cmd_install_units)
    dm = sub.add_parser("demo", help="serve a demo simulated library under gunicorn")
    dm.add_argument("--dir", default="demo")
    dm.add_argument("--bind", default="127.0.0.1:5000", help="(the first node's; the next ports)")
    dm.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="with 2 or more: a throwaway PostgreSQL and that many nodes (a cluster)",
    )
    dm.set_defaults(func=cmd_demo)

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
        ("copies", int),
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
    if getattr(args, "service_env", False):
        _service_env(args.env_file)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ltfsee-globus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (SimError, StoreUnavailable, EeadmError) as exc:
        print(f"ltfsee-globus: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except UsageError as exc:
        print(f"ltfsee-globus: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
