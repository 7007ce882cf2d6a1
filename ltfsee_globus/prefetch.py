"""Tape-aware prefetch: queue what a Globus transfer will very likely ask for next.

Globus reveals about 64 files of a transfer at a time, in path order. When a
task asks for a migrated file, its siblings (those after it first) are the
likeliest next requests; once the task has asked for files in several
directories, the nearest common ancestor of everything it asked for bounds
where the rest of the transfer lives. Candidates are checked with batched
`eeadm file state -s` calls and only migrated ones are queued, recorded as
prefetched and charged to the task's budget (PREFETCH_MAX_FILES and
PREFETCH_MAX_BYTES).
"""

from __future__ import annotations

import logging
import os
import posixpath

from .config import Settings
from .eeadm import Eeadm, EeadmError
from .parse import FileState
from .paths import under
from .store import ACTIVE, FAILED, Store

log = logging.getLogger(__name__)

#: Candidates checked per `eeadm file state` call while prefetching.
CHUNK = 500


def _walk(top: str, recursive: bool, limit: int) -> list[tuple[str, int]]:
    """Regular files (path, size) under `top` in path order, reading at most `limit` entries."""
    out: list[tuple[str, int]] = []
    left = limit

    def visit(d: str) -> None:
        nonlocal left
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if left <= 0:
                return
            left -= 1
            try:
                if e.is_file(follow_symlinks=False):
                    out.append((e.path, e.stat(follow_symlinks=False).st_size))
                elif recursive and e.is_dir(follow_symlinks=False):
                    visit(e.path)
            except OSError:
                continue

    visit(top)
    return out


class Prefetcher:
    def __init__(self, settings: Settings, store: Store, eeadm: Eeadm) -> None:
        self.settings = settings
        self.store = store
        self.eeadm = eeadm

    def run_triggers(self, rounds: int = 20) -> int:
        """Plan prefetch for every pending trigger, including those that arrive
        meanwhile (up to `rounds` takes), so a batch flushed next holds them.
        Returns files queued."""
        queued = 0
        for _ in range(rounds):
            triggers = self.store.take_prefetch_triggers()
            if not triggers:
                break
            for t in triggers:
                try:
                    queued += self.plan(t["taskid"], t["path"], t["library"])
                except EeadmError as exc:
                    log.warning("prefetch for task %s skipped: %s", t["taskid"], exc)
        return queued

    def candidates(self, taskid: str, path: str) -> list[tuple[str, int]]:
        """Files to consider for `taskid` after it asked for `path`, likeliest first.

        The siblings of `path`; once the task has asked for files in several
        directories, the tree under their nearest common ancestor; and, by
        PREFETCH_WIDEN levels, the tree above that (never a managed root
        itself), since a transfer that spans a directory usually spans its
        neighbours too. Each directory is scanned once per task.
        """
        s = self.settings
        root = under(path, s.MANAGED_ROOTS)
        if root is None or under(path, s.PREFETCH_EXCLUDE) is not None:
            return []
        parent = posixpath.dirname(path)
        found: list[tuple[str, int]] = []
        if self.store.mark_scanned(taskid, parent):
            found += _walk(parent, False, s.PREFETCH_SCAN_LIMIT)
        asked = self.store.task_paths(taskid)
        if len(asked) > 1:
            ancestor = os.path.commonpath(asked)
            tops = [ancestor] if ancestor != parent else []
            for _ in range(s.PREFETCH_WIDEN if tops else 0):
                up = posixpath.dirname(tops[-1])
                if up == root or under(up, [root]) is None:
                    break
                tops.append(up)
            for top in tops:
                if under(top, [root]) and self.store.mark_scanned(taskid, top + "/**"):
                    found += _walk(top, True, s.PREFETCH_SCAN_LIMIT)
        # Globus walks in path order: what comes after `path` first, then the rest.
        unique = dict(found)
        after = sorted(p for p in unique if p > path)
        before = sorted((p for p in unique if p < path), reverse=True)
        return [(p, unique[p]) for p in after + before]

    def plan(self, taskid: str, path: str, library: str) -> int:
        s = self.settings
        used_files, used_bytes = self.store.prefetch_budget(taskid)
        room_files = s.PREFETCH_MAX_FILES - used_files
        room_bytes = s.PREFETCH_MAX_BYTES - used_bytes
        if room_files <= 0 or room_bytes <= 0:
            return 0
        cands = self.candidates(taskid, path)
        known = self.store.known(p for p, _ in cands)
        cands = [(p, n) for p, n in cands if known.get(p) not in (*ACTIVE, FAILED)]
        chosen: list[tuple[str, int, str | None]] = []
        for i in range(0, len(cands), CHUNK):
            chunk = cands[i : i + CHUNK]
            states = self.eeadm.file_state([p for p, _ in chunk])
            for p, size in chunk:
                st = states.get(p)
                if not (isinstance(st, FileState) and st.migrated):
                    continue
                if len(chosen) >= room_files or size > room_bytes:
                    break
                chosen.append((p, size, st.tapes[0] if st.tapes else None))
                room_bytes -= size
            if len(chosen) >= room_files or room_bytes <= 0:
                break
        n = self.store.add_prefetched(taskid, library, chosen) if chosen else 0
        if n:
            log.info("prefetch: task %s, %d file(s) queued after %s", taskid, n, path)
        return n
