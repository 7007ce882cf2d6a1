"""The stager over the real store and simulator, with a fake clock for windows."""

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ltfsee_globus.api.context import services
from ltfsee_globus.health import GONE, cluster, drives_report, readiness
from ltfsee_globus.recovery import _process_alive
from ltfsee_globus.sim.library import Library
from ltfsee_globus.stager import Stager
from ltfsee_globus.store import DONE, FAILED, LEADER, QUEUED, STANDBY

pytestmark = pytest.mark.both_engines


@pytest.fixture
def staged(make_app, clock):
    """(app services, a Stager on the fake clock) with settings overrides."""

    def make(**overrides):
        app = make_app(CLOCK=clock, PREFETCH=False, **overrides)
        svc = services(app)
        return svc, Stager(svc.settings, svc.store, svc.eeadm, clock)

    return make


def queue(svc, paths, library=""):
    for p in paths:
        svc.store.polls.request(p, library, "globus", "task")


def run_step(stager):
    """One stager pass, then wait for the recalls it started to be verified."""
    stager.step()
    stager.wait_idle()


def test_batch_waits_for_the_window_then_takes_everything(staged, sim, clock):
    svc, stager = staged(BATCH_WINDOW=10)
    files = sim.files("M")
    queue(svc, files[:3])
    run_step(stager)
    clock.advance(5)
    queue(svc, files[3:5])
    run_step(stager)
    assert sim.invocations("recall") == []
    clock.advance(5)
    run_step(stager)
    assert len(sim.invocations("recall")) == 1
    batch = svc.store.queue.batch(1)
    assert batch.n_files == 5 and batch.outcome == "succeeded"
    assert {sim.state_of(p) for p in files[:5]} == {"P"}
    assert all(svc.store.polls.lookup(p).status == DONE for p in files[:5])
    assert len(sim.invocations("file state")) == 1  # one verification call


def test_a_steady_trickle_waits_for_quiet_but_not_forever(staged, sim, clock):
    svc, stager = staged(BATCH_WINDOW=10, BATCH_QUIET=5, BATCH_MAX_WAIT=30)
    files = iter(sim.files("M"))
    for _ in range(9):  # a new file every 3 s: never 5 s of quiet
        queue(svc, [next(files)])
        run_step(stager)
        clock.advance(3)
    assert sim.invocations("recall") == []
    queue(svc, [next(files)])
    clock.advance(3)  # 30 s after the first file
    run_step(stager)
    assert len(sim.invocations("recall")) == 1
    assert svc.store.queue.batch(1).n_files == 10


def test_lookups_for_polls_in_flight_hold_the_batch_until_quiet(staged, sim, clock):
    """A poll being looked up in a web worker will queue a file soon: the batch waits
    for it (the whole opening window of a transfer goes together), up to BATCH_MAX_WAIT."""
    svc, stager = staged(BATCH_WINDOW=0, BATCH_QUIET=2, BATCH_MAX_WAIT=30)
    queue(svc, sim.files("M")[:2])
    svc.store.polls.lookup_running(+1)  # what the web tier's lookup does around eeadm
    for _ in range(4):
        clock.advance(5)
        run_step(stager)
    assert sim.invocations("recall") == [], "went while polls were still being looked up"
    svc.store.polls.lookup_running(-1)  # (had it found a migrated file, that would be queued now)
    run_step(stager)
    assert len(sim.invocations("recall")) == 1
    queue(svc, sim.files("M")[2:3])
    svc.store.polls.lookup_running(+1)  # never longer than BATCH_MAX_WAIT
    clock.advance(30)
    run_step(stager)
    assert len(sim.invocations("recall")) == 2


def test_full_batches_go_at_once_and_remainder_waits(staged, sim, monkeypatch):
    monkeypatch.setenv("EEADM_SIM_DRIVE_LIST", "none")  # drives not known: batches
    svc, stager = staged(BATCH_WINDOW=1000, BATCH_MAX_FILES=2, RECALL_CONCURRENCY=4)
    queue(svc, sim.files("M")[:5])
    run_step(stager)
    assert len(sim.invocations("recall")) == 2
    assert svc.store.ops.counts().files == {"queued": 1, "recalling": 0, "done": 4, "failed": 0}


def test_a_full_queue_is_split_by_tape_oldest_tape_first(staged, sim, clock):
    svc, _ = staged(BATCH_WINDOW=1000)
    tapes = sim.tapes()
    by_tape: dict[str, list[str]] = {}
    for p in sim.files("M"):
        by_tape.setdefault(tapes[p], []).append(p)
    a, b = sorted(by_tape.values(), key=len)[-2:]
    for x, y in zip(a, b, strict=False):  # the two tapes' files arrive interleaved, a first
        svc.store.polls.request(x, "", "globus", "t", tape=tapes[x])
        clock.advance(1)
        svc.store.polls.request(y, "", "globus", "t", tape=tapes[y])
        clock.advance(1)
    _, first = svc.store.queue.claim("", len(a))
    assert sorted(first) == sorted(a)  # all of tape a, none of tape b
    _, second = svc.store.queue.claim("", len(a) + len(b))
    assert sorted(second) == sorted(b[: len(a)])


def test_concurrency_bound(staged, sim):
    svc, stager = staged(BATCH_MAX_FILES=1, RECALL_CONCURRENCY=1)
    queue(svc, sim.files("M")[:3])
    stager.step()
    assert len(svc.store.queue.running_batches()) == 1
    stager.wait_idle()
    run_step(stager)
    run_step(stager)
    assert len(sim.invocations("recall")) == 3


def test_retries_back_off_then_fail_with_reason(staged, sim, clock, caplog):
    caplog.set_level(logging.WARNING, logger="ltfsee_globus")
    svc, stager = staged(RECALL_MAX_ATTEMPTS=3, RECALL_RETRY_DELAY=100)
    path = sim.files("M")[0]
    lib = Library(sim.root)
    lib.damage([path])
    lib.close()
    queue(svc, [path])
    run_step(stager)
    rec = svc.store.polls.lookup(path)
    assert rec.status == QUEUED and rec.not_before == clock.now + 100
    clock.advance(50)
    run_step(stager)
    assert len(sim.invocations("recall")) == 1
    clock.advance(50)
    run_step(stager)  # second attempt; next wait is 200 s
    clock.advance(200)
    run_step(stager)
    rec = svc.store.polls.lookup(path)
    assert len(sim.invocations("recall")) == 3
    assert rec.status == FAILED and "after 3 attempt(s)" in rec.last_error
    said = [r.getMessage() for r in caplog.records if path in r.getMessage()]
    assert [m.split(path)[1].split(":")[0] for m in said] == [
        " not on disk (attempt 1 of 3), retried in 100 s",
        " not on disk (attempt 2 of 3), retried in 200 s",
        " failed after 3 attempt(s)",
    ]


def test_eeadm_recall_hanging_is_timed_out_and_retried(staged, sim, fake_eeadm, tmp_path):
    cmd = fake_eeadm(f"""\
        if [ "$1" = recall ]; then sleep 30; fi
        exec {" ".join(sim.command)} "$@"
        """)
    svc, stager = staged(EEADM_COMMAND=cmd, RECALL_TIMEOUT=0.5)
    path = sim.files("M")[0]
    queue(svc, [path])
    run_step(stager)
    rec = svc.store.polls.lookup(path)
    assert rec.status == QUEUED and "timed out" in rec.last_error


def test_restart_verifies_a_batch_whose_eeadm_is_gone(staged, sim):
    svc, stager = staged()
    m = sim.files("M")[:4]
    queue(svc, m)
    batch_id, _ = svc.store.queue.claim("", 100)
    svc.store.queue.set_batch_pid(batch_id, 999_999)  # no such process
    # half of them were recalled before the crash
    subprocess.run(
        [*sim.command, "recall"], input="\n".join(m[:2]), text=True, check=True, capture_output=True
    )
    stager.recover()
    assert [svc.store.polls.lookup(p).status for p in m] == [DONE, DONE, QUEUED, QUEUED]
    assert svc.store.queue.running_batches() == []


def test_restart_adopts_a_recall_still_running(staged, sim, tmp_path):
    svc, stager = staged()
    m = sim.files("M")[:3]
    queue(svc, m)
    batch_id, paths = svc.store.queue.claim("", 100)
    list_file = stager.batch_dir / f"{batch_id}.list"
    list_file.write_text("\n".join(paths) + "\n")
    slow = tmp_path / "slow-eeadm"
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec {" ".join(sim.command)} "$@"\n')
    slow.chmod(0o755)
    with open(stager.batch_dir / f"{batch_id}.log", "wb") as log:
        proc = subprocess.Popen(
            [str(slow), "recall", str(list_file)], stdout=log, stderr=subprocess.STDOUT
        )
    svc.store.queue.set_batch_pid(batch_id, proc.pid)
    stager.recover()
    assert svc.store.polls.lookup(m[0]).status == "recalling"  # adopted, not re-run
    proc.wait()
    stager.wait_idle()
    assert all(svc.store.polls.lookup(p).status == DONE for p in m)
    assert len(sim.invocations("recall")) == 1
    assert svc.store.queue.batch(batch_id).eeadm_task_id == "1:1001"  # the colon form, kept whole


def test_baseline_mode_recalls_one_file_per_eeadm_call(staged, sim, monkeypatch):
    monkeypatch.setenv("EEADM_SIM_DRIVE_LIST", "none")  # drives not known: batches
    svc, stager = staged(BATCH_MAX_FILES=1, BATCH_WINDOW=0, RECALL_CONCURRENCY=8)
    queue(svc, sim.files("M")[:4])
    run_step(stager)
    assert len(sim.invocations("recall")) == 4
    assert all(b == 1 for b in [svc.store.queue.batch(i).n_files for i in range(1, 5)])


def test_progress_marks_files_already_on_disk_while_the_batch_runs(staged, sim):
    svc, stager = staged()
    m = sim.files("M")[:4]
    queue(svc, m)
    batch_id, _ = svc.store.queue.claim("", 100)
    subprocess.run(
        [*sim.command, "recall"], input="\n".join(m[:2]), text=True, check=True, capture_output=True
    )
    calls = len(sim.invocations("file state"))
    stager.progress()
    assert len(sim.invocations("file state")) == calls + 1  # one call for the whole batch
    assert [svc.store.polls.lookup(p).status for p in m] == [DONE, DONE, "recalling", "recalling"]
    assert svc.store.queue.batch(batch_id).status == "running"


def test_a_recall_between_two_execs_is_still_alive(tmp_path):
    """sudo starting eeadm (or a wrapper exec'ing the real tool) shows an empty
    command line for a moment; adoption must not take that for the end."""
    marker = str(tmp_path / "7.list")

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        except OSError:
            return False

    last = f"{sys.executable} -c 'import time; time.sleep(0.3)' {marker}"
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f'sleep 0.2; exec /bin/sh -c "sleep 0.2; exec {last}" {marker}', marker]
    )
    answers = []
    try:
        while proc.poll() is None:
            before = running(proc.pid)
            alive = _process_alive(proc.pid, marker)
            if before and running(proc.pid):
                answers.append(alive)
    finally:
        proc.wait()
    assert answers and all(answers)  # through both execs, while it ran
    assert not _process_alive(proc.pid, marker)  # reaped: gone
    assert not _process_alive(1, marker)  # a process that is not our recall


@pytest.fixture
def gated_over(fake_eeadm, tmp_path):
    """gated_over(sim): (eeadm command over `sim` whose recalls wait until
    `open_gate()`, open_gate)."""

    def make(sim):
        gate = tmp_path / f"gate-{sim.root.name}"
        cmd = fake_eeadm(f"""\
            if [ "$1" = recall ]; then while [ ! -e {gate} ]; do sleep 0.02; done; fi
            exec {" ".join(sim.command)} "$@"
            """)
        return cmd, gate.touch

    return make


@pytest.fixture
def gated(gated_over, sim):
    """(eeadm command whose recalls wait until `open_gate()`, open_gate)."""
    return gated_over(sim)


def by_tape(sim) -> list[list[str]]:
    """The migrated files of each tape, tapes in name order."""
    tapes = sim.tapes()
    out: dict[str, list[str]] = {}
    for p in sim.files("M"):
        out.setdefault(tapes[p], []).append(p)
    return [out[t] for t in sorted(out)]


def ask(svc, sim, clock, paths):
    tapes = sim.tapes()
    for p in paths:
        svc.store.polls.request(p, "", "globus", "t", tape=tapes[p])
        clock.advance(1)


def running_tapes(svc) -> dict[str, int]:
    return {b.tape: b.n_files for b in svc.store.queue.running_batches()}


def test_a_full_house_waits_for_a_recall_to_end_without_spinning(staged, sim, gated):
    """Slots full and the queue due: the loop sleeps until a recall ends (which
    wakes it) instead of asking the store again at once."""
    cmd, open_gate = gated
    svc, stager = staged(EEADM_COMMAND=cmd, RECALL_CONCURRENCY=1, BATCH_MAX_FILES=1)
    queue(svc, sim.files("M")[:2])
    assert stager.step() > 0
    assert len(svc.store.queue.running_batches()) == 1
    open_gate()
    stager.wait_idle()


def test_tape_drives_one_tape_per_recall_most_queued_first(staged, sim, gated, clock, caplog):
    caplog.set_level(logging.INFO, logger="ltfsee_globus.stager")
    cmd, open_gate = gated
    svc, stager = staged(EEADM_COMMAND=cmd, TAPE_DRIVES=2, BATCH_WINDOW=10, BATCH_QUIET=0)
    a, b, c = by_tape(sim)
    tape = sim.tapes()
    ask(svc, sim, clock, c[:1])  # the oldest, but alone on its tape
    ask(svc, sim, clock, a[:5])
    ask(svc, sim, clock, b[:3])
    stager.step()
    assert sim.invocations("recall") == []  # not due yet
    clock.advance(10)
    stager.step()
    assert running_tapes(svc) == {tape[a[0]]: 5, tape[b[0]]: 3}
    for batch in svc.store.queue.running_batches():
        assert {tape[p] for p in svc.store.queue.batch_files(batch.id)} == {batch.tape}
    assert svc.store.polls.lookup(c[0]).status == QUEUED  # two drives, both busy
    assert f"recalling 5 file(s) from tape {tape[a[0]]}" in caplog.text
    open_gate()
    stager.wait_idle()
    run_step(stager)
    assert [svc.store.polls.lookup(p).status for p in a[:5] + b[:3] + c[:1]] == [DONE] * 9
    assert len(sim.invocations("recall")) == 3


def test_tape_drives_never_two_recalls_of_one_tape(staged, sim, gated, clock):
    cmd, open_gate = gated
    svc, stager = staged(EEADM_COMMAND=cmd, TAPE_DRIVES=2, BATCH_WINDOW=0, BATCH_QUIET=0)
    a, _, _ = by_tape(sim)
    ask(svc, sim, clock, a[:2])
    stager.step()
    ask(svc, sim, clock, a[2:3])
    stager.step()
    assert running_tapes(svc) == {sim.tapes()[a[0]]: 2}  # a drive free, but the tape is busy
    assert svc.store.polls.lookup(a[2]).status == QUEUED
    open_gate()
    stager.wait_idle()
    run_step(stager)
    assert svc.store.polls.lookup(a[2]).status == DONE


def test_tape_drives_a_drive_keeps_its_tape_while_files_for_it_wait(staged, sim, gated, clock):
    """The tape just read is still in its drive: its newly queued file goes next
    (a read), even when another tape has more files waiting (a mount)."""
    cmd, open_gate = gated
    svc, stager = staged(EEADM_COMMAND=cmd, TAPE_DRIVES=1, BATCH_WINDOW=0, BATCH_QUIET=0)
    a, _, c = by_tape(sim)
    tape = sim.tapes()
    ask(svc, sim, clock, a[:2])
    stager.step()
    ask(svc, sim, clock, a[2:3])
    ask(svc, sim, clock, c[:3])
    stager.step()
    assert running_tapes(svc) == {tape[a[0]]: 2}
    open_gate()
    stager.wait_idle()
    stager.step()
    assert running_tapes(svc) == {tape[a[0]]: 1}
    stager.wait_idle()
    run_step(stager)
    assert running_tapes(svc) == {}
    assert {svc.store.polls.lookup(p).status for p in a[:3] + c[:3]} == {DONE}


def test_tape_drives_a_drive_still_holds_its_tape_when_files_for_it_come_later(
    staged, sim, gated, clock
):
    """A drive that read a tape holds it until it is given another, even when
    passes went by with nothing queued for it (the drive list, read later,
    would say so too late): a file for it then goes before a tape with more
    files waiting longer, which needs a mount."""
    cmd, open_gate = gated
    svc, stager = staged(EEADM_COMMAND=cmd, TAPE_DRIVES=1, BATCH_WINDOW=0, BATCH_QUIET=0)
    a, _, c = by_tape(sim)
    tape = sim.tapes()
    ask(svc, sim, clock, a[:2])
    stager.step()
    open_gate()
    stager.wait_idle()
    stager.step()  # the drive is free and holds a's tape; nothing queued for it
    assert running_tapes(svc) == {}
    ask(svc, sim, clock, c[:3])
    ask(svc, sim, clock, a[2:3])
    stager.step()
    assert running_tapes(svc) == {tape[a[0]]: 1}
    stager.wait_idle()
    run_step(stager)
    assert {svc.store.polls.lookup(p).status for p in a[:3] + c[:3]} == {DONE}


def leading(store) -> str | None:
    """The node whose stager holds the lease, if any does."""
    lease = store.leases.current()
    return lease.node if lease.running else None


def test_one_stager_leads_and_a_clean_stop_hands_over_at_once(staged, sim, clock, wait_for):
    """Two stagers on one store (two nodes): one leads, the other stands by;
    stopping the leader gives the lease up, so the standby leads long before
    the lease (30 s) could have run out, and its batches say so."""
    svc, first = staged(STAGER_LEASE=30, NODE_NAME="n1")
    other, _ = staged(STAGER_LEASE=30, NODE_NAME="n2")
    second = Stager(other.settings, other.store, other.eeadm, clock, owner="host2:2")
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=s.run, args=(e,), daemon=True)
        for s, e in zip((first, second), stops, strict=True)
    ]
    try:
        threads[0].start()
        wait_for(lambda: leading(svc.store) == "n1", 10, "the first to lead")
        threads[1].start()
        roles = lambda: {n["node"]: n["role"] for n in cluster(svc.store)["nodes"]}  # noqa: E731
        wait_for(lambda: roles() == {"n1": LEADER, "n2": STANDBY}, 10, "both in the table")
        m = sim.files("M")
        queue(svc, m[:2])
        wait_for(lambda: all(svc.store.polls.lookup(p).status == DONE for p in m[:2]), 30)
        stops[0].set()
        threads[0].join()
        wait_for(lambda: leading(svc.store) == "n2", 5, "the hand-over")
        assert svc.store.leases.current().epoch == 2
        queue(svc, m[2:4])
        wait_for(lambda: all(svc.store.polls.lookup(p).status == DONE for p in m[2:4]), 30)
        batches = sorted(svc.store.ops.batches(), key=lambda b: b.id)
        # each pair may go as one batch or two (a step can fall between two polls)
        assert sorted({(b.node, b.epoch) for b in batches}) == [("n1", 1), ("n2", 2)]
        assert [b.node for b in batches] == sorted(b.node for b in batches)  # n1's came first
        assert sum(b.n_files for b in batches) == 4  # each file recalled once
        assert len(sim.invocations("recall")) == len(batches)
        wait_for(lambda: roles() == {"n2": LEADER}, 10, "the first to leave the table")
    finally:
        for e, t in zip(stops, threads, strict=True):
            e.set()
            if t.is_alive():
                t.join()
    assert cluster(svc.store)["nodes"] == []


def test_a_dead_nodes_recall_is_followed_in_ee_and_not_started_again(staged, make_sim, caplog):
    """A batch another node started, whose client died with it while its EE
    task goes on: the stager taking over waits for the task (`eeadm task
    show`), then verifies; the files are recalled once."""
    slow = make_sim("slow", time_scale=20.0)  # the recall takes seconds
    svc, stager = staged(
        EEADM_COMMAND=" ".join(slow.command), MANAGED_ROOTS=[str(slow.fs)], NODE_NAME="n2"
    )
    m = slow.files("M")[:3]
    queue(svc, m)
    batch_id, _ = svc.store.queue.claim("", 100, started_by=("n1", 1))
    task = slow.recall_then_kill(m)  # node n1's recall; n1 dies, EE goes on
    svc.store.queue.set_batch_task(batch_id, task)
    caplog.set_level(logging.INFO, "ltfsee_globus")
    stager.recover()
    assert f"following EE task {task}" in caplog.text
    assert {svc.store.polls.lookup(p).status for p in m} == {"recalling"}  # not re-queued
    stager.wait_idle()
    assert {svc.store.polls.lookup(p).status for p in m} == {DONE}
    assert len(slow.invocations("recall")) == 1
    assert slow.invocations("task show")


# -- sharing the drives ----------------------------------------------------------------------
def test_no_recall_drive_in_service_the_queue_waits_and_says_why(staged, sim):
    lib = Library(sim.root)
    for serial in ("SIM000000000", "SIM000000001"):
        lib.set_drive(serial, enabled=False)
    svc, stager = staged(BATCH_WINDOW=0, BATCH_QUIET=0)
    m = sim.files("M")[:3]
    queue(svc, m)
    run_step(stager)
    assert sim.invocations("recall") == []
    assert svc.store.ops.counts().files == {"queued": 3, "recalling": 0, "done": 0, "failed": 0}
    said = "no recall drive in service in library ts4500: its queue waits"
    assert drives_report(svc.store, svc.settings)["says"] == said
    assert readiness(svc.settings, svc.store, svc.eeadm)["drives"] == f"warning: {said}"
    lib.set_drive("SIM000000001", enabled=True)
    lib.close()
    stager.drives.read()  # (the stager reads it again every DRIVE_REFRESH)
    run_step(stager)
    run_step(stager)
    assert {svc.store.polls.lookup(p).status for p in m} == {DONE}
    assert drives_report(svc.store, svc.settings)["state"] == "ok"


def test_a_drive_taken_down_mid_recall_the_work_goes_on_with_the_rest(staged, sim, gated, clock):
    cmd, open_gate = gated
    svc, stager = staged(EEADM_COMMAND=cmd, BATCH_WINDOW=0, BATCH_QUIET=0)
    a, b, c = by_tape(sim)
    ask(svc, sim, clock, a[:2] + b[:2] + c[:2])
    stager.step()
    assert len(running_tapes(svc)) == 2  # two drives
    lib = Library(sim.root)
    lib.set_drive("SIM000000001", enabled=False)
    lib.close()
    open_gate()
    stager.wait_idle()
    stager.drives.read()  # what the stager does soon after a recall ends
    stager.step()
    assert len(running_tapes(svc)) == 1  # one drive left: one tape at a time
    stager.wait_idle()
    run_step(stager)
    assert {svc.store.polls.lookup(p).status for p in a[:2] + b[:2] + c[:2]} == {DONE}
    assert svc.store.ops.counts().files["failed"] == 0


def test_one_drive_goes_to_the_small_request_when_the_restores_piece_ends(
    staged, make_sim, gated_over, clock
):
    """A restore holds the only drive; a small request arrives; when the
    restore's piece ends the drive goes to the small request, not to the
    restore's next tape (bigger, and waiting longer)."""
    sim = make_sim("one", drives=1, tapes=3)
    cmd, open_gate = gated_over(sim)
    svc, stager = staged(EEADM_COMMAND=cmd, MANAGED_ROOTS=[str(sim.fs)], BATCH_WINDOW=0)
    a, b, c = by_tape(sim)
    tape = sim.tapes()
    for p in a + b:
        svc.store.polls.request(p, "", "wlcg", "restore", tape=tape[p], size=10**9)
    clock.advance(100)
    stager.step()
    [first] = running_tapes(svc)
    svc.store.polls.request(c[0], "", "globus", "small", tape=tape[c[0]], size=10**6)
    clock.advance(10)
    open_gate()
    stager.wait_idle()
    stager.step()
    assert list(running_tapes(svc)) == [tape[c[0]]]
    stager.wait_idle()
    run_step(stager)
    run_step(stager)
    assert {svc.store.polls.lookup(p).status for p in a + b + c[:1]} == {DONE}
    assert first != tape[c[0]]


def test_the_node_table_counts_the_processes_that_are_there(staged):
    """A process killed -9 never leaves the table itself: after `alive`
    seconds of silence it is not counted, and a node with none left is gone;
    the leader forgets such rows after a day (prune)."""
    svc, _ = staged()
    leases = svc.store.leases
    for owner in ("h1:1", "h1:2"):
        leases.heartbeat(owner, "n1", STANDBY, "v1", None)
    assert [(n["node"], n["role"], n["processes"]) for n in cluster(svc.store, 3600)["nodes"]] == [
        ("n1", STANDBY, 2)
    ]
    [gone] = cluster(svc.store, 0.0)["nodes"]
    assert (gone["role"], gone["processes"]) == (GONE, 0)
    assert leases.forget_members(-1.0) == 2
    assert cluster(svc.store)["nodes"] == []
