"""Request helpers shared by the API blueprints."""

from __future__ import annotations

from typing import Any

from flask import request

from ..errors import ApiError


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or 400 saying why it is not one."""
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise ApiError(400, "Bad Request", "the body must be valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", "the body must be a JSON object")
    return body


def optional_str(body: dict[str, Any], name: str, max_len: int = 256) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise ApiError(400, "Bad Request", f"{name} must be a string of at most {max_len} chars")
    if any(ord(c) < 32 for c in value):
        raise ApiError(400, "Bad Request", f"{name} contains a control character")
    return value
