"""The OpenAPI 3 document of every endpoint, served at /api/openapi.json.

Assembled from the operations declared beside each route (api/spec.py), so
the WLCG paths follow TAPE_API_ROOT as the routes do. The test suite checks
every route is documented and runs schemathesis against the app with it.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, current_app, jsonify

from ..auth import SESSION_COOKIE
from .spec import OBJECT, components, json_response, operation

bp = Blueprint("openapi", __name__)

_PARAM = re.compile(r"<(?:[a-z]+:)?[a-z_]+>")


def document(app: Flask) -> dict:
    """The OpenAPI document of `app`'s routes."""
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        op = getattr(view, "openapi", None)
        if op is None:
            continue  # static files; the drift test catches a route left out
        path = _PARAM.sub("{id}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ltfsee-globus",
            "version": "1.0",
            "description": "Tape staging for IBM Spectrum Archive EE: the Globus stage-app "
            "API (v0.5) and the WLCG Tape REST API v1.",
        },
        "components": components(SESSION_COOKIE),
        "paths": paths,
    }


@bp.get("/api/openapi.json")
@operation("This document", {"200": json_response(OBJECT)}, secured=False)
def openapi():
    return jsonify(document(current_app))
