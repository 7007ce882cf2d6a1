"""What operators and orchestrators ask: readiness, through the real app and stager."""

import logging
import signal

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from ltfsee_globus.api.context import services
from support import devserver


def test_readyz_follows_the_stager_and_eeadm_within_one_check(make_app, sim, tmp_path, wait_for):
    broken = tmp_path / "eeadm-broken"
    command = devserver.eeadm_wrapper(
        tmp_path / "switchable-eeadm",
        sim.root,
        tmp_path / "calls",
        before=f"if [ -e '{broken}' ]; then echo 'GLESL700E: EE is down' >&2; exit 2; fi\n",
    )
    app = make_app(EEADM_COMMAND=command)
    client = app.test_client()
    first = client.get("/readyz")
    assert first.status_code == 503 and first.mimetype == "application/problem+json"
    assert first.get_json()["checks"] == {
        "roots": "ok",
        "store": "ok",
        "stager": "no stager holds the stager lease",
        "drives": "warning: drives not known (not read yet): recalls go to EE in batches",
        "eeadm": "ok",
    }
    services(app).start_stager()
    ready = wait_for(
        lambda: (
            (r := client.get("/readyz")).status_code == 200
            and r.get_json()["checks"]["drives"].startswith("ok")
            and r
        ),
        what="ready, the drives read",
    )
    assert ready.get_json() == {
        "status": "ready",
        "checks": {
            **dict.fromkeys(("roots", "store", "stager", "eeadm"), "ok"),
            "drives": "ok: ts4500: 2 of 2 drives serve recalls",
        },
    }
    broken.touch()
    down = client.get("/readyz")
    assert down.status_code == 503 and "eeadm" in down.get_json()["detail"]
    assert down.get_json()["checks"]["eeadm"].startswith("eeadm node list exited with 2")
    broken.unlink()
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_a_rejected_key_is_logged_without_key_material(client, caplog):
    caplog.set_level(logging.WARNING, logger="ltfsee_globus.auth")
    resp = client.get("/api/status", headers={"X-API-KEY": "s3cret-guess-123"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="ltfsee-globus"'
    said = [r.getMessage() for r in caplog.records]
    assert said == ["rejected an API key from 127.0.0.1 for GET /api/status"]
    assert "s3cret" not in caplog.text


def test_metrics_content_type_names_its_charset_once(client):
    resp = client.get("/metrics")
    assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert resp.headers["Content-Type"].count("charset") == 1


def test_every_request_is_counted_by_route_method_and_status(client, sim, headers):
    """The counting middleware: a matched route by its rule, anything else as
    unmatched, each with its status and its duration."""
    poll = "/api/v0.5/globus_recall/globus_recall"
    assert client.post(poll, json={"path": sim.files("R")[0]}, headers=headers).status_code == 201
    assert client.post(poll, json={"path": "relative"}, headers=headers).status_code == 400
    assert client.get(poll, headers=headers).status_code == 405
    assert client.get("/no/such/route", headers=headers).status_code == 404
    for made_up in ("BREW", "X-1", "WHEN"):  # each would be a new series
        assert client.open(poll, method=made_up, headers=headers).status_code == 405
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
        for s in family.samples
    }

    def count(route: str, method: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return samples.get(("ltfsee_http_requests_total", labels), 0)

    assert count(poll, "POST", "201") == 1
    assert count(poll, "POST", "400") == 1
    assert count("unmatched", "GET", "405") == 1  # no rule matched the method
    assert count("unmatched", "GET", "404") == 1
    assert count("unmatched", "other", "405") == 3
    assert not [labels for name, labels in samples if ("method", "BREW") in labels]
    timed = ("ltfsee_http_request_duration_seconds_count", (("method", "POST"), ("route", poll)))
    assert samples[timed] == 2
    assert samples[("ltfsee_polls_total", (("answer", "resident"),))] == 1


@pytest.mark.parametrize("access_log", ["true", "false"])
def test_access_lines_only_when_access_log_is_on(start_server, sim, headers, access_log):
    server = start_server(ACCESS_LOG=access_log)
    body = {"path": sim.files("R")[0]}
    assert server.post("/api/v0.5/globus_recall/globus_recall", body).status_code == 201
    server.kill(signal.SIGTERM)
    lines = [x for x in server.gunicorn.log.read_text().splitlines() if '"POST /api/v0.5' in x]
    assert len(lines) == (1 if access_log == "true" else 0)


def test_every_surface_shows_the_nodes_and_who_leads(make_app, headers, run_cli, wait_for):
    """/api/status, /metrics, the status page and `ltfsee-globus status` name
    the node that leads (NODE_NAME), its role, heartbeat and version."""
    app = make_app(NODE_NAME="ee-node-7")
    client = app.test_client()
    services(app).start_stager()
    status = wait_for(
        lambda: (
            (s := client.get("/api/status", headers=headers).get_json())["stager_running"] and s
        ),
        what="a leader",
    )
    assert status["stager"]["node"] == "ee-node-7" and status["stager"]["epoch"] == 1
    (node,) = status["nodes"]
    assert (node["node"], node["role"], node["processes"]) == ("ee-node-7", "leader", 1)
    assert 0 <= node["heartbeat_age"] < 10 and node["version"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "ltfsee_stager_lease_epoch 1.0" in metrics
    assert 'ltfsee_node_heartbeat_age_seconds{node="ee-node-7",role="leader"' in metrics
    page = client.get("/", headers=headers).get_data(as_text=True)
    assert "ee-node-7" in page and 'id="nodes"' in page
    out = run_cli("status").stdout
    assert "stager: running on ee-node-7" in out and "lease epoch 1" in out
    assert "ee-node-7" in out.split("nodes:", 1)[1].splitlines()[2]
