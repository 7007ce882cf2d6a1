"""Request helpers shared by the API blueprints."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request

from ..errors import ApiError

MAX_DEPTH = 32  # our bodies nest 3 deep; WLCG targetedMetadata a few more
#: The only way a lone surrogate gets into decoded JSON: a \uD800-\uDFFF escape
#: (a UTF-8 body cannot encode one; the decoder refuses it).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_CONTROL = re.compile("[\x00-\x1f]")


def _bad(detail: str) -> ApiError:
    return ApiError(400, "Bad Request", detail)


def check_json(value: Any, raw: bytes) -> None:
    """400 unless `value` (decoded from `raw`) nests at most MAX_DEPTH deep and
    every string (keys included) is valid Unicode: JSON may escape lone
    surrogates (`"\\ud800"`), which no file name, SQL parameter or log line
    can hold. The walk is skipped when `raw` cannot hold either: at most
    MAX_DEPTH brackets and no surrogate escape (a poll's body, every time)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH and not _SURROGATE_ESCAPE.search(raw):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _bad("the body holds a string that is not valid Unicode") from None
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise _bad(f"the body nests deeper than {MAX_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _body() -> bytes:
    """The raw body; 413 beyond MAX_BODY_BYTES however it comes. With a
    Content-Length werkzeug refuses it before reading; a chunked body's size
    is found only by reading it, where werkzeug's stream stops at the limit
    without a word, so it is read here, one byte past the limit."""
    if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    raw = request.environ["wsgi.input"].read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "Payload Too Large", f"the body is larger than {limit} bytes")
    return raw


def json_object() -> dict[str, Any]:
    """The request body as a JSON object of valid Unicode, or 400 saying why not.

    The Content-Type is not required (the deployed stage apps send JSON
    without it in places); the body must be UTF-8.
    """
    raw = _body()
    try:
        body = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise _bad("the body must be UTF-8 encoded JSON") from None
    except RecursionError:
        raise _bad(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise _bad("the body must be valid JSON") from None
    check_json(body, raw)
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def optional_str(body: dict[str, Any], name: str, max_len: int = 256) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise _bad(f"{name} must be a string of at most {max_len} chars")
    if _CONTROL.search(value):
        raise _bad(f"{name} contains a control character")
    return value
