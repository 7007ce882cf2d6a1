"""The v0.5 endpoints the deployed Globus stage apps call (docs/globus.md).

Same paths, header and bodies as the earlier implementation; what a poll
decides is in staging.py (a file queued or recalling is answered from the
store, an unknown one looked up, a migrated one queued, never recalled here).
"""

from __future__ import annotations

import json
import logging
import re

from flask import Blueprint, Response, jsonify, request

from ..auth import authenticate
from ..errors import ApiError
from ..paths import check_managed
from ..staging import RecallFailed, current_state, poll, require_file
from .common import json_object, optional_str
from .context import services
from .spec import ABS_PATH, STRING, errors, json_response, operation

log = logging.getLogger(__name__)

bp = Blueprint("globus", __name__, url_prefix="/api/v0.5")

_LIBRARY = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,63}$")
#: a poll's answers, encoded once as jsonify would (the hot path's response)
_ANSWERS = {
    state: json.dumps({"state": state}, separators=(",", ":")).encode() + b"\n"
    for state in ("resident", "archived")
}


def check_library(explicit: str | None, libraries: list[str]) -> str | None:
    """A library a client named: one of LTFSEE_LIB (when set) and a valid name."""
    if explicit is None:
        return None
    if libraries and explicit not in libraries:
        raise ApiError(400, "Bad Request", "library is not one of the configured libraries")
    if not _LIBRARY.match(explicit):
        raise ApiError(400, "Bad Request", "library is not a valid library name")
    return explicit


EEADM_ERRORS = errors(400, 403, 404, 413, 502, 503, 504)


@bp.post("/globus_recall/globus_recall")
@operation(
    "Stage one file for Globus: resident, or archived while it is recalled",
    {
        "201": json_response(
            {
                "type": "object",
                "required": ["state"],
                "properties": {"state": {"enum": ["resident", "archived"]}},
            },
            "Created",
        ),
        **EEADM_ERRORS,
    },
    {
        "type": "object",
        "required": ["path"],
        "properties": {"path": STRING, "globus_taskid": STRING, "library": STRING},
    },
)
def globus_recall():
    svc = services()
    key = authenticate(request, svc.settings.AUTH_KEY)
    body = json_object()
    path = check_managed(body.get("path"), svc.settings.MANAGED_ROOTS, resolve=False)
    taskid = optional_str(body, "globus_taskid")
    library = check_library(optional_str(body, "library"), svc.settings.LTFSEE_LIB)
    try:
        state = poll(svc, path, taskid, library, svc.settings.KEY_PRIORITY.get(key, 0))
    except RecallFailed:
        svc.metrics.poll("failed")
        raise
    except Exception:
        svc.metrics.poll("error")
        raise
    svc.metrics.poll(state)
    return Response(_ANSWERS[state], 201, content_type="application/json")


@bp.post("/file_state/file_state")
@operation(
    "eeadm file state of one file",
    {
        "201": json_response(
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "state": {"enum": ["R", "P", "M"]},
                        "replicas": {"type": "integer"},
                        "tapes": {"type": "array", "items": STRING},
                        "path": STRING,
                    },
                },
            },
            "Created",
        ),
        **EEADM_ERRORS,
    },
    {"type": "object", "required": ["path"], "properties": {"path": ABS_PATH}},
)
def file_state():
    svc = services()
    authenticate(request, svc.settings.AUTH_KEY)
    body = json_object()
    path = check_managed(body.get("path"), svc.settings.MANAGED_ROOTS, resolve=False)
    require_file(path, svc.settings.MANAGED_ROOTS)
    rec = svc.store.polls.lookup(path)
    st = current_state(svc, path, rec.updated_at if rec else 0.0)
    return jsonify([st.as_json()]), 201
