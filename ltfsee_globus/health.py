"""Whether this installation can do its work: shared by /readyz and `ltfsee-globus doctor`.

No Flask here: the CLI runs these checks with the service down.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .config import Settings, missing_roots
from .eeadm import Eeadm, EeadmError
from .stager import StagerLock
from .store import Store, StoreUnavailable

#: Seconds `eeadm node list` may take in a check.
EEADM_CHECK_TIMEOUT = 10.0


def stager_running(state_dir: Path) -> bool:
    """True when some process holds the stager lock of `state_dir`."""
    try:
        fd = os.open(StagerLock(state_dir).path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def readiness(
    settings: Settings, store: Store, eeadm: Eeadm, *, eeadm_hangs: bool = False
) -> dict[str, str]:
    """Each check and what it found: "ok" or why not. `eeadm_hangs`: a caller
    that already knows eeadm times out (the lookup breaker) skips the call."""
    state_dir = settings.state_dir
    missing = missing_roots(settings)
    checks = {"roots": f"not a directory: {', '.join(missing)}" if missing else "ok"}
    try:
        store.probe("readyz")
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
