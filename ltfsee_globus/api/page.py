"""The status page at `/`: server-rendered HTML an operator leaves open.

Browsers log in once with an API key (a form; the key never goes in a URL)
and get a signed session cookie; scripts send the key header as to the API
and get the same page. The page refreshes itself every PAGE_REFRESH seconds.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, make_response, redirect, render_template, request

from ..auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    key_name,
    page_user,
    reject,
    session_token,
)
from ..health import human_age, status_report
from .context import services
from .spec import HTML, REDIRECT, SECURED, STRING, errors, operation

bp = Blueprint("page", __name__, template_folder="../templates")
bp.add_app_template_filter(human_age, "age")

#: Seconds between the page's own reloads.
PAGE_REFRESH = 10
_HTML = "text/html; charset=utf-8"


def _login_page(status: int, message: str | None = None) -> Response:
    resp = make_response(render_template("login.html", message=message), status)
    resp.headers["Content-Type"] = _HTML
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="ltfsee-globus"'
    return resp


@bp.get("/")
@operation(
    "Status page (HTML); the login form without a key or session",
    {"200": HTML, "401": HTML},
    secured=False,
    security=[*SECURED, {"session": []}, {}],
)
def status_page():
    svc = services()
    user = page_user(request, svc.settings.AUTH_KEY)
    if user is None:
        return _login_page(401)
    report = status_report(svc.store, svc.settings)
    resp = make_response(
        render_template(
            "status.html",
            r=report,
            user=user,
            site=svc.settings.SITENAME,
            refresh=PAGE_REFRESH,
            breaker_open=svc.lookup.breaker_open(),
        )
    )
    resp.headers["Content-Type"] = _HTML
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/login")
@operation(
    "Log in to the status page: sets the session cookie",
    {"303": REDIRECT, "400": HTML, "401": HTML, **errors(413)},
    secured=False,
    requestBody={
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": {"key": STRING}}
            }
        },
    },
)
def login():
    """Check a key typed into the form; on success set the session cookie."""
    svc = services()
    key = request.form.get("key", "")
    if not key:
        return _login_page(400, "Enter an API key.")
    name = key_name(key, svc.settings.AUTH_KEY)
    if name is None:
        reject(request)
        return _login_page(401, "That key is not valid.")
    resp = redirect("/", code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        session_token(name, svc.settings.AUTH_KEY),
        max_age=SESSION_SECONDS,
        path="/",
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )
    return resp


@bp.post("/logout")
@operation("End the session", {"303": REDIRECT}, secured=False)
def logout():
    resp = redirect("/", code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@bp.app_template_filter("size")
def size(n: int | None) -> str:
    """Bytes in SI units (tape sizes are SI)."""
    if n is None:
        return "-"
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    value, i = float(n), 0
    while value >= 1000 and i < len(units) - 1:
        value, i = value / 1000, i + 1
    return f"{value:.0f} B" if i == 0 else f"{value:.1f} {units[i]}"


@bp.app_template_filter("utc")
def utc(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
