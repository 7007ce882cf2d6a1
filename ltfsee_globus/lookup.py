"""Coalesced, cached `eeadm file state -s` lookups for the web tier.

Concurrent requests for states we do not have are gathered into one call
(group commit: while one call runs, newcomers queue for the next), bounded by
`max_files` paths and the runner's command-line limit. Results are cached
with flask-caching; a cached state older than the store's last change to the
file is ignored, so a finished batch invalidates the states of its files in
every worker, whatever the cache backend. Every caller checks a path
(staging.require_file) before it looks it up, so a cached state on disk
stands for that check too: a poll answers `resident` from it for
VERIFIED_TTL without checking again (staging.poll).

`eeadm` may hang. Two guards keep that from taking the web tier with it: a
bulkhead (at most `max_waiting` threads of a process wait on lookups; a
poll beyond that is not kept waiting: its path joins the next call and the
caller's follow-up runs when the state is known, so threads stay free for
polls the store answers, health checks and metrics) and a breaker (a lookup
that timed out opens it: lookups fail at once with LookupBusy for
`breaker_seconds`, then one probe call decides whether it closes).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .eeadm import Eeadm, EeadmError
from .parse import FileState, StateError

log = logging.getLogger(__name__)

Outcome = FileState | StateError


class StateCache(Protocol):
    """Where looked-up states are kept for a while (a flask-caching backend)."""

    def get(self, key: str) -> Any: ...

    def set_many(self, mapping: dict[str, Any], timeout: int | None = None) -> Any: ...


class LookupBusy(EeadmError):
    """No lookup now: too many are waiting, or eeadm is known to hang."""

    def __init__(self, message: str, *, command: Sequence[str], retry_after: float) -> None:
        super().__init__(message, command=command, unavailable=True, retry_after=retry_after)


@dataclass
class _Slot:
    done: threading.Event = field(default_factory=threading.Event)
    result: Outcome | None = None
    error: EeadmError | None = None
    then: list[Callable[[Outcome], None]] = field(default_factory=list)


class StateLookup:
    def __init__(
        self,
        eeadm: Eeadm,
        cache: StateCache,
        *,
        max_files: int,
        clock: Callable[[], float] = time.time,
        running: Callable[[int], None] = lambda delta: None,
        max_waiting: int = 4,
        breaker_seconds: float = 30.0,
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
        self.max_waiting = max_waiting
        self.breaker_seconds = breaker_seconds
        self._waiting = 0
        self._open_until: float | None = None  # breaker open until then; None: closed
        self._probing = False

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

    def state(
        self,
        path: str,
        newer_than: float = 0.0,
        *,
        then: Callable[[Outcome], None] | None = None,
    ) -> Outcome | None:
        """One file's state: from the cache if fresh enough, else a coalesced call.

        With `then`, a caller that finds every waiting seat taken does not
        wait: the path joins the next call, `then(state)` runs when it is
        known (on the thread that made the call), and None is returned.
        """
        hit = self.cached(path, newer_than)
        if hit is not None:
            return hit
        return self.fetch([path], then=then).get(path)

    def fetch(
        self, paths: Sequence[str], *, then: Callable[[Outcome], None] | None = None
    ) -> dict[str, Outcome]:
        """States of `paths` from eeadm, sharing calls with concurrent callers.

        Raises EeadmError when the call that covered a path failed as a whole,
        LookupBusy (at once) when the breaker is open, or when the bulkhead
        is full and there is no `then` to defer to (then: an empty dict).
        """
        with self._lock:
            self._check_breaker()
            if self._waiting >= self.max_waiting and self._leading:
                if then is None:
                    raise self._busy(f"{self._waiting} eeadm lookups are already waiting", 5.0)
                for p in paths:
                    self._slot(p).then.append(then)
                return {}
            self._waiting += 1
        try:
            return self._fetch(paths)
        finally:
            with self._lock:
                self._waiting -= 1

    def _busy(self, why: str, retry_after: float) -> LookupBusy:
        return LookupBusy(why, command=self.eeadm.command, retry_after=max(1.0, retry_after))

    def _check_breaker(self) -> None:
        """Raise LookupBusy while the breaker is open (lock held)."""
        if self._open_until is not None:
            left = self._open_until - self.clock()
            if left > 0 or self._probing:
                raise self._busy(
                    "eeadm file state is not answering (it timed out); retry later",
                    left if left > 0 else self.breaker_seconds,
                )

    def _slot(self, path: str) -> _Slot:
        """The slot of a path in the next call, made and queued if new (lock held)."""
        slot = self._slots.get(path)
        if slot is None:
            slot = self._slots[path] = _Slot()
            self._queue.append(path)
        return slot

    def _gate(self) -> LookupBusy | None:
        """Whether the leader may call eeadm now (lock held): None when the
        breaker is closed or this call is its probe, else the refusal."""
        if self._open_until is None:
            return None
        left = self._open_until - self.clock()
        if left > 0:
            return self._busy("eeadm file state is not answering (it timed out)", left)
        self._probing = True
        return None

    def breaker_open(self) -> bool:
        """True while lookups fail at once because eeadm timed out."""
        with self._lock:
            return self._open_until is not None

    def _fetch(self, paths: Sequence[str]) -> dict[str, Outcome]:
        with self._lock:
            mine = {p: self._slot(p) for p in paths}
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

    def _call(self, batch: list[str], results: dict[str, Outcome]) -> EeadmError | None:
        """One `eeadm file state` call into `results`; its error, if any. Moves the breaker."""
        error: EeadmError | None = None
        try:
            self.calls += 1
            self.running(+1)
            try:
                results.update(self.eeadm.file_state(batch))
            finally:
                self.running(-1)
        except EeadmError as exc:
            error = exc
        except Exception as exc:  # never strand the waiters on a bug
            log.exception("state lookup failed")
            error = EeadmError(f"state lookup failed: {exc}", command=self.eeadm.command)
        with self._lock:
            was_open = self._open_until is not None
            self._probing = False
            if error is not None and error.timed_out:
                self._open_until = self.clock() + self.breaker_seconds
                if not was_open:
                    log.warning(
                        "eeadm file state timed out: lookups refused for %.0f s, then probed",
                        self.breaker_seconds,
                    )
            elif was_open and error is None:
                self._open_until = None
                log.warning("eeadm file state answers again: lookups resumed")
        return error

    def _drain(self) -> None:
        """Run calls for queued paths until nobody is waiting; only the leader does this."""
        while True:
            with self._lock:
                batch = self._queue[: self.max_files]
                del self._queue[: self.max_files]
                if not batch:
                    self._leading = False
                    return
                refused = self._gate()
            results: dict[str, Outcome] = {}
            error: EeadmError | None = refused
            if refused is None:
                error = self._call(batch, results)
            self.remember([r for r in results.values() if isinstance(r, FileState)])
            later: list[tuple[Callable[[Outcome], None], Outcome]] = []
            with self._lock:
                for p in batch:
                    slot = self._slots.pop(p)
                    slot.result = results.get(p)
                    slot.error = error
                    slot.done.set()
                    if slot.result is not None:
                        later += [(then, slot.result) for then in slot.then]
            for then, outcome in later:
                try:
                    then(outcome)
                except Exception:  # a deferred poll's follow-up; its next poll retries
                    log.exception("deferred lookup follow-up failed")
