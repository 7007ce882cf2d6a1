"""Tape-aware prefetch over the real store, walk and simulator lookups."""

import json
import posixpath

from ltfsee_globus.prefetch import Prefetcher

RECALL = "/api/v0.5/globus_recall/globus_recall"


def poll(client, headers, path, task="task-1"):
    resp = client.post(
        RECALL,
        data=json.dumps({"path": path, "globus_taskid": task}),
        headers=headers,
        content_type="application/json",
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()["state"]


def prefetched(store):
    rows = store.conn().execute("SELECT path FROM files WHERE prefetched = 1 ORDER BY path")
    return [r[0] for r in rows]


def migrated_in(sim, directory):
    return [p for p in sim.files("M") if posixpath.dirname(p) == directory]


def test_siblings_that_are_migrated_are_queued(make_app, sim, headers):
    app = make_app()
    svc = app.extensions["ltfsee"]
    first = sim.files("M")[0]
    poll(app.test_client(), headers, first)
    svc.start_stager().prefetcher.run_triggers()
    siblings = [p for p in migrated_in(sim, posixpath.dirname(first)) if p != first]
    assert prefetched(svc.store) == siblings
    assert svc.store.counts()["prefetch"] == {"files": len(siblings), "requested_later": 0}


def test_budget_bounds_prefetch_per_task(make_app, sim, headers):
    app = make_app(PREFETCH_MAX_FILES=3)
    svc = app.extensions["ltfsee"]
    first = sim.files("M")[0]
    poll(app.test_client(), headers, first)
    Prefetcher(svc.settings, svc.store, svc.eeadm).run_triggers()
    got = prefetched(svc.store)
    assert len(got) == 3 and all(p > first for p in got)  # the ones Globus asks for next


def test_byte_budget(make_app, sim, headers):
    app = make_app(PREFETCH_MAX_BYTES=1)
    svc = app.extensions["ltfsee"]
    poll(app.test_client(), headers, sim.files("M")[0])
    assert Prefetcher(svc.settings, svc.store, svc.eeadm).run_triggers() == 0


def test_prefetch_can_be_turned_off_per_root(make_app, sim, headers):
    app = make_app(PREFETCH_EXCLUDE=[str(sim.fs / "demo")])
    svc = app.extensions["ltfsee"]
    poll(app.test_client(), headers, sim.files("M")[0])
    assert Prefetcher(svc.settings, svc.store, svc.eeadm).run_triggers() == 0


def test_widens_to_the_common_ancestor_of_the_task(make_app, sim, headers):
    app = make_app()
    svc = app.extensions["ltfsee"]
    client = app.test_client()
    dirs = sorted({posixpath.dirname(p) for p in sim.files("M")})
    pf = Prefetcher(svc.settings, svc.store, svc.eeadm)
    poll(client, headers, migrated_in(sim, dirs[0])[0])
    pf.run_triggers()
    assert not any(p.startswith(dirs[2]) for p in prefetched(svc.store))
    poll(client, headers, migrated_in(sim, dirs[1])[0])
    pf.run_triggers()
    # the task spans run000 and run001, so their parent's whole tree is likely wanted
    assert any(p.startswith(dirs[2] + "/") for p in prefetched(svc.store))
    # another task's requests do not widen this one
    assert svc.store.prefetch_budget("other") == (0, 0)


def test_later_request_marks_prefetch_useful(make_app, sim, headers):
    app = make_app()
    svc = app.extensions["ltfsee"]
    client = app.test_client()
    first = sim.files("M")[0]
    poll(client, headers, first)
    Prefetcher(svc.settings, svc.store, svc.eeadm).run_triggers()
    nxt = prefetched(svc.store)[0]
    calls = len(sim.invocations())
    assert poll(client, headers, nxt) == "archived"
    assert len(sim.invocations()) == calls
    assert svc.store.counts()["prefetch"]["requested_later"] == 1


def test_prefetch_off_queues_only_what_was_asked(make_app, sim, headers):
    app = make_app(PREFETCH=False)
    svc = app.extensions["ltfsee"]
    poll(app.test_client(), headers, sim.files("M")[0])
    assert svc.store.take_prefetch_triggers() == []
