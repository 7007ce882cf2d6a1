"""The core objects built from settings, without Flask.

The web app (create_app) and the standalone stager process both start here,
so the store, the eeadm runner and the metrics they feed are wired in one
place. Nothing here imports Flask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import Settings
from .eeadm import Eeadm, Observer
from .metrics import Metrics
from .store import Store, StoreUnavailable, open_store

log = logging.getLogger(__name__)


@dataclass
class Core:
    """What every process of the service works with."""

    settings: Settings
    store: Store
    eeadm: Eeadm
    metrics: Metrics
    clock: Callable[[], float]


def build_core(settings: Settings, clock: Callable[[], float] = time.time) -> Core:
    """The store STORE_URL names (SQLite under STATE_DIR by default), the
    eeadm runner, and the metrics each eeadm run is counted in."""
    metrics = Metrics()
    store = open_store(settings, clock)
    observe = eeadm_observer(metrics, store)
    eeadm = Eeadm(settings.EEADM_COMMAND, settings.EEADM_TIMEOUT, observe=observe)
    return Core(settings, store, eeadm, metrics, clock)


def eeadm_observer(metrics: Metrics, store: Store) -> Observer:
    """Count each eeadm run (Prometheus) and record how it went (the status page)."""

    def observe(subcommand: str, outcome: str, seconds: float, error: str | None) -> None:
        metrics.eeadm_call(subcommand, outcome, seconds)
        try:
            store.ops.note_eeadm(subcommand, outcome, seconds, error)
        except StoreUnavailable as exc:  # the caller's own store use reports it
            log.debug("eeadm health not recorded: %s", exc)

    return observe


def lookup_counter(store: Store) -> Callable[[int], None]:
    """Count this process's lookups in flight in the store (+1 / -1), as a hint
    that holds batches: when the store is away, a poll's own store use reports
    it, so the hint is skipped rather than failing the lookup."""

    def running(delta: int) -> None:
        try:
            store.polls.lookup_running(delta)
        except StoreUnavailable as exc:
            log.debug("lookup not counted: %s", exc)

    return running
