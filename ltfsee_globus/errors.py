"""One error type and one JSON error handler (RFC 7807 problem details)."""

from __future__ import annotations

import logging

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from .eeadm import EeadmError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """An error answered to the client: HTTP status, short title, detail."""

    def __init__(self, status: int, title: str, detail: str | None = None) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail

    @classmethod
    def from_eeadm(cls, exc: EeadmError) -> ApiError:
        """502 eeadm failed, 503 eeadm cannot run, 504 eeadm timed out."""
        if exc.timed_out:
            return cls(504, "eeadm timed out", str(exc))
        if exc.unavailable:
            return cls(503, "eeadm unavailable", str(exc))
        return cls(502, "eeadm failed", str(exc))


def problem(status: int, title: str, detail: str | None = None) -> Response:
    body = {"type": "about:blank", "status": status, "title": title}
    if detail:
        body["detail"] = detail
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as problem+json; our own bugs as a bare 500, logged."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        if exc.status >= 500:
            log.warning("%s: %s", exc.title, exc.detail)
        return problem(exc.status, exc.title, exc.detail)

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
