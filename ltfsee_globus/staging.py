"""What a Globus poll decides, without Flask: answer from the store when it
can, else look the file's state up, and queue it (from a library holding a
copy) when it must come from tape.

Failures are domain errors the API maps to HTTP (errors.py): NoSuchFile 404,
PathRefused 400/403, RecallFailed and UnusableState 502, FileSystemError
and StoreUnavailable 503, EeadmError 502/503/504.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Sequence
from typing import Protocol

from .config import Settings
from .lookup import Outcome, StateLookup
from .parse import FileState
from .paths import OutsideRoots, PathRefused, check_resolved, in_real_roots
from .placement import NoCopy, Once, place
from .store import ACTIVE, DONE, FAILED, Store, StoreUnavailable

log = logging.getLogger(__name__)


class NoSuchFile(Exception):
    """The path names nothing on disk."""

    def __init__(self) -> None:
        super().__init__("no such file")


class FileSystemError(Exception):
    """The file system failed to say whether the file exists."""


class RecallFailed(Exception):
    """The file's recall failed for good (or cannot be made); says why."""


class UnusableState(Exception):
    """eeadm said something about the file we cannot act on."""


class Context(Protocol):
    """What a poll works with (the web tier's Services)."""

    settings: Settings
    store: Store
    lookup: StateLookup
    clock: Callable[[], float]
    notes: Once


def require_file(path: str, roots: Sequence[str]) -> os.stat_result | None:
    """The stat of the regular file `path` names, once where its links lead is
    known to be under `roots` (OutsideRoots otherwise, before anything says
    whether it exists). NoSuchFile when it does not exist, PathRefused when it
    is not a regular file or cannot be reached (a symbolic link loop, a name
    too long), FileSystemError when the file system fails. None when we may
    not look: that is left to eeadm (which usually runs as root)."""
    st = _resolved_stat(path, roots)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise PathRefused("path is not a regular file")
    return st


def _resolved_stat(path: str, roots: Sequence[str]) -> os.stat_result | None:
    """The kernel resolves the path once, for both answers: an O_PATH
    descriptor (it opens nothing for reading, so a FIFO cannot block it) names
    the file it reached in /proc/self/fd and gives its stat. Four system calls
    where realpath's walk takes one per component (every resident poll runs
    this). A path that cannot be opened so takes the walk and a stat, as does
    a system without /proc, so its answer is the one it always was."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return _walked_stat(path, roots)
    try:
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return _walked_stat(path, roots)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not in_real_roots(real, roots):
        raise OutsideRoots
    return st


def _walked_stat(path: str, roots: Sequence[str]) -> os.stat_result | None:
    """realpath's walk (the links first), then a stat of the file."""
    check_resolved(path, roots)
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise NoSuchFile from None
    except PermissionError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG):
            raise PathRefused(f"path cannot be opened: {exc.strerror}") from None
        raise FileSystemError(exc.strerror) from None


def current_state(svc: Context, path: str, newer_than: float) -> FileState:
    """The file's state, cached or looked up (EeadmError when eeadm fails)."""
    return usable(svc.lookup.state(path, newer_than))


def usable(st: Outcome | None) -> FileState:
    if not isinstance(st, FileState):
        raise UnusableState(st.reason if st else "no state")
    return st


def poll(
    svc: Context, path: str, taskid: str | None, explicit: str | None, priority: int = 0
) -> str:
    """`resident` or `archived` for one Globus poll; queues the file if it must be
    recalled, from a library that holds a copy (`explicit`, a client's choice, if
    it does), for the task at its key's `priority`."""
    s = svc.settings
    ref = taskid or ""
    trigger = s.PREFETCH and bool(taskid)  # the prefetcher reads each task's requests
    rec = svc.store.polls.lookup(path, "globus", ref)
    if rec is not None:
        answer = None
        age = svc.clock() - (rec.finished_at or 0.0)
        if rec.status in ACTIVE:
            answer = "archived"
        elif rec.status == DONE and age < s.VERIFIED_TTL:
            answer = "resident"  # the stager verified it on disk after recalling it
        elif rec.status == FAILED and age < s.FAILED_RETENTION:
            raise RecallFailed(rec.last_error or "the recall failed")
        if answer:
            if not rec.known or not rec.requested:  # who wants it, and useful prefetch
                svc.store.polls.note_requester(path, "globus", ref, trigger_prefetch=trigger)
            return answer

    def resident() -> str:
        if rec is not None and not rec.requested:  # prefetched long ago, asked for now
            svc.store.polls.note_requester(path, "globus", ref, trigger_prefetch=trigger)
        return "resident"

    # Every cached state was looked up right after its path passed require_file,
    # so, within VERIFIED_TTL, one on disk is a verification like a DONE
    # record's: the resident answer needs no second path check or stat. Any
    # other answer (a recall to queue) checks the path now.
    newer = max(rec.updated_at if rec else 0.0, svc.clock() - s.VERIFIED_TTL)
    hit = svc.lookup.cached(path, newer)
    if hit is not None and hit.on_disk:
        return resident()
    info = require_file(path, s.MANAGED_ROOTS)
    size = info.st_size if info else None

    def act(st: Outcome | None) -> str:
        """Answer from the file's state: on disk, or queued for a recall."""
        st = usable(st)
        if st.on_disk:
            return resident()
        try:
            where = place(
                st.tapes,
                s.LTFSEE_LIB,
                explicit=explicit,
                taskid=taskid,
                busy=svc.store.tapes.busy_tapes,
                load=svc.store.tapes.library_load,
            )
        except NoCopy as exc:
            svc.store.polls.fail(path, str(exc), "globus", ref, size=size)
            raise RecallFailed(str(exc)) from None
        if explicit and where.library != explicit and svc.notes.first(ref):
            log.info(
                "task %s asked for library %s, which holds no copy of %s; recalled from %s",
                ref or "-",
                explicit,
                path,
                where.library,
            )
        svc.store.polls.request(
            path,
            where.library,
            "globus",
            ref,
            size=size,
            tape=where.tape,
            trigger_prefetch=trigger,
            priority=priority,
        )
        return "archived"

    def later(st: Outcome) -> None:
        """The follow-up of a poll answered before its state was known."""
        try:
            act(st)
        except (RecallFailed, UnusableState, StoreUnavailable) as exc:
            log.info("%s: not queued after its lookup (%s); its next poll retries", path, exc)

    st = svc.lookup.state(path, newer, then=later)
    if st is None:  # every lookup seat is taken: `later` queues it once its state is known
        return "archived"
    return act(st)
