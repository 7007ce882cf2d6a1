"""The store's contract, on both engines: every behaviour the service relies
on, through the store's interface (no SQL), including two connections racing.

The `store` fixture is a fresh store on this test's engine (SQLite under
tmp_path, or a fresh PostgreSQL database) on the fake clock; `make_store`
opens another connection pool on the same database.
"""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from ltfsee_globus.api.context import services
from ltfsee_globus.placement import Placement
from ltfsee_globus.stager import Stager
from ltfsee_globus.store import (
    DONE,
    FAILED,
    LEADER,
    QUEUED,
    RECALLING,
    STANDBY,
    LeaseLost,
    Update,
)

pytestmark = pytest.mark.both_engines

T1, T2 = "T00001L8@pool1@lib1", "T00002L8@pool1@lib1"


def finish(store, batch_id, updates, outcome="succeeded"):
    store.queue.finish_batch(
        batch_id, outcome=outcome, detail="", eeadm_task_id=None, updates=updates
    )


def finished(store, n, status=DONE, prefix="/gpfs/f"):
    """n files recalled (or failed) in one batch, finished now."""
    for i in range(n):
        store.polls.request(f"{prefix}{i}", None, "globus", "t1", size=10)
    batch_id, paths = store.queue.claim("", n)
    finish(
        store,
        batch_id,
        [Update(p, status, last_error="x" if status == FAILED else None) for p in paths],
    )
    return paths


# -- polls ---------------------------------------------------------------------------
def test_a_request_queues_once_and_records_who_asked(store):
    assert store.polls.lookup("/gpfs/a") is None
    assert store.polls.request("/gpfs/a", "lib1", "globus", "t1", size=7, tape=T1) == QUEUED
    assert store.polls.request("/gpfs/a", "lib1", "globus", "t2") == QUEUED
    rec = store.polls.lookup("/gpfs/a", "globus", "t1")
    assert (rec.status, rec.library, rec.size, rec.tape, rec.requested) == (
        QUEUED,
        "lib1",
        7,
        "T00001L8@pool1@lib1",
        True,
    )
    assert rec.known and store.polls.lookup("/gpfs/a", "globus", "t2").known
    assert not store.polls.lookup("/gpfs/a", "globus", "t3").known
    assert [f.path for f in store.ops.files(task="t2")] == ["/gpfs/a"]
    assert store.ops.counts().files[QUEUED] == 1 and store.ops.counts().totals["queued"] == 1


def test_a_finished_file_asked_again_is_queued_afresh(store, clock):
    [path] = finished(store, 1, FAILED)
    assert store.polls.lookup(path).status == FAILED
    clock.advance(5)
    assert store.polls.request(path, None, "globus", "t9") == QUEUED
    rec = store.polls.lookup(path)
    assert (rec.attempts, rec.last_error, rec.finished_at, rec.queued_at) == (
        0,
        None,
        None,
        clock(),
    )
    assert rec.size == 10  # what was known of it stays
    assert store.ops.counts().totals["queued"] == 2


def test_a_file_in_a_recall_is_never_reset_by_a_request(store):
    store.polls.request("/gpfs/a", None, "globus", "t1")
    batch_id, _ = store.queue.claim("", 10)
    assert store.polls.request("/gpfs/a", None, "globus", "t2") == RECALLING
    rec = store.polls.lookup("/gpfs/a")
    assert (rec.status, rec.batch_id, rec.attempts) == (RECALLING, batch_id, 1)


def test_fail_records_a_reason_but_leaves_an_active_file_alone(store):
    store.polls.fail("/gpfs/nocopy", "no copy in lib9", "globus", "t1", size=3)
    rec = store.polls.lookup("/gpfs/nocopy", "globus", "t1")
    assert (rec.status, rec.last_error, rec.known) == (FAILED, "no copy in lib9", True)
    store.polls.request("/gpfs/q", None, "globus", "t1")
    store.polls.fail("/gpfs/q", "late", "globus", "t1")
    assert store.polls.lookup("/gpfs/q").status == QUEUED
    assert store.ops.counts().totals["failed"] == 1


def test_lookups_running_are_counted_per_process_and_age_out(store, clock):
    assert not store.queue.lookups_running(60)
    store.polls.lookup_running(+1)
    store.polls.lookup_running(+1)
    store.polls.lookup_running(-1)
    assert store.queue.lookups_running(60)
    clock.advance(61)
    assert not store.queue.lookups_running(60)  # a lookup that hung does not hold batches
    clock.advance(-61)
    store.polls.lookup_running(-1)
    store.polls.lookup_running(-1)  # never below zero
    assert not store.queue.lookups_running(60)
    store.polls.lookup_running(+1)
    assert store.queue.lookups_running(60)


# -- the queue ---------------------------------------------------------------------------
def test_claims_take_whole_tapes_oldest_first_and_respect_not_before(store, clock):
    for i in range(3):
        store.polls.request(f"/gpfs/b{i}", "lib1", "globus", "t", tape=T2)
        clock.advance(1)
    for i in range(2):
        store.polls.request(f"/gpfs/a{i}", "lib1", "globus", "t", tape=T1)
    store.polls.request("/gpfs/other", "lib2", "globus", "t")
    assert [(q.library, q.tape, q.owner, q.files, q.oldest) for q in store.queue.tapes()] == [
        ("lib1", T1, "globus:t", 2, 1_000_003.0),
        ("lib1", T2, "globus:t", 3, 1_000_000.0),
        ("lib2", "", "globus:t", 1, 1_000_003.0),
    ]
    batch_id, paths = store.queue.claim("lib1", 4)
    assert paths == ["/gpfs/b0", "/gpfs/b1", "/gpfs/b2", "/gpfs/a0"]
    assert store.queue.batch_files(batch_id) == {p: 1 for p in paths}
    assert [b.id for b in store.queue.running_batches()] == [batch_id]
    one = store.queue.claim("lib1", 10, tape=T1)
    assert one[1] == ["/gpfs/a1"] and store.queue.batch(one[0]).tape == T1
    assert store.queue.claim("lib1", 10) is None
    assert store.tapes.busy_tapes([T1, T2, "T9"]) == {T1, T2}
    assert store.tapes.library_load() == {"lib1": 5, "lib2": 1}
    assert store.tapes.active_tapes() == {T1, T2}
    # a retry waits its back-off
    finish(store, batch_id, [Update(p, QUEUED, "x", not_before=clock() + 30) for p in paths])
    assert store.queue.next_retry_at() == clock() + 30
    assert store.queue.claim("lib1", 10) is None
    clock.advance(31)
    assert sorted(store.queue.claim("lib1", 10)[1]) == sorted(paths)


def test_a_batch_verdict_is_applied_per_file(store, clock):
    for p in ("/gpfs/a", "/gpfs/b", "/gpfs/c", "/gpfs/d"):
        store.polls.request(p, "lib1", "globus", "t", size=100)
    batch_id, _ = store.queue.claim("lib1", 10)
    store.queue.mark_done(batch_id, [Update("/gpfs/a", DONE, tape=T1)])  # progress
    assert store.polls.lookup("/gpfs/a").status == DONE
    assert store.queue.batch_files(batch_id) == {"/gpfs/b": 1, "/gpfs/c": 1, "/gpfs/d": 1}
    clock.advance(10)
    finish(
        store,
        batch_id,
        [
            Update("/gpfs/b", DONE, tape=T1),
            Update("/gpfs/c", QUEUED, "not on disk", not_before=clock() + 60),
            Update("/gpfs/d", QUEUED, "copy elsewhere", library="lib2", tape=T2),
        ],
        outcome="partial",
    )
    b = store.queue.batch(batch_id)
    assert (b.status, b.outcome, b.ended_at) == ("done", "partial", clock())
    assert [x.files_done for x in store.ops.batches()] == [2]
    c, d = store.polls.lookup("/gpfs/c"), store.polls.lookup("/gpfs/d")
    assert (c.status, c.batch_id, c.last_error, c.not_before) == (
        QUEUED,
        None,
        "not on disk",
        clock() + 60,
    )
    assert (d.library, d.tape) == ("lib2", T2)
    assert store.polls.lookup("/gpfs/b").finished_at == clock()
    totals = store.ops.counts().totals
    assert (totals["recalled"], totals["recalled_bytes"], totals["retried"]) == (2, 200, 2)
    assert totals["batches_partial"] == 1


def test_totals_count_what_happened_and_survive_pruning(store, clock):
    """The Prometheus counters: a retry, a success, a failure, a re-queue."""
    for p in ("/gpfs/a", "/gpfs/b"):
        store.polls.request(p, None, "globus", "t", size=100)
    batch_id, _ = store.queue.claim("", 10)
    finish(
        store,
        batch_id,
        [Update("/gpfs/a", DONE), Update("/gpfs/b", QUEUED, last_error="x")],
        "partial",
    )
    batch_id, _ = store.queue.claim("", 10)
    finish(store, batch_id, [Update("/gpfs/b", FAILED, last_error="x")], "failed")
    store.polls.request("/gpfs/b", None, "globus", "t2")  # asked again after the failure
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
    assert store.ops.counts().totals == expected
    clock.advance(30 * 86400)
    store.queue.prune(clock())
    assert store.ops.counts().totals == expected


def test_retention_prunes_only_what_finished_before_the_cutoff(store, clock):
    old = finished(store, 30, prefix="/gpfs/old")
    old_failed = finished(store, 5, FAILED, prefix="/gpfs/oldfail")
    store.requests.create(
        "r-old", "k", [("/gpfs/a", "/gpfs/a", "refused"), ("/gpfs/b", "/gpfs/b", "refused")]
    )
    store.requests.create("r-open", "k", [("/gpfs/old0", "/gpfs/old0", None)])  # not settled yet
    clock.advance(100)
    cutoff = clock()
    new = finished(store, 10, prefix="/gpfs/new")
    store.polls.request("/gpfs/waiting", None, "globus", "t2")
    store.requests.create("r-new", "k", [("/gpfs/x", "/gpfs/x", "refused")])
    before = store.ops.counts()
    assert before.files == {"queued": 1, "recalling": 0, "done": 40, "failed": 5}
    gone = [store.queue.prune(cutoff, limit=7) for _ in range(10)]
    assert gone[0] == 7 + 2 + 3 and gone[-1] == 0  # 7 files, 2 batches, r-old and its 2 files
    assert all(store.polls.lookup(p) is None for p in old + old_failed)
    assert all(store.polls.lookup(p).status == DONE for p in new)
    assert store.polls.lookup("/gpfs/waiting").status == QUEUED
    assert store.requests.get("r-old") is None
    assert store.requests.get("r-open") is not None and store.requests.get("r-new") is not None
    after = store.ops.counts()
    assert after.files == {"queued": 1, "recalling": 0, "done": 10, "failed": 0}
    assert after.batches == {"running": 0, "done": 1}
    assert len(store.ops.files(task="t1", limit=100)) == 10  # who asked went with the files
    assert [f.path for f in store.ops.files(task="t2")] == ["/gpfs/waiting"]


# -- prefetch ----------------------------------------------------------------------------
def test_prefetch_queues_skips_active_files_counts_hits_and_drops(store):
    store.polls.request("/gpfs/asked", None, "globus", "task-9", tape=T1)
    files = [("/gpfs/asked", 1, T1, ""), ("/gpfs/p1", 5, T1, ""), ("/gpfs/p2", 7, T1, "")]
    assert store.prefetch.add("task-9", files) == 2  # the asked-for one was queued already
    assert store.prefetch.unconfirmed("task-9") == (2, 12)
    assert store.polls.lookup("/gpfs/p1").prefetched
    assert not store.polls.lookup("/gpfs/p1").requested
    store.polls.note_requester("/gpfs/p1", "globus", "task-9")  # a hit
    assert store.prefetch.unconfirmed("task-9") == (1, 7)
    assert store.prefetch.drop("task-9") == (1, 7)  # p2: nobody asked
    assert store.polls.lookup("/gpfs/p2") is None
    assert store.polls.lookup("/gpfs/p1").status == QUEUED
    [tally] = store.prefetch.tasks()
    assert (tally.taskid, tally.files, tally.asked_files, tally.dropped_bytes) == (
        "task-9",
        2,
        1,
        7,
    )
    pf = store.ops.counts().prefetch
    assert (pf["files"], pf["bytes"], pf["asked_files"], pf["asked_bytes"]) == (2, 12, 1, 5)
    assert (pf["dropped_files"], pf["dropped_bytes"]) == (1, 7)
    assert store.tapes.known(["/gpfs/p1", "/gpfs/p2", "/gpfs/asked"]) == {
        "/gpfs/p1": QUEUED,
        "/gpfs/asked": QUEUED,
    }


def test_prefetch_totals_survive_pruning(store, clock):
    store.prefetch.add("task-9", [("/gpfs/p1", 5, T1, ""), ("/gpfs/p2", 7, T1, "")])
    store.polls.note_requester("/gpfs/p1", "globus", "task-9")
    counts = store.ops.counts()
    clock.advance(100)
    store.queue.prune(clock())
    assert store.prefetch.tasks() == []  # the per-task record is gone...
    assert store.ops.counts().prefetch == counts.prefetch  # ...the counters stay


def test_prefetch_triggers_come_once_in_order(store):
    assert store.prefetch.take_triggers() == []
    store.polls.request("/gpfs/a", None, "globus", "t1", trigger_prefetch=True)
    store.polls.request("/gpfs/b", None, "globus", "t2", trigger_prefetch=True)
    store.polls.note_requester("/gpfs/a", "globus", "t3", trigger_prefetch=True)
    store.polls.note_requester("/gpfs/a", "globus", "t3", trigger_prefetch=True)  # known
    store.polls.request("/gpfs/c", None, "globus", "t1", trigger_prefetch=True)
    assert store.prefetch.take_triggers() == ["t1", "t2", "t3"]
    assert store.prefetch.take_triggers() == []
    assert sorted(store.prefetch.task_paths("t1")) == ["/gpfs/a", "/gpfs/c"]


# -- WLCG stage requests ---------------------------------------------------------------------
def test_a_stage_request_from_intake_to_completion(store, clock):
    store.requests.create(
        "r1",
        "key",
        [("/gpfs/a", "/gpfs/a", None), ("/gpfs/b", "/gpfs/b", None), ("/x", "/x", "bad")],
    )
    req, files = store.requests.get("r1")
    assert (req.id, req.owner, req.started_at) == ("r1", "key", None)
    assert [(f.path, f.state) for f in files] == [
        ("/gpfs/a", "SUBMITTED"),
        ("/gpfs/b", "SUBMITTED"),
        ("/x", "FAILED"),
    ]
    assert store.requests.unchecked(10) == [("r1", "/gpfs/a"), ("r1", "/gpfs/b")]
    clock.advance(1)
    store.requests.intake("r1", "/gpfs/a", None, None, ("lib1", T1), size=50)
    store.requests.intake("r1", "/gpfs/b", "COMPLETED", None)
    assert store.requests.unchecked(10) == []
    assert store.polls.lookup("/gpfs/a", "wlcg", "r1").known
    assert (store.polls.lookup("/gpfs/a").size, store.polls.lookup("/gpfs/a").tape) == (50, T1)
    batch_id, _ = store.queue.claim("lib1", 10)
    assert store.requests.get("r1")[1][0].state == "STARTED"
    finish(store, batch_id, [Update("/gpfs/a", DONE)])
    req, files = store.requests.get("r1")
    assert [f.state for f in files] == ["COMPLETED", "COMPLETED", "FAILED"]
    assert req.started_at == clock() and files[0].finished_at == clock()
    assert store.ops.counts().totals["recalled_bytes"] == 50
    store.requests.release_files("r1", ["/gpfs/a"])
    store.requests.delete("r1")
    assert store.requests.get("r1") is None


def test_cancelling_a_request_forgets_only_what_nobody_else_wants(store):
    store.requests.create(
        "r1", "key", [("/gpfs/mine", "/gpfs/mine", None), ("/gpfs/shared", "/gpfs/shared", None)]
    )
    for path in ("/gpfs/mine", "/gpfs/shared"):
        store.requests.intake("r1", path, None, None)
    store.polls.request("/gpfs/shared", None, "globus", "t1")
    store.requests.cancel_files("r1", ["/gpfs/mine", "/gpfs/shared"])
    assert store.polls.lookup("/gpfs/mine") is None
    assert store.polls.lookup("/gpfs/shared").status == QUEUED
    assert [f.state for f in store.requests.get("r1")[1]] == ["CANCELLED", "CANCELLED"]


# -- operators -------------------------------------------------------------------------------
def test_operator_listings_and_changes_are_recorded(store, clock):
    for i, tape in enumerate((T1, T1, T2)):
        store.polls.request(f"/gpfs/d/f{i}", "lib1", "globus", "task-a", size=10, tape=tape)
    store.polls.request("/gpfs/e/g", "lib2", "globus", "task-b", size=1)
    [failed] = finished(store, 1, FAILED, prefix="/gpfs/bad")
    clock.advance(5)
    assert [(q.library, q.tape, q.files, q.bytes) for q in store.ops.queue_by_tape()] == [
        ("lib1", T1, 2, 20),
        ("lib1", T2, 1, 10),
        ("lib2", "", 1, 1),
    ]
    assert [(b.library, b.files, b.oldest_age) for b in store.ops.queue_by_library()] == [
        ("lib1", 3, 5.0),
        ("lib2", 1, 5.0),
    ]
    assert [f.path for f in store.ops.files(prefix="/gpfs/d/", tape=T1)] == [
        "/gpfs/d/f0",
        "/gpfs/d/f1",
    ]
    assert [f.path for f in store.ops.files(status=FAILED)] == [failed]
    assert [f.path for f in store.ops.files(library="lib2")] == ["/gpfs/e/g"]
    assert len(store.ops.files(limit=2)) == 2
    assert (
        store.ops.retry(
            {failed: Placement("lib3", T2), "/gpfs/e/g": Placement(None, None)}, "alice"
        )
        == 1
    )
    assert (store.polls.lookup(failed).library, store.polls.lookup(failed).tape) == ("lib3", T2)
    assert [f.path for f in store.ops.files(status=QUEUED, retrying=False)][-1] == failed
    assert store.ops.cancel(None, "task-a", "bob") == 3
    assert store.polls.lookup("/gpfs/e/g").status == QUEUED  # task-b's
    assert store.polls.lookup(failed).status == QUEUED  # t1's, retried
    store.polls.fail("/gpfs/bad2", "no copy", "globus", "t")
    assert store.ops.forget(["/gpfs/bad2", "/gpfs/e/g"], "carol") == 1  # queued ones stay
    assert store.polls.lookup("/gpfs/bad2") is None
    assert [(a.who, a.action, a.files) for a in store.ops.actions()] == [
        ("carol", "forget", 1),
        ("bob", "cancel", 3),
        ("alice", "retry", 1),
    ]


def test_eeadm_health_and_probes(store, clock):
    store.ops.note_eeadm("file state", "ok", 0.5, None)
    clock.advance(2)
    store.ops.note_eeadm("file state", "timeout", 30.0, "timed out")
    store.ops.note_eeadm("recall", "ok", 9.0, None)
    store.ops.note_eeadm("file state", "ok", 0.2, None)
    fs, rc = store.ops.eeadm_health()
    assert (fs.subcommand, fs.calls, fs.failures, fs.outcome, fs.last_error) == (
        "file state",
        3,
        1,
        "ok",
        "timed out",
    )
    assert (rc.subcommand, rc.calls, rc.age) == ("recall", 1, 0.0)
    store.ops.probe("readyz")
    store.ops.probe("readyz")  # an upsert, not a growing table


# -- two connections at once -------------------------------------------------------------------
def run_together(n, work):
    """Run work(i) on n threads released at the same moment."""
    gate = threading.Barrier(n)

    def go(i):
        gate.wait()
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_two_claimers_at_once_never_share_a_file(make_store):
    stores = [make_store(), make_store()]
    paths = [f"/gpfs/r/f{i:04d}" for i in range(400)]
    for i, p in enumerate(paths):
        stores[0].polls.request(p, "lib1", "globus", "t", tape=f"T{i % 7}")
    taken: list[list[str]] = [[], []]

    def claim(i):
        while (got := stores[i].queue.claim("lib1", 25)) is not None:
            taken[i].extend(got[1])

    run_together(2, claim)
    assert sorted(taken[0] + taken[1]) == paths  # every file once, none twice
    batches = stores[0].queue.running_batches()
    assert sum(b.n_files for b in batches) == 400


def test_two_enqueuers_of_one_file_at_once_give_one_record(make_store):
    stores = [make_store(), make_store()]
    paths = [f"/gpfs/e/f{i:04d}" for i in range(200)]

    def enqueue(i):
        return [stores[i].polls.request(p, "lib1", "globus", f"t{i}") for p in paths]

    answers = run_together(2, enqueue)
    assert answers == [[QUEUED] * 200] * 2
    counts = stores[0].ops.counts()
    assert counts.files[QUEUED] == 200 and counts.totals["queued"] == 200
    assert len(stores[0].ops.files(task="t0", limit=500)) == 200
    assert len(stores[1].ops.files(task="t1", limit=500)) == 200


def test_enqueue_racing_a_claim_neither_resets_nor_loses_a_file(make_store):
    """A file asked for again while it is being claimed stays in its batch."""
    stores = [make_store(), make_store()]
    paths = [f"/gpfs/c/f{i:04d}" for i in range(300)]
    for p in paths:
        stores[0].polls.request(p, "lib1", "globus", "t")

    def work(i):
        if i == 0:
            got = []
            while (c := stores[0].queue.claim("lib1", 10)) is not None:
                got += c[1]
            return got
        return [stores[1].polls.request(p, "lib1", "globus", "t2") for p in paths]

    claimed, _ = run_together(2, work)
    assert sorted(claimed) == paths
    assert {stores[1].polls.lookup(p).status for p in paths} == {RECALLING}
    assert stores[0].ops.counts().totals["queued"] == 300


def test_the_schema_is_migrated_once_by_stores_opening_together(make_store):
    stores = run_together(4, lambda _: make_store())
    stores[0].polls.request("/gpfs/a", None, "globus", "t")
    assert [s.polls.lookup("/gpfs/a").status for s in stores] == [QUEUED] * 4


# -- through the stager --------------------------------------------------------------------------
def test_a_batch_whose_result_was_not_recorded_is_verified_again(make_app, sim):
    """A running batch with no thread (its result hit a full disk, or its file list
    could not be written) goes back through verification on the next pass."""
    app = make_app(PREFETCH=False, RECALL_RETRY_DELAY=3600)
    svc = services(app)
    path = sim.files("M")[0]
    svc.store.polls.request(path, None, "globus", "t1")
    batch_id, paths = svc.store.queue.claim("", 10)
    assert paths == [path] and svc.store.polls.lookup(path).status == "recalling"
    Stager(svc.settings, svc.store, svc.eeadm).step()
    assert svc.store.queue.batch(batch_id).status == "done"
    row = svc.store.polls.lookup(path)
    assert row.status == QUEUED and row.attempts == 1  # not on disk: retried later


def test_the_stager_prunes_with_the_retention_setting(make_app, clock):
    app = make_app(PREFETCH=False, CLOCK=clock, RETENTION_DAYS=1)
    svc = services(app)
    finished(svc.store, 3)
    stager = Stager(svc.settings, svc.store, svc.eeadm, clock)
    assert stager.prune(clock()) == 0  # not a day old yet
    clock.advance(86400 + 1)
    assert stager.prune(clock()) == 3 + 1
    assert svc.store.ops.counts().files["done"] == 0


# -- the stager lease and the node table ------------------------------------------------
def test_the_stager_lease_has_one_holder_and_a_new_epoch_at_each_take_over(store, wait_for):
    leases = store.leases
    assert not leases.current().running and leases.current().epoch == 0
    assert leases.take("a:1", "n1", 30) == 1
    assert leases.take("b:2", "n2", 30) is None  # held
    lease = leases.current()
    assert (lease.holder, lease.node, lease.epoch, lease.running) == ("a:1", "n1", 1, True)
    assert 25 < lease.remaining <= 30
    assert leases.renew("a:1", 1, 30) and not leases.renew("b:2", 1, 30)
    leases.release("a:1", 1)  # a clean stop: free at once
    assert not leases.current().running
    assert leases.take("b:2", "n2", 0.2) == 2
    wait_for(lambda: not leases.current().running, 5, "the lease to run out")
    assert not leases.renew("b:2", 2, 30)  # run out is lost, even with nobody else there
    assert leases.take("a:1", "n1", 30) == 3


def test_writes_no_poll_reads_keep_the_answers_polls_keep(store, wait_for):
    """The lease, the node table, readiness probes, lookup counts and eeadm's
    health change nothing a poll reads, so what polls keep in memory stays;
    a change to a file drops it (the hot poll, docs/architecture.md)."""
    reads = iter(range(100))
    kept = lambda: store.db.remembered("/gpfs/f1", "k", lambda: next(reads))  # noqa: E731
    kept()  # starts PostgreSQL's listener, which keeps nothing before it listens
    if store.engine == "postgresql":
        wait_for(lambda: store.db.changes.live, 10, "listening")
    first = kept()
    assert kept() == first
    epoch = store.leases.take("a:1", "n1", 30)
    store.leases.renew("a:1", epoch, 30)
    store.leases.heartbeat("a:1", "n1", LEADER, "1.0", epoch)
    store.leases.forget_members(3600)
    store.ops.probe("ready")
    store.ops.note_eeadm("file state", "ok", 0.1, None)
    store.polls.lookup_running(+1)
    store.leases.release("a:1", epoch)
    store.leases.leave("a:1")
    assert kept() == first  # still kept
    store.polls.request("/gpfs/f1", None, "globus", "t1")
    assert kept() == first + 1  # read afresh


def test_a_fenced_write_is_refused_once_another_took_the_lease(store, wait_for):
    epoch = store.leases.take("a:1", "n1", 0.3)
    leader = store.fenced("a:1", epoch)
    assert leader.polls.request("/gpfs/f1", None, "globus", "t1") == QUEUED
    wait_for(lambda: not store.leases.current().running, 5, "the lease to run out")
    assert store.leases.take("b:2", "n2", 30) == epoch + 1
    with pytest.raises(LeaseLost, match=f"epoch {epoch}"):
        leader.polls.request("/gpfs/f2", None, "globus", "t1")
    with pytest.raises(LeaseLost):
        leader.queue.claim("", 10)
    assert store.polls.lookup("/gpfs/f2") is None  # nothing of a refused write is kept
    assert store.polls.lookup("/gpfs/f1").status == QUEUED  # nor taken from the queue
    assert leader.polls.lookup("/gpfs/f1").status == QUEUED  # reads go on
    new = store.fenced("b:2", epoch + 1)
    assert new.queue.claim("", 10, started_by=("n2", epoch + 1))[1] == ["/gpfs/f1"]
    (batch,) = store.queue.running_batches()
    assert (batch.node, batch.epoch) == ("n2", epoch + 1)


def test_members_show_each_process_its_node_role_and_heartbeat(store):
    leases = store.leases
    leases.heartbeat("h1:10", "n1", LEADER, "1.0", 4)
    leases.heartbeat("h2:20", "n2", STANDBY, "1.1", None)
    leases.heartbeat("h1:11", "n1", STANDBY, "1.0", None)
    members = leases.members()
    assert [(m.owner, m.node, m.role, m.version, m.epoch) for m in members] in (
        [
            ("h1:10", "n1", LEADER, "1.0", 4),
            ("h1:11", "n1", STANDBY, "1.0", None),
            ("h2:20", "n2", STANDBY, "1.1", None),
        ],
        [
            ("h1:11", "n1", STANDBY, "1.0", None),
            ("h1:10", "n1", LEADER, "1.0", 4),
            ("h2:20", "n2", STANDBY, "1.1", None),
        ],
    )
    assert all(0 <= m.age < 5 for m in members)
    leases.heartbeat("h2:20", "n2", LEADER, "1.1", 5)  # the same process, now leading
    assert {m.owner: m.role for m in leases.members()}["h2:20"] == LEADER
    leases.leave("h1:11")
    assert len(leases.members()) == 2
    assert leases.forget_members(3600) == 0  # all heard from just now
    assert leases.forget_members(-60) == 2


def test_processes_taking_the_lease_at_once_get_one_epoch(make_store):
    stores = [make_store() for _ in range(6)]
    with ThreadPoolExecutor(len(stores)) as pool:
        got = list(pool.map(lambda i: stores[i].leases.take(f"h:{i}", "n", 30), range(len(stores))))
    assert sorted(got, key=lambda e: e or 0) == [None] * 5 + [1]


# -- the queue's summary and its claims ----------------------------------------------------
def summary(store) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """(library, tape, owner) -> (files, bytes, asked), as the stager reads it."""
    return {(q.library, q.tape, q.owner): (q.files, q.bytes, q.asked) for q in store.queue.tapes()}


def recount(store) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """The same, counted from the file records themselves."""
    out: dict[tuple[str, str, str], tuple[int, int, int]] = {}
    for f in store.ops.files(status=QUEUED, limit=10_000):
        key = (f.library, f.tape or "", f.owner)
        n, b, a = out.get(key, (0, 0, 0))
        out[key] = (n + 1, b + (f.size or 0), a + f.requested)
    return out


def same_as_recount(store) -> bool:
    """The summary and the per-status tallies equal a recount of the files."""
    statuses = Counter(f.status for f in store.ops.files(limit=10_000))
    tallies = {s: n for s, n in store.ops.counts().files.items() if n}
    return summary(store) == recount(store) and tallies == dict(statuses)


def test_the_queue_summary_follows_every_change_of_the_files(store, clock):
    """Enqueue by polls, requests and prefetch, claims (whole and bounded),
    verdicts (done, retried, failed, moved to another library), cancels,
    operator retries: the triggers keep the summary and the tallies equal to
    a recount, and the totals count each move once."""
    for i in range(12):
        tape = (T1, T2, None)[i % 3]
        store.polls.request(f"/gpfs/g{i}", "lib1", "globus", f"task{i % 2}", size=10 + i, tape=tape)
        clock.advance(1)
    store.prefetch.add("task0", [(f"/gpfs/p{i}", 5, T2, "lib1") for i in range(3)])
    store.requests.create("req1", "default", [("/gpfs/w0", "/gpfs/w0", None)])
    store.requests.intake("req1", "/gpfs/w0", None, None, ("lib2", T1), size=7)
    assert same_as_recount(store)
    assert summary(store)[("lib1", T2, "globus:task0")] == (2 + 3, 14 + 20 + 15, 2)
    assert summary(store)[("lib2", T1, "wlcg:req1")] == (1, 7, 1)
    store.polls.request("/gpfs/p1", "lib1", "globus", "task0", size=5, tape=T2)  # asked now
    assert summary(store)[("lib1", T2, "globus:task0")] == (2 + 3, 14 + 20 + 15, 3)
    assert same_as_recount(store)

    batch_id, paths = store.queue.claim("lib1", 100, tape=T1, max_bytes=25)
    assert paths == ["/gpfs/g0", "/gpfs/g3"]  # 10 + 13 bytes; the next (16) would pass 25
    assert same_as_recount(store)
    assert store.queue.batch(batch_id).requesters == {"globus:task0", "globus:task1"}
    assert store.queue.batch(batch_id).bytes == 23
    finish(
        store,
        batch_id,
        [
            Update("/gpfs/g0", QUEUED, "x", not_before=clock() + 30),
            Update("/gpfs/g3", QUEUED, "x", library="lib2", tape=T2),
        ],
    )
    assert same_as_recount(store)
    whole, taken = store.queue.claim("lib1", 5)
    assert len(taken) == 5
    finish(store, whole, [Update(p, FAILED if p.endswith("1") else DONE) for p in taken])
    assert same_as_recount(store)
    store.ops.cancel(["/gpfs/g2", "/gpfs/p0"], None, "op")
    store.ops.retry({p: Placement("lib1", T1) for p in taken if p.endswith("1")}, "op")
    assert same_as_recount(store)
    while store.queue.claim("lib1", 3) or store.queue.claim("lib2", 3):
        pass
    clock.advance(31)
    assert same_as_recount(store)
    assert [(q.files, q.oldest) for q in store.queue.tapes()] == [(1, 1_000_000.0)]  # g0, due now
    totals = store.ops.counts().totals
    assert (totals["retried"], totals["failed"], totals["recalled"]) == (2, 1, 4)
    assert totals["recalled_bytes"] == sum(f.size or 0 for f in store.ops.files(status=DONE))


@pytest.mark.parametrize(
    ("max_bytes", "asked_first", "first", "then"),
    [
        (30, False, ["/gpfs/a0", "/gpfs/a1", "/gpfs/p0"], ["/gpfs/p1", "/gpfs/p2"]),
        (30, True, ["/gpfs/a0", "/gpfs/a1"], ["/gpfs/p0", "/gpfs/p1", "/gpfs/p2"]),
        (0, True, ["/gpfs/a0", "/gpfs/a1"], ["/gpfs/p0", "/gpfs/p1", "/gpfs/p2"]),
        (0, False, ["/gpfs/p0", "/gpfs/p1", "/gpfs/p2", "/gpfs/a0", "/gpfs/a1"], []),
    ],
    ids=[
        "a piece: asked files first, then the others",
        "a newcomer's piece: asked files alone",
        "a whole tape a newcomer waits for: asked files alone",
        "a whole tape: one pass",
    ],
)
def test_a_tapes_recall_takes_the_files_clients_asked_for_first(
    store, clock, max_bytes, asked_first, first, then
):
    """A piece, or a recall for a requester that waits beside others' work
    (`asked_first`), takes the asked files first (oldest first). For
    `asked_first` they go alone: EE reads in tape order, so prefetched files
    lying between them would be read first. A piece otherwise fills up with
    prefetched files (each recall of a tape locates across it), and a whole
    tape goes in one pass."""
    store.prefetch.add("task0", [(f"/gpfs/p{i}", 10, T1, "lib1") for i in range(3)])
    clock.advance(1)
    for i in range(2):
        store.polls.request(f"/gpfs/a{i}", "lib1", "globus", "small", size=10, tape=T1)
        clock.advance(1)
    claim = dict(tape=T1, max_bytes=max_bytes, asked_first=asked_first)
    assert store.queue.claim("lib1", 100, **claim)[1] == first
    rest = store.queue.claim("lib1", 100, **claim)
    assert (rest[1] if rest else []) == then


def test_asked_files_waiting_for_a_retry_let_the_prefetched_ones_go(store, clock):
    store.prefetch.add("task0", [("/gpfs/p0", 10, T1, "lib1")])
    store.polls.request("/gpfs/a", "lib1", "globus", "t", size=10, tape=T1)
    batch_id, taken = store.queue.claim("lib1", 10, tape=T1, asked_first=True)
    assert taken == ["/gpfs/a"]
    finish(store, batch_id, [Update("/gpfs/a", QUEUED, "x", not_before=clock() + 30)])
    assert store.queue.claim("lib1", 10, tape=T1, asked_first=True)[1] == ["/gpfs/p0"]


def test_a_file_waiting_for_its_retry_does_not_make_its_tape_ready(store, clock):
    store.polls.request("/gpfs/a", "lib1", "globus", "t", size=1, tape=T1)
    batch_id, _ = store.queue.claim("lib1", 10, tape=T1)
    finish(store, batch_id, [Update("/gpfs/a", QUEUED, "x", not_before=clock() + 30)])
    [row] = store.queue.tapes()
    assert (row.files, row.oldest) == (1, None)  # queued, not ready
    assert store.queue.claim("lib1", 10, tape=T1) is None
    clock.advance(30)
    assert store.queue.tapes()[0].oldest == 1_000_000.0
    assert store.queue.claim("lib1", 10, tape=T1)[1] == ["/gpfs/a"]


def test_a_file_larger_than_the_bound_is_claimed_alone(store):
    store.polls.request("/gpfs/big", "lib1", "globus", "t", size=500, tape=T1)
    store.polls.request("/gpfs/small", "lib1", "globus", "t", size=1, tape=T1)
    assert store.queue.claim("lib1", 10, tape=T1, max_bytes=100)[1] == ["/gpfs/big"]
    assert store.queue.claim("lib1", 10, tape=T1, max_bytes=100)[1] == ["/gpfs/small"]


def test_a_keys_priority_goes_with_what_it_queues(store):
    store.polls.request("/gpfs/a", "lib1", "globus", "t", tape=T1, priority=5)
    store.requests.create("r", "vip", [("/gpfs/b", "/gpfs/b", None)], priority=7)
    store.requests.intake("r", "/gpfs/b", None, None, ("lib1", T2))
    assert {(q.tape, q.owner, q.priority) for q in store.queue.tapes()} == {
        (T1, "globus:t", 5),
        (T2, "wlcg:r", 7),
    }


def test_a_list_of_any_length_is_one_parameter(store):
    """A claim, and the lookups by a list of paths or tapes, pass the list as
    one parameter (`in_list`): 1,200 files, past what an `IN (?, ...)` list
    of one statement carried before."""
    paths = [f"/gpfs/many/f{i:04d}" for i in range(1200)]
    store.prefetch.add("task0", [(p, 1, T1, "lib1") for p in paths])
    batch_id, taken = store.queue.claim("lib1", 5000, tape=T1)
    assert sorted(taken) == paths
    assert store.queue.batch_files(batch_id) == dict.fromkeys(paths, 1)
    assert store.tapes.known([*paths, "/gpfs/unknown"]) == dict.fromkeys(paths, RECALLING)
    assert store.tapes.busy_tapes([T1, T2]) == {T1}
