"""Two nodes on one PostgreSQL: the short fail-over drill (bench/failover.py is
the long one). Real gunicorn nodes, the real stage app with both URLs, one
simulated library whose recalls take seconds, faults at the leader: kill -9
of the node (its recall clients too, as a crash would; EE's tasks go on) and
a freeze past the lease (SIGSTOP, then SIGCONT)."""

import contextlib
import os
import signal
import time

import pytest

from support import devserver

LEASE = 3  # seconds: short, to keep the drill short (the default is 10)


@pytest.fixture
def cluster(pg_cluster, start_server, make_sim, tmp_path):
    """start(name) starts a node of one cluster; the library, the store."""
    lib = make_sim("cluster", time_scale=50.0, files=40, tapes=4)  # a recall takes seconds
    url = pg_cluster.create_database(f"cluster{time.monotonic_ns()}")

    def start(name: str):
        command = devserver.eeadm_wrapper(tmp_path / f"eeadm-{name}", lib.root, lib.calls)
        return start_server(
            STORE_URL=url,
            NODE_NAME=name,
            STATE_DIR=str(tmp_path / f"state-{name}"),
            STAGER_LEASE=str(LEASE),
            EEADM_COMMAND=command[0],
            EEADM_SIM_DIR=str(lib.root),
            MANAGED_ROOTS=str(lib.fs),
            BATCH_WINDOW="1",
            PREFETCH="false",
        )

    store = devserver.open_store({"STATE_DIR": str(tmp_path / "cli"), "STORE_URL": url})
    yield lib, store, start
    store.close()


def crash(server, store, node: str) -> None:
    """kill -9 of a node: gunicorn and the `eeadm recall` clients it started."""
    server.kill(signal.SIGKILL)
    for batch in store.queue.running_batches():
        if batch.node == node and batch.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(batch.pid, signal.SIGKILL)


def test_two_nodes_lose_nothing_to_kill_9_and_a_frozen_leader(cluster, run_client, wait_for):
    lib, store, start = cluster
    servers = {"n1": start("n1"), "n2": start("n2")}
    urls = ",".join(s.url for s in servers.values())
    files = lib.files("M")[:24]
    runs: list[int] = []

    def leader() -> str | None:
        lease = store.leases.current()
        return lease.node if lease.running else None

    def poll_all(some: list[str] = files) -> set[str]:
        said = set()
        for n, path in enumerate(some):
            res = run_client(urls, path, GLOBUS_STAGE_TASKID=f"task{n % 2}", TIMEOUT="2")
            runs.append(res.returncode)
            assert res.returncode == 0, res.stderr
            said.add(res.stdout.strip())
        return said

    def other_leader(old: str) -> str | None:
        now = leader()
        return now if now not in (None, old) else None

    def a_recall_runs() -> bool:
        return bool(store.queue.running_batches())

    first = wait_for(leader, 30, "a leader")
    for round_, fault in enumerate(("kill", "kill", "stop")):
        poll_all(files[round_ * 6 : round_ * 6 + 6])  # new files: a recall to interrupt
        wait_for(a_recall_runs, 30, "a recall in flight")
        old, epoch = leader(), store.leases.current().epoch
        if fault == "kill":
            crash(servers[old], store, old)
        else:
            os.killpg(servers[old].gunicorn.proc.pid, signal.SIGSTOP)
        try:
            new = wait_for(lambda o=old: other_leader(o), LEASE * 3 + 5, "a take-over")
            assert store.leases.current().epoch == epoch + 1
        finally:
            if fault == "stop":
                os.killpg(servers[old].gunicorn.proc.pid, signal.SIGCONT)
        if fault == "kill":
            servers[old] = start(old)  # the node comes back, as a standby
            urls = ",".join(s.url for s in servers.values())
        assert new != old
    wait_for(lambda: poll_all() == {"resident"}, 120, "every file on disk")
    assert set(runs) == {0} and len(runs) >= 18 + len(files)
    assert first is not None and store.leases.current().epoch == 4
    # the frozen leader woke to a lease that was no longer its own, and said so
    frozen_log = servers[old].gunicorn.log.read_text()
    assert "is lost; stepping down" in frozen_log or "write refused" in frozen_log
    assert "Traceback" not in frozen_log
    # each file read from tape at most once more than the recall in flight
    reads = lib.reads_per_file()
    assert set(reads) == set(files) and max(reads.values()) <= 2
