"""The store under a full disk and over time: 503 and recovery, retention, tallies."""

import json

import pytest

from ltfsee_globus.api.context import services
from ltfsee_globus.stager import Stager
from ltfsee_globus.store import DONE, FAILED, QUEUED, Store, Update

RECALL = "/api/v0.5/globus_recall/globus_recall"


def poll(client, headers, path, task="t1"):
    return client.post(
        RECALL,
        data=json.dumps({"path": path, "globus_taskid": task}),
        headers=headers,
        content_type="application/json",
    )


def test_a_full_state_dir_refuses_new_work_loses_nothing_and_recovers(make_app, make_sim, headers):
    """SQLite's own page limit stands in for a full file system: the same
    SQLITE_FULL a full STATE_DIR gives, on this thread's connection (the
    test client's requests run on it)."""
    sim = make_sim("many", files=200, dirs=4, tapes=2, premigrated=0, resident=0)
    app = make_app(EEADM_COMMAND=sim.command, MANAGED_ROOTS=[str(sim.fs)], PREFETCH=False)
    store = services(app).store
    client = app.test_client()
    conn = store.conn()
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    accepted, refused = [], None
    for path in sim.files("M"):
        resp = poll(client, headers, path)
        if resp.status_code != 201:
            refused = path, resp
            break
        accepted.append(path)
    assert refused is not None, "the page limit was never reached"
    path, resp = refused
    assert resp.status_code == 503 and resp.mimetype == "application/problem+json"
    assert "STATE_DIR" in resp.get_json()["detail"] and int(resp.headers["Retry-After"]) > 0
    assert store.lookup(path) is None  # nothing half-written
    assert [store.lookup(p).status for p in accepted] == [QUEUED] * len(accepted)
    if accepted:  # a poll the store answers needs no write
        assert poll(client, headers, accepted[0]).get_json() == {"state": "archived"}
    conn.execute("PRAGMA max_page_count = 1073741823")  # space is back
    assert poll(client, headers, path).get_json() == {"state": "archived"}
    assert store.lookup(path).status == QUEUED


def test_a_batch_whose_result_was_not_recorded_is_verified_again(make_app, sim):
    """A running batch with no thread (its result hit a full disk, or its file list
    could not be written) goes back through verification on the next pass."""
    app = make_app(PREFETCH=False, RECALL_RETRY_DELAY=3600)
    svc = services(app)
    path = sim.files("M")[0]
    svc.store.request(path, None, "globus", "t1")
    batch_id, paths = svc.store.claim("", 10)
    assert paths == [path] and svc.store.lookup(path).status == "recalling"
    Stager(svc.settings, svc.store, svc.eeadm).step()
    assert svc.store.batch(batch_id).status == "done"
    row = svc.store.lookup(path)
    assert row.status == QUEUED and row.attempts == 1  # not on disk: retried later


@pytest.fixture
def store(tmp_path, clock):
    s = Store(tmp_path / "s.db", clock=clock)
    yield s
    s.close()


def finished(store, clock, n, status=DONE, prefix="/gpfs/f"):
    """n files recalled (or failed) in one batch, finished now."""
    for i in range(n):
        store.request(f"{prefix}{i}", None, "globus", "t1", size=10)
    batch_id, paths = store.claim("", n)
    store.finish_batch(
        batch_id,
        outcome="succeeded",
        detail="",
        eeadm_task_id=None,
        updates=[Update(p, status, last_error="x" if status == FAILED else None) for p in paths],
    )
    return paths


def test_retention_prunes_only_what_finished_before_the_cutoff(store, clock):
    old = finished(store, clock, 30, prefix="/gpfs/old")
    old_failed = finished(store, clock, 5, FAILED, prefix="/gpfs/oldfail")
    store.create_request("r-old", "k", [("/gpfs/a", "refused"), ("/gpfs/b", "refused")])
    store.create_request("r-open", "k", [("/gpfs/old0", None)])  # not settled yet
    clock.advance(100)
    cutoff = clock()
    new = finished(store, clock, 10, prefix="/gpfs/new")
    store.request("/gpfs/waiting", None, "globus", "t2")
    store.create_request("r-new", "k", [("/gpfs/x", "refused")])
    before = store.counts()
    assert before["files"] == {"queued": 1, "recalling": 0, "done": 40, "failed": 5}
    gone = [store.prune(cutoff, limit=7) for _ in range(10)]
    assert gone[0] == 7 + 2 + 3 and gone[-1] == 0  # 7 files, 2 batches, r-old and its 2 files
    assert all(store.lookup(p) is None for p in old + old_failed)
    assert all(store.lookup(p).status == DONE for p in new)
    assert store.lookup("/gpfs/waiting").status == QUEUED
    assert store.stage_request("r-old") is None
    assert store.stage_request("r-open") is not None and store.stage_request("r-new") is not None
    after = store.counts()
    assert after["files"] == {"queued": 1, "recalling": 0, "done": 10, "failed": 0}
    assert after["batches"] == {"running": 0, "done": 1}
    rows = store.conn().execute("SELECT count(*) FROM requesters").fetchone()[0]
    assert rows == 11  # the new files' and the waiting one's


def test_tallies_match_the_tables_and_prefetch_totals_survive_pruning(store, clock):
    finished(store, clock, 4)
    store.add_prefetched("task-9", [("/gpfs/p1", 5, "T1", ""), ("/gpfs/p2", 7, "T1", "")])
    store.note_requester("/gpfs/p1", "globus", "task-9")
    conn = store.conn()
    by_status = dict(conn.execute("SELECT status, count(*) FROM files GROUP BY status"))
    counts = store.counts()
    assert {k: v for k, v in counts["files"].items() if v} == by_status
    assert counts["prefetch"]["files"] == 2 and counts["prefetch"]["bytes"] == 12
    assert counts["prefetch"]["asked_files"] == 1 and counts["prefetch"]["asked_bytes"] == 5
    clock.advance(100)
    store.prune(clock())
    assert store.prefetch_tasks() == []  # the per-task record is gone...
    assert store.counts()["prefetch"] == counts["prefetch"]  # ...the counters stay


def test_the_stager_prunes_with_the_retention_setting(make_app, clock):
    app = make_app(PREFETCH=False, CLOCK=clock, RETENTION_DAYS=1)
    svc = services(app)
    finished(svc.store, clock, 3)
    stager = Stager(svc.settings, svc.store, svc.eeadm, clock)
    assert stager.prune(clock()) == 0  # not a day old yet
    clock.advance(86400 + 1)
    assert stager.prune(clock()) == 3 + 1
    assert svc.store.counts()["files"]["done"] == 0


def test_totals_count_what_happened_and_survive_pruning(store, clock):
    """The Prometheus counters: a retry, a success, a failure, a re-queue."""
    for p in ("/gpfs/a", "/gpfs/b"):
        store.request(p, None, "globus", "t", size=100)
    batch_id, _ = store.claim("", 10)
    store.finish_batch(
        batch_id,
        outcome="partial",
        detail="",
        eeadm_task_id=None,
        updates=[Update("/gpfs/a", DONE), Update("/gpfs/b", QUEUED, last_error="x")],
    )
    batch_id, _ = store.claim("", 10)
    store.finish_batch(
        batch_id,
        outcome="failed",
        detail="",
        eeadm_task_id=None,
        updates=[Update("/gpfs/b", FAILED, last_error="x")],
    )
    store.request("/gpfs/b", None, "globus", "t2")  # asked again after the failure
    expected = {
        "queued": 3,
        "retried": 1,
        "recalled": 1,
        "recalled_bytes": 100,
        "failed": 1,
        "batches_succeeded": 0,
        "batches_partial": 1,
        "batches_failed": 1,
    }
    assert store.counts()["totals"] == expected
    clock.advance(30 * 86400)
    store.prune(clock())
    assert store.counts()["totals"] == expected
