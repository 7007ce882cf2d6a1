"""The v0.5 Globus endpoints over the real app, store and simulator."""

import json
import os

import pytest

from ltfsee_globus.api.context import services

pytestmark = pytest.mark.both_engines

RECALL = "/api/v0.5/globus_recall/globus_recall"
STATE = "/api/v0.5/file_state/file_state"


def post(client, body, headers, endpoint=RECALL):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(endpoint, data=data, headers=headers, content_type="application/json")


def assert_problem(resp, status):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == status and body["title"]
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


def test_states_for_resident_premigrated_and_migrated(client, sim, headers):
    for letter, expected in (("R", "resident"), ("P", "resident"), ("M", "archived")):
        path = sim.files(letter)[0]
        resp = post(client, {"path": path, "globus_taskid": "t1"}, headers)
        assert resp.status_code == 201
        assert resp.get_json() == {"state": expected}


def test_file_state_endpoint_answers_the_eeadm_record(client, sim, headers):
    path = sim.files("M")[0]
    resp = post(client, {"path": path}, headers, STATE)
    assert resp.status_code == 201
    [record] = resp.get_json()
    assert record["path"] == path and record["state"] == "M" and record["replicas"] == 1
    assert record["tapes"][0].count("@") == 2


def test_in_flight_polls_run_no_eeadm_and_queue_once(app, client, sim, headers):
    path = sim.files("M")[0]
    assert post(client, {"path": path, "globus_taskid": "t1"}, headers).get_json() == {
        "state": "archived"
    }
    calls = len(sim.invocations())
    for _ in range(20):
        resp = post(client, {"path": path, "globus_taskid": "t2"}, headers)
        assert resp.get_json() == {"state": "archived"}
    assert len(sim.invocations()) == calls  # answered from the store
    store = services(app).store
    assert store.polls.lookup(path).status == "queued"
    assert store.ops.counts().files["queued"] == 1
    assert sorted(store.prefetch.task_paths("t2")) == [path]


def test_stager_recalls_then_poll_says_resident(make_app, sim, headers, wait_for):
    app = make_app(PREFETCH=False)
    client = app.test_client()
    path = sim.files("M")[0]
    assert post(client, {"path": path, "globus_taskid": "t"}, headers).get_json()["state"] == (
        "archived"
    )
    services(app).start_stager()
    wait_for(
        lambda: post(client, {"path": path}, headers).get_json() == {"state": "resident"},
        what="file on disk",
    )
    assert sim.state_of(path) == "P"
    assert len(sim.invocations("recall")) == 1


def test_chosen_library_reaches_eeadm_recall(make_app, sim, headers, wait_for):
    app = make_app(LTFSEE_LIB=["ts4500"], PREFETCH=False)
    path = sim.files("M")[0]
    post(app.test_client(), {"path": path, "globus_taskid": "task-9"}, headers)
    services(app).start_stager()
    [call] = wait_for(lambda: sim.invocations("recall"), what="a recall")
    assert call.split()[-2:] == ["-l", "ts4500"]


def _huge(sim):
    return {"path": str(sim.fs) + "/" + "a" * (2 * 1024 * 1024)}


# (case, body or callable(sim) -> body, headers override, expected status)
BAD_INPUT = [
    ("no key", lambda s: {"path": s.files("M")[0]}, {}, 401),
    ("wrong key", lambda s: {"path": s.files("M")[0]}, {"X-API-KEY": "nope"}, 401),
    ("not JSON", "{not json", None, 400),
    ("JSON array", [1, 2], None, 400),
    ("JSON string", '"path"', None, 400),
    ("path missing", {}, None, 400),
    ("path null", {"path": None}, None, 400),
    ("path number", {"path": 42}, None, 400),
    ("path list", {"path": ["/a"]}, None, 400),
    ("empty path", {"path": ""}, None, 400),
    ("relative path", {"path": "gpfs/file"}, None, 400),
    ("dot-dot", lambda s: {"path": str(s.fs) + "/../../etc/passwd"}, None, 400),
    ("NUL byte", lambda s: {"path": str(s.fs) + "/a\u0000b"}, None, 400),
    ("newline", lambda s: {"path": str(s.fs) + "/a\n/etc/passwd"}, None, 400),
    ("glob star", lambda s: {"path": str(s.fs) + "/demo/*"}, None, 400),
    ("glob bracket", lambda s: {"path": str(s.fs) + "/demo/file[0-9]"}, None, 400),
    ("leading dash", lambda s: {"path": str(s.fs) + "/-rf"}, None, 400),
    ("path too long", lambda s: {"path": str(s.fs) + "/" + "x" * 5000}, None, 400),
    ("outside roots", {"path": "/etc/passwd"}, None, 403),
    ("root prefix trick", lambda s: {"path": str(s.fs) + "-other/x"}, None, 403),
    ("unknown file", lambda s: {"path": str(s.fs) + "/no/such/file"}, None, 404),
    ("directory", lambda s: {"path": str(s.fs) + "/demo"}, None, 400),
    ("taskid not string", lambda s: {"path": s.files("M")[0], "globus_taskid": 5}, None, 400),
    ("taskid with a tab", lambda s: {"path": s.files("M")[0], "globus_taskid": "a\tb"}, None, 400),
    ("taskid with a NUL", lambda s: {"path": s.files("M")[0], "globus_taskid": "\0"}, None, 400),
    ("library not string", lambda s: {"path": s.files("M")[0], "library": ["x"]}, None, 400),
    ("library with dash", lambda s: {"path": s.files("M")[0], "library": "-x"}, None, 400),
    ("huge body", _huge, None, 413),
]


@pytest.mark.parametrize(
    ("case", "body", "hdrs", "status"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_gets_a_clear_json_error_and_never_reaches_eeadm(
    client, sim, headers, case, body, hdrs, status
):
    body = body(sim) if callable(body) else body
    before = len(sim.invocations())
    resp = post(client, body, headers if hdrs is None else hdrs)
    assert_problem(resp, status)
    assert len(sim.invocations()) == before


def test_symlink_out_of_the_managed_root_is_refused(client, sim, headers, tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("x")
    link = sim.fs / "demo" / "link"
    os.symlink(outside, link)
    assert_problem(post(client, {"path": str(link)}, headers), 403)


def test_resident_answer_stands_on_its_verification_for_verified_ttl(
    make_app, sim, headers, clock, tmp_path
):
    """A state looked up on disk was looked up right after its path passed the
    check, so like a DONE record it answers `resident` for VERIFIED_TTL with no
    second check; after that the path is checked again."""
    client = make_app(CLOCK=clock, VERIFIED_TTL=600, CACHE_DEFAULT_TIMEOUT=3600).test_client()
    path = sim.files("R")[0]
    assert post(client, {"path": path}, headers).get_json() == {"state": "resident"}
    outside = tmp_path / "secret"
    outside.write_text("x")
    os.unlink(path)
    os.symlink(outside, path)  # swapped for a link out of the root after its check
    calls = len(sim.invocations())
    clock.advance(599)
    assert post(client, {"path": path}, headers).get_json() == {"state": "resident"}
    assert len(sim.invocations()) == calls
    clock.advance(2)
    assert_problem(post(client, {"path": path}, headers), 403)


def test_a_cached_state_off_disk_is_no_pass_for_its_path(app, client, sim, headers, tmp_path):
    """Only a resident answer stands on an earlier check: a file to recall is
    checked at every poll, so a link swapped in since its lookup is refused."""
    path = sim.files("M")[0]
    assert post(client, {"path": path}, headers, STATE).get_json()[0]["state"] == "M"
    outside = tmp_path / "secret"
    outside.write_text("x")
    os.unlink(path)
    os.symlink(outside, path)
    assert_problem(post(client, {"path": path}, headers), 403)
    assert services(app).store.polls.lookup(path) is None


def test_bearer_token_is_accepted(client, sim):
    path = sim.files("R")[0]
    resp = post(client, {"path": path}, {"Authorization": "Bearer test-key-0123456789"})
    assert resp.status_code == 201


def test_paths_are_normalised(client, sim, headers, app):
    path = sim.files("M")[0]
    messy = path.replace("/demo/", "//demo/./")
    assert post(client, {"path": messy}, headers).get_json() == {"state": "archived"}
    assert services(app).store.polls.lookup(path).status == "queued"


def test_wrong_method_and_unknown_route_are_json(client, headers):
    assert_problem(client.get(RECALL, headers=headers), 405)
    assert_problem(client.get("/api/v0.5/nothing", headers=headers), 404)


@pytest.mark.parametrize(
    ("body", "timeout", "status"),
    [
        ("echo 'GLESL999E: broken' >&2; exit 1", 5, 502),
        ("sleep 30", 0.5, 504),
        ("printf 'complete garbage\\n'", 5, 502),
        ('echo "S  1  A@B@C  -  -  -- $5"', 5, 502),
    ],
    ids=["fails", "hangs", "garbage", "unknown letter"],
)
def test_eeadm_trouble_maps_to_gateway_statuses(
    make_app, sim, fake_eeadm, headers, body, timeout, status
):
    app = make_app(EEADM_COMMAND=fake_eeadm(body), EEADM_TIMEOUT=timeout)
    path = sim.files("M")[0]
    body = assert_problem(post(app.test_client(), {"path": path}, headers), status)
    assert body["detail"]
    assert services(app).store.polls.lookup(path) is None  # nothing half-queued


def test_eeadm_missing_at_run_time_is_503(make_app, sim, fake_eeadm, headers):
    cmd = fake_eeadm("exit 0")
    app = make_app(EEADM_COMMAND=cmd)
    os.unlink(cmd[0])
    assert_problem(post(app.test_client(), {"path": sim.files("M")[0]}, headers), 503)


def test_failed_recall_is_reported_not_left_archived(make_app, sim, headers, wait_for):
    from ltfsee_globus.sim.library import Library

    path = sim.files("M")[0]
    lib = Library(sim.root)
    lib.damage([path])
    lib.close()
    app = make_app(RECALL_MAX_ATTEMPTS=2, PREFETCH=False)
    client = app.test_client()
    post(client, {"path": path, "globus_taskid": "t"}, headers)
    services(app).start_stager()
    resp = wait_for(
        lambda: (r := post(client, {"path": path}, headers)).status_code != 201 and r,
        what="failure",
    )
    body = assert_problem(resp, 502)
    assert "after 2 attempt(s)" in body["detail"] and "GLESL016E" in body["detail"]
    assert len(sim.invocations("recall")) == 2
