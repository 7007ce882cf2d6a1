"""One error type and one JSON error handler (RFC 7807 problem details)."""

from __future__ import annotations

import logging
import math

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from .eeadm import EeadmError
from .paths import OutsideRoots, PathRefused
from .staging import FileSystemError, NoSuchFile, RecallFailed, UnusableState
from .store import StoreUnavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
STORE_RETRY_AFTER = 30  # seconds a client waits when the store cannot be written


class ApiError(Exception):
    """An error answered to the client: HTTP status, short title, detail."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.retry_after = retry_after

    @classmethod
    def from_eeadm(cls, exc: EeadmError) -> ApiError:
        """502 eeadm failed, 503 eeadm cannot run (or is not asked now: see
        lookup.LookupBusy, with Retry-After), 504 eeadm timed out."""
        if exc.timed_out:
            return cls(504, "eeadm timed out", str(exc), retry_after=exc.retry_after)
        if exc.unavailable:
            return cls(503, "eeadm unavailable", str(exc), retry_after=exc.retry_after)
        return cls(502, "eeadm failed", str(exc))


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    retry_after: float | None = None,
    extra: dict | None = None,
) -> Response:
    """A problem+json answer; `extra` adds members (RFC 7807 extensions)."""
    body = {"type": "about:blank", "status": status, "title": title, **(extra or {})}
    if detail:
        body["detail"] = detail
    resp = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    if retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return resp


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as problem+json; our own bugs as a bare 500, logged."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        if exc.status >= 500:
            log.warning("%s: %s", exc.title, exc.detail)
        resp = problem(exc.status, exc.title, exc.detail, exc.retry_after)
        if exc.status == 401:  # RFC 9110: say how to authenticate
            resp.headers["WWW-Authenticate"] = 'Bearer realm="ltfsee-globus"'
        return resp

    #: domain errors -> (status, title)
    domain: dict[type[Exception], tuple[int, str]] = {
        NoSuchFile: (404, "Not Found"),
        RecallFailed: (502, "Recall failed"),
        UnusableState: (502, "Unusable file state"),
        FileSystemError: (503, "File system error"),
    }
    for kind, (status, title) in domain.items():
        app.register_error_handler(
            kind, lambda exc, s=status, t=title: _api_error(ApiError(s, t, str(exc)))
        )

    @app.errorhandler(EeadmError)
    def _eeadm_error(exc: EeadmError) -> Response:
        return _api_error(ApiError.from_eeadm(exc))

    @app.errorhandler(PathRefused)
    def _path_refused(exc: PathRefused) -> Response:
        if isinstance(exc, OutsideRoots):
            return problem(403, "Forbidden", str(exc))
        return problem(400, "Bad Request", str(exc))

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(exc: StoreUnavailable) -> Response:
        log.warning("request refused: %s", exc)
        return problem(503, "Store unavailable", str(exc), retry_after=STORE_RETRY_AFTER)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        resp = problem(exc.code or 500, exc.name, exc.description)
        if exc.code == 405 and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return problem(500, "Internal Server Error", "an unexpected error was logged")
