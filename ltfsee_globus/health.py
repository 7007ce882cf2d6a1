"""Whether this installation can do its work, and what it is doing: shared by
/readyz and `doctor`, the status page and `status`.

No Flask here: the CLI runs these with the service down.
"""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import asdict
from pathlib import Path

from .config import Settings, missing_roots
from .eeadm import Eeadm, EeadmError
from .store import FAILED, LEADER, STANDBY, Lease, Store, StoreUnavailable

#: Failures, retrying files and batches the status report lists, at most.
REPORT_ROWS = 20

#: Seconds `eeadm node list` may take in a check.
EEADM_CHECK_TIMEOUT = 10.0


def stager_ready(store: Store, settings: Settings) -> bool:
    """A stager leads, or one stands by to lead (between a leader's death and
    a take-over, up to STAGER_LEASE, the lease is free: nodes whose standbys
    are there stay ready for a load balancer)."""
    view = cluster(store)
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


def cluster(store: Store) -> dict:
    """Who leads the stagers and who is there, from one read of the lease and
    one of the members: `stager` (node, pid, epoch, since when, for how long
    more; when none leads, the last take-over's time), `stager_running`, and
    `nodes` (each node with a stager thread: its role, how many such
    processes, its last heartbeat, its version). Nothing leads and nobody is
    there while the store cannot be read."""
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
                "role": STANDBY,
                "processes": 0,
                "heartbeat_age": m.age,
                "version": m.version,
            },
        )
        n["processes"] += 1
        n["heartbeat_age"] = min(n["heartbeat_age"], m.age)
        if lease.running and m.owner == lease.holder:
            n["role"] = LEADER
    return {"stager": stager, "stager_running": lease.running, "nodes": list(nodes.values())}


def status_report(store: Store) -> dict:
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
        **cluster(store),
        "files": counts.files,
        "totals": counts.totals,
        "queue": [asdict(q) for q in store.ops.queue_by_tape()],
        "running_batches": running,
        "recent_batches": [asdict(b) for b in store.ops.batches(limit=10) if b.status != "running"],
        "retrying": retrying,
        "recent_failures": [asdict(f) for f in sorted(failed, key=lambda f: -(f.finished_at or 0))],
        "prefetch": {**pf, "precision": pf["asked_files"] / pf["files"] if pf["files"] else None},
        "eeadm": [asdict(e) for e in store.ops.eeadm_health()],
        "operator_actions": [asdict(a) for a in store.ops.actions(limit=5)],
    }


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
    if eeadm_hangs:
        checks["eeadm"] = "eeadm file state timed out; lookups are refused for now"
    else:
        try:
            eeadm.node_list(timeout=min(eeadm.timeout, EEADM_CHECK_TIMEOUT))
            checks["eeadm"] = "ok"
        except EeadmError as exc:
            checks["eeadm"] = str(exc)
    return checks
