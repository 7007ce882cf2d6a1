"""Prometheus metrics: what each process counts, and what the store knows.

Two sources, one exposition at /metrics:

- Process counters (HTTP requests, Globus poll answers, `eeadm` calls and
  their latency) live in prometheus-client. With several processes (gunicorn
  workers, a separate stager) each writes its own files under
  PROMETHEUS_MULTIPROC_DIR and /metrics sums them (the library's multiprocess
  mode). The variable must be set before prometheus-client is imported:
  gunicorn_conf.py and `ltfsee-globus stager` set it (config.share_metrics).
- Store counters and gauges (files queued, recalled, failed, bytes recalled,
  batches by outcome, queue per library, prefetch precision) are read from the
  shared store at scrape time, so they are exact whichever process did the work
  and survive restarts.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from .config import MULTIPROC_ENV, Settings
from .health import cluster, drives_report
from .store import Store

#: eeadm calls last from milliseconds (`file state`) to hours (`recall`).
EEADM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
_DB_FILE = re.compile(r"_(\d+)\.db$")

Collect = Callable[[], Iterator[Metric]]
#: what a Globus poll is counted as
POLL_ANSWERS = ("resident", "archived", "failed", "error")


def multiproc_dir() -> Path | None:
    """The directory prometheus-client shares between processes, if set."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiproc_dir(path: Path) -> None:
    """Create the directory and drop the files of processes that are gone
    (a previous run's workers), as the library asks at start-up. Files of
    live processes (a running stager) stay."""
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        m = _DB_FILE.search(f.name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Metrics:
    """The counters this process adds to; a Flask extension for HTTP ones."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "ltfsee_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "ltfsee_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route", "method"],
            registry=r,
        )
        self.polls = Counter(
            "ltfsee_polls",
            "Globus stage-app polls by answer (resident, archived, failed, error)",
            ["answer"],
            registry=r,
        )
        self.eeadm_calls = Counter(
            "ltfsee_eeadm_calls",
            "eeadm runs by subcommand and outcome (ok, failed, timeout, unavailable)",
            ["subcommand", "outcome"],
            registry=r,
        )
        self.eeadm_seconds = Histogram(
            "ltfsee_eeadm_call_duration_seconds",
            "Time an eeadm run took",
            ["subcommand"],
            buckets=EEADM_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "ltfsee_auth_refusals",
            "Requests refused for who made them, by reason (key, expired, audience, "
            "issuer, signature, key_id, algorithm, claims, malformed, forbidden)",
            ["reason"],
            registry=r,
        )

        #: the labelled series every request and poll adds to, found once each:
        #: prometheus-client's labels() takes a lock and checks its arguments
        #: on every call, more than the addition itself (bench/README.md)
        self._http: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._polls = {answer: self.polls.labels(answer) for answer in POLL_ANSWERS}

    def refusal(self, reason: str) -> None:
        """Count one request refused for its identity (a bounded set of reasons)."""
        self.refusals.labels(reason).inc()

    def eeadm_call(self, subcommand: str, outcome: str, seconds: float) -> None:
        """Count one eeadm run and its duration."""
        self.eeadm_calls.labels(subcommand, outcome).inc()
        self.eeadm_seconds.labels(subcommand).observe(seconds)

    def http_request(self, route: str, method: str, status: str, seconds: float) -> None:
        """Count one answered request and its duration (`status`: "201")."""
        key = (route, method, status)
        series = self._http.get(key)
        if series is None:  # a race here finds the same series twice: harmless
            series = (self.http_requests.labels(*key), self.http_seconds.labels(route, method))
            self._http[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def poll(self, answer: str) -> None:
        """Count one Globus poll by its answer (one of POLL_ANSWERS)."""
        self._polls[answer].inc()

    def exposition(self, store_metrics: Collect) -> tuple[bytes, str]:
        """The text /metrics answers: every process's counters, then the store's."""
        registry = CollectorRegistry(auto_describe=False)
        shared = multiproc_dir()
        if shared is not None:
            MultiProcessCollector(registry, path=str(shared))
        else:
            registry.register(_Collector(self.registry.collect))
        registry.register(_Collector(store_metrics))
        return generate_latest(registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, collect: Collect) -> None:
        self.collect = collect


def store_metrics(store: Store, settings: Settings) -> Iterator[Metric]:
    """Counters and gauges kept by the store: the same from every process.
    The queue gauges have a series (0 when empty) for each configured library."""
    counts = store.ops.counts()
    totals = counts.totals
    for name, help_text, key in (
        ("ltfsee_files_queued", "Files queued for a recall (again after a failure)", "queued"),
        ("ltfsee_files_recalled", "Files a recall put on disk", "recalled"),
        ("ltfsee_files_retried", "Failed recall attempts queued again", "retried"),
        ("ltfsee_files_failed", "Files that failed for good", "failed"),
        ("ltfsee_recalled_bytes", "Bytes of the files recalls put on disk", "recalled_bytes"),
    ):
        yield CounterMetricFamily(name, help_text, value=totals[key])
    batches = CounterMetricFamily(
        "ltfsee_batches", "Finished recall batches by outcome", labels=["outcome"]
    )
    for outcome in ("succeeded", "partial", "failed"):
        batches.add_metric([outcome], totals[f"batches_{outcome}"])
    yield batches
    files = GaugeMetricFamily("ltfsee_files", "Files known to the store", labels=["status"])
    for status, n in counts.files.items():
        files.add_metric([status], n)
    yield files
    running = counts.batches["running"]
    yield GaugeMetricFamily("ltfsee_batches_running", "Recalls running now", value=running)
    depth = GaugeMetricFamily("ltfsee_queue_files", "Queued files per library", labels=["library"])
    oldest = GaugeMetricFamily(
        "ltfsee_queue_oldest_age_seconds",
        "Age of the oldest queued file per library",
        labels=["library"],
    )
    queue = {lib: (0, 0.0) for lib in settings.LTFSEE_LIB or [""]}
    queue.update({q.library: (q.files, q.oldest_age) for q in store.ops.queue_by_library()})
    for library, (files_queued, age) in sorted(queue.items()):
        depth.add_metric([library], files_queued)
        oldest.add_metric([library], age)
    yield depth
    yield oldest
    pf = counts.prefetch
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
    recall = GaugeMetricFamily(
        "ltfsee_recall_drives",
        "Drives that can serve recalls now per library, as the stager last read them",
        labels=["library"],
    )
    drives = GaugeMetricFamily(
        "ltfsee_drives",
        "Drives per library and state (eeadm drive list)",
        labels=["library", "state"],
    )
    for lib in drives_report(store, settings)["libraries"]:
        recall.add_metric([lib["library"]], lib["recall"])
        for state, n in sorted(collections.Counter(d["state"] for d in lib["drives"]).items()):
            drives.add_metric([lib["library"], state], n)
    yield recall
    yield drives
    view = cluster(store, 3 * settings.STAGER_LEASE)
    yield GaugeMetricFamily(
        "ltfsee_stager_up",
        "1 when a stager, on any node, holds the lease",
        value=view["stager_running"],
    )
    yield GaugeMetricFamily(
        "ltfsee_stager_lease_epoch",
        "Take-overs of the stager lease so far",
        value=view["stager"]["epoch"],
    )
    heartbeat = GaugeMetricFamily(
        "ltfsee_node_heartbeat_age_seconds",
        "Seconds since a stager thread of each node last said it was there",
        labels=["node", "role", "version"],
    )
    for n in view["nodes"]:
        heartbeat.add_metric([n["node"], n["role"], n["version"]], n["heartbeat_age"])
    yield heartbeat
