"""The application factory: the core, the web tier's parts, the blueprints."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from flask import Flask
from flask_caching import Cache
from werkzeug.middleware.proxy_fix import ProxyFix

from .api.context import EXTENSION, Services
from .config import load_settings
from .errors import register_error_handlers
from .lookup import StateLookup
from .metrics import Metrics
from .services import Core, build_core, lookup_counter
from .tokens import Keys

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


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
        Cache(app).cache,  # the backend itself: Cache's proxy finds it through current_app
        max_files=settings.LOOKUP_MAX_FILES,
        clock=core.clock,
        running=lookup_counter(core.store),
        max_waiting=settings.LOOKUP_MAX_WAITING,
        breaker_seconds=settings.LOOKUP_BREAKER,
    )
    shared = {f.name: getattr(core, f.name) for f in fields(Core)}
    policy = settings.policy()
    app.extensions[EXTENSION] = Services(
        **shared, lookup=lookup, policy=policy, token_keys=Keys(policy.issuers)
    )
    register_error_handlers(app)
    app.wsgi_app = CountRequests(app.wsgi_app, core.metrics)  # type: ignore[method-assign]

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


#: methods counted by name; any other a client sends is counted as "other",
#: so made-up methods cannot grow the series without bound
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class CountRequests:
    """WSGI middleware: time and count every request the app answers, by route
    (the URL rule Flask matched), method (HTTP_METHODS, else "other") and status.

    Around the app rather than in Flask's before/after-request hooks, which
    cost a poll more than the counting itself (bench/README.md). The route is
    read when the app starts its response, while its request is still bound
    to the environ; the time runs from the call to that moment.
    """

    def __init__(self, wsgi_app: WSGIApplication, metrics: Metrics) -> None:
        self.wsgi_app = wsgi_app
        self.metrics = metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()

        def counted(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            req = environ.get("werkzeug.request")
            rule = req.url_rule if req is not None else None
            method = environ.get("REQUEST_METHOD", "")
            self.metrics.http_request(
                rule.rule if rule is not None else "unmatched",
                method if method in HTTP_METHODS else "other",
                status[:3],
                time.perf_counter() - started,
            )
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, counted)
