"""The web tier's eeadm lookups when eeadm hangs: bulkhead and breaker, real subprocesses."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from flask_caching.backends import SimpleCache

from ltfsee_globus.eeadm import Eeadm, EeadmError
from ltfsee_globus.lookup import LookupBusy, StateLookup
from ltfsee_globus.parse import FileState
from support import devserver

RECALL = "/api/v0.5/globus_recall/globus_recall"


class Cache:
    """flask-caching's SimpleCache with the two methods StateLookup uses."""

    def __init__(self):
        self.backend = SimpleCache()

    def get(self, key):
        return self.backend.get(key)

    def set_many(self, mapping):
        return self.backend.set_many(mapping)


@pytest.fixture
def switchable(fake_eeadm, tmp_path):
    """An eeadm whose `file state` hangs while tmp_path/hang exists, takes a
    second while hang.slow exists, and answers every path as migrated; each
    call appends a line to tmp_path/calls."""
    hang = tmp_path / "hang"
    calls = tmp_path / "calls"
    command = fake_eeadm(
        f"""\
        echo call >> '{calls}'
        if [ -e '{hang}' ]; then exec sleep 60; fi
        if [ -e '{hang}.slow' ]; then sleep 1; fi
        shift 4
        for p in "$@"; do echo "M  1  T00001L8@pool1@lib1  -  -  -- $p"; done
        """
    )
    hang.touch()
    return command, hang, calls


def make_lookup(command, clock, **kw):
    return StateLookup(Eeadm(command, timeout=0.5), Cache(), max_files=100, clock=clock, **kw)


def test_a_timeout_opens_the_breaker_then_a_probe_closes_it(switchable, clock):
    command, hang, calls = switchable
    lookup = make_lookup(command, clock, breaker_seconds=30)
    with pytest.raises(EeadmError) as first:
        lookup.fetch(["/gpfs/a"])
    assert first.value.timed_out and lookup.breaker_open()
    started = time.monotonic()
    with pytest.raises(LookupBusy) as refused:
        lookup.fetch(["/gpfs/b"])
    assert time.monotonic() - started < 0.1 and refused.value.retry_after == 30
    assert len(calls.read_text().splitlines()) == 1  # refused without running eeadm
    clock.advance(31)
    with pytest.raises(EeadmError) as probe:  # the probe hangs too: open again
        lookup.fetch(["/gpfs/c"])
    assert probe.value.timed_out and lookup.breaker_open()
    hang.unlink()
    clock.advance(31)
    got = lookup.fetch(["/gpfs/d"])  # the probe answers: closed
    assert isinstance(got["/gpfs/d"], FileState) and not lookup.breaker_open()
    assert isinstance(lookup.fetch(["/gpfs/e"])["/gpfs/e"], FileState)


def test_the_bulkhead_refuses_at_once_beyond_max_waiting(switchable, clock, tmp_path):
    command, hang, calls = switchable
    hang.rename(hang.with_suffix(".slow"))  # each call takes a second
    lookup = StateLookup(
        Eeadm(command, timeout=5), Cache(), max_files=1, clock=clock, max_waiting=2
    )
    results = []

    def wait_one(path):
        try:
            results.append(lookup.fetch([path]))
        except EeadmError as exc:
            results.append(exc)

    threads = [threading.Thread(target=wait_one, args=(f"/gpfs/{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while not calls.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(LookupBusy) as busy:
        lookup.fetch(["/gpfs/third"])
    assert time.monotonic() - started < 0.1 and "2 eeadm lookups" in str(busy.value)
    followed = []
    started = time.monotonic()
    assert lookup.state("/gpfs/deferred", then=followed.append) is None  # joins the next call
    assert time.monotonic() - started < 0.1
    for t in threads:
        t.join()
    assert len(results) == 2
    assert [(s.path, s.letter) for s in followed] == [("/gpfs/deferred", "M")]
    assert isinstance(lookup.fetch(["/gpfs/later"])["/gpfs/later"], FileState)


def test_a_hanging_eeadm_leaves_the_web_tier_answering(make_sim, start_server, tmp_path):
    """64 polls of unknown files while `eeadm file state` hangs: each is answered
    within EEADM_TIMEOUT + 1 s (503/504, Retry-After on 503), while /healthz and a
    poll the store answers stay quick. (The latency figures: bench/hang.py.)"""
    sim = make_sim("hang", files=100, dirs=2, tapes=2, premigrated=0, resident=0)
    files = sim.files("M")
    hang = tmp_path / "hang-now"
    command = devserver.eeadm_wrapper(
        tmp_path / "hanging-eeadm",
        sim.root,
        tmp_path / "hang-calls",
        before=f"if [ \"$1 $2\" = 'file state' ] && [ -e '{hang}' ]; then exec sleep 60; fi\n",
    )
    server = start_server(
        EEADM_COMMAND=" ".join(command),
        MANAGED_ROOTS=str(sim.fs),
        EEADM_SIM_DIR=str(sim.root),
        EEADM_TIMEOUT=2,
        PREFETCH="false",
        STAGER="off",
        WORKERS=1,
    )
    assert server.post(RECALL, {"path": files[0]}).json() == {"state": "archived"}
    hang.touch()  # from now on `file state` hangs

    def poll(path):
        t = time.monotonic()
        r = server.post(RECALL, {"path": path})
        return r.status_code, r.headers.get("Retry-After"), time.monotonic() - t

    with ThreadPoolExecutor(64) as pool:
        storm = [pool.submit(poll, p) for p in files[1:65]]
        time.sleep(0.5)
        queued = [poll(files[0]) for _ in range(5)]  # the store answers these
        t = time.monotonic()
        healthy = requests.get(server.url + "/healthz", timeout=5).ok
        health_s = time.monotonic() - t
        answers = [f.result() for f in storm]
    assert {a[0] for a in queued} == {201} and max(a[2] for a in queued) < 1.0
    assert healthy and health_s < 1.0
    # the seats wait and time out (504), polls beyond them are answered "archived" at
    # once (their lookup joins the next call), later ones 503 while the breaker is open
    statuses = {a[0] for a in answers}
    assert statuses <= {201, 503, 504} and {201, 504} <= statuses
    assert all(a[1] for a in answers if a[0] == 503)
    assert max(a[2] for a in answers) < 2 + 1
