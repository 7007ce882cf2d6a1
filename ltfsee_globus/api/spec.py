"""OpenAPI pieces declared beside each route: `@operation(...)` under the
route decorator attaches the route's operation object to its view, and
api/openapi.py assembles the document from the app's URL map. A route and
its schema change in one place; a route without one fails the drift test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

PROBLEM = {"$ref": "#/components/responses/Problem"}
SECURED: list[dict] = [{"apiKey": []}, {"bearer": []}]
STRING = {"type": "string"}
TIMESTAMP = {"type": "integer", "minimum": 0}
ABS_PATH = {"type": "string", "pattern": "^/", "maxLength": 4096}
OBJECT = {"type": "object"}
EMPTY = {"description": "OK (empty body)"}
HTML = {"description": "HTML", "content": {"text/html": {"schema": STRING}}}
REDIRECT = {"description": "To the status page", "headers": {"Location": {"schema": STRING}}}
REQUEST_ID = [{"name": "id", "in": "path", "required": True, "schema": STRING}]
PATHS_BODY = {
    "type": "object",
    "required": ["paths"],
    "properties": {"paths": {"type": "array", "minItems": 1, "items": STRING}},
}


def json_response(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes: int) -> dict[str, Any]:
    """Problem+json answers for these statuses."""
    return {str(c): PROBLEM for c in codes}


def operation(
    summary: str,
    responses: dict,
    body: dict | None = None,
    *,
    secured: bool = True,
    params: list | None = None,
    **extra: Any,
) -> Callable[[F], F]:
    """Attach an OpenAPI operation to a view: a JSON `body` schema, the key
    schemes (and 401) when `secured`, path `params`, and any other members."""
    op: dict[str, Any] = {"summary": summary, "responses": dict(responses), **extra}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if secured:
        op["security"] = SECURED
        op["responses"] = {**op["responses"], **errors(401)}
    if params:
        op["parameters"] = params

    def attach(view: F) -> F:
        view.openapi = op  # type: ignore[attr-defined]
        return view

    return attach


def components(session_cookie: str) -> dict:
    return {
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": session_cookie},
        },
        "responses": {
            "Problem": {
                "description": "RFC 7807 problem details",
                "content": {
                    "application/problem+json": {
                        "schema": {
                            "type": "object",
                            "required": ["status", "title"],
                            "properties": {
                                "type": STRING,
                                "status": {"type": "integer"},
                                "title": STRING,
                                "detail": STRING,
                            },
                        }
                    }
                },
            }
        },
    }
