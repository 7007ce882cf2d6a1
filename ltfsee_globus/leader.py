"""This process's bid for the stager lease (store/leases.py).

A stager stands by until the lease is free, takes it (a new epoch), keeps it
renewed from a thread of its own (a long step, a slow `eeadm`, must not let
it run out), and counts it lost as soon as it cannot be sure of it: a renewal
refused, or none accepted within the lease. What it may still do is bounded
by `remaining()`, measured on this host's monotonic clock from the moment
the last accepted renewal was sent, so it never exceeds what the database
granted. A clean stop gives the lease up at once for a standby to take.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from importlib.metadata import PackageNotFoundError, version

from .config import Settings
from .store import LEADER, STANDBY, Store, StoreUnavailable

log = logging.getLogger(__name__)


@functools.cache
def service_version() -> str:
    """The installed package's version: what the node table shows."""
    try:
        return version("ltfsee-globus")
    except PackageNotFoundError:
        return "unknown"


class Leadership:
    """One process's stager lease: standing by, leading, stepping down."""

    def __init__(self, store: Store, settings: Settings, owner: str) -> None:
        self.leases = store.leases
        self.owner = owner
        self.node = settings.node
        self.seconds = settings.STAGER_LEASE
        #: how often a standby tries to take the lease (a clean hand-over is seen this soon)
        self.retry = min(1.0, self.seconds / 10)
        self.epoch: int | None = None
        self._deadline = 0.0
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def wait(self, stop: threading.Event) -> int | None:
        """Stand by until the lease is ours (its epoch) or `stop` is set (None)."""
        announced = False
        while not stop.is_set():
            sent = time.monotonic()
            try:
                self._beat(STANDBY)
                epoch = self.leases.take(self.owner, self.node, self.seconds)
            except StoreUnavailable as exc:
                log.debug("stager lease: cannot ask for it now (%s)", exc)
                epoch = None
            if epoch is not None:
                self._lead(epoch, sent)
                return epoch
            if not announced:
                log.info("node %s: another stager leads; standing by", self.node)
                announced = True
            stop.wait(self.retry)
        return None

    def _lead(self, epoch: int, sent: float) -> None:
        self.epoch, self._deadline = epoch, sent + self.seconds
        self._lost.clear()
        self._stop.clear()
        log.info("node %s: this stager leads (lease epoch %d)", self.node, epoch)
        self._beat(LEADER)
        self._renewer = threading.Thread(target=self._renew, name="stager-lease", daemon=True)
        self._renewer.start()

    def remaining(self) -> float:
        """Seconds the lease is surely still ours (0 once it is lost)."""
        if self.epoch is None or self._lost.is_set():
            return 0.0
        return max(self._deadline - time.monotonic(), 0.0)

    def _renew(self) -> None:
        assert self.epoch is not None
        while not self._stop.wait(self.seconds / 3):
            sent = time.monotonic()
            try:
                kept = self.leases.renew(self.owner, self.epoch, self.seconds)
            except StoreUnavailable as exc:
                if time.monotonic() < self._deadline:
                    log.warning("stager lease: not renewed (%s); trying again", exc)
                    continue
                kept = False
            if not kept:
                self._lost.set()
                log.warning(
                    "node %s: the stager lease (epoch %d) is lost; stepping down",
                    self.node,
                    self.epoch,
                )
                return
            self._deadline = sent + self.seconds
            self._beat(LEADER)

    def step_down(self, *, hand_over: bool) -> None:
        """Stop renewing; with `hand_over` (a clean stop) give the lease up at once."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self.epoch is not None and hand_over and not self._lost.is_set():
            try:
                self.leases.release(self.owner, self.epoch)
                log.info("node %s: stager lease (epoch %d) handed over", self.node, self.epoch)
            except StoreUnavailable as exc:
                log.warning("stager lease: not handed over (%s); it runs out by itself", exc)
        self.epoch = None

    def leave(self) -> None:
        """This process stops standing by: its member row goes."""
        try:
            self.leases.leave(self.owner)
        except StoreUnavailable as exc:
            log.info("members: this process's row stays until it is pruned (%s)", exc)

    def _beat(self, role: str) -> None:
        try:
            self.leases.heartbeat(self.owner, self.node, role, service_version(), self.epoch)
        except StoreUnavailable as exc:
            log.debug("members: no heartbeat now (%s)", exc)
