"""WLCG Tape REST API v1 over the real app, store, stager and simulator."""

import json
import os

import pytest

from ltfsee_globus.api.context import services
from ltfsee_globus.stager import Stager

pytestmark = pytest.mark.both_engines

API = "/api/v1"


def call(client, method, url, headers, body=None):
    data = None if body is None else json.dumps(body)
    return client.open(
        url, method=method, data=data, headers=headers, content_type="application/json"
    )


@pytest.fixture
def tape(make_app):
    """(test client, a stager to step by hand, services)."""
    app = make_app(PREFETCH=False)
    svc = services(app)
    return app.test_client(), Stager(svc.settings, svc.store, svc.eeadm), svc


def settle(stager):
    stager.step()
    stager.wait_idle()


def test_discovery_honours_the_host_the_client_used(make_app):
    app = make_app(TRUST_PROXY=1, SITENAME="TEST-SITE")
    resp = app.test_client().get(
        "/.well-known/wlcg-tape-rest-api",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tape.example.org"},
    )
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["sitename"] == "TEST-SITE"
    [ep] = body["endpoints"]
    assert ep["uri"] == "https://tape.example.org/api/v1" and ep["version"] == "v1"
    assert ep["metadata"]["max_stage_files"] > 0


def test_stage_poll_complete(tape, sim, headers):
    client, stager, _ = tape
    m, p = sim.files("M")[:2], sim.files("P")[0]
    files = [
        {"path": x, "diskLifetime": 3600, "targetedMetadata": {"other-site": {}}} for x in [*m, p]
    ]
    resp = call(client, "POST", f"{API}/stage", headers, {"files": files, "extra": 1})
    assert resp.status_code == 201
    rid = resp.get_json()["requestId"]
    assert resp.headers["Location"].endswith(f"{API}/stage/{rid}")
    body = call(client, "GET", f"{API}/stage/{rid}", headers).get_json()
    assert body["id"] == rid and {f["state"] for f in body["files"]} == {"SUBMITTED"}
    assert all("startedAt" not in f and "error" not in f for f in body["files"])
    assert "completedAt" not in body
    settle(stager)  # intake: P is on disk, M files queued and recalled
    settle(stager)
    body = call(client, "GET", f"{API}/stage/{rid}", headers).get_json()
    assert [f["state"] for f in body["files"]] == ["COMPLETED"] * 3
    assert all(f["finishedAt"] >= f["startedAt"] >= body["createdAt"] for f in body["files"])
    assert body["completedAt"] >= body["startedAt"]
    assert len(sim.invocations("recall")) == 1


def test_bad_files_fail_alone_and_duplicates_collapse(tape, sim, headers):
    """The same string twice is one entry; another spelling of the same file is
    its own entry, answered as it was written (see the next test)."""
    client, stager, _ = tape
    good = sim.files("R")[0]
    files = [
        {"path": good},
        {"path": good},
        {"path": "relative"},
        {"path": "/etc/passwd"},
        {"path": str(sim.fs / "missing.dat")},
    ]
    rid = call(client, "POST", f"{API}/stage", headers, {"files": files}).get_json()["requestId"]
    settle(stager)
    got = {
        f["path"]: f for f in call(client, "GET", f"{API}/stage/{rid}", headers).get_json()["files"]
    }
    assert len(got) == 4
    assert got[good]["state"] == "COMPLETED" and "error" not in got[good]
    assert [
        f["path"] for f in call(client, "GET", f"{API}/stage/{rid}", headers).get_json()["files"]
    ].count(good) == 1
    assert got["relative"]["state"] == "FAILED" and "absolute" in got["relative"]["error"]
    assert "outside" in got["/etc/passwd"]["error"]
    assert got[str(sim.fs / "missing.dat")]["error"] == "No such file or directory"


def test_globus_and_wlcg_share_one_recall(tape, sim, headers):
    client, stager, _svc = tape
    path = sim.files("M")[0]
    g = client.post(
        "/api/v0.5/globus_recall/globus_recall",
        headers=headers,
        json={"path": path, "globus_taskid": "t1"},
    )
    assert g.get_json() == {"state": "archived"}
    rid = call(client, "POST", f"{API}/stage", headers, {"files": [{"path": path}]}).get_json()[
        "requestId"
    ]
    settle(stager)
    settle(stager)
    assert len(sim.invocations("recall")) == 1
    assert (
        call(client, "GET", f"{API}/stage/{rid}", headers).get_json()["files"][0]["state"]
        == "COMPLETED"
    )


def test_cancel_rules(tape, sim, headers):
    client, stager, svc = tape
    a, b = sim.files("M")[:2]
    rid = call(
        client, "POST", f"{API}/stage", headers, {"files": [{"path": a}, {"path": b}]}
    ).get_json()["requestId"]
    stager.intake()  # both queued, no recall yet
    client.post(
        "/api/v0.5/globus_recall/globus_recall",
        headers=headers,
        json={"path": b, "globus_taskid": "t1"},
    )  # Globus wants b too
    bad = call(
        client,
        "POST",
        f"{API}/stage/{rid}/cancel",
        headers,
        {"paths": [a, str(sim.fs / "not-in-request")]},
    )
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"
    assert {
        f["state"] for f in call(client, "GET", f"{API}/stage/{rid}", headers).get_json()["files"]
    } == {"SUBMITTED"}
    ok = call(client, "POST", f"{API}/stage/{rid}/cancel", headers, {"paths": [a, b]})
    assert ok.status_code == 200 and ok.data == b""
    states = {
        f["path"]: f["state"]
        for f in call(client, "GET", f"{API}/stage/{rid}", headers).get_json()["files"]
    }
    assert states == {a: "CANCELLED", b: "CANCELLED"}
    assert svc.store.polls.lookup(a) is None  # nobody else wanted it
    assert svc.store.polls.lookup(b).status == "queued"  # the Globus task still does
    settle(stager)
    assert sim.state_of(a) == "M" and sim.state_of(b) == "P"


def test_cancel_never_disturbs_a_running_recall(tape, sim, headers):
    client, _, svc = tape
    path = sim.files("M")[0]
    rid = call(client, "POST", f"{API}/stage", headers, {"files": [{"path": path}]}).get_json()[
        "requestId"
    ]
    stager = Stager(svc.settings, svc.store, svc.eeadm)
    stager.intake()
    svc.store.queue.claim("", 10)  # a recall holds it now
    call(client, "POST", f"{API}/stage/{rid}/cancel", headers, {"paths": [path]})
    assert svc.store.polls.lookup(path).status == "recalling"


def test_delete_then_404_and_release(tape, sim, headers):
    client, _, _ = tape
    path = sim.files("M")[0]
    rid = call(client, "POST", f"{API}/stage", headers, {"files": [{"path": path}]}).get_json()[
        "requestId"
    ]
    assert (
        call(client, "POST", f"{API}/release/{rid}", headers, {"paths": [path]}).status_code == 200
    )
    assert (
        call(client, "POST", f"{API}/release/{rid}", headers, {"paths": ["/x"]}).status_code == 400
    )
    assert call(client, "DELETE", f"{API}/stage/{rid}", headers).status_code == 200
    assert call(client, "GET", f"{API}/stage/{rid}", headers).status_code == 404
    assert call(client, "DELETE", f"{API}/stage/{rid}", headers).status_code == 404


def test_requests_belong_to_the_key_name_that_made_them(make_app, sim):
    app = make_app(AUTH_KEY="alice:key-a,bob:key-b")
    client = app.test_client()
    rid = client.post(
        f"{API}/stage",
        json={"files": [{"path": sim.files("M")[0]}]},
        headers={"Authorization": "Bearer key-a"},
    ).get_json()["requestId"]
    assert client.get(f"{API}/stage/{rid}", headers={"X-API-KEY": "key-a"}).status_code == 200
    assert client.get(f"{API}/stage/{rid}", headers={"X-API-KEY": "key-b"}).status_code == 404
    assert (
        client.delete(f"{API}/stage/{rid}", headers={"Authorization": "Bearer key-b"}).status_code
        == 404
    )


def spellings(path: str) -> list[str]:
    """A file's path as clients write it: as is, with `//`, with `.`, with a trailing `/`."""
    head, _, name = path.rpartition("/")
    return [path, f"{head}//{name}", f"{head}/./{name}", path + "/"]


def test_each_spelling_of_a_path_is_answered_as_the_client_wrote_it(tape, sim, headers):
    """WLCG clients match the answers on the strings they sent; the service
    stages the file they name once."""
    client, stager, _ = tape
    migrated = sim.files("M")[0]
    asked = spellings(migrated)
    body = {"files": [{"path": p} for p in asked]}
    rid = call(client, "POST", f"{API}/stage", headers, body).get_json()["requestId"]
    settle(stager)
    settle(stager)
    files = call(client, "GET", f"{API}/stage/{rid}", headers).get_json()["files"]
    assert [f["path"] for f in files] == asked
    assert {f["state"] for f in files} == {"COMPLETED"}
    assert len(sim.invocations("recall")) == 1 and sim.reads_per_file() == {migrated: 1}
    info = call(client, "POST", f"{API}/archiveinfo", headers, {"paths": asked + asked})
    assert [(a["path"], a.get("locality")) for a in info.get_json()] == [
        (p, "DISK_AND_TAPE") for p in asked
    ]
    cancel = call(client, "POST", f"{API}/stage/{rid}/cancel", headers, {"paths": [asked[1]]})
    assert cancel.status_code == 200  # any spelling names the request's file


def test_archiveinfo_answers_two_spellings_of_one_path_twice(client, sim, headers):
    path = sim.files("R")[0]
    doubled = path.replace("/demo/", "//demo/")
    got = call(client, "POST", f"{API}/archiveinfo", headers, {"paths": [doubled, path]})
    assert [(a["path"], a["locality"]) for a in got.get_json()] == [
        (doubled, "DISK"),
        (path, "DISK"),
    ]


def test_archiveinfo(client, sim, headers):
    r, p, m = sim.files("R")[0], sim.files("P")[0], sim.files("M")[0]
    paths = [r, p, m, str(sim.fs / "gone"), "/etc/passwd", "rel"]
    resp = call(client, "POST", f"{API}/archiveinfo", headers, {"paths": paths})
    assert resp.status_code == 200
    got = resp.get_json()
    assert [g.get("locality") for g in got[:3]] == ["DISK", "DISK_AND_TAPE", "TAPE"]
    assert all("error" in g and "locality" not in g for g in got[3:])
    assert len(sim.invocations("file state")) == 1


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("POST", f"{API}/stage", {}, 400),
        ("POST", f"{API}/stage", {"files": []}, 400),
        ("POST", f"{API}/stage", {"files": "x"}, 400),
        ("POST", f"{API}/stage", {"files": [{"nopath": 1}]}, 400),
        ("POST", f"{API}/stage", {"files": [{"path": 5}]}, 400),
        ("POST", f"{API}/stage", [1], 400),
        ("GET", f"{API}/stage/no-such-id", None, 404),
        ("POST", f"{API}/stage/no-such-id/cancel", {"paths": ["/a"]}, 404),
        ("POST", f"{API}/archiveinfo", {"paths": []}, 400),
        ("POST", f"{API}/archiveinfo", {"paths": [1]}, 400),
        ("POST", f"{API}/archiveinfo", {"paths": ["/a"] * 1001}, 413),
    ],
)
def test_bad_requests(client, headers, method, url, body, status):
    resp = call(client, method, url, headers, body)
    assert resp.status_code == status
    assert resp.mimetype == "application/problem+json"


def test_too_many_files_is_413(make_app, headers, sim):
    client = make_app(STAGE_MAX_FILES=2).test_client()
    files = [{"path": p} for p in sim.files("M")[:3]]
    assert call(client, "POST", f"{API}/stage", headers, {"files": files}).status_code == 413


def test_trailing_slash_as_gfal2_sends_it(client, sim, headers):
    resp = call(client, "POST", f"{API}/stage/", headers, {"files": [{"path": sim.files("M")[0]}]})
    assert resp.status_code == 201
    assert (
        call(
            client, "POST", f"{API}/archiveinfo/", headers, {"paths": [sim.files("R")[0]]}
        ).get_json()[0]["locality"]
        == "DISK"
    )


def test_recalled_bytes_count_the_files_wlcg_requests_stage(tape, sim, headers):
    """The intake records each file's size, so a WLCG-only recall counts its
    bytes in ltfsee_recalled_bytes_total, the status page and `status`."""
    client, stager, svc = tape
    files = sim.files("M")[:3]
    body = {"files": [{"path": p} for p in files]}
    rid = call(client, "POST", f"{API}/stage", headers, body).get_json()["requestId"]
    settle(stager)
    settle(stager)
    states = {
        f["state"] for f in call(client, "GET", f"{API}/stage/{rid}", headers).get_json()["files"]
    }
    assert states == {"COMPLETED"}
    sizes = sum(os.stat(p).st_size for p in files)
    assert svc.store.ops.counts().totals["recalled_bytes"] == sizes
    metrics = client.get("/metrics").get_data(as_text=True)
    [line] = [x for x in metrics.splitlines() if x.startswith("ltfsee_recalled_bytes_total ")]
    assert float(line.split()[1]) == sizes
