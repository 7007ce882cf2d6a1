"""Prefetch that bets only on evidence: queue what a Globus transfer will ask for next.

Globus shows about WINDOW (64) files of a task at a time, walking the tree
depth first in name order. A task that has asked for fewer files has shown
everything it wants so far, and batching alone serves it. A task that has
asked for a full window, contiguously in walk order (the only files it
skipped are already on disk), is walking a tree, and the walk tells how far:

- the *scope* is the nearest common ancestor of what it asked for when the
  walk began at that directory's first file (the transfer is that directory or
  one above it), else the directory it is walking now, entered at its first
  file: the rest of the scope is all but surely wanted;
- the *bet*: up to PREFETCH_WIDEN levels above the scope, while the walk's
  first file is also the first file there, the transfer may well be rooted
  higher. Of that wider tree only files on tapes that will be mounted anyway
  are queued: each costs a read, never a mount. The rest waits for the walk
  to reach it.

A walk that skips a file it would have asked for is a selection: the task's
prefetched files still queued are dropped, and nothing more is guessed for it.
Stage apps run at once, so requests arrive a little out of order: a gap among
the newest window of requests (after the first window) is not yet a skip; a
gap with a window of requests after it is.
The number of prefetched files a task has not (yet) asked for is bounded by
PREFETCH_MAX_FILES and PREFETCH_MAX_BYTES. The decision (`assess`) is pure
over a `Tree` of directory listings, so it is tested on a fake tree.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import posixpath
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .config import Settings
from .eeadm import Eeadm, EeadmError
from .parse import FileState
from .paths import is_clean_name, under
from .placement import NoCopy, place
from .store import Store

log = logging.getLogger(__name__)

#: Files Globus keeps outstanding per task: a task that asked for fewer has shown all it wants.
WINDOW = 64
#: Candidates checked per `eeadm file state` call while prefetching.
CHUNK = 500
#: Files skipped between two requests of a walk that are checked for being on disk;
#: a longer gap is a selection.
MAX_GAP = WINDOW

#: (name, is a directory, size) of one directory entry.
Entry = tuple[str, bool, int]


def walk_key(path: str) -> list[str]:
    """Globus's walk order: depth first, entries by name."""
    return path.split("/")


def scan_dir(directory: str) -> list[Entry]:
    """Regular files and directories in `directory`, by name (links are not followed)."""
    out: list[Entry] = []
    try:
        with os.scandir(directory) as it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        out.append((e.name, True, 0))
                    elif e.is_file(follow_symlinks=False):
                        out.append((e.name, False, e.stat(follow_symlinks=False).st_size))
                except OSError:
                    continue
    except OSError:
        return []
    out.sort()
    return out


class Tree:
    """Walk-ordered views of the file system over directory listings kept for a while.

    Names the API would refuse (see paths.normalise) are left out of every
    listing: no client can ask for them, and they must never reach `eeadm`.
    """

    def __init__(
        self,
        list_dir: Callable[[str], list[Entry]] = scan_dir,
        *,
        ttl: float = 300.0,
        max_dirs: int = 20000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.list_dir = list_dir
        self.ttl = ttl
        self.max_dirs = max_dirs
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, list[Entry], list[str]]] = OrderedDict()

    def _listing(self, directory: str) -> tuple[list[Entry], list[str]]:
        now = self.clock()
        hit = self._cache.get(directory)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(directory)
            return hit[1], hit[2]
        entries = [e for e in self.list_dir(directory) if is_clean_name(e[0])]
        names = [e[0] for e in entries]
        self._cache[directory] = (now + self.ttl, entries, names)
        self._cache.move_to_end(directory)
        while len(self._cache) > self.max_dirs:
            self._cache.popitem(last=False)
        return entries, names

    def walk(self, top: str, after: str | None = None) -> Iterator[tuple[str, int]]:
        """(path, size) of the files under `top` in walk order, those after `after` only."""
        rest = None
        if after is not None:
            rel = posixpath.relpath(after, top)
            rest = None if rel.startswith("..") else rel.split("/")
        return self._walk(top, rest)

    def _walk(self, directory: str, rest: list[str] | None) -> Iterator[tuple[str, int]]:
        entries, names = self._listing(directory)
        start = 0
        if rest:
            start = bisect.bisect_left(names, rest[0])
            if start < len(entries) and names[start] == rest[0]:
                if entries[start][1] and len(rest) > 1:
                    yield from self._walk(f"{directory}/{rest[0]}", rest[1:])
                start += 1
        for name, is_dir, size in entries[start:]:
            path = f"{directory}/{name}"
            if is_dir:
                yield from self._walk(path, None)
            else:
                yield path, size

    def first_file(self, top: str) -> str | None:
        return next((p for p, _ in self.walk(top)), None)

    def between(self, a: str, b: str, limit: int) -> list[str] | None:
        """Files strictly between `a` and `b` in walk order; None if more than `limit`."""
        out: list[str] = []
        for p, _ in self.walk(posixpath.commonpath([a, b]), after=a):
            if p == b:
                return out
            if len(out) >= limit:
                return None
            out.append(p)
        return None  # b is gone from the tree: not a walk we can follow


@dataclass(frozen=True)
class Outlook:
    """What a task's requests say about the rest of its transfer."""

    walking: bool  # asked for a full window, contiguously in walk order
    scope: str | None = None  # directory whose rest after `last` is (all but surely) wanted
    bet: str | None = None  # wider directory the walk may cover (files on mounted tapes only)
    last: str | None = None  # the task's furthest request in walk order


def assess(
    asked: Sequence[str],
    tree: Tree,
    roots: Sequence[str],
    *,
    widen: int,
    on_disk: Callable[[list[str]], set[str]],
    memo: dict | None = None,
) -> Outlook:
    """Read a task's requests (any order) as evidence; see the module docstring.

    `memo`, kept by the caller per task, remembers how much of the walk was
    already found contiguous, so a long walk is not checked from its start on
    every request."""
    ordered = sorted(set(asked), key=walk_key)
    n = len(ordered)
    if n < WINDOW:
        return Outlook(False)
    root = under(ordered[0], roots)
    if root is None or under(ordered[-1], [root]) is None:  # (all between are under it too)
        return Outlook(False)
    memo = {} if memo is None else memo
    start, skipped_before = 0, 0
    if 0 < memo.get("upto", 0) <= n and ordered[memo["upto"] - 1] == memo["last"]:
        start, skipped_before = memo["upto"] - 1, memo["skipped"]
    gaps: list[str] = []
    for i in range(start, n - 1):
        skipped = tree.between(ordered[i], ordered[i + 1], MAX_GAP)
        if skipped is None:
            return Outlook(False)
        if skipped and i >= WINDOW - 1 and n - 1 - i < WINDOW:
            continue  # the newest window: stage apps run at once, requests may still come
        gaps += skipped
        if skipped_before + len(gaps) > n:
            return Outlook(False)  # skipped more than it asked for: a selection, surely
    if gaps and len(on_disk(gaps)) < len(set(gaps)):
        return Outlook(False)  # skipped a file it would have needed: a selection
    upto = max(n - WINDOW, 1)  # what lies before the newest window is settled
    memo.update(upto=upto, last=ordered[upto - 1], skipped=skipped_before + len(gaps))
    first, last = ordered[0], ordered[-1]

    def inside(d: str) -> bool:  # strictly below the managed root
        return d.startswith(root + "/")

    ancestor = posixpath.commonpath([first, last])  # of all: they lie between in walk order
    current = posixpath.dirname(last)
    if inside(ancestor) and tree.first_file(ancestor) == first:
        scope = ancestor
    elif inside(current) and tree.first_file(current) in set(ordered):
        return Outlook(True, current, None, last)  # entered at its start: it goes on
    else:
        return Outlook(True, None, None, last)  # a range of files picked by hand
    bet = None
    up = scope
    for _ in range(widen):
        up = posixpath.dirname(up)
        if not inside(up) or tree.first_file(up) != first:
            break
        bet = up
    return Outlook(True, scope, bet, last)


class Prefetcher:
    """Turns prefetch triggers (a task asked for a file) into queued guesses."""

    def __init__(
        self, settings: Settings, store: Store, eeadm: Eeadm, tree: Tree | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.eeadm = eeadm
        self.tree = tree or Tree()
        #: per task, candidates already examined (queued, on disk, or refused)
        self._seen: OrderedDict[str, set[str]] = OrderedDict()
        #: per task, how much of its walk is known to be contiguous (see assess)
        self._memo: OrderedDict[str, dict] = OrderedDict()
        #: files seen on disk while checking the gaps of walks
        self._disk: OrderedDict[str, None] = OrderedDict()

    def run_triggers(self, rounds: int = 20) -> int:
        """Plan prefetch for every task with new requests, including those that
        arrive meanwhile (up to `rounds` takes), so a batch flushed next holds
        the guesses. Returns files queued."""
        queued = 0
        for _ in range(rounds):
            triggers = self.store.prefetch.take_triggers()
            if not triggers:
                break
            for taskid in triggers:
                try:
                    queued += self.plan(taskid)
                except EeadmError as exc:
                    log.warning("prefetch for task %s skipped: %s", taskid, exc)
        return queued

    def _on_disk(self, paths: list[str]) -> set[str]:
        """Which of `paths` are on disk (R or P), remembered across plans."""
        unknown = [p for p in dict.fromkeys(paths) if p not in self._disk]
        for i in range(0, len(unknown), CHUNK):
            states = self.eeadm.file_state(unknown[i : i + CHUNK])
            for p, st in states.items():
                if isinstance(st, FileState) and st.on_disk:
                    self._disk[p] = None
        while len(self._disk) > 200_000:
            self._disk.popitem(last=False)
        return {p for p in paths if p in self._disk}

    def plan(self, taskid: str) -> int:
        """Act on what task `taskid` has asked for so far; returns files queued."""
        s = self.settings
        asked = self.store.prefetch.task_paths(taskid)
        if not asked or under(asked[0], s.PREFETCH_EXCLUDE) is not None:
            return 0
        memo = self._memo.setdefault(taskid, {})
        self._memo.move_to_end(taskid)
        while len(self._memo) > 1000:
            self._memo.popitem(last=False)
        outlook = assess(
            asked,
            self.tree,
            s.MANAGED_ROOTS,
            widen=s.PREFETCH_WIDEN,
            on_disk=self._on_disk,
            memo=memo,
        )
        if not outlook.walking:
            if len(set(asked)) >= WINDOW:
                n, _ = self.store.prefetch.drop(taskid)
                if n:
                    log.info("prefetch: task %s picks files; %d guess(es) dropped", taskid, n)
            return 0
        if outlook.scope is None or outlook.last is None:
            return 0
        seen = self._seen.setdefault(taskid, set())
        self._seen.move_to_end(taskid)
        while len(self._seen) > 1000:
            self._seen.popitem(last=False)
        limit = s.PREFETCH_SCAN_LIMIT
        sure = list(itertools.islice(self.tree.walk(outlook.scope, after=outlook.last), limit))
        wider: list[tuple[str, int]] = []
        if outlook.bet is not None:
            wider = [
                (p, n)
                for p, n in itertools.islice(self.tree.walk(outlook.bet), limit)
                if not p.startswith(outlook.scope + "/")
            ]
        used_files, used_bytes = self.store.prefetch.unconfirmed(taskid)
        room = Room(s.PREFETCH_MAX_FILES - used_files, s.PREFETCH_MAX_BYTES - used_bytes)
        chosen = self._migrated(taskid, sure, seen, room)
        if wider and room.left():
            mounted = self.store.tapes.active_tapes() | {t for _, _, t, _ in chosen if t}
            chosen += self._migrated(taskid, wider, seen, room, tapes=mounted)
        n = self.store.prefetch.add(taskid, chosen) if chosen else 0
        if n:
            log.info(
                "prefetch: task %s walks %s; %d file(s) queued%s",
                taskid,
                outlook.scope,
                n,
                f" (incl. files of {outlook.bet} on mounted tapes)" if outlook.bet else "",
            )
        return n

    def _migrated(
        self,
        taskid: str,
        cands: list[tuple[str, int]],
        seen: set[str],
        room: Room,
        tapes: set[str] | None = None,
    ) -> list[tuple[str, int, str | None, str | None]]:
        """Migrated files among `cands` (in order) that fit `room`, with the tape
        and library to recall each from; only copies on `tapes` if given."""
        fresh = [(p, n) for p, n in cands if p not in seen]
        known = self.store.tapes.known(p for p, _ in fresh)
        fresh = [(p, n) for p, n in fresh if p not in known]
        out: list[tuple[str, int, str | None, str | None]] = []
        for i in range(0, len(fresh), CHUNK):
            if not room.left():
                break
            chunk = fresh[i : i + CHUNK]
            states = self.eeadm.file_state([p for p, _ in chunk])
            for p, size in chunk:
                st = states.get(p)
                if not (isinstance(st, FileState) and st.migrated):
                    seen.add(p)  # on disk or unreadable: nothing to guess
                    continue
                try:
                    where = place(
                        st.tapes,
                        self.settings.LTFSEE_LIB,
                        taskid=taskid,
                        busy=(lambda ts: tapes)
                        if tapes is not None
                        else self.store.tapes.busy_tapes,
                        load=self.store.tapes.library_load,
                    )
                except NoCopy:
                    seen.add(p)  # no copy we may recall: not ours to guess
                    continue
                if tapes is not None and where.tape not in tapes:
                    continue  # would cost a mount: wait for the walk to get there
                if not room.take(size):
                    return out
                seen.add(p)
                out.append((p, size, where.tape, where.library))
        return out


@dataclass
class Room:
    """What is left of a task's prefetch budget."""

    files: int
    bytes: int

    def left(self) -> bool:
        return self.files > 0 and self.bytes > 0

    def take(self, size: int) -> bool:
        if self.files <= 0 or size > self.bytes:
            return False
        self.files -= 1
        self.bytes -= size
        return True
