"""What operators look at: liveness, a status summary, Prometheus metrics."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, jsonify, request

from ..auth import authenticate
from ..errors import problem
from ..health import REPORT_ROWS, cluster, drives_report, passed, readiness
from ..metrics import store_metrics
from .context import Services, services
from .spec import OBJECT, STRING, errors, json_response, operation

bp = Blueprint("ops", __name__)


def status_summary(svc: Services) -> dict:
    summary = asdict(svc.store.ops.counts())
    summary["prefetch"]["tasks"] = [asdict(t) for t in svc.store.prefetch.tasks()]
    summary.update(cluster(svc.store, 3 * svc.settings.STAGER_LEASE))
    summary["drives"] = drives_report(svc.store, svc.settings)
    summary["stage_requests"] = [asdict(r) for r in svc.store.requests.recent(REPORT_ROWS)]
    summary["store"] = svc.store.describe()
    return summary


@bp.get("/healthz")
@operation("Liveness", {"200": json_response(OBJECT)}, secured=False)
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
@operation(
    "Readiness: roots mounted, the store takes writes, a stager runs, eeadm answers",
    {"200": json_response(OBJECT), **errors(503)},
    secured=False,
)
def readyz():
    """200 when this instance can do its work; 503 naming what stops it."""
    svc = services()
    checks = readiness(svc.settings, svc.store, svc.eeadm, eeadm_hangs=svc.lookup.breaker_open())
    failed = {k: v for k, v in checks.items() if not passed(v)}
    if failed:
        detail = "; ".join(f"{k}: {v}" for k, v in failed.items())
        return problem(503, "Not ready", detail, extra={"checks": checks})
    return jsonify(status="ready", checks=checks)


@bp.get("/api/status")
@operation("Queue, batches and stager state", {"200": json_response(OBJECT)})
def status():
    svc = services()
    authenticate(request, svc.settings.AUTH_KEY)
    return jsonify(status_summary(svc))


@bp.get("/metrics")
@operation(
    "Prometheus metrics",
    {"200": {"description": "OK", "content": {"text/plain": {"schema": STRING}}}},
    secured=False,
)
def metrics():
    svc = services()
    body, content_type = svc.metrics.exposition(lambda: store_metrics(svc.store, svc.settings))
    return Response(body, content_type=content_type)
