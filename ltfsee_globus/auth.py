"""API keys: `X-API-KEY` or `Authorization: Bearer`, compared in constant time."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from flask import Request

from .errors import ApiError

log = logging.getLogger(__name__)


def presented_key(request: Request) -> str | None:
    key = request.headers.get("X-API-KEY")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(request: Request, keys: Mapping[str, str]) -> str:
    """The name of the key the request carries; 401 when none matches.

    Every configured key is compared, so timing says nothing about which
    key, or how much of one, matched.
    """
    key = presented_key(request)
    if key is None:
        raise ApiError(401, "Unauthorized", "an API key is required (X-API-KEY header)")
    given = key.encode()
    matched = None
    for name, expected in keys.items():
        if hmac.compare_digest(given, expected.encode()) and matched is None:
            matched = name
    if matched is None:
        log.warning(
            "rejected an API key from %s for %s %s",
            request.remote_addr,
            request.method,
            request.path,
        )
        raise ApiError(401, "Unauthorized", "the API key is not valid")
    return matched
