"""The application factory and the services it wires together."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from flask_caching import Cache
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Settings, load_settings
from .eeadm import Eeadm, Observer
from .errors import register_error_handlers
from .lookup import StateLookup
from .metrics import Metrics
from .placement import Once
from .stager import Stager
from .store import STORE_FILE, Store, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the request handlers and the stager share in one process."""

    settings: Settings
    store: Store
    eeadm: Eeadm
    lookup: StateLookup
    metrics: Metrics
    clock: Callable[[], float] = time.time
    #: tasks whose explicit library was overridden (logged once per task)
    notes: Once = field(default_factory=Once)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    stager: Stager | None = None

    def start_stager(self) -> Stager:
        """Run the stager in a background thread of this process (embedded mode).

        It waits for the STATE_DIR lock, so with several workers exactly one
        stages and the others stand by to take over if it dies.
        """
        if self.stager is None:
            self.stager = Stager(self.settings, self.store, self.eeadm, self.clock)
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.stager.run, args=(self._stop,), name="stager", daemon=True
            )
            self._thread.start()
        return self.stager

    def stop_stager(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.stager is not None:
            self.stager.wait_idle()
            self.stager = None


def eeadm_observer(metrics: Metrics, store: Store) -> Observer:
    """Count each eeadm run (Prometheus) and record how it went (the status page)."""

    def observe(subcommand: str, outcome: str, seconds: float, error: str | None) -> None:
        metrics.eeadm_call(subcommand, outcome, seconds)
        try:
            store.note_eeadm(subcommand, outcome, seconds, error)
        except StoreUnavailable as exc:  # the caller's own store use reports it
            log.debug("eeadm health not recorded: %s", exc)

    return observe


def services() -> Services:
    """The Services of the app handling the current request."""
    return current_app.extensions["ltfsee"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from defaults, the environment and `config` (which wins).

    Raises ConfigError, listing every problem, when the settings cannot work.
    Starts nothing: gunicorn's worker hook starts the embedded stager.
    """
    settings = load_settings(config)
    clock = (config or {}).get("CLOCK", time.time)
    app = Flask(__name__)
    app.url_map.strict_slashes = False  # gfal2 asks for "{api}/stage/" with a slash
    app.config.update(
        MAX_CONTENT_LENGTH=settings.MAX_BODY_BYTES,
        CACHE_TYPE=settings.CACHE_TYPE,
        CACHE_DEFAULT_TIMEOUT=settings.CACHE_DEFAULT_TIMEOUT,
        CACHE_DIR=str(settings.state_dir / "cache"),
        CACHE_NO_NULL_WARNING=True,
    )
    cache = Cache(app)
    metrics = Metrics()
    store = Store(settings.state_dir / STORE_FILE, clock=clock)
    eeadm = Eeadm(
        settings.EEADM_COMMAND, settings.EEADM_TIMEOUT, observe=eeadm_observer(metrics, store)
    )
    lookup = StateLookup(
        eeadm,
        cache,
        max_files=settings.LOOKUP_MAX_FILES,
        clock=clock,
        running=store.lookup_running,
        max_waiting=settings.LOOKUP_MAX_WAITING,
        breaker_seconds=settings.LOOKUP_BREAKER,
    )
    app.extensions["ltfsee"] = Services(settings, store, eeadm, lookup, metrics, clock)
    register_error_handlers(app)
    metrics.init_app(app)

    if settings.TRUST_PROXY:
        n = settings.TRUST_PROXY
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]

    from .api.globus import bp as globus_bp
    from .api.openapi import bp as openapi_bp
    from .api.ops import bp as ops_bp
    from .api.page import bp as page_bp
    from .api.tape import bp as tape_bp
    from .api.tape import wellknown

    app.register_blueprint(globus_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(page_bp)
    app.register_blueprint(openapi_bp)
    app.register_blueprint(wellknown)
    app.register_blueprint(tape_bp, url_prefix=settings.TAPE_API_ROOT.rstrip("/"))
    return app
