"""Several tape libraries: each file is recalled from a library that holds a copy."""

import pytest
import requests

from ltfsee_globus.api.context import services
from ltfsee_globus.placement import NoCopy, Placement, place, task_rank
from ltfsee_globus.sim.library import Library
from ltfsee_globus.stager import Stager
from ltfsee_globus.store import FAILED, Update
from support import devserver
from support.devserver import eeadm_wrapper

A0 = "JD0000L9@POOL0@lib0"
A2 = "JD0002L9@POOL0@lib0"
B1 = "JD0001L9@POOL1@lib1"
C2 = "JD0009L9@POOL1@lib2"
LIBS = ["lib0", "lib1"]
FIRST = min(LIBS, key=task_rank("task-7", LIBS).__getitem__)  # the md5 rule's pick


# (case, tapes, libraries, place() keywords, busy tapes, load, expected or NoCopy)
CASES = [
    ("no libraries configured", [A0, B1], [], {}, set(), {}, Placement(None, A0)),
    (
        "explicit holding no copy, none configured",
        [A0],
        [],
        {"explicit": "x"},
        set(),
        {},
        Placement(None, A0),
    ),
    (
        "explicit holding a copy, none configured",
        [B1, A0],
        [],
        {"explicit": "lib0"},
        set(),
        {},
        Placement("lib0", A0),
    ),
    ("one copy, in lib1", [B1], LIBS, {}, set(), {}, Placement("lib1", B1)),
    ("copy on a busy tape wins", [A0, B1], LIBS, {}, {B1}, {"lib1": 99}, Placement("lib1", B1)),
    ("then the lighter library", [A0, B1], LIBS, {}, set(), {"lib0": 5}, Placement("lib1", B1)),
    (
        "then the task's md5",
        [A0, B1],
        LIBS,
        {"taskid": "task-7"},
        set(),
        {},
        Placement(FIRST, A0 if FIRST == "lib0" else B1),
    ),
    (
        "explicit holds a copy",
        [A0, B1],
        LIBS,
        {"explicit": "lib0"},
        {B1},
        {},
        Placement("lib0", A0),
    ),
    ("explicit holds none", [B1], LIBS, {"explicit": "lib0"}, set(), {}, Placement("lib1", B1)),
    ("a copy outside LTFSEE_LIB is skipped", [C2, B1], LIBS, {}, set(), {}, Placement("lib1", B1)),
    ("no copy in LTFSEE_LIB", [C2], LIBS, {}, set(), {}, NoCopy),
    (
        "retry avoids the failed library",
        [A0, B1],
        LIBS,
        {"avoid": "lib1"},
        {B1},
        {},
        Placement("lib0", A0),
    ),
    (
        "unless it holds the only copy",
        [A0, A2],
        LIBS,
        {"avoid": "lib0"},
        set(),
        {},
        Placement("lib0", A0),
    ),
    (
        "eeadm named no library: the md5 rule",
        ["JD0000L9"],
        LIBS,
        {"taskid": "task-7"},
        set(),
        {},
        Placement(FIRST, "JD0000L9"),
    ),
]


@pytest.mark.parametrize(("case", "tapes", "libraries", "kw", "busy", "load", "expected"), CASES)
def test_placement(case, tapes, libraries, kw, busy, load, expected):
    asked = []

    def busy_of(candidates):
        asked.append(list(candidates))
        return busy & set(candidates)

    def go():
        return place(tapes, libraries, busy=busy_of, load=lambda: load, **kw)

    if expected is NoCopy:
        with pytest.raises(NoCopy, match="its copies are in lib2"):
            go()
        return
    assert go() == expected
    if len({t for t in tapes if t.split("@")[-1] in libraries}) < 2:
        assert asked == []  # no choice to make: the store is not asked


def lib_server(make_sim, start_server, **layout):
    sim = make_sim(
        "two", dirs=4, tapes=4, drives=1, libraries=2, premigrated=0, resident=0, **layout
    )
    env = {
        "EEADM_COMMAND": " ".join(sim.command),
        "MANAGED_ROOTS": str(sim.fs),
        "EEADM_SIM_DIR": str(sim.root),
        "PREFETCH": "false",
    }
    return sim, env


def recalls_by_library(sim) -> dict[str, int]:
    """Files each library read, checking each recall read only its own tapes."""
    rows = sim._query(
        "SELECT t.library, tp.library, count(*) FROM task_files tf "
        "JOIN tasks t ON t.id = tf.task_id JOIN tapes tp ON tp.volser = tf.tape "
        "WHERE tf.ok = 1 GROUP BY t.library, tp.library"
    )
    assert all(asked == held for asked, held, _ in rows), rows
    return {asked: n for asked, _, n in rows}


def test_two_libraries_one_copy_every_file_resident_from_its_own_library(
    make_sim, start_server, run_client, wait_for
):
    sim, env = lib_server(make_sim, start_server, files=40)
    server = start_server(**env, LTFSEE_LIB="lib0,lib1", BATCH_WINDOW=2, BATCH_QUIET=1)
    files = sim.files("M")
    assert {t.split("@")[2] for t in sim.tapes().values()} == {"lib0", "lib1"}
    assert {run_client(server.url, p).stdout for p in files} == {"archived\n"}
    wait_for(lambda: all(sim.state_of(p) == "P" for p in files), timeout=60, what="all on disk")
    assert {run_client(server.url, p).stdout for p in files} == {"resident\n"}
    split = recalls_by_library(sim)
    assert split == {"lib0": 20, "lib1": 20}
    assert all(c.split()[-2] == "-l" for c in sim.invocations("recall"))
    store = devserver.open_store(server.env)
    assert store.ops.counts().files["failed"] == 0 and store.ops.counts().totals["retried"] == 0
    store.close()


def test_two_copies_spread_over_both_libraries_and_mount_each_tape_once(
    make_sim, start_server, headers, wait_for
):
    sim, env = lib_server(make_sim, start_server, files=80, copies=2)
    server = start_server(**env, LTFSEE_LIB="lib0,lib1", BATCH_WINDOW=3, BATCH_QUIET=1)
    files = sim.files("M")
    with requests.Session() as s:
        for p in files:
            r = s.post(
                server.url + "/api/v0.5/globus_recall/globus_recall",
                json={"path": p, "globus_taskid": "task-1"},
                headers=headers,
                timeout=30,
            )
            assert r.json() == {"state": "archived"}
    wait_for(lambda: all(sim.state_of(p) == "P" for p in files), timeout=60, what="all on disk")
    split = recalls_by_library(sim)
    stats = sim._query("SELECT name, value FROM counters")
    mounts = dict(stats)["mounts"]
    tapes_read = sim._query("SELECT count(DISTINCT tape) FROM task_files WHERE ok = 1")[0][0]
    print(f"\ntwo copies of 80 files: recalled {split}, {mounts:.0f} mounts of {tapes_read} tapes")
    assert set(split) == {"lib0", "lib1"} and sum(split.values()) == 80
    assert mounts == tapes_read  # each tape read was mounted once


def test_a_file_with_no_copy_in_our_libraries_fails_clearly_once(
    make_sim, start_server, run_client
):
    sim, env = lib_server(make_sim, start_server, files=8)
    server = start_server(**env, LTFSEE_LIB="lib0")
    path = next(p for p, t in sim.tapes().items() if t.endswith("@lib1"))
    outcomes = [run_client(server.url, path) for _ in range(4)]
    assert {(r.returncode, r.stdout) for r in outcomes} == {(6, "")}
    assert "no copy of the file is in a library this service recalls from (lib0)" in (
        outcomes[0].stderr
    )
    assert "its copies are in lib1" in outcomes[-1].stderr
    assert sim.invocations("recall") == []  # never tried
    assert len(sim.invocations("file state")) == 1  # later polls answered from the store


def test_a_library_that_fails_sends_its_files_to_their_copies_elsewhere(
    make_sim, make_app, headers, tmp_path, wait_for
):
    """lib0 refuses every recall: its files come back from their copies in lib1."""
    sim = make_sim(
        "down",
        files=20,
        dirs=2,
        tapes=4,
        drives=1,
        libraries=2,
        copies=2,
        premigrated=0,
        resident=0,
    )
    command = eeadm_wrapper(
        tmp_path / "eeadm-lib0-down",
        sim.root,
        tmp_path / "calls",
        before=(
            'case "$*" in *"-l lib0"*) echo "GLESL999E: library lib0 is offline"; exit 1;; esac\n'
        ),
    )
    app = make_app(
        EEADM_COMMAND=command,
        MANAGED_ROOTS=[str(sim.fs)],
        LTFSEE_LIB=["lib0", "lib1"],
        PREFETCH=False,
        RECALL_RETRY_DELAY=600,
    )
    client = app.test_client()
    files = sim.files("M")
    for p in files:
        r = client.post(
            "/api/v0.5/globus_recall/globus_recall",
            json={"path": p, "globus_taskid": "t", "library": "lib0"},
            headers=headers,
        )
        assert r.get_json() == {"state": "archived"}
    store = services(app).store
    assert {f.library for f in store.ops.files(limit=50)} == {"lib0"}  # asked for, and held
    services(app).start_stager()
    wait_for(lambda: all(sim.state_of(p) == "P" for p in files), timeout=60, what="all on disk")
    totals = store.ops.counts().totals
    assert totals["retried"] == 20 and totals["failed"] == 0
    calls = (tmp_path / "calls").read_text().splitlines()
    libraries = [c.split()[-1] for c in calls if c.startswith("recall")]
    assert set(libraries) == {"lib0", "lib1"} and libraries == sorted(libraries)  # lib0 first
    assert recalls_by_library(sim) == {"lib1": 20}


def test_an_explicit_library_without_a_copy_is_overridden_and_said_once(
    make_sim, make_app, headers, caplog
):
    sim = make_sim("lib1", files=8, dirs=2, tapes=2, libraries=2, premigrated=0, resident=0)
    app = make_app(
        EEADM_COMMAND=sim.command,
        MANAGED_ROOTS=[str(sim.fs)],
        LTFSEE_LIB=["lib0", "lib1"],
        PREFETCH=False,
    )
    client = app.test_client()
    on_lib1 = [p for p, t in sorted(sim.tapes().items()) if t.endswith("@lib1")][:3]
    caplog.set_level("INFO", logger="ltfsee_globus")
    for p in on_lib1:
        r = client.post(
            "/api/v0.5/globus_recall/globus_recall",
            json={"path": p, "globus_taskid": "t9", "library": "lib0"},
            headers=headers,
        )
        assert r.get_json() == {"state": "archived"}
    store = services(app).store
    assert {store.polls.lookup(p).library for p in on_lib1} == {"lib1"}
    notes = [r for r in caplog.records if "holds no copy" in r.getMessage()]
    assert len(notes) == 1 and "task t9 asked for library lib0" in notes[0].getMessage()


def test_a_named_library_holding_no_copy_never_reaches_eeadm(make_app, sim, headers, caplog):
    """LTFSEE_LIB unset and a client names a library that does not exist: the
    recall names no library, and a failed attempt waits RECALL_RETRY_DELAY
    (it is never 'retried at once' from a copy in library None)."""
    ok, damaged = sim.files("M")[:2]
    lib = Library(sim.root)
    lib.damage([damaged])
    lib.close()
    app = make_app(PREFETCH=False, RECALL_RETRY_DELAY=600, RECALL_MAX_ATTEMPTS=3)
    svc = services(app)
    client = app.test_client()
    for path in (ok, damaged):
        body = {"path": path, "globus_taskid": "t1", "library": "nolib"}
        resp = client.post("/api/v0.5/globus_recall/globus_recall", json=body, headers=headers)
        assert resp.get_json() == {"state": "archived"}
    assert {svc.store.polls.lookup(p).library for p in (ok, damaged)} == {""}
    stager = Stager(svc.settings, svc.store, svc.eeadm)
    stager.step()
    stager.wait_idle()
    assert [c for c in sim.invocations("recall") if "nolib" in c or "-l" in c] == []
    assert svc.store.polls.lookup(ok).status == "done"
    rec = svc.store.polls.lookup(damaged)
    assert rec.status == "queued" and rec.not_before >= svc.clock() + 500
    assert "retried at once" not in caplog.text and "library None" not in caplog.text


def test_retry_places_a_failed_file_again(make_app, sim, run_cli):
    """A file that failed in a library holding no copy of it is queued again
    from where its copies are, not from the library that failed it."""
    path = sim.files("M")[0]
    store = services(make_app(PREFETCH=False)).store
    store.polls.request(path, "nolib", "globus", "t1")  # as an older release recorded it
    batch_id, _ = store.queue.claim("nolib", 10)
    store.queue.finish_batch(
        batch_id,
        outcome="failed",
        detail="",
        eeadm_task_id=None,
        updates=[Update(path, FAILED, last_error="GLESL012E: Library nolib does not exist")],
    )
    res = run_cli("retry", path)
    assert (res.returncode, res.stdout) == (0, "retry: 1 file(s)\n"), res.stderr
    rec = store.polls.lookup(path)
    assert (rec.status, rec.library, rec.attempts) == ("queued", "", 0)
    assert rec.tape == sim.tapes()[path]
