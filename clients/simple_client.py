#!/usr/bin/env python3
"""Globus GCS5 stage app for ltfsee-globus: stage one file, say whether it is on disk.

Globus runs this once per file with GLOBUS_STAGE_PATH and GLOBUS_STAGE_TASKID
set; the storage gateway's `environment` policy adds the settings below.

    LTFSEE_URL  service URL, or several comma-separated (default http://localhost:5000)
    AUTH_KEY    API key (required)
    TIMEOUT     request timeout in seconds (default 10)
    LIBRARY     optional tape library to recall from
    CA_BUNDLE   optional CA file to verify the service's TLS certificate
    DEBUG       true/false (default false): log the exchange on stderr

With several URLs (one per node of the service) each file starts at one of
them, the same every time (spreading files over the nodes), and goes on to
the next on a refused connection, a time-out or a 503.

Prints `resident` (on disk: the transfer may start) or `archived` (staging:
Globus asks again later) and exits 0. Otherwise one line on stderr and:
2 bad settings, 3 no such file, 4 path refused, 5 bad key, 6 server error
(including a recall that failed), 7 server unreachable or timed out, 8 the
URL answers but is not this service's API (a wrong LTFSEE_URL: its 404 must
not reach Globus as "no such file").
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Mapping

import requests

EXIT_OK, EXIT_USAGE, EXIT_MISSING, EXIT_REFUSED, EXIT_AUTH, EXIT_SERVER, EXIT_UNREACHABLE = (
    0,
    2,
    3,
    4,
    5,
    6,
    7,
)
EXIT_NOT_OURS = 8
ENDPOINT = "/api/v0.5/globus_recall/globus_recall"
DEFAULT_URL = "http://localhost:5000"


class StageError(Exception):
    """A failure with its exit code; the message is the stderr line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def env_bool(value: str | None) -> bool:
    """`true/1/yes/on` are true; anything else, `False` included, is false."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def settings(env: Mapping[str, str]) -> dict:
    """The client settings from the environment, or StageError(EXIT_USAGE)."""
    path = env.get("GLOBUS_STAGE_PATH", "")
    if not path:
        raise StageError(EXIT_USAGE, "GLOBUS_STAGE_PATH is not set")
    key = env.get("AUTH_KEY", "")
    if not key:
        raise StageError(EXIT_USAGE, "AUTH_KEY is not set")
    try:
        timeout = float(env.get("TIMEOUT") or 10)
    except ValueError:
        raise StageError(EXIT_USAGE, "TIMEOUT must be a number of seconds") from None
    if timeout <= 0:
        raise StageError(EXIT_USAGE, "TIMEOUT must be greater than 0")
    urls = [u.strip().rstrip("/") for u in (env.get("LTFSEE_URL") or DEFAULT_URL).split(",")]
    if not all(urls):
        raise StageError(EXIT_USAGE, "LTFSEE_URL has an empty entry")
    first = zlib.crc32(path.encode("utf-8", "surrogateescape")) % len(urls)
    return {
        "urls": urls[first:] + urls[:first],
        "key": key,
        "timeout": timeout,
        "path": path,
        "taskid": env.get("GLOBUS_STAGE_TASKID") or None,
        "library": env.get("LIBRARY") or None,
        "verify": env.get("CA_BUNDLE") or True,
        "debug": env_bool(env.get("DEBUG")),
    }


def _reason(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.reason or f"HTTP {resp.status_code}"
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or resp.reason)
    return resp.reason or f"HTTP {resp.status_code}"


def _is_our_problem(resp: requests.Response) -> bool:
    """True for the service's own error answer: problem+json naming the status."""
    if not resp.headers.get("Content-Type", "").startswith("application/problem+json"):
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == resp.status_code


def _not_ours(url: str, resp: requests.Response) -> str:
    kind = resp.headers.get("Content-Type", "no content type").split(";")[0]
    return (
        f"{url} answered HTTP {resp.status_code} ({kind}) that is not the "
        "ltfsee-globus API: check LTFSEE_URL"
    )


def stage(cfg: dict) -> str:
    """POST the file to the service, trying each URL in turn while one is
    down (refused, timed out, 503); `resident` or `archived`, else StageError."""
    body = {"path": cfg["path"]}
    if cfg["taskid"]:
        body["globus_taskid"] = cfg["taskid"]
    if cfg["library"]:
        body["library"] = cfg["library"]
    tried: list[StageError] = []
    for url in cfg["urls"]:
        try:
            resp = requests.post(
                url + ENDPOINT,
                json=body,
                headers={"X-API-KEY": cfg["key"]},
                timeout=cfg["timeout"],
                verify=cfg["verify"],
            )
        except requests.Timeout:
            tried.append(StageError(EXIT_UNREACHABLE, f"{url} timed out after {cfg['timeout']:g}s"))
            continue
        except requests.RequestException as exc:
            tried.append(StageError(EXIT_UNREACHABLE, f"cannot reach {url}: {exc}"))
            continue
        if cfg["debug"]:
            print(f"debug: {resp.status_code} {resp.text.strip()} ({url})", file=sys.stderr)
        if resp.status_code == 503:  # this node cannot work now (its store, its eeadm)
            tried.append(StageError(EXIT_SERVER, f"server error 503 at {url}: {_reason(resp)}"))
            continue
        return answer(cfg, url, resp)
    last = tried[-1]
    if len(tried) > 1:
        raise StageError(last.code, f"{last} (and {len(tried) - 1} other URL(s) failed)")
    raise last


def answer(cfg: dict, url: str, resp: requests.Response) -> str:
    """The state one service's answer gives, or StageError."""
    codes = {404: EXIT_MISSING, 400: EXIT_REFUSED, 403: EXIT_REFUSED, 401: EXIT_AUTH}
    if resp.status_code in codes:
        if not _is_our_problem(resp):  # e.g. a wrong LTFSEE_URL: "no such file" would lie
            raise StageError(EXIT_NOT_OURS, _not_ours(url, resp))
        raise StageError(codes[resp.status_code], f"{cfg['path']}: {_reason(resp)}")
    if resp.status_code not in (200, 201):
        raise StageError(EXIT_SERVER, f"server error {resp.status_code}: {_reason(resp)}")
    try:
        state = resp.json()["state"]
    except (ValueError, KeyError, TypeError):
        raise StageError(EXIT_NOT_OURS, _not_ours(url, resp)) from None
    if state not in ("resident", "archived"):
        raise StageError(EXIT_SERVER, f"server answered an unknown state {state!r}")
    return state


def run(env: Mapping[str, str]) -> int:
    """The whole stage app, given its environment; returns the exit code."""
    try:
        print(stage(settings(env)))
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    return EXIT_OK


def main() -> int:
    return run(os.environ)


if __name__ == "__main__":
    sys.exit(main())
