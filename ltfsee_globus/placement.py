"""Which library recalls a file: one that holds a copy of it.

`eeadm file state -s` names every copy of a file as VOLSER@POOL@LIBRARY. A
recall with `-l LIB` can only read copies in LIB, so the library comes from
the file's own copies, limited to the libraries this service may recall from
(LTFSEE_LIB). Among those it prefers a copy on a tape that is mounted anyway
(a pending or running recall needs it), then the library with the least work
queued, then the earlier implementation's rule (md5 of the task id) to break
ties. Without LTFSEE_LIB there is no choice to make: recalls name no library
(but a library a client named, when it holds a copy: a name that holds none
never reaches eeadm).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass


class NoCopy(Exception):
    """No copy of the file is in a library this service may recall from."""


@dataclass(frozen=True)
class Placement:
    """Where to recall a file from: `library` (None: no `-l`) and the copy's tape."""

    library: str | None
    tape: str | None


def library_of(tape: str) -> str | None:
    """LIBRARY of VOLSER@POOL@LIBRARY (None when eeadm did not name it)."""
    parts = tape.split("@")
    return parts[2] if len(parts) == 3 and parts[2] else None


def task_rank(taskid: str | None, libraries: Sequence[str]) -> dict[str, int]:
    """Each library's place in the task's order: md5(taskid) % len first."""
    if not libraries:
        return {}
    first = 0
    if taskid:
        first = int(hashlib.md5(taskid.encode(), usedforsecurity=False).hexdigest(), 16)
    n = len(libraries)
    return {lib: (i - first) % n for i, lib in enumerate(libraries)}


def place(
    tapes: Sequence[str],
    libraries: Sequence[str],
    *,
    explicit: str | None = None,
    taskid: str | None = None,
    busy: Callable[[Sequence[str]], Collection[str]] = lambda tapes: (),
    load: Callable[[], Mapping[str, int]] = dict,
    avoid: str | None = None,
) -> Placement:
    """Choose the copy to recall a file from.

    `tapes`: its copies; `libraries`: LTFSEE_LIB; `explicit`: the library a
    client named (honoured when it holds a copy); `busy(tapes)`: those of
    `tapes` a pending or running recall needs; `load()`: files queued or
    recalling per library (both asked only when there is a choice to make);
    `avoid`: a library that just failed to recall it (used only when no other
    library holds a copy). Raises NoCopy when no copy is in `libraries`.
    """
    if not libraries:  # none configured: no `-l`, unless a client named one with a copy
        named = [t for t in tapes if explicit is not None and library_of(t) == explicit]
        return (
            Placement(explicit, named[0]) if named else Placement(None, tapes[0] if tapes else None)
        )
    rank = task_rank(taskid, libraries)
    held = [(library_of(t), t) for t in tapes]
    if not any(lib for lib, _ in held):  # eeadm named no libraries: the old rule
        library = explicit or min(libraries, key=rank.__getitem__)
        return Placement(library, tapes[0] if tapes else None)
    usable = [(lib, t) for lib, t in held if lib in rank]
    if not usable:
        found = ", ".join(sorted({lib for lib, _ in held if lib}))
        raise NoCopy(
            f"no copy of the file is in a library this service recalls from "
            f"({', '.join(libraries)}); its copies are in {found}"
        )
    others = [(lib, t) for lib, t in usable if lib != avoid] or usable
    if explicit is not None:
        named = [(lib, t) for lib, t in others if lib == explicit]
        if named:
            return Placement(*named[0])
    if len(others) == 1:
        return Placement(*others[0])
    mounted = set(busy([t for _, t in others]))
    work = load()
    lib, tape = min(others, key=lambda c: (c[1] not in mounted, work.get(c[0], 0), rank[c[0]]))
    return Placement(lib, tape)


class Once:
    """Remembers the last `size` keys, so a note is logged once per task."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        """True the first time `key` is seen (while it is remembered)."""
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True
