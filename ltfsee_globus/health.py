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
from .stager import StagerLock
from .store import FAILED, Store, StoreUnavailable

#: Failures, retrying files and batches the status report lists, at most.
REPORT_ROWS = 20

#: Seconds `eeadm node list` may take in a check.
EEADM_CHECK_TIMEOUT = 10.0


def stager_running(state_dir: Path) -> bool:
    """True when some process holds the stager lock of `state_dir`."""
    return StagerLock(state_dir).is_held()


def human_age(seconds: float | None) -> str:
    """A duration as people read it: 12s, 4.5m, 2.0h, 3.1d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0.0):.0f}s"


def stager_status(state_dir: Path) -> dict:
    """Whether a stager holds the lock, its pid, and since when (the lock
    file is rewritten when a stager takes it): the last start when none runs."""
    lock = StagerLock(state_dir).path
    try:
        st = lock.stat()
        pid_text = lock.read_text().strip()
    except OSError:
        return {"running": False, "pid": None, "since": None}
    return {
        "running": stager_running(state_dir),
        "pid": int(pid_text) if pid_text.isdigit() else None,
        "since": st.st_mtime,
    }


def status_report(store: Store, state_dir: Path) -> dict:
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
        "stager": stager_status(state_dir),
        "stager_running": stager_running(state_dir),
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
    state_dir = settings.state_dir
    missing = missing_roots(settings)
    checks = {"roots": f"not a directory: {', '.join(missing)}" if missing else "ok"}
    try:
        store.ops.probe("readyz")
        checks["store"] = "ok"
    except StoreUnavailable as exc:
        checks["store"] = str(exc)
    checks["stager"] = (
        "ok" if stager_running(state_dir) else "no stager holds STATE_DIR/stager.lock"
    )
    if eeadm_hangs:
        checks["eeadm"] = "eeadm file state timed out; lookups are refused for now"
    else:
        try:
            eeadm.node_list(timeout=min(eeadm.timeout, EEADM_CHECK_TIMEOUT))
            checks["eeadm"] = "ok"
        except EeadmError as exc:
            checks["eeadm"] = str(exc)
    return checks
