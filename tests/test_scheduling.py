"""The scheduling policy (scheduling.plan) on tables of situations: no store,
no eeadm, no clock but the one given."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ltfsee_globus.scheduling import AGED, Running, Start, TapeWork, Window, due, gather, plan

NOW = 10_000.0
GB = 10**9


def tape(
    name: str,
    who: str = "restore",
    *,
    files: int = 10,
    gb: int = 10,
    age: float = 100.0,
    library: str = "lib",
    priority: int = 0,
    also: tuple[str, ...] = (),
    prefetched: bool = False,
) -> TapeWork:
    """What waits for tape `name`: `files` files, `gb` GB, the oldest `age` s
    old, asked for by a client (or only queued by prefetch)."""
    return TapeWork(
        library,
        name,
        files,
        gb * GB,
        NOW - age,
        frozenset((who, *also)),
        priority,
        asked=0 if prefetched else files,
    )


def run(name: str | None, *who: str, library: str = "lib") -> Running:
    return Running(library, name, frozenset(who))


def tapes(starts: list[Start]) -> list[str]:
    return [s.tape for s in starts]


CASES = [
    # (what it shows, queue, drives, running, keyword arguments, tapes started)
    (
        "free drives take the biggest tapes first",
        [tape("T1", gb=5), tape("T2", gb=50), tape("T3", gb=20)],
        {"lib": 2},
        [],
        {},
        ["T2", "T3"],
    ),
    (
        "a tape a client waits for before bigger ones only prefetch queued",
        [
            tape("T1", "globus:t", gb=90, prefetched=True),
            tape("T2", "globus:t", gb=5),
            tape("T3", "globus:t", gb=50, prefetched=True),
        ],
        {"lib": 2},
        [],
        {},
        ["T2", "T1"],
    ),
    (
        "tapes only prefetch wants go in the order they were queued, not by size",
        [
            tape("T1", "globus:t", gb=90, age=50, prefetched=True),
            tape("T2", "globus:t", gb=5, age=70, prefetched=True),
            tape("T3", "globus:t", gb=50, age=60, prefetched=True),
        ],
        {"lib": 2},
        [],
        {},
        ["T2", "T3"],
    ),
    (
        "the drive that read a tape goes on with it, even if only prefetch wants it",
        [tape("T1", "globus:t", prefetched=True), tape("T2", "globus:t", gb=50)],
        {"lib": 1},
        [],
        {"mounted": {("lib", "T1")}},
        ["T1"],
    ),
    (
        "no free drive: nothing starts",
        [tape("T1"), tape("T2")],
        {"lib": 2},
        [run("T8", "x"), run("T9", "x")],
        {},
        [],
    ),
    (
        "a tape being read is not started twice (a drive stays free)",
        [tape("T1", gb=90), tape("T2")],
        {"lib": 3},
        [run("T1", "restore")],
        {},
        ["T2"],
    ),
    (
        "the small user's tape goes before the restore's next, older and bigger",
        [tape("R5", gb=300, age=700), tape("S1", "small", files=5, gb=10, age=30)],
        {"lib": 4},
        [run("R1", "restore"), run("R2", "restore"), run("R3", "restore")],
        {},
        ["S1"],
    ),
    (
        "two requesters share the drives: the next goes to the one holding fewer",
        [tape("A3", "a", gb=90), tape("A4", "a", gb=80), tape("B2", "b", gb=5)],
        {"lib": 4},
        [run("A1", "a"), run("A2", "a"), run("B1", "b")],
        {},
        ["B2"],
    ),
    (
        "bound one by one: a requester's second drive counts before the next choice",
        [tape("A1", "a", gb=90), tape("A2", "a", gb=80), tape("B1", "b", gb=5)],
        {"lib": 2},
        [],
        {},
        ["A1", "B1"],
    ),
    (
        "a tape a requester shares with one holding no drive counts as that one's",
        [tape("A3", "a", gb=90), tape("X1", "b", gb=1, also=("a",))],
        {"lib": 3},
        [run("A1", "a"), run("A2", "a")],
        {},
        ["X1"],
    ),
    (
        "a higher priority goes first, whoever holds drives",
        [tape("S1", "small", gb=90), tape("P1", "vip", gb=1, priority=5)],
        {"lib": 2},
        [run("V1", "vip")],
        {},
        ["P1"],
    ),
    (
        "a tape just read by a free drive goes again at once: no mount",
        [tape("T1", gb=1), tape("T2", gb=90)],
        {"lib": 1},
        [],
        {"freed": [run("T1", "restore")]},
        ["T1"],
    ),
    (
        "a freed tape goes even before its library's queue is due; the others wait",
        [tape("T1", gb=1), tape("T2", gb=90)],
        {"lib": 2},
        [],
        {"freed": [run("T1", "restore")], "due": ()},
        ["T1"],
    ),
    (
        "a tape a drive holds (drive list) goes before a bigger one",
        [tape("T1", gb=1), tape("T2", gb=90)],
        {"lib": 1},
        [],
        {"mounted": {("lib", "T1")}},
        ["T1"],
    ),
    (
        "fairness comes before the mount saved",
        [tape("R2", "restore", gb=90), tape("S1", "small", gb=1)],
        {"lib": 2},
        [run("R1", "restore")],
        {"freed": [run("R2", "restore")]},
        ["S1"],
    ),
    (
        "one drive: the requester whose piece just ended gives it to the one waiting",
        [tape("R1", "restore", gb=90, age=900), tape("S1", "small", gb=1, age=10)],
        {"lib": 1},
        [],
        {"freed": [run("R1", "restore")]},
        ["S1"],
    ),
    (
        "alone, a requester's tape just read goes on: no mount",
        [tape("R1", "restore", gb=9), tape("R2", "restore", gb=90)],
        {"lib": 1},
        [],
        {"freed": [run("R1", "restore")]},
        ["R1"],
    ),
    (
        "a tape waiting longer than AGED goes before bigger ones",
        [tape("T1", gb=1, age=AGED + 1), tape("T2", gb=90, age=10)],
        {"lib": 1},
        [],
        {},
        ["T1"],
    ),
    (
        "equal bytes: more files, then the oldest",
        [tape("T1", files=3, age=50), tape("T2", files=9, age=10), tape("T3", files=9, age=20)],
        {"lib": 2},
        [],
        {},
        ["T3", "T2"],
    ),
    (
        "not due: nothing starts",
        [tape("T1")],
        {"lib": 2},
        [],
        {"due": ()},
        [],
    ),
    (
        "a library with no recall drive starts nothing",
        [tape("T1")],
        {"lib": 0},
        [],
        {},
        [],
    ),
    (
        "a library the drives do not name starts nothing",
        [tape("T1", library="other")],
        {"lib": 2},
        [],
        {},
        [],
    ),
    (
        "each library its own drives",
        [tape("A1", library="a"), tape("A2", library="a"), tape("B1", library="b")],
        {"a": 1, "b": 1},
        [],
        {"due": ("a", "b")},
        ["A1", "B1"],
    ),
    (
        "a multi-tape recall (drives unknown before) holds a drive too",
        [tape("T1"), tape("T2")],
        {"lib": 2},
        [run(None, "old")],
        {},
        ["T1"],
    ),
]


@pytest.mark.parametrize(
    ("queue", "drives", "running", "kwargs", "started"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan(queue, drives, running, kwargs, started):
    kwargs = {"due": ("lib",), **kwargs}
    assert tapes(plan(queue, drives, running, now=NOW, **kwargs)) == started


def piece(name: str, who: str, *, ago: float, gb: int = 100) -> Running:
    """A piece of `gb` GB of tape `name` handed to EE `ago` seconds before NOW."""
    return Running("lib", name, frozenset({who}), NOW - ago, gb * GB)


#: 1 GB/s: a 100 GB piece is expected to take 100 s.
RATES = {"lib": 1 * GB}


def test_a_requester_alone_gets_its_next_piece_handed_over_near_the_end_of_the_last():
    """Its drives read on without a gap; its other tapes wait anyway; a tape
    with two pieces in EE gets no third; no rate seen yet, no overlap."""
    queue = [tape("T1", "r"), tape("T2", "r"), tape("T3", "r"), tape("T4", "r")]
    running = [
        piece("T1", "r", ago=90),  # 90 of 100 s: in its last 15 %
        piece("T2", "r", ago=50),  # half way
        piece("T3", "r", ago=99),
        piece("T3", "r", ago=1),  # already overlapped
    ]
    starts = plan(queue, {"lib": 3}, running, due=("lib",), rates=RATES, now=NOW)
    assert starts == [Start("lib", "T1", overlap=True)]
    assert plan(queue, {"lib": 3}, running, due=("lib",), now=NOW) == []


def test_no_overlap_while_another_requester_waits():
    """The small request's tape waits (due or not): every drive comes back
    to the scheduler at the end of its piece."""
    queue = [tape("T1", "r"), tape("S1", "small")]
    running = [piece("T1", "r", ago=95)]
    for libraries in (("lib",), ()):
        assert plan(queue, {"lib": 1}, running, due=libraries, rates=RATES, now=NOW) == []


def test_a_tape_both_want_overlaps():
    queue = [tape("T1", "r", also=("small",)), tape("T2", "small")]
    running = [piece("T1", "r", ago=95), piece("T2", "small", ago=10)]
    starts = plan(queue, {"lib": 2}, running, due=("lib",), rates=RATES, now=NOW)
    assert starts == [Start("lib", "T1", overlap=True)]


def test_gather_sums_a_tapes_requesters_and_leaves_out_a_tape_with_nothing_ready():
    rows = [
        SimpleNamespace(
            library="l", tape="T1", owner="a", priority=0, files=2, bytes=5, oldest=30.0, asked=1
        ),
        SimpleNamespace(
            library="l", tape="T1", owner="b", priority=3, files=1, bytes=7, oldest=20.0, asked=1
        ),
        SimpleNamespace(
            library="l", tape="T2", owner="a", priority=0, files=4, bytes=1, oldest=None, asked=4
        ),
    ]
    assert gather(rows) == [TapeWork("l", "T1", 3, 12, 20.0, frozenset({"a", "b"}), 3, asked=2)]


@pytest.mark.parametrize(
    ("drives", "running", "longs"),
    [
        (4, [], [True, True, True, False]),
        (4, [Running("lib", x, frozenset({"r"}), long=True) for x in "XYZ"], [False]),
        (4, [Running("lib", "X", frozenset({"r"}), long=False)], [True, True, True]),
        (2, [], [True, False]),
        (1, [], [False]),
    ],
    ids=["four free", "three long running", "a piece running", "two drives", "one drive"],
)
def test_all_drives_but_one_read_whole_tapes(drives, running, longs):
    """A tape split over recalls is read in several passes; the last drive
    reads pieces, so whoever comes next waits about one piece."""
    queue = [tape(f"T{i}", gb=100 - i) for i in range(6)]
    starts = plan(queue, {"lib": drives}, running, due=("lib",), now=NOW)
    assert [s.long for s in starts] == longs


#: 100 GB pieces at RATES' 1 GB/s: a piece is expected to take 100 s.
PIECE = 100 * GB


def whole(name: str, *, ends_in: float, gb: int = 1000) -> Running:
    """A whole tape of `gb` GB expected to end `ends_in` seconds after NOW."""
    return piece(name, "r", ago=gb - ends_in, gb=gb)


@pytest.mark.parametrize(
    ("running", "longs"),
    [
        ([], [True, True, True, False]),
        ([whole(x, ends_in=990) for x in "XYZ"], [False]),
        ([whole("X", ends_in=50), whole("Y", ends_in=990), whole("Z", ends_in=990)], [True]),
        ([piece("X", "r", ago=5, gb=60), whole("Y", ends_in=990), whole("Z", ends_in=990)], [True]),
        ([whole("X", ends_in=-1000), whole("Y", ends_in=990)], [True, True]),
        ([whole("X", ends_in=990), piece("X", "r", ago=5, gb=50)], [True, True, False]),
        (
            [piece("X", "r", ago=90, gb=60), piece("X", "r", ago=5, gb=60)]
            + [whole(x, ends_in=990) for x in "YZ"],
            [True],
        ),
    ],
    ids=[
        "four free at once: the last reads pieces",
        "three drives busy long after a piece: a piece",
        "a whole tape ends within a piece: the whole tape",
        "a drive reading pieces comes back anyway: the whole tape",
        "a recall past its expected end: about to free a drive",
        "a tape's next piece waiting in EE: that drive reads a whole tape",
        "a drive reading pieces back to back comes back anyway",
    ],
)
def test_a_drive_reads_a_whole_tape_when_another_comes_back_within_a_piece(running, longs):
    """With the drives' read rate seen, a free drive reads a whole tape only
    when another drive comes back within a piece's time (100 s here): one
    reading pieces, one free, or a whole tape ending; else a piece. So
    whoever comes next waits about one piece, and tapes are split only
    when no whole tape ends soon."""
    queue = [tape(f"T{i}", gb=500 - i) for i in range(6)]
    starts = plan(queue, {"lib": 4}, running, due=("lib",), rates=RATES, piece=PIECE, now=NOW)
    assert [s.long for s in starts] == longs


def test_one_drive_always_reads_pieces():
    queue = [tape("T1", gb=500)]
    starts = plan(queue, {"lib": 1}, [], due=("lib",), rates=RATES, piece=PIECE, now=NOW)
    assert starts == [Start("lib", "T1")]


@pytest.mark.parametrize(
    ("other", "long"),
    [(piece("Y", "r", ago=900, gb=1000), True), (piece("Y", "r", ago=10, gb=1000), False)],
    ids=["another drive frees soon after: the rest whole", "none does: another piece"],
)
def test_a_next_piece_handed_over_is_whole_when_another_drive_frees_soon_after(other, long):
    """The piece on T1 ends in 10 s; the other drive reads Y until 100 s
    (within a piece of T1's end) or 990 s from now."""
    queue = [tape("T1", "r", gb=500), tape("T2", "r", gb=500)]
    running = [piece("T1", "r", ago=90), other]
    starts = plan(queue, {"lib": 2}, running, due=("lib",), rates=RATES, piece=PIECE, now=NOW)
    assert starts == [Start("lib", "T1", overlap=True, long=long)]


def test_a_next_piece_waiting_in_ee_holds_no_drive():
    """Two tapes read, one with its next piece handed over: two drives are
    still free, not one."""
    queue = [tape("T3", gb=9), tape("T4", gb=8), tape("T5", gb=7)]
    running = [run("T1", "r"), run("T1", "r"), run("T2", "r")]
    assert tapes(plan(queue, {"lib": 4}, running, due=("lib",), now=NOW)) == ["T3", "T4"]


WINDOW = Window(window=10, quiet=2, max_wait=60, max_files=100)


def row(library="lib", files=5, oldest=0.0, newest=0.0):
    return SimpleNamespace(library=library, files=files, oldest=oldest, newest=newest)


@pytest.mark.parametrize(
    ("case", "rows", "now", "looking_up", "expected", "next_due"),
    [
        ("before the window", [row()], 5, False, {}, 5),
        ("the window passed, quiet", [row()], 10, False, {"lib": (5, True)}, float("inf")),
        ("still busy: waits for quiet", [row(newest=9)], 10, False, {}, 1),
        ("polls being looked up: not quiet", [row()], 10, True, {}, 2),
        ("never past max_wait", [row(newest=59)], 60, True, {"lib": (5, True)}, float("inf")),
        (
            "a full batch goes at once",
            [row(files=100)],
            1,
            False,
            {"lib": (100, False)},
            float("inf"),
        ),
        ("nothing ready (retries wait)", [row(oldest=None)], 100, False, {}, float("inf")),
        (
            "libraries apart",
            [row("a", oldest=0), row("b", oldest=5, newest=5)],
            10,
            False,
            {"a": (5, True)},
            5,
        ),
    ],
)
def test_when_a_librarys_queue_is_due(case, rows, now, looking_up, expected, next_due):
    assert due(rows, WINDOW, now, looking_up) == (expected, next_due), case


@pytest.mark.parametrize(
    ("queue", "ends_in", "started"),
    [
        (
            [tape("S1", "small", gb=500), tape("T1", "r", gb=500)],
            50,
            Start("lib", "S1", long=True, asked_first=True),
        ),
        ([tape("T1", "r", gb=500)], 50, Start("lib", "T1", long=True)),
        (
            [tape("S1", "small", gb=500), tape("T1", "r", gb=500)],
            5000,
            Start("lib", "S1", asked_first=True),
        ),
        ([tape("T1", "r", gb=500)], 5000, Start("lib", "T1")),
    ],
    ids=[
        "a newcomer beside a restore: its own files first",
        "the restore's own tape: one pass",
        "a newcomer's piece: its own files alone",
        "the restore's own piece: its asked files, then the others",
    ],
)
def test_a_tape_someone_waits_for_beside_others_work_reads_its_asked_files_first(
    queue, ends_in, started
):
    """A requester that holds no drive while another does waits for its own
    files, not for the prefetch of its directory lying between them on the
    tape, in a whole tape or a piece; a requester alone gets its tapes in
    one pass each, or pieces that fill up."""
    running = [whole("X", ends_in=ends_in)]  # requester "r"
    starts = plan(queue, {"lib": 2}, running, due=("lib",), rates=RATES, piece=PIECE, now=NOW)
    assert starts == [started]
