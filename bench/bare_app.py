"""The least any Flask handler of the poll API can do: api_load.py's baseline.

It parses the JSON body, checks X-API-KEY in constant time and answers
{"state": "resident"} with the service's 201, under the same gunicorn
settings as the service (bare_gunicorn.py). No store, no path checks, no
metrics: what is left between this and the service is our own work.
"""

import hmac
import os

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)
    key = os.environ["AUTH_KEY"].encode()

    @app.post("/api/v0.5/globus_recall/globus_recall")
    def poll():
        body = request.get_json(force=True, silent=True)
        given = request.headers.get("X-API-KEY", "").encode()
        if not isinstance(body, dict) or not hmac.compare_digest(given, key):
            return jsonify(error="refused"), 401
        return jsonify(state="resident"), 201

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
