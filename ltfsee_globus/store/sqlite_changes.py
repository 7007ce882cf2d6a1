"""Poll answers kept in memory until the next commit to the SQLite store.

SQLite's read is in-process, but under a poll storm it is not free: with 16
request threads each read gives up the GIL and takes it back around every
step, and the WAL index is shared between processes (bench/README.md: the
kept read on PostgreSQL beat SQLite's plain one). So each process keeps what
its polls read, tagged with a *commit mark*: 8 bytes in a small memory-mapped
file beside the database (`ltfsee-globus.db-commits`) that every write of
every process on the host (service, stager, CLI) sets to a new random value
after its COMMIT, but for writes that change nothing a poll reads (the
lease, the node table, readiness probes: Database.write's `polls=False`,
which come every second or so and would otherwise drop everything as
often). A kept answer is used only while the mark is the one it
was read under, and never longer than MAX_AGE: reading the mark is a memory
load, no system call, no lock.

- a read that overlapped a commit is tagged with the mark before it, so it
  is dropped at the next look (the commit's new mark differs);
- this process's own commits set the mark too: it reads its own writes;
- a process killed between its COMMIT and the new mark leaves answers up to
  MAX_AGE old; a write by anything but this package (the sqlite3 shell)
  sets no mark, with the same bound.

Coarser than PostgreSQL's per-file notices (any other commit drops every
kept answer), which suits one host: writes come from one stager and the polls of
new files, and each costs the next polls one read each.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: seconds an answer is kept at most, whatever the mark says
MAX_AGE = 5.0
#: files kept at most per process; the oldest go first
MAX_FILES = 100_000
_MARK = struct.Struct("<Q")


class CommitMark:
    """The shared 8-byte mark every commit sets (see above)."""

    def __init__(self, path: Path, owner_of: Path) -> None:
        """The mark in `path`, made (belonging to `owner_of`'s owner, as the
        database does when root makes it) if it is not there."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_size < _MARK.size:
                os.ftruncate(fd, _MARK.size)
                owner = os.stat(owner_of)
                if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                    os.fchown(fd, owner.st_uid, owner.st_gid)
            self._map = mmap.mmap(fd, _MARK.size)
        finally:
            os.close(fd)

    def read(self) -> int:
        return _MARK.unpack_from(self._map)[0]

    def set_new(self) -> None:
        """A value no reader holds (random: no lock, no lost update)."""
        _MARK.pack_into(self._map, 0, int.from_bytes(os.urandom(8), "little"))


class KeptReads:
    """Answers per file, each valid while the commit mark it was read under holds."""

    def __init__(
        self,
        mark: CommitMark,
        *,
        max_age: float = MAX_AGE,
        max_files: int = MAX_FILES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mark = mark
        self.max_age = max_age
        self.max_files = max_files
        self._clock = clock
        self._lock = threading.Lock()
        #: path -> {answer key: (when read, mark, answer)}, oldest file first
        self._files: dict[str, dict[Hashable, tuple[float, int, Any]]] = {}

    def get(self, path: str, key: Hashable, read: Callable[[], T]) -> T:
        now, mark = self._clock(), self.mark.read()
        with self._lock:
            kept = self._files.get(path, {}).get(key)
        if kept is not None and kept[1] == mark and now - kept[0] < self.max_age:
            return kept[2]
        value = read()
        with self._lock:
            self._files.setdefault(path, {})[key] = (now, mark, value)
            while len(self._files) > self.max_files:
                del self._files[next(iter(self._files))]
        return value

    def kept(self) -> int:
        """Files with an answer in memory, valid or not (for tests)."""
        with self._lock:
            return len(self._files)
