"""Poll answers kept in memory until PostgreSQL says their rows changed.

A Globus endpoint polls every outstanding file again and again, and on
PostgreSQL each store read is a round trip (150-300 us on loopback, more
across a network) where SQLite's costs 20 us in-process. So each process
keeps what its polls read, per file, and drops it when the file's rows
change:

- the database tells: triggers on `files` and `requesters` (migration
  0004) send `NOTIFY ltfsee_files` with the md5 of each changed path, or
  `*` for a statement that changed many rows; one thread per process
  LISTENs on its own connection and drops what they name;
- this process's own commits drop everything at once (read-your-writes,
  before its own notice comes back), but for writes that touch neither
  table (the lease, the node table: Database.write's `polls=False`);
- a read that overlapped a change is not kept (a sequence number taken
  before the read must still hold after it);
- while the listening connection is down nothing is kept, and everything
  kept is dropped when it comes back (notices sent meanwhile are lost);
- no answer is kept longer than MAX_AGE, whatever happens.

What a poll answers from here is therefore at most the notice's delay old
(milliseconds) and never older than MAX_AGE.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")
log = logging.getLogger(__name__)

CHANNEL = "ltfsee_files"
#: the payload that drops everything (a statement that changed many rows)
EVERYTHING = "*"
#: seconds an answer is kept at most, whether or not a notice came
MAX_AGE = 5.0
#: files kept at most per process; the oldest go first
MAX_FILES = 100_000
#: seconds between attempts to listen again after the connection was lost
RETRY = (0.5, 5.0)
#: seconds the listener waits without news before it looks at its connection
IDLE_CHECK = 5.0


def path_key(path: str) -> str:
    """How a notice names a file: the md5 of its path (a notice holds at most
    8,000 bytes; a path may not fit)."""
    return hashlib.md5(path.encode("utf-8"), usedforsecurity=False).hexdigest()


class ChangeCache:
    """Answers per file, dropped on the database's change notices (see above).

    `connect` opens a new autocommit connection for listening. The listener
    starts with the first `get`, so processes that never poll hold no
    connection for it.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        *,
        max_age: float = MAX_AGE,
        max_files: int = MAX_FILES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self.max_age = max_age
        self.max_files = max_files
        self._clock = clock
        self._lock = threading.Lock()
        #: path key -> {answer key: (when read, answer)}, oldest file first
        self._files: dict[str, dict[Hashable, tuple[float, Any]]] = {}
        self._seq = 0  # grows at every drop: a read that overlapped one is not kept
        self._live = False  # listening: answers may be kept
        self._stop = threading.Event()
        self._wakeup = os.pipe()  # close() wakes the listener through it
        self._thread: threading.Thread | None = None

    # -- reading -----------------------------------------------------------------
    def get(self, path: str, key: Hashable, read: Callable[[], T]) -> T:
        """The answer `read()` gives for `path`, from memory when it is kept."""
        fk, now = path_key(path), self._clock()
        with self._lock:
            if self._thread is None:
                self._start()
            kept = self._files.get(fk, {}).get(key)
            if kept is not None and now - kept[0] < self.max_age:
                return kept[1]
            seq, live = self._seq, self._live
        value = read()
        if live:
            with self._lock:
                if self._seq == seq and self._live:
                    self._files.setdefault(fk, {})[key] = (now, value)
                    while len(self._files) > self.max_files:
                        del self._files[next(iter(self._files))]
        return value

    def drop(self, payload: str = EVERYTHING) -> None:
        """Forget one file (a notice's path key) or, with EVERYTHING, all."""
        with self._lock:
            self._seq += 1
            if payload == EVERYTHING:
                self._files.clear()
            else:
                self._files.pop(payload, None)

    def kept(self) -> int:
        """Files with an answer in memory now (for tests and the curious)."""
        with self._lock:
            return len(self._files)

    @property
    def live(self) -> bool:
        return self._live

    # -- listening ---------------------------------------------------------------
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="store-changes", daemon=True)
        self._thread.start()

    def _set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live
            self._seq += 1
            self._files.clear()

    def _listen(self) -> None:
        delay = RETRY[0]
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._set_live(True)
                    delay = RETRY[0]
                    while not self._stop.is_set():
                        # wait for the server or close(); then take what came, without waiting
                        select.select([conn.fileno(), self._wakeup[0]], [], [], IDLE_CHECK)
                        for notice in conn.notifies(timeout=0):
                            self.drop(notice.payload)
            except psycopg.Error as exc:
                if self._live:
                    log.info("store: change notices lost (%s); polls read the database", exc)
                self._set_live(False)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, RETRY[1])
        self._set_live(False)

    def close(self) -> None:
        self._stop.set()
        os.write(self._wakeup[1], b"x")
        if self._thread is not None:
            self._thread.join()
        for fd in self._wakeup:
            os.close(fd)
