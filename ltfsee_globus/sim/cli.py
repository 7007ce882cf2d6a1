"""`eeadm-sim`: behaves like `eeadm` for the subcommands ltfsee-globus uses.

    eeadm-sim file state [-s] [--] PATH...
    eeadm-sim recall [LISTFILE] [-l LIB] [--resident]   (list from stdin without LISTFILE)
    eeadm-sim task show N [-r]
    eeadm-sim node list
    eeadm-sim drive list [--json] [-l LIB]
    eeadm-sim drive down|up SERIAL        (take a drive out of service, put it back)

The library directory comes from `EEADM_SIM_DIR`; EEADM_SIM_DRIVE_LIST=text
makes `drive list --json` fail as on EE releases without it, =none makes
every `drive list` fail (the service then does not know the drives). Output and exit codes follow
docs/eeadm.md; `recall` blocks until its task has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime

from .library import Library, SimError

#: Longest real-time sleep between looks at a running task.
POLL_SECONDS = 0.2


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _say(msg: str, stream=sys.stdout) -> None:
    print(f"{_stamp()} {msg}", file=stream, flush=True)


def cmd_file_state(lib: Library, paths: list[str], short: bool) -> int:
    rc = 0
    for path, row, exists, copies in lib.file_states(paths):
        if not exists:
            _say(f"GLESL011E: File {path} does not exist.", sys.stderr)
            rc = 1
            continue
        state = "R" if row is None else row["state"]  # a file never migrated is resident
        tapes = ([] if state == "R" else copies) + ["-"] * 3
        tapes = tapes[:3]
        replicas = sum(t != "-" for t in tapes)
        if short:
            print(f"{state}  {replicas}  {tapes[0]:<24} {tapes[1]:<24} {tapes[2]:<3} -- {path}")
        else:
            name = {"R": "resident", "P": "premigrated", "M": "migrated"}[state]
            print(f"Name: {path}\nState: {name}\nReplicas: {replicas}")
            for n, t in enumerate(x for x in tapes if x != "-"):
                print(f"Tape {n + 1}: {t} (tape state=appendable)")
            print()
    return rc


def cmd_recall(lib: Library, listfile: str | None, library: str | None, resident: bool) -> int:
    try:
        if listfile is None:
            text = sys.stdin.read()
        else:
            with open(listfile, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        _say(f"GLESL001E: Unable to read the file list {listfile}: {exc.strerror}.", sys.stderr)
        return 1
    paths = [line for line in text.splitlines() if line.strip()]
    if not paths:
        _say("GLESL002E: No file names have been provided to recall.", sys.stderr)
        return 1
    _say(f"GLESL268I: {len(paths)} file name(s) have been provided to recall.")
    task_id = lib.submit_recall(paths, library, resident)
    shown = task_label(task_id)
    _say(f"GLESL700I: Task selective_recall was created successfully, task ID is {shown}.")
    while True:
        with lib.locked() as now:
            done, next_at, files = lib.task_status(task_id)
        if done:
            break
        wait = POLL_SECONDS if next_at is None else lib.real_seconds(next_at - now)
        time.sleep(min(max(wait, 0.005), POLL_SECONDS))
    failed = [f for f in files if not f["ok"]]
    if not failed:
        _say(f"GLESL839I: All {len(files)} file(s) has been successfully processed.")
        return 0
    for f in failed[:20]:
        _say(f["message"] or f"GLESL016E: Failed to recall {f['path']}.", sys.stderr)
    _say(
        f"GLESL845E: Failed to recall {len(failed)} of {len(files)} file(s). "
        f'Use "eeadm task show {shown} -r" for details.',
        sys.stderr,
    )
    return 1


def task_label(task_id: int) -> str:
    """A task's ID as this EE prints it: the newer releases' colon form
    (`1000:1001`, one part per node that took a share) unless
    EEADM_SIM_TASK_IDS=plain asks for the older bare number."""
    if os.environ.get("EEADM_SIM_TASK_IDS", "colon") == "plain":
        return str(task_id)
    return f"{task_id}:{task_id + 1000}"


def cmd_task_show(lib: Library, label: str, results: bool) -> int:
    number = label.split(":", 1)[0]
    if not number.isdigit():
        raise SimError(f"GLESL018E: Task {label} does not exist.")
    with lib.locked():
        done, _next, files = lib.task_status(int(number))
    status = "completed" if done else "running"
    print(f"=== Task Information ===\nTask ID: {label}\nStatus: {status}")
    if results:
        for f in files:
            word = "Pending" if f["ok"] is None else ("Success" if f["ok"] else "Fail")
            print(f"{word:<8} -  -  -- {f['path']}")
    return 0


#: `eeadm drive list`'s text columns and their widths.
DRIVE_COLUMNS = (
    ("Drive S/N", 14),
    ("Status", 8),
    ("State", 13),
    ("Type", 6),
    ("Role", 6),
    ("Library", 11),
    ("Node ID", 9),
    ("Tape", 10),
    ("Node Group", 12),
    ("Task ID", 0),
)


def cmd_drive_list(lib: Library, library: str | None, as_json: bool) -> int:
    form = os.environ.get("EEADM_SIM_DRIVE_LIST", "json")
    if form == "none":
        _say("GLESL001E: the drive list is not available.", sys.stderr)
        return 1
    if as_json and form == "text":
        print("eeadm: error: unrecognized arguments: --json", file=sys.stderr)
        return 2
    rows = []
    for d in lib.drives():
        if library is not None and d["library"] != library:
            continue
        if not d["enabled"]:
            status, state = "info", "disabled"
        else:
            status = "ok"
            state = "in_use" if d["busy"] else "mounted" if d["tape"] else "not_mounted"
        rows.append((d, status, state))
    if as_json:
        payload = [
            {
                "id": d["serial"],
                "state": state,
                "status": status,
                "type": "LTO9",
                "role": "mrg",
                "library_name": d["library"],
                "node_id": 1,
                "tape_barcode": d["tape"] or "",
                "nodegroup_name": "G0",
                "task_id": str(d["task"] or ""),
            }
            for d, status, state in rows
        ]
        print(json.dumps({"payload": payload, "version": 1}))
        return 0
    print("".join(name.ljust(width) for name, width in DRIVE_COLUMNS).rstrip())
    for d, status, state in rows:
        cells = (d["serial"], status, state, "LTO9", "mrg", d["library"], "1")
        cells += (d["tape"] or "-", "G0", str(d["task"] or "-"))
        line = "".join(c.ljust(w) for c, (_, w) in zip(cells, DRIVE_COLUMNS, strict=True))
        print(line.rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eeadm-sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", required=True)
    fp = sub.add_parser("file").add_subparsers(dest="cmd", required=True)
    st = fp.add_parser("state")
    st.add_argument("-s", action="store_true", dest="short")
    st.add_argument("paths", nargs="+")
    rc = sub.add_parser("recall")
    rc.add_argument("listfile", nargs="?")
    rc.add_argument("-l", dest="library")
    rc.add_argument("--resident", action="store_true")
    tp = sub.add_parser("task").add_subparsers(dest="cmd", required=True)
    ts = tp.add_parser("show")
    ts.add_argument("task_id")
    ts.add_argument("-r", action="store_true", dest="results")
    sub.add_parser("node").add_subparsers(dest="cmd", required=True).add_parser("list")
    dp = sub.add_parser("drive").add_subparsers(dest="cmd", required=True)
    dl = dp.add_parser("list")
    dl.add_argument("--json", action="store_true", dest="as_json")
    dl.add_argument("-l", dest="library")
    for verb in ("down", "up"):
        dp.add_parser(verb).add_argument("serial")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = os.environ.get("EEADM_SIM_DIR")
    if not root:
        print("eeadm-sim: EEADM_SIM_DIR is not set", file=sys.stderr)
        return 2
    try:
        lib = Library(root)
    except SimError as exc:
        print(f"eeadm-sim: {exc}", file=sys.stderr)
        return 2
    try:
        if args.group == "file":
            return cmd_file_state(lib, args.paths, args.short)
        if args.group == "recall":
            return cmd_recall(lib, args.listfile, args.library, args.resident)
        if args.group == "task":
            return cmd_task_show(lib, args.task_id, args.results)
        if args.group == "drive" and args.cmd == "list":
            return cmd_drive_list(lib, args.library, args.as_json)
        if args.group == "drive":
            lib.set_drive(args.serial, enabled=args.cmd == "up")
            _say(f"GLESL641I: Drive {args.serial} is {args.cmd}.")
            return 0
        print(" Node ID | State     | Node IP   | Library\n 1       | available | 127.0.0.1 | sim")
        return 0
    except SimError as exc:
        _say(str(exc), sys.stderr)
        return 1
    finally:
        lib.close()


if __name__ == "__main__":
    sys.exit(main())
