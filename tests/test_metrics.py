"""/metrics after a scripted run: two gunicorn workers and a separate stager
process, counted once each, whichever worker answers the scrape."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from ltfsee_globus.sim.library import Library

ROOT = Path(__file__).resolve().parent.parent
POLL_ROUTE = "/api/v0.5/globus_recall/globus_recall"


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape, keyed by name and sorted labels (new connection)."""
    resp = requests.get(url + "/metrics", timeout=10, headers={"Connection": "close"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def test_counters_add_up_across_workers_and_a_separate_stager(
    make_sim, start_server, start_stager, headers, wait_for
):
    sim = make_sim("metrics", files=12, dirs=2, tapes=2, premigrated=0, resident=0)
    files = sim.files("M")[:6]
    broken = files[-1]
    lib = Library(sim.root)
    lib.damage([broken])
    lib.close()
    server = start_server(
        EEADM_COMMAND=" ".join(sim.command),
        MANAGED_ROOTS=str(sim.fs),
        EEADM_SIM_DIR=str(sim.root),
        WORKERS=2,
        STAGER="off",
        PREFETCH="false",
        RECALL_MAX_ATTEMPTS=1,
    )
    start_stager(server.env)
    answers: dict[str, int] = {}

    def poll_round() -> bool:
        """One poll of each file (new connections, so both workers answer)."""
        settled = True
        for path in files:
            r = requests.post(
                server.url + POLL_ROUTE,
                json={"path": path, "globus_taskid": "t1"},
                headers={**headers, "Connection": "close"},
                timeout=30,
            )
            answer = r.json()["state"] if r.status_code == 201 else f"http {r.status_code}"
            answers[answer] = answers.get(answer, 0) + 1
            settled &= answer == "resident" or (path == broken and r.status_code == 502)
        return settled

    wait_for(poll_round, timeout=60, what="five files resident and one failed")
    polls = sum(answers.values())
    first, second = scrape(server.url), scrape(server.url)
    for name in ("ltfsee_files_queued_total", "ltfsee_files_recalled_total"):
        assert first[(name, ())] == second[(name, ())]
    m = second
    assert m[("ltfsee_files_queued_total", ())] == 6
    assert m[("ltfsee_files_recalled_total", ())] == 5
    assert m[("ltfsee_files_failed_total", ())] == 1
    assert m[("ltfsee_recalled_bytes_total", ())] == sum(os.stat(p).st_size for p in files[:-1])
    batches = sum(m[("ltfsee_batches_total", (("outcome", o),))] for o in ("succeeded", "partial"))
    assert batches >= 1
    # poll answers, summed over both workers, are exactly the polls made
    assert m[("ltfsee_polls_total", (("answer", "resident"),))] == answers["resident"]
    assert m[("ltfsee_polls_total", (("answer", "archived"),))] == answers["archived"]
    assert m[("ltfsee_polls_total", (("answer", "failed"),))] == answers["http 502"]
    by_status = {
        labels: v
        for (name, labels), v in m.items()
        if name == "ltfsee_http_requests_total" and ("route", POLL_ROUTE) in labels
    }
    assert sum(by_status.values()) == polls
    assert (
        m[
            (
                "ltfsee_http_request_duration_seconds_count",
                (("method", "POST"), ("route", POLL_ROUTE)),
            )
        ]
        == polls
    )
    # the recall ran in the stager process, the lookups in the workers: both count
    calls: dict[str, float] = {}
    for (name, labels), v in m.items():
        if name == "ltfsee_eeadm_calls_total":
            calls[dict(labels)["subcommand"]] = calls.get(dict(labels)["subcommand"], 0) + v
    recalls = calls["recall"]
    # one recall or more: the polls reach the queue before or after the first claim
    assert recalls == len(sim.invocations("recall")) >= 1
    assert m[("ltfsee_eeadm_calls_total", (("outcome", "failed"), ("subcommand", "recall")))] >= 1
    assert calls["file state"] == len(sim.invocations("file state"))
    assert m[("ltfsee_eeadm_call_duration_seconds_count", (("subcommand", "recall"),))] == recalls
    assert m[("ltfsee_stager_up", ())] == 1
    assert m[("ltfsee_files", (("status", "done"),))] == 5
    assert m[("ltfsee_recall_drives", (("library", "ts4500"),))] == 2  # eeadm drive list
    assert sum(v for (name, _), v in m.items() if name == "ltfsee_drives") == 2
    # every series the shipped Grafana dashboard queries is one /metrics serves
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bltfsee_[a-z_]+", e)}
    served = {name for name, _ in m}
    assert used and used <= served, used - served


def test_importing_the_cli_leaves_prometheus_client_unimported():
    """The separate stager must set PROMETHEUS_MULTIPROC_DIR before the library
    reads it, so nothing the CLI imports at start may import it."""
    code = "import sys, ltfsee_globus.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
