"""The service under load and under SIGKILL, as deployed: gunicorn, stager, simulator."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from support import devserver

pytestmark = pytest.mark.both_engines

RECALL = "/api/v0.5/globus_recall/globus_recall"


def poll_all(server, paths, *, workers=64, task="task-1"):
    def one(path):
        r = server.post(RECALL, {"path": path, "globus_taskid": task})
        return r.status_code, r.json().get("state")

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))


def test_1000_concurrent_polls_for_200_files(make_sim, start_server, server_env, wait_for):
    sim = make_sim("big", files=260, dirs=10, tapes=5, drives=4, premigrated=0.1, resident=0.1)
    files = sim.files("M")[:200]
    server = start_server(
        EEADM_COMMAND=" ".join(sim.command),
        MANAGED_ROOTS=str(sim.fs),
        EEADM_SIM_DIR=str(sim.root),
        BATCH_WINDOW=10,
        PREFETCH="false",
    )
    polls = [p for _ in range(5) for p in files]  # 1,000 polls, 5 per file, interleaved
    started = time.monotonic()
    results = poll_all(server, polls)
    elapsed = time.monotonic() - started
    assert len(results) == 1000
    assert all(status == 201 and state in ("archived", "resident") for status, state in results)
    wait_for(
        lambda: all(s == "resident" for _, s in poll_all(server, files)),
        timeout=60,
        what="all files on disk",
    )
    recalls, states = sim.invocations("recall"), sim.invocations("file state")
    print(
        f"\n1000 polls for 200 files: {len(recalls)} eeadm recall, "
        f"{len(states)} eeadm file state invocations; polls took {elapsed:.1f} s"
    )
    reads = sim.reads_per_file()
    assert set(files) <= set(reads) and max(reads.values()) == 1  # each file recalled once
    assert len(recalls) <= 5  # one per tape: the drives are known
    assert len(states) < 100


def test_sigkill_of_stager_and_server_mid_batch_loses_nothing(
    make_sim, start_server, start_stager, server_env, tmp_path, wait_for
):
    # slow tape: mount 60 s and 100 files of ~1 GB take several real seconds at x100
    sim = make_sim(
        "slow",
        files=120,
        dirs=4,
        tapes=2,
        drives=1,
        premigrated=0,
        resident=0,
        time_scale=100.0,
        min_size=10**9,
        max_size=2 * 10**9,
    )
    files = sim.files("M")
    env = dict(
        server_env,
        EEADM_COMMAND=" ".join(sim.command),
        MANAGED_ROOTS=str(sim.fs),
        EEADM_SIM_DIR=str(sim.root),
        STAGER="off",
        PREFETCH="false",
        BATCH_WINDOW="1",
    )
    server = start_server(**env)
    stager = start_stager(server.env)
    store = devserver.open_store(server.env)
    try:
        assert {s for _, s in poll_all(server, files[:60])} == {"archived"}
        wait_for(lambda: any(b.pid for b in store.queue.running_batches()), what="a running batch")
        # accepted while the first batch runs, then everything dies mid-batch
        assert {s for _, s in poll_all(server, files[60:])} == {"archived"}
        stager.send_signal(signal.SIGKILL)
        stager.wait()
        server.kill(signal.SIGKILL)
        assert store.queue.running_batches(), "the kill should land mid-batch"
        with requests.Session() as s:
            try:
                s.get(server.url + "/healthz", timeout=1)
                raise AssertionError("server still up")
            except requests.ConnectionError:
                pass

        server2 = start_server(**env)
        stager = start_stager(server2.env)
        wait_for(
            lambda: all(s == "resident" for _, s in poll_all(server2, files)),
            timeout=120,
            what="every accepted file on disk",
        )
    finally:
        store.close()
    reads = sim.reads_per_file()
    assert set(reads) == set(files)
    assert max(reads.values()) == 1, "a file was recalled twice"
