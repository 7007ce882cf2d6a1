"""Prefetch on evidence: the decision on a fake tree, then the prefetcher on the real
store and simulator."""

import json
import os
import posixpath
import random

import pytest

from ltfsee_globus.api.context import services
from ltfsee_globus.prefetch import WINDOW, Outlook, Prefetcher, Tree, assess, walk_key

RECALL = "/api/v0.5/globus_recall/globus_recall"

# -- the decision, on a fake tree ---------------------------------------------------------
# /fs/p/set0/run000..run003 and /fs/p/set1/run004..run007, 50 files each, f000..f049.
DIRS = [f"/fs/p/set{d // 4}/run{d:03d}" for d in range(8)]
FILES = [f"{d}/f{i:03d}" for d in DIRS for i in range(50)]


def fake_tree(paths):
    """A Tree whose listings come from `paths` (every file has size 1)."""
    children: dict[str, dict[str, bool]] = {}
    for p in paths:
        parts = p.split("/")
        for n in range(2, len(parts) + 1):
            parent, name = "/".join(parts[: n - 1]) or "/", parts[n - 1]
            children.setdefault(parent, {})[name] = n < len(parts)
    return Tree(lambda d: sorted((n, is_dir, 1) for n, is_dir in children.get(d, {}).items()))


def in_dir(d, idx):
    return [f"{DIRS[d]}/f{i:03d}" for i in idx]


def first(n, start=0):
    return FILES[start : start + n]


rng = random.Random(3)
CASES = {
    # name: (asked, on disk, widen, expected outlook)
    "fewer than a window: all is shown": (first(WINDOW - 1), set(), 1, Outlook(False)),
    "one whole directory (50 files)": (in_dir(2, range(50)), set(), 1, Outlook(False)),
    "a tree from its first file": (
        first(WINDOW),
        set(),
        1,
        Outlook(True, "/fs/p/set0", "/fs/p", FILES[WINDOW - 1]),
    ),
    "a tree, no widening": (
        first(WINDOW),
        set(),
        0,
        Outlook(True, "/fs/p/set0", None, FILES[WINDOW - 1]),
    ),
    "second set: the bet stops where the walk did not start": (
        first(WINDOW, start=200),
        set(),
        1,
        Outlook(True, "/fs/p/set1", None, FILES[200 + WINDOW - 1]),
    ),
    "folders picked inside a set: only the one being walked": (
        in_dir(2, range(50)) + in_dir(3, range(14)),
        set(),
        1,
        Outlook(True, DIRS[3], None, f"{DIRS[3]}/f013"),
    ),
    "a range from mid-directory: only the directory entered at its start": (
        in_dir(1, range(10, 50)) + in_dir(2, range(30)),
        set(),
        1,
        Outlook(True, DIRS[2], None, f"{DIRS[2]}/f029"),
    ),
    "a run of files skipped on tape: a selection": (
        in_dir(1, range(10, 50)) + in_dir(2, range(5, 40)),
        set(),
        1,
        Outlook(False),
    ),
    "every other file: a filter": (FILES[0:128:2], set(), 1, Outlook(False)),
    "scattered picks": (rng.sample(FILES, WINDOW), set(), 1, Outlook(False)),
    "skipped files already on disk still make a walk": (
        [f for f in first(WINDOW + 3) if f not in FILES[10:13]],
        set(FILES[10:13]),
        1,
        Outlook(True, "/fs/p/set0", "/fs/p", FILES[WINDOW + 2]),
    ),
    "a skipped file on tape makes a selection": (
        [f for f in first(WINDOW + 1) if f != FILES[10]],
        set(),
        1,
        Outlook(False),
    ),
    "the newest window may still have requests on the way": (
        [f for f in first(2 * WINDOW) if f not in FILES[WINDOW + 5 : WINDOW + 9]],
        set(),
        1,
        Outlook(True, "/fs/p/set0", "/fs/p", FILES[2 * WINDOW - 1]),
    ),
    "a gap with a whole window after it was skipped": (
        [f for f in first(2 * WINDOW + 10) if f not in FILES[WINDOW + 5 : WINDOW + 9]],
        set(),
        1,
        Outlook(False),
    ),
    "requests arrive in any order": (
        list(reversed(first(WINDOW))),
        set(),
        1,
        Outlook(True, "/fs/p/set0", "/fs/p", FILES[WINDOW - 1]),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_assess(name):
    asked, disk, widen, expected = CASES[name]
    got = assess(asked, fake_tree(FILES), ["/fs"], widen=widen, on_disk=lambda ps: disk & set(ps))
    assert got == expected


def test_a_memo_checks_only_new_requests_and_still_sees_a_later_skip():
    tree, memo = fake_tree(FILES), {}

    def outlook(asked, memo=None):
        return assess(asked, tree, ["/fs"], widen=1, on_disk=lambda ps: set(), memo=memo)

    for n in (WINDOW, 100, 150, 200):
        assert outlook(first(n), memo) == outlook(first(n))
    assert memo["upto"] == 200 - WINDOW
    skipped = first(200) + FILES[201:300]  # FILES[200] passed over, a window ago
    assert outlook(skipped, memo) == Outlook(False) == outlook(skipped)


def test_the_scope_and_the_bet_never_reach_a_managed_root():
    # the walk starts at the first file of the managed root itself: only set0 is in scope
    got = assess(first(WINDOW), fake_tree(FILES), ["/fs/p"], widen=3, on_disk=lambda ps: set())
    assert got == Outlook(True, "/fs/p/set0", None, FILES[WINDOW - 1])
    # two top-level directories of a managed root: their ancestor is the root, so only
    # the directory being walked is guessed
    asked = in_dir(3, range(40, 50)) + in_dir(4, range(50)) + in_dir(5, range(4))
    got = assess(asked, fake_tree(FILES), ["/fs/p"], widen=3, on_disk=lambda ps: set())
    assert got == Outlook(True, DIRS[5], None, f"{DIRS[5]}/f003")


def test_tree_walks_in_globus_order_and_resumes_after_a_path():
    paths = ["/r/a/x", "/r/a.txt", "/r/b/c/y", "/r/b/z", "/r/c"]
    tree = fake_tree(paths)
    order = sorted(paths, key=walk_key)
    assert [p for p, _ in tree.walk("/r")] == order == ["/r/a/x", "/r/a.txt", *paths[2:]]
    assert [p for p, _ in tree.walk("/r", after="/r/a.txt")] == ["/r/b/c/y", "/r/b/z", "/r/c"]
    assert [p for p, _ in tree.walk("/r/b", after="/r/b/c/y")] == ["/r/b/z"]
    assert tree.between("/r/a/x", "/r/b/z", 5) == ["/r/a.txt", "/r/b/c/y"]
    assert tree.between("/r/a/x", "/r/c", 1) is None
    assert tree.first_file("/r/b") == "/r/b/c/y"


# -- the prefetcher on the real store and simulator ----------------------------------------


@pytest.fixture
def big(make_sim):
    """400 migrated files: demo/set0/run000..run003, demo/set1/run004..run007 (50 each);
    directory d is on tape d % 6, so set1's run006 and run007 share tapes with set0."""
    return make_sim("big", files=400, dirs=8, groups=2, tapes=6, premigrated=0, resident=0)


@pytest.fixture
def pf_app(make_app, big, tmp_path):
    def make(**overrides):
        app = make_app(
            EEADM_COMMAND=big.command,
            MANAGED_ROOTS=[str(big.root)],
            STATE_DIR=str(tmp_path / "pf-state"),
            **overrides,
        )
        return app

    return make


def ask(svc, sim, paths, task="task-1"):
    """What the web tier records for a Globus poll of a migrated file."""
    tapes = sim.tapes()
    for p in paths:
        svc.store.polls.request(
            p, None, "globus", task, size=1, tape=tapes[p], trigger_prefetch=True
        )


def prefetched(store, status=None):
    rows = store.ops.files(status=status, limit=10**6)
    return sorted((r.path for r in rows if r.prefetched), key=walk_key)


def test_a_walk_through_a_tree_queues_its_rest(pf_app, big):
    svc = services(pf_app())
    files = sorted(big.files("M"), key=walk_key)
    ask(svc, big, files[:WINDOW])
    n = Prefetcher(svc.settings, svc.store, svc.eeadm).run_triggers()
    # the rest of set0 for sure; of the wider tree only run006 and run007, whose tapes
    # set0 mounts anyway (run004 and run005 would each cost a mount)
    expected = [p for p in files if "/set0/" in p][WINDOW:] + [
        p for p in files if "/run006/" in p or "/run007/" in p
    ]
    assert prefetched(svc.store) == expected and n == len(expected)
    status = svc.store.ops.counts().prefetch
    assert status["files"] == n and status["asked_files"] == 0


def test_scattered_picks_prefetch_nothing(pf_app, big):
    svc = services(pf_app())
    ask(svc, big, random.Random(1).sample(big.files("M"), WINDOW + 10))
    assert Prefetcher(svc.settings, svc.store, svc.eeadm).run_triggers() == 0
    assert big.invocations("file state") == [], "a selection needs no eeadm call"


def test_a_miss_drops_the_queued_guesses_and_counts_them(pf_app, big):
    svc = services(pf_app())
    files = sorted(big.files("M"), key=walk_key)
    pf = Prefetcher(svc.settings, svc.store, svc.eeadm)
    ask(svc, big, files[:WINDOW])
    queued = pf.run_triggers()
    guesses = prefetched(svc.store)
    assert queued == len(guesses) > 0
    picks = [files[WINDOW + 20], files[-1]]  # a guess, then a jump: a selection after all
    ask(svc, big, picks)
    pf.run_triggers()
    hits = [p for p in picks if p in guesses]
    assert prefetched(svc.store, "queued") == hits  # only the guesses a client asked for
    stats = svc.store.ops.counts().prefetch
    assert stats["asked_files"] == len(hits) >= 1
    assert stats["dropped_files"] == queued - len(hits)
    [task] = svc.store.prefetch.tasks()
    assert task.taskid == "task-1" and task.dropped_bytes > 0


@pytest.mark.parametrize(
    ("budget", "expected"),
    [({"PREFETCH_MAX_FILES": 5}, 5), ({"PREFETCH_MAX_BYTES": 1}, 0)],
)
def test_budget_bounds_unconfirmed_guesses(pf_app, big, budget, expected):
    svc = services(pf_app(**budget))
    files = sorted(big.files("M"), key=walk_key)
    pf = Prefetcher(svc.settings, svc.store, svc.eeadm)
    ask(svc, big, files[:WINDOW])
    assert pf.run_triggers() == expected
    got = prefetched(svc.store)
    assert got == files[WINDOW : WINDOW + expected]  # the ones Globus asks for next
    if expected:
        ask(svc, big, got[:2])  # confirmed guesses free room for as many more
        assert pf.run_triggers() == 2


def test_prefetch_can_be_turned_off_per_root(pf_app, big):
    svc = services(pf_app(PREFETCH_EXCLUDE=[str(big.fs / "demo")]))
    ask(svc, big, sorted(big.files("M"), key=walk_key)[:WINDOW])
    assert Prefetcher(svc.settings, svc.store, svc.eeadm).run_triggers() == 0


def test_polls_feed_the_prefetcher_and_hits_are_counted(pf_app, big, headers):
    """End to end through the Globus endpoint: a window of polls, the guesses,
    then a poll of a guess is answered from the store and counted as a hit."""
    app = pf_app()
    svc = services(app)
    client = app.test_client()
    files = sorted(big.files("M"), key=walk_key)

    def poll(path):
        resp = client.post(
            RECALL,
            data=json.dumps({"path": path, "globus_taskid": "t1"}),
            headers=headers,
            content_type="application/json",
        )
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return resp.get_json()["state"]

    assert {poll(p) for p in files[:WINDOW]} == {"archived"}
    pf = Prefetcher(svc.settings, svc.store, svc.eeadm)
    queued = pf.run_triggers()
    assert queued > 0
    calls = len(big.invocations())
    assert poll(files[WINDOW]) == "archived"
    assert len(big.invocations()) == calls  # a queued guess needs no eeadm
    status = client.get("/api/status", headers=headers).get_json()["prefetch"]
    assert (status["files"], status["asked_files"], status["dropped_files"]) == (queued, 1, 0)
    assert [t["taskid"] for t in status["tasks"]] == ["t1"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'ltfsee_prefetch_files_total{{outcome="queued"}} {float(queued)}' in metrics
    assert 'ltfsee_prefetch_files_total{outcome="asked"} 1.0' in metrics
    assert 'ltfsee_prefetch_files_total{outcome="dropped"} 0.0' in metrics
    assert posixpath.dirname(files[WINDOW]) in {posixpath.dirname(p) for p in files[:WINDOW]}


def test_prefetch_off_queues_only_what_was_asked(pf_app, big, headers):
    app = pf_app(PREFETCH=False)
    svc = services(app)
    resp = app.test_client().post(
        RECALL,
        data=json.dumps({"path": big.files("M")[0], "globus_taskid": "t1"}),
        headers=headers,
        content_type="application/json",
    )
    assert resp.status_code == 201
    assert svc.store.prefetch.take_triggers() == []


HOSTILE_NAMES = [b"-rf", b"a*b", b"q?", b"[x]", b"tab\tx", b"nl\nx", b"del\x7fx", b"\xff.dat"]


def test_prefetch_never_hands_eeadm_a_name_the_api_refuses(pf_app, big):
    """Names found by walking the tree meet the API's path rules before they
    reach the store or `eeadm` (a newline would split eeadm's output)."""
    svc = services(pf_app())
    files = sorted(big.files("M"), key=walk_key)
    directory = os.fsencode(posixpath.dirname(files[0]))
    for name in HOSTILE_NAMES:
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"x")
    ask(svc, big, files[:WINDOW])
    assert Prefetcher(svc.settings, svc.store, svc.eeadm).run_triggers() > 0
    calls = big.calls.read_bytes()
    stored = {r.path for r in svc.store.ops.files(limit=10**6)}
    assert [n for n in HOSTILE_NAMES if n in calls] == []
    assert [p for p in stored if not p.isprintable() or "*" in p or "/-" in p] == []
