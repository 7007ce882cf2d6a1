"""The application factory: the core, the web tier's parts, the blueprints."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from flask import Flask, Response, g, request
from flask_caching import Cache
from werkzeug.middleware.proxy_fix import ProxyFix

from .api.context import EXTENSION, Services
from .config import load_settings
from .errors import register_error_handlers
from .lookup import StateLookup
from .metrics import Metrics
from .services import Core, build_core, lookup_counter


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from defaults, the environment and `config` (which wins).

    Raises ConfigError, listing every problem, when the settings cannot work.
    Starts nothing: gunicorn's worker hook starts the embedded stager.
    """
    settings = load_settings(config)
    core = build_core(settings, (config or {}).get("CLOCK", time.time))
    app = Flask(__name__)
    app.url_map.strict_slashes = False  # gfal2 asks for "{api}/stage/" with a slash
    app.config.update(
        MAX_CONTENT_LENGTH=settings.MAX_BODY_BYTES,
        CACHE_TYPE=settings.CACHE_TYPE,
        CACHE_DEFAULT_TIMEOUT=settings.CACHE_DEFAULT_TIMEOUT,
        CACHE_DIR=str(settings.state_dir / "cache"),
        CACHE_NO_NULL_WARNING=True,
    )
    lookup = StateLookup(
        core.eeadm,
        Cache(app),
        max_files=settings.LOOKUP_MAX_FILES,
        clock=core.clock,
        running=lookup_counter(core.store),
        max_waiting=settings.LOOKUP_MAX_WAITING,
        breaker_seconds=settings.LOOKUP_BREAKER,
    )
    shared = {f.name: getattr(core, f.name) for f in fields(Core)}
    app.extensions[EXTENSION] = Services(**shared, lookup=lookup)
    register_error_handlers(app)
    _count_requests(app, core.metrics)

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


def _count_requests(app: Flask, metrics: Metrics) -> None:
    """Time and count every request the app answers, by route and status."""

    @app.before_request
    def _start() -> None:
        g.ltfsee_started = time.perf_counter()

    @app.after_request
    def _count(resp: Response) -> Response:
        started = g.get("ltfsee_started")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        seconds = None if started is None else time.perf_counter() - started
        metrics.http_request(route, request.method, resp.status_code, seconds)
        return resp
