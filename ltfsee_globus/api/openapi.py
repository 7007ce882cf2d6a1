"""The OpenAPI 3 document of every endpoint, served at /api/openapi.json.

Built from the settings, so the WLCG paths follow TAPE_API_ROOT. The test
suite runs schemathesis against the app with this document.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..auth import SESSION_COOKIE
from ..config import Settings
from .context import services

bp = Blueprint("openapi", __name__)

PROBLEM = {"$ref": "#/components/responses/Problem"}
SECURED = [{"apiKey": []}, {"bearer": []}]


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): PROBLEM for c in codes}


def _op(
    summary: str,
    responses: dict,
    body: dict | None = None,
    *,
    secured: bool = True,
    params: list | None = None,
) -> dict:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = _body(body)
    if secured:
        op["security"] = SECURED
        op["responses"] = {**responses, **_errors(401)}
    if params:
        op["parameters"] = params
    return op


def document(s: Settings) -> dict:
    """The OpenAPI document for an app with settings `s`."""
    root = s.TAPE_API_ROOT.rstrip("/")
    string = {"type": "string"}
    abs_path = {"type": "string", "pattern": "^/", "maxLength": 4096}
    paths_body = {
        "type": "object",
        "required": ["paths"],
        "properties": {"paths": {"type": "array", "minItems": 1, "items": string}},
    }
    request_id = [{"name": "id", "in": "path", "required": True, "schema": string}]
    empty = {"description": "OK (empty body)"}
    ts = {"type": "integer", "minimum": 0}
    file_status = {
        "type": "object",
        "required": ["path", "state"],
        "properties": {
            "path": string,
            "state": {"enum": ["SUBMITTED", "STARTED", "COMPLETED", "FAILED", "CANCELLED"]},
            "startedAt": ts,
            "finishedAt": ts,
            "error": string,
        },
    }
    eeadm_errors = _errors(400, 403, 404, 413, 502, 503, 504)
    html = {"description": "HTML", "content": {"text/html": {"schema": string}}}
    redirect = {"description": "To the status page", "headers": {"Location": {"schema": string}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ltfsee-globus",
            "version": "1.0",
            "description": "Tape staging for IBM Spectrum Archive EE: the Globus stage-app "
            "API (v0.5) and the WLCG Tape REST API v1.",
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
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
                                    "type": string,
                                    "status": {"type": "integer"},
                                    "title": string,
                                    "detail": string,
                                },
                            }
                        }
                    },
                }
            },
        },
        "paths": {
            "/api/v0.5/globus_recall/globus_recall": {
                "post": _op(
                    "Stage one file for Globus: resident, or archived while it is recalled",
                    {
                        "201": _json(
                            {
                                "type": "object",
                                "required": ["state"],
                                "properties": {"state": {"enum": ["resident", "archived"]}},
                            },
                            "Created",
                        ),
                        **eeadm_errors,
                    },
                    {
                        "type": "object",
                        "required": ["path"],
                        "properties": {"path": string, "globus_taskid": string, "library": string},
                    },
                )
            },
            "/api/v0.5/file_state/file_state": {
                "post": _op(
                    "eeadm file state of one file",
                    {
                        "201": _json(
                            {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "state": {"enum": ["R", "P", "M"]},
                                        "replicas": {"type": "integer"},
                                        "tapes": {"type": "array", "items": string},
                                        "path": string,
                                    },
                                },
                            },
                            "Created",
                        ),
                        **eeadm_errors,
                    },
                    {"type": "object", "required": ["path"], "properties": {"path": abs_path}},
                )
            },
            f"{root}/stage": {
                "post": _op(
                    "Create a stage request",
                    {
                        "201": {
                            **_json(
                                {
                                    "type": "object",
                                    "required": ["requestId"],
                                    "properties": {"requestId": string},
                                },
                                "Created",
                            ),
                            "headers": {"Location": {"schema": string}},
                        },
                        **_errors(400, 413),
                    },
                    {
                        "type": "object",
                        "required": ["files"],
                        "properties": {
                            "files": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["path"],
                                    "properties": {
                                        "path": string,
                                        "diskLifetime": {"type": "integer"},
                                        "targetedMetadata": {"type": "object"},
                                    },
                                },
                            }
                        },
                    },
                )
            },
            f"{root}/stage/{{id}}": {
                "get": _op(
                    "Progress of a stage request",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["id", "createdAt", "startedAt", "files"],
                                "properties": {
                                    "id": string,
                                    "createdAt": ts,
                                    "startedAt": ts,
                                    "completedAt": ts,
                                    "files": {"type": "array", "items": file_status},
                                },
                            }
                        ),
                        **_errors(404),
                    },
                    params=request_id,
                ),
                "delete": _op(
                    "Cancel and forget a stage request",
                    {"200": empty, **_errors(404)},
                    params=request_id,
                ),
            },
            f"{root}/stage/{{id}}/cancel": {
                "post": _op(
                    "Cancel files of a stage request",
                    {"200": empty, **_errors(400, 404, 413)},
                    paths_body,
                    params=request_id,
                )
            },
            f"{root}/release/{{id}}": {
                "post": _op(
                    "Release files of a stage request (recorded; nothing is evicted)",
                    {"200": empty, **_errors(400, 404, 413)},
                    paths_body,
                    params=request_id,
                )
            },
            f"{root}/archiveinfo": {
                "post": _op(
                    "Where files are: disk, tape or both",
                    {
                        "200": _json(
                            {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["path"],
                                    "properties": {
                                        "path": string,
                                        "error": string,
                                        "locality": {
                                            "enum": [
                                                "DISK",
                                                "TAPE",
                                                "DISK_AND_TAPE",
                                                "LOST",
                                                "NONE",
                                                "UNAVAILABLE",
                                            ]
                                        },
                                    },
                                },
                            }
                        ),
                        **_errors(400, 413, 502, 503, 504),
                    },
                    paths_body,
                )
            },
            "/.well-known/wlcg-tape-rest-api": {
                "get": _op(
                    "WLCG Tape REST API discovery",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["sitename", "endpoints"],
                                "properties": {
                                    "sitename": string,
                                    "description": string,
                                    "endpoints": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["uri", "version"],
                                            "properties": {
                                                "uri": string,
                                                "version": string,
                                                "metadata": {"type": "object"},
                                            },
                                        },
                                    },
                                },
                            }
                        )
                    },
                    secured=False,
                )
            },
            "/api/status": {
                "get": _op("Queue, batches and stager state", {"200": _json({"type": "object"})})
            },
            "/healthz": {"get": _op("Liveness", {"200": _json({"type": "object"})}, secured=False)},
            "/readyz": {
                "get": _op(
                    "Readiness: the store takes writes, a stager runs, eeadm answers",
                    {"200": _json({"type": "object"}), **_errors(503)},
                    secured=False,
                )
            },
            "/metrics": {
                "get": _op(
                    "Prometheus metrics",
                    {"200": {"description": "OK", "content": {"text/plain": {"schema": string}}}},
                    secured=False,
                )
            },
            "/api/openapi.json": {
                "get": _op("This document", {"200": _json({"type": "object"})}, secured=False)
            },
            "/": {
                "get": {
                    "summary": "Status page (HTML); the login form without a key or session",
                    "security": [*SECURED, {"session": []}, {}],
                    "responses": {"200": html, "401": html},
                }
            },
            "/login": {
                "post": {
                    "summary": "Log in to the status page: sets the session cookie",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {"type": "object", "properties": {"key": string}}
                            }
                        },
                    },
                    "responses": {"303": redirect, "400": html, "401": html, **_errors(413)},
                }
            },
            "/logout": {"post": {"summary": "End the session", "responses": {"303": redirect}}},
        },
    }


@bp.get("/api/openapi.json")
def openapi():
    return jsonify(document(services().settings))
