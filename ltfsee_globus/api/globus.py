"""The v0.5 endpoints the deployed Globus stage apps call (docs/globus.md).

Same paths, header and bodies as the earlier implementation. A poll for a
file that is queued or being recalled is answered from the store without
running `eeadm`; an unknown file's state comes from the coalesced, cached
lookup; a migrated file is queued for the stager, never recalled here.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat

from flask import Blueprint, jsonify, request

from ..auth import authenticate
from ..eeadm import EeadmError
from ..errors import ApiError
from ..lookup import Outcome
from ..parse import FileState
from ..paths import PathRefused, check_managed, check_resolved
from ..placement import NoCopy, place
from ..store import ACTIVE, DONE, FAILED, StoreUnavailable
from .common import json_object, optional_str
from .context import Services, services
from .spec import ABS_PATH, STRING, errors, json_response, operation

log = logging.getLogger(__name__)

bp = Blueprint("globus", __name__, url_prefix="/api/v0.5")

RECALL_FAILED = "Recall failed"
_LIBRARY = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,63}$")


def check_library(explicit: str | None, libraries: list[str]) -> str | None:
    """A library a client named: one of LTFSEE_LIB (when set) and a valid name."""
    if explicit is None:
        return None
    if libraries and explicit not in libraries:
        raise ApiError(400, "Bad Request", "library is not one of the configured libraries")
    if not _LIBRARY.match(explicit):
        raise ApiError(400, "Bad Request", "library is not a valid library name")
    return explicit


def require_file(path: str) -> os.stat_result | None:
    """The file's stat; 404 when it does not exist, 400 when it is not a
    regular file or cannot be reached (a symbolic link loop, a name too long),
    503 when the file system fails. None when we may not look: that is left to
    eeadm (which usually runs as root)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ApiError(404, "Not Found", "no such file") from None
    except PermissionError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG):
            raise ApiError(400, "Bad Request", f"path cannot be opened: {exc.strerror}") from None
        raise ApiError(503, "File system error", exc.strerror) from None
    if not stat.S_ISREG(st.st_mode):
        raise ApiError(400, "Bad Request", "path is not a regular file")
    return st


def current_state(svc: Services, path: str, newer_than: float) -> FileState:
    """The file's state (cached or looked up), or the ApiError that explains why not."""
    try:
        st = svc.lookup.state(path, newer_than)
    except EeadmError as exc:
        raise ApiError.from_eeadm(exc) from None
    return usable(st)


def usable(st: Outcome | None) -> FileState:
    if not isinstance(st, FileState):
        raise ApiError(502, "Unusable file state", st.reason if st else "no state")
    return st


def poll(svc: Services, path: str, taskid: str | None, explicit: str | None) -> str:
    """`resident` or `archived` for one Globus poll; queues the file if it must be
    recalled, from a library that holds a copy (`explicit`, a client's choice, if
    it does)."""
    s = svc.settings
    ref = taskid or ""
    trigger = s.PREFETCH and bool(taskid)  # the prefetcher reads each task's requests
    rec = svc.store.lookup(path, "globus", ref)
    if rec is not None:
        answer = None
        age = svc.clock() - (rec.finished_at or 0.0)
        if rec.status in ACTIVE:
            answer = "archived"
        elif rec.status == DONE and age < s.VERIFIED_TTL:
            answer = "resident"  # the stager verified it on disk after recalling it
        elif rec.status == FAILED and age < s.FAILED_RETENTION:
            raise ApiError(502, RECALL_FAILED, rec.last_error)
        if answer:
            if not rec.known or not rec.requested:  # who wants it, and useful prefetch
                svc.store.note_requester(path, "globus", ref, trigger_prefetch=trigger)
            return answer
    check_resolved(path, s.MANAGED_ROOTS)
    info = require_file(path)
    size = info.st_size if info else None
    prefetched_unasked = rec is not None and not rec.requested

    def act(st: Outcome | None) -> str:
        """Answer from the file's state: on disk, or queued for a recall."""
        st = usable(st)
        if st.on_disk:
            if prefetched_unasked:  # prefetched long ago, asked for now
                svc.store.note_requester(path, "globus", ref, trigger_prefetch=trigger)
            return "resident"
        try:
            where = place(
                st.tapes,
                s.LTFSEE_LIB,
                explicit=explicit,
                taskid=taskid,
                busy=svc.store.busy_tapes,
                load=svc.store.library_load,
            )
        except NoCopy as exc:
            svc.store.fail(path, str(exc), "globus", ref, size=size)
            raise ApiError(502, RECALL_FAILED, str(exc)) from None
        if explicit and where.library != explicit and svc.notes.first(ref):
            log.info(
                "task %s asked for library %s, which holds no copy of %s; recalled from %s",
                ref or "-",
                explicit,
                path,
                where.library,
            )
        svc.store.request(
            path,
            where.library,
            "globus",
            ref,
            size=size,
            tape=where.tape,
            trigger_prefetch=trigger,
        )
        return "archived"

    def later(st: Outcome) -> None:
        """The follow-up of a poll answered before its state was known."""
        try:
            act(st)
        except (ApiError, StoreUnavailable) as exc:
            log.info("%s: not queued after its lookup (%s); its next poll retries", path, exc)

    try:
        st = svc.lookup.state(path, rec.updated_at if rec else 0.0, then=later)
    except EeadmError as exc:
        raise ApiError.from_eeadm(exc) from None
    if st is None:  # every lookup seat is taken: `later` queues it once its state is known
        return "archived"
    return act(st)


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
    authenticate(request, svc.settings.AUTH_KEY)
    body = json_object()
    path = check_managed(body.get("path"), svc.settings.MANAGED_ROOTS, resolve=False)
    taskid = optional_str(body, "globus_taskid")
    library = check_library(optional_str(body, "library"), svc.settings.LTFSEE_LIB)
    try:
        state = poll(svc, path, taskid, library)
    except ApiError as exc:
        svc.metrics.polls.labels("failed" if exc.title == RECALL_FAILED else "error").inc()
        raise
    except PathRefused:
        svc.metrics.polls.labels("error").inc()
        raise
    svc.metrics.polls.labels(state).inc()
    return jsonify(state=state), 201


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
    path = check_managed(body.get("path"), svc.settings.MANAGED_ROOTS)
    require_file(path)
    rec = svc.store.lookup(path)
    st = current_state(svc, path, rec.updated_at if rec else 0.0)
    return jsonify([st.as_json()]), 201
