"""Whether this installation can do its work, and what it is doing: shared by
/readyz and `doctor`, the status page and `status`.

No Flask here: the CLI runs these with the service down.
"""

from __future__ import annotations

import itertools
import subprocess
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from .config import Settings, missing_roots
from .eeadm import Eeadm, EeadmError
from .parse import recall_drives
from .store import FAILED, LEADER, STANDBY, Lease, Store, StoreUnavailable

#: Failures, retrying files and batches the status report lists, at most.
REPORT_ROWS = 20

#: A node none of whose processes has said it is there lately.
GONE = "gone"

#: Seconds `eeadm node list` may take in a check.
EEADM_CHECK_TIMEOUT = 10.0


def stager_ready(store: Store, settings: Settings) -> bool:
    """A stager leads, or one stands by to lead (between a leader's death and
    a take-over, up to STAGER_LEASE, the lease is free: nodes whose standbys
    are there stay ready for a load balancer)."""
    view = cluster(store, 3 * settings.STAGER_LEASE)
    return view["stager_running"] or any(
        n["heartbeat_age"] < 2 * settings.STAGER_LEASE for n in view["nodes"]
    )


def human_age(seconds: float | None) -> str:
    """A duration as people read it: 12s, 4.5m, 2.0h, 3.1d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0.0):.0f}s"


def drives_report(store: Store, settings: Settings) -> dict:
    """The drives as the stager last read them, per library, and in one line
    what that means for recalls (`state`: ok, warning)."""
    if settings.TAPE_DRIVES:
        return {
            "state": "ok",
            "says": f"TAPE_DRIVES={settings.TAPE_DRIVES} recall drives per library (set, not read)",
            "libraries": [],
        }
    try:
        drives = store.ops.drives()
        health = {e.subcommand: e for e in store.ops.eeadm_health()}.get("drive list")
    except StoreUnavailable as exc:
        return {"state": "warning", "says": f"cannot read the drives: {exc}", "libraries": []}
    libraries: dict[str, dict] = {}
    for d in drives:
        lib = libraries.setdefault(d.library, {"library": d.library, "recall": 0, "drives": []})
        lib["recall"] += d.recall
        lib["drives"].append(asdict(d))
    failing = health is not None and health.outcome != "ok"
    if failing and drives:
        state = "warning"
        says = (
            f"eeadm drive list failed ({health.last_error}); the drives read "
            f"{human_age(drives[0].age)} ago stay in force"
        )
    elif failing or not drives:
        state = "warning"
        why = f"eeadm drive list failed ({health.last_error})" if failing else "not read yet"
        says = f"drives not known ({why}): recalls go to EE in batches"
    else:
        idle = [name or "-" for name, lib in sorted(libraries.items()) if not lib["recall"]]
        state = "warning" if idle else "ok"
        says = (
            f"no recall drive in service in library {', '.join(idle)}: its queue waits"
            if idle
            else ", ".join(
                f"{name or '-'}: {lib['recall']} of {len(lib['drives'])} drives serve recalls"
                for name, lib in sorted(libraries.items())
            )
        )
    return {"state": state, "says": says, "libraries": list(libraries.values())}


def cluster(store: Store, alive: float = 30.0) -> dict:
    """Who leads the stagers and who is there, from one read of the lease and
    one of the members: `stager` (node, pid, epoch, since when, for how long
    more; when none leads, the last take-over's time), `stager_running`, and
    `nodes` (each node with a stager thread: its role, how many such
    processes run, its last heartbeat, its version). A process silent for
    `alive` seconds is not counted (killed, it never said goodbye); a node
    with none left is `gone`. Nothing leads and nobody is there while the
    store cannot be read."""
    try:
        lease, members = store.leases.current(), store.leases.members()
    except StoreUnavailable:
        lease, members = Lease(None, None, 0, 0.0, None, None), []
    pid = (lease.holder or "").rpartition(":")[2]
    stager = {
        "running": lease.running,
        "node": lease.node if lease.running else None,
        "pid": int(pid) if lease.running and pid.isdigit() else None,
        "epoch": lease.epoch,
        "since": lease.taken_at,
        "held_for": lease.held_for,
        "expires_in": max(lease.remaining, 0.0),
    }
    nodes: dict[str, dict] = {}
    for m in members:
        n = nodes.setdefault(
            m.node,
            {
                "node": m.node,
                "role": GONE,
                "processes": 0,
                "heartbeat_age": m.age,
                "version": m.version,
            },
        )
        n["heartbeat_age"] = min(n["heartbeat_age"], m.age)
        if m.age < alive:
            n["processes"] += 1
            n["role"] = STANDBY if n["role"] == GONE else n["role"]
        if lease.running and m.owner == lease.holder:
            n["role"] = LEADER
    return {"stager": stager, "stager_running": lease.running, "nodes": list(nodes.values())}


def status_report(store: Store, settings: Settings) -> dict:
    """What the status page and `ltfsee-globus status` show."""
    now = store.clock()
    counts = store.ops.counts()
    running = []
    for b in store.ops.batches(limit=50):
        if b.status != "running":
            continue
        elapsed = now - b.started_at
        eta = elapsed / b.files_done * (b.n_files - b.files_done) if b.files_done else None
        running.append({**asdict(b), "age": elapsed, "eta": eta})
    retrying = [
        {**asdict(f), "retry_in": max(f.not_before - now, 0.0)}
        for f in store.ops.files(status="queued", retrying=True, limit=REPORT_ROWS)
    ]
    failed = store.ops.files(status=FAILED, limit=REPORT_ROWS)
    pf = counts.prefetch
    return {
        "now": now,
        "store": store.describe(),
        **cluster(store, 3 * settings.STAGER_LEASE),
        "files": counts.files,
        "totals": counts.totals,
        "queue": [asdict(q) for q in store.ops.queue_by_tape()],
        "drives": drives_report(store, settings),
        "running_batches": running,
        "recent_batches": [asdict(b) for b in store.ops.batches(limit=10) if b.status != "running"],
        "retrying": retrying,
        "recent_failures": [asdict(f) for f in sorted(failed, key=lambda f: -(f.finished_at or 0))],
        "prefetch": {**pf, "precision": pf["asked_files"] / pf["files"] if pf["files"] else None},
        "eeadm": [asdict(e) for e in store.ops.eeadm_health()],
        "operator_actions": [asdict(a) for a in store.ops.actions(limit=5)],
        "stage_requests": [asdict(r) for r in store.requests.recent(REPORT_ROWS)],
    }


def drive_list_check(eeadm: Eeadm) -> str:
    """`eeadm drive list` asked now: the recall drives per library, or why not."""
    try:
        drives = eeadm.drive_list()
    except EeadmError as exc:
        return f"warning: {exc} (recalls go to EE in batches until it answers)"
    per = recall_drives(drives)
    total = Counter(d.library for d in drives)
    return "ok: " + ", ".join(
        f"{lib or '-'} {per[lib]} of {total[lib]} serve recalls" for lib in sorted(per)
    )


def sudo_rights(settings: Settings) -> str:
    """When EEADM_COMMAND runs eeadm through sudo: whether sudo, without a
    password, allows each subcommand the service runs (`sudo -n -l CMD`)."""
    command = settings.EEADM_COMMAND
    if not command or Path(command[0]).name != "sudo":
        return "ok (eeadm does not run through sudo)"
    options = list(itertools.takewhile(lambda a: a.startswith("-"), command[1:]))
    eeadm = command[1 + len(options) :]
    wanted = (
        ["file", "state", "-s", "--", str(settings.state_dir)],
        ["recall", str(settings.state_dir / "batches" / "1.list")],
        ["task", "show", "1000:2000"],
        ["node", "list"],
        ["drive", "list", "--json"],
    )
    refused = []
    for args in wanted:
        try:
            res = subprocess.run(
                [command[0], "-n", "-l", *eeadm, *args],
                capture_output=True,
                timeout=EEADM_CHECK_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot ask sudo: {exc}"
        if res.returncode != 0:
            refused.append(" ".join(args[:2] if args[0] != "recall" else args))
    if refused:
        return "sudo -n does not allow eeadm " + "; ".join(refused)
    return "ok"


def passed(check: str) -> bool:
    """Whether a check's finding lets the service work: "ok", or a warning
    (the service works on, degraded: it says why)."""
    return check.startswith(("ok", "warning"))


def readiness(
    settings: Settings, store: Store, eeadm: Eeadm, *, eeadm_hangs: bool = False
) -> dict[str, str]:
    """Each check and what it found: "ok" or why not. `eeadm_hangs`: a caller
    that already knows eeadm times out (the lookup breaker) skips the call."""
    missing = missing_roots(settings)
    checks = {"roots": f"not a directory: {', '.join(missing)}" if missing else "ok"}
    try:
        store.ops.probe("readyz")
        checks["store"] = "ok"
    except StoreUnavailable as exc:
        checks["store"] = str(exc)
    checks["stager"] = "ok" if stager_ready(store, settings) else "no stager holds the stager lease"
    drives = drives_report(store, settings)
    checks["drives"] = f"{drives['state']}: {drives['says']}"
    if eeadm_hangs:
        checks["eeadm"] = "eeadm file state timed out; lookups are refused for now"
    else:
        try:
            eeadm.node_list(timeout=min(eeadm.timeout, EEADM_CHECK_TIMEOUT))
            checks["eeadm"] = "ok"
        except EeadmError as exc:
            checks["eeadm"] = str(exc)
    return checks
