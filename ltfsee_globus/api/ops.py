"""What operators look at: liveness, a status summary, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..app import Services, services
from ..auth import authenticate
from ..errors import problem
from ..health import readiness, stager_running

bp = Blueprint("ops", __name__)


def status_summary(svc: Services) -> dict:
    counts = svc.store.counts()
    counts["prefetch"]["tasks"] = svc.store.prefetch_tasks()
    counts["stager_running"] = stager_running(svc.settings.state_dir)
    return counts


class StoreCollector:
    """Metrics read from the shared store, so every worker reports the same."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        s = status_summary(self.svc)
        files = GaugeMetricFamily("ltfsee_files", "Files known to the store", labels=["status"])
        for status, n in s["files"].items():
            files.add_metric([status], n)
        yield files
        batches = GaugeMetricFamily("ltfsee_batches", "Recall batches", labels=["status"])
        for status, n in s["batches"].items():
            batches.add_metric([status], n)
        yield batches
        pf = s["prefetch"]
        for unit in ("files", "bytes"):
            counter = CounterMetricFamily(
                f"ltfsee_prefetch_{unit}",
                f"Prefetched {unit}: queued, later asked for by a client, dropped unasked",
                labels=["outcome"],
            )
            counter.add_metric(["queued"], pf[unit])
            counter.add_metric(["asked"], pf[f"asked_{unit}"])
            counter.add_metric(["dropped"], pf[f"dropped_{unit}"])
            yield counter
        yield GaugeMetricFamily(
            "ltfsee_queue_oldest_age_seconds",
            "Age of the oldest queued file",
            value=s["oldest_queued_age"] or 0.0,
        )
        yield GaugeMetricFamily(
            "ltfsee_stager_up", "1 when a stager holds the lock", value=int(s["stager_running"])
        )


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 when this instance can do its work; 503 naming what stops it."""
    svc = services()
    checks = readiness(
        svc.store, svc.eeadm, svc.settings.state_dir, eeadm_hangs=svc.lookup.breaker_open()
    )
    failed = {k: v for k, v in checks.items() if v != "ok"}
    if failed:
        detail = "; ".join(f"{k}: {v}" for k, v in failed.items())
        return problem(503, "Not ready", detail, extra={"checks": checks})
    return jsonify(status="ready", checks=checks)


@bp.get("/api/status")
def status():
    svc = services()
    authenticate(request, svc.settings.AUTH_KEY)
    return jsonify(status_summary(svc))


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(services()))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
