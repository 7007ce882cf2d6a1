"""Coalesced, cached `eeadm file state -s` lookups for the web tier.

Concurrent requests for states we do not have are gathered into one call
(group commit: while one call runs, newcomers queue for the next), bounded by
`max_files` paths and the runner's command-line limit. Results are cached
with flask-caching; a cached state older than the store's last change to the
file is ignored, so a finished batch invalidates the states of its files in
every worker, whatever the cache backend.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flask_caching import Cache

from .eeadm import Eeadm, EeadmError
from .parse import FileState, StateError

log = logging.getLogger(__name__)

Outcome = FileState | StateError


@dataclass
class _Slot:
    done: threading.Event = field(default_factory=threading.Event)
    result: Outcome | None = None
    error: EeadmError | None = None


class StateLookup:
    def __init__(
        self,
        eeadm: Eeadm,
        cache: Cache,
        *,
        max_files: int,
        clock: Callable[[], float] = time.time,
        running: Callable[[int], None] = lambda delta: None,
    ) -> None:
        self.eeadm = eeadm
        self.running = running  # told +1 / -1 around each eeadm call
        self.cache = cache
        self.max_files = max_files
        self.clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._queue: list[str] = []
        self._leading = False
        self.calls = 0  # eeadm file state invocations made by this process

    @staticmethod
    def _key(path: str) -> str:
        return "state:" + hashlib.sha256(path.encode()).hexdigest()

    def cached(self, path: str, newer_than: float = 0.0) -> FileState | None:
        hit = self.cache.get(self._key(path))
        if not hit or hit["at"] < newer_than:
            return None
        return FileState(path, hit["letter"], hit["replicas"], tuple(hit["tapes"]))

    def remember(self, states: Sequence[FileState]) -> None:
        now = self.clock()
        self.cache.set_many(
            {
                self._key(s.path): {
                    "letter": s.letter,
                    "replicas": s.replicas,
                    "tapes": list(s.tapes),
                    "at": now,
                }
                for s in states
            }
        )

    def state(self, path: str, newer_than: float = 0.0) -> Outcome:
        """One file's state: from the cache if fresh enough, else a coalesced call."""
        hit = self.cached(path, newer_than)
        if hit is not None:
            return hit
        return self.fetch([path])[path]

    def fetch(self, paths: Sequence[str]) -> dict[str, Outcome]:
        """States of `paths` from eeadm, sharing calls with concurrent callers.

        Raises EeadmError when the call that covered a path failed as a whole.
        """
        with self._lock:
            mine: dict[str, _Slot] = {}
            for p in paths:
                slot = self._slots.get(p)
                if slot is None:
                    slot = self._slots[p] = _Slot()
                    self._queue.append(p)
                mine[p] = slot
            lead = not self._leading
            self._leading = self._leading or lead
        if lead:
            self._drain()
        out: dict[str, Outcome] = {}
        for p, slot in mine.items():
            if not slot.done.wait(self.eeadm.timeout * 4 + 5):
                raise EeadmError(
                    "state lookup did not finish", command=self.eeadm.command, timed_out=True
                )
            if slot.error is not None:
                raise slot.error
            assert slot.result is not None
            out[p] = slot.result
        return out

    def _drain(self) -> None:
        """Run calls for queued paths until nobody is waiting; only the leader does this."""
        while True:
            with self._lock:
                batch = self._queue[: self.max_files]
                del self._queue[: self.max_files]
                if not batch:
                    self._leading = False
                    return
            results: dict[str, Outcome] = {}
            error: EeadmError | None = None
            try:
                self.calls += 1
                self.running(+1)
                try:
                    results = self.eeadm.file_state(batch)
                finally:
                    self.running(-1)
            except EeadmError as exc:
                error = exc
            except Exception as exc:  # never strand the waiters on a bug
                log.exception("state lookup failed")
                error = EeadmError(f"state lookup failed: {exc}", command=self.eeadm.command)
            self.remember([r for r in results.values() if isinstance(r, FileState)])
            with self._lock:
                for p in batch:
                    slot = self._slots.pop(p)
                    slot.result = results.get(p)
                    slot.error = error
                    slot.done.set()
