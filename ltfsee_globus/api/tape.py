"""WLCG Tape REST API v1 (docs/wlcg.md) on the same store and stager.

A stage request is a set of files in the queue the Globus endpoint feeds, so a
file wanted by both is recalled once. The stager's intake gives each request
file its first state (batched `eeadm file state`); from then on recalls move
it. A bad file fails that file, never the request.

Who asks is an API key or a WLCG token (auth.identify); what it may do, on
which paths, is the site's policy (policy.py). No valid identity: 401; an
identity that may not use the operation anywhere: 403; a file outside its
rights fails that file; a request is visible only to the identity that made it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..auth import identify
from ..eeadm import EeadmError
from ..errors import ApiError
from ..parse import FileState
from ..paths import PathRefused, check_managed, normalise
from ..policy import Identity, Rights
from ..staging import FileSystemError, NoSuchFile, require_file
from ..store import FINAL
from .common import json_object
from .context import Services, services
from .spec import (
    EMPTY,
    OBJECT,
    PATHS_BODY,
    REQUEST_ID,
    STRING,
    TIMESTAMP,
    errors,
    json_response,
    operation,
)

log = logging.getLogger(__name__)
bp = Blueprint("tape", __name__)
wellknown = Blueprint("wellknown", __name__)

LOCALITY = {"R": "DISK", "P": "DISK_AND_TAPE", "M": "TAPE"}


def _root(svc: Services) -> str:
    return svc.settings.TAPE_API_ROOT.rstrip("/")


@wellknown.get("/.well-known/wlcg-tape-rest-api")
@operation(
    "WLCG Tape REST API discovery",
    {
        "200": json_response(
            {
                "type": "object",
                "required": ["sitename", "endpoints"],
                "properties": {
                    "sitename": STRING,
                    "description": STRING,
                    "endpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["uri", "version"],
                            "properties": {"uri": STRING, "version": STRING, "metadata": OBJECT},
                        },
                    },
                },
            }
        )
    },
    secured=False,
)
def discovery():
    """Where the API is, as the client reached us (ProxyFix applies X-Forwarded-*)."""
    svc = services()
    s = svc.settings
    return jsonify(
        sitename=s.SITENAME,
        description=s.SITE_DESCRIPTION,
        endpoints=[
            {
                "uri": request.host_url.rstrip("/") + _root(svc),
                "version": "v1",
                "metadata": {
                    "max_stage_files": s.STAGE_MAX_FILES,
                    "max_archiveinfo_files": s.ARCHIVEINFO_MAX_FILES,
                    "max_body_bytes": s.MAX_BODY_BYTES,
                    "release": "recorded only: files are not evicted",
                },
            }
        ],
    )


def _paths(body: dict[str, Any], limit: int) -> list[str]:
    """The `paths` list of a body: strings, at most `limit` of them."""
    paths = body.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ApiError(400, "Bad Request", "paths must be a non-empty list of strings")
    if len(paths) > limit:
        raise ApiError(413, "Payload Too Large", f"at most {limit} paths per request")
    return paths


def _same_path(raw: str) -> str:
    """A path as requests store it: normalised when it can be, else as given."""
    try:
        return normalise(raw)
    except PathRefused:
        return raw


def _who(svc: Services, op: str) -> tuple[Identity, Rights]:
    """The caller and its rights; 401 without a valid identity, 403 when it
    may not use `op` on any path."""
    s = svc.settings
    who = identify(
        request, s.AUTH_KEY, svc.policy, svc.token_keys, svc.metrics, s.FRONTEND_ADDRESSES
    )
    rights = svc.policy.rights(who)
    if not rights.may(op):
        svc.metrics.refusal("forbidden")
        log.warning("refused %s %s: %s may not %s", request.method, request.path, who.name, op)
        raise ApiError(403, "Forbidden", f"{who.name} may not {op} here")
    return who, rights


def _forbidden(who: Identity, operation: str, path: str) -> str:
    return f"forbidden: {who.name} may not {operation} {path}"


def _owned(request_id: str, operation: str):
    """(services, request row, its files) for a request the caller made.

    Another identity's request is as unknown as a missing one: 404.
    """
    svc = services()
    who, _ = _who(svc, operation)
    found = svc.store.requests.get(request_id)
    if found is None or found[0].owner != who.name:
        raise ApiError(404, "Not Found", f"no stage request {request_id}")
    return svc, *found


def _in_request(files, paths: list[str]) -> list[str]:
    """The request's own paths for `paths`; 400 naming one that is not in it."""
    mine = {f.path for f in files}
    wanted = list(dict.fromkeys(_same_path(p) for p in paths))
    missing = [p for p in wanted if p not in mine]
    if missing:
        raise ApiError(400, "Bad Request", f"path not in the request: {missing[0]}")
    return wanted


@bp.post("/stage")
@operation(
    "Create a stage request",
    {
        "201": {
            **json_response(
                {"type": "object", "required": ["requestId"], "properties": {"requestId": STRING}},
                "Created",
            ),
            "headers": {"Location": {"schema": STRING}},
        },
        **errors(400, 403, 413),
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
                        "path": STRING,
                        "diskLifetime": {"type": "integer"},
                        "targetedMetadata": OBJECT,
                    },
                },
            }
        },
    },
)
def stage():
    svc = services()
    who, rights = _who(svc, "stage")
    files = json_object().get("files")
    if not isinstance(files, list) or not files:
        raise ApiError(400, "Bad Request", "files must be a non-empty list")
    if len(files) > svc.settings.STAGE_MAX_FILES:
        raise ApiError(
            413, "Payload Too Large", f"at most {svc.settings.STAGE_MAX_FILES} files per request"
        )
    # each distinct string the client sent, answered as sent; the service
    # works on the normalised path ("/a//b" and "/a/b": two entries, one file)
    entries: dict[str, tuple[str, str, str | None]] = {}
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ApiError(400, "Bad Request", "each file must be an object with a string path")
        asked = item["path"]
        if asked in entries:
            continue
        try:
            path = check_managed(asked, svc.settings.MANAGED_ROOTS)
        except PathRefused as exc:
            entries[asked] = (asked, asked, str(exc))
            continue
        error = None if rights.allows("stage", path) else _forbidden(who, "stage", path)
        entries[asked] = (asked, path, error)
    request_id = str(uuid.uuid4())
    priority = svc.settings.KEY_PRIORITY.get(who.name, 0) if who.kind == "key" else 0
    svc.store.requests.create(request_id, who.name, list(entries.values()), priority)
    resp = jsonify(requestId=request_id)
    resp.status_code = 201
    resp.headers["Location"] = f"{request.host_url.rstrip('/')}{_root(svc)}/stage/{request_id}"
    return resp


FILE_STATUS = {
    "type": "object",
    "required": ["path", "state"],
    "properties": {
        "path": STRING,
        "state": {"enum": ["SUBMITTED", "STARTED", "COMPLETED", "FAILED", "CANCELLED"]},
        "startedAt": TIMESTAMP,
        "finishedAt": TIMESTAMP,
        "error": STRING,
    },
}


@bp.get("/stage/<request_id>")
@operation(
    "Progress of a stage request",
    {
        "200": json_response(
            {
                "type": "object",
                "required": ["id", "createdAt", "startedAt", "files"],
                "properties": {
                    "id": STRING,
                    "createdAt": TIMESTAMP,
                    "startedAt": TIMESTAMP,
                    "completedAt": TIMESTAMP,
                    "files": {"type": "array", "items": FILE_STATUS},
                },
            }
        ),
        **errors(403, 404),
    },
    params=REQUEST_ID,
)
def stage_status(request_id: str):
    _svc, req, files = _owned(request_id, "poll")
    out_files = []
    for f in files:
        item: dict[str, Any] = {"path": f.asked_as, "state": f.state}
        if f.started_at is not None:
            item["startedAt"] = int(f.started_at)
        if f.finished_at is not None:
            item["finishedAt"] = int(f.finished_at)
        if f.state == "FAILED":
            item["error"] = f.error or "staging failed"
        out_files.append(item)
    body: dict[str, Any] = {
        "id": req.id,
        "createdAt": int(req.created_at),
        "startedAt": int(req.started_at or req.created_at),
        "files": out_files,
    }
    if all(f.state in FINAL for f in files):
        body["completedAt"] = int(max(f.finished_at or req.created_at for f in files))
    return jsonify(body)


@bp.post("/stage/<request_id>/cancel")
@operation(
    "Cancel files of a stage request",
    {"200": EMPTY, **errors(400, 403, 404, 413)},
    PATHS_BODY,
    params=REQUEST_ID,
)
def cancel(request_id: str):
    svc, _req, files = _owned(request_id, "cancel")
    paths = _in_request(files, _paths(json_object(), svc.settings.STAGE_MAX_FILES))
    svc.store.requests.cancel_files(request_id, paths)
    return Response(status=200, mimetype="text/plain")


@bp.delete("/stage/<request_id>")
@operation(
    "Cancel and forget a stage request", {"200": EMPTY, **errors(403, 404)}, params=REQUEST_ID
)
def delete(request_id: str):
    svc, _req, files = _owned(request_id, "cancel")
    svc.store.requests.cancel_files(request_id, [f.path for f in files])
    svc.store.requests.delete(request_id)
    return Response(status=200, mimetype="text/plain")


@bp.post("/release/<request_id>")
@operation(
    "Release files of a stage request (recorded; nothing is evicted)",
    {"200": EMPTY, **errors(400, 403, 404, 413)},
    PATHS_BODY,
    params=REQUEST_ID,
)
def release(request_id: str):
    """Recorded only: nothing is evicted from disk (see README)."""
    svc, _req, files = _owned(request_id, "release")
    paths = _in_request(files, _paths(json_object(), svc.settings.STAGE_MAX_FILES))
    svc.store.requests.release_files(request_id, paths)
    return Response(status=200, mimetype="text/plain")


@bp.post("/archiveinfo")
@operation(
    "Where files are: disk, tape or both",
    {
        "200": json_response(
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path"],
                    "properties": {
                        "path": STRING,
                        "error": STRING,
                        "locality": {
                            "enum": ["DISK", "TAPE", "DISK_AND_TAPE", "LOST", "NONE", "UNAVAILABLE"]
                        },
                    },
                },
            }
        ),
        **errors(400, 403, 413, 502, 503, 504),
    },
    PATHS_BODY,
)
def archiveinfo():
    svc = services()
    who, rights = _who(svc, "archiveinfo")
    raw = _paths(json_object(), svc.settings.ARCHIVEINFO_MAX_FILES)
    # one answer per distinct string the client sent, carrying that string
    answers: list[dict[str, str]] = []
    normal: dict[str, str] = {}  # the string as sent -> the path looked up
    for p in dict.fromkeys(raw):
        try:
            path = check_managed(p, svc.settings.MANAGED_ROOTS, resolve=False)
        except PathRefused as exc:
            answers.append({"path": p, "error": str(exc)})
            continue
        if not rights.allows("archiveinfo", path):
            answers.append({"path": p, "error": _forbidden(who, "ask archiveinfo of", path)})
            continue
        try:
            require_file(path, svc.settings.MANAGED_ROOTS)
        except (NoSuchFile, PathRefused, FileSystemError) as exc:
            answers.append({"path": p, "error": str(exc)})
            continue
        answers.append({"path": p})
        normal[p] = path
    try:
        states = svc.lookup.fetch(list(dict.fromkeys(normal.values()))) if normal else {}
    except EeadmError as exc:
        raise ApiError.from_eeadm(exc) from None
    for a in answers:
        if "error" in a:
            continue
        st = states[normal[a["path"]]]
        if isinstance(st, FileState):
            a["locality"] = LOCALITY[st.letter]
        else:
            a["error"] = st.reason
    return jsonify(answers)
