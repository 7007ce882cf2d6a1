"""The eeadm parsers on the samples of docs/eeadm.md and on garbage."""

import pytest

from ltfsee_globus.parse import (
    TASK_ACTIVE,
    FileState,
    StateError,
    find_task_id,
    parse_file_state_short,
    parse_recall_output,
    parse_task_status,
)

SAMPLE = """\
P  2  JD0099JD@POOL_JD@ts4500  MB0355JE@POOL_JE@ts4500  -   -- /gpfs/gpfs0/sample_file
M  1  MB0355JE@POOL_JE@ts4500  -                        -   -- /gpfs/gpfs0/sample_file2
R  0  -                        -                        -   -- /gpfs/gpfs0/sample_file3
"""


def test_every_line_of_file_state_is_parsed():
    states, stray = parse_file_state_short(SAMPLE)
    assert stray == []
    assert states["/gpfs/gpfs0/sample_file"] == FileState(
        "/gpfs/gpfs0/sample_file",
        "P",
        2,
        ("JD0099JD@POOL_JD@ts4500", "MB0355JE@POOL_JE@ts4500"),
    )
    assert states["/gpfs/gpfs0/sample_file2"].migrated
    assert states["/gpfs/gpfs0/sample_file2"].tape_ids() == ["MB0355JE"]
    assert states["/gpfs/gpfs0/sample_file3"].on_disk
    assert states["/gpfs/gpfs0/sample_file3"].tapes == ()


def test_path_with_spaces_and_dashes_is_kept_whole():
    line = "M  1  A@B@C  -  -  -- /gpfs/x/my file -- v2.dat\n"
    states, _ = parse_file_state_short(line)
    assert list(states) == ["/gpfs/x/my file -- v2.dat"]


def test_as_json_matches_the_v05_answer():
    states, _ = parse_file_state_short(SAMPLE)
    assert states["/gpfs/gpfs0/sample_file"].as_json() == {
        "state": "P",
        "replicas": 2,
        "tapes": ["JD0099JD@POOL_JD@ts4500", "MB0355JE@POOL_JE@ts4500"],
        "path": "/gpfs/gpfs0/sample_file",
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("S  1  A@B@C  -  -  -- /gpfs/strayed", "unsupported file state 'S'"),
        ("O  0  -  -  -  -- /gpfs/offline", "unsupported file state 'O'"),
        ("M  x  A@B@C  -  -  -- /gpfs/badcount", "unparseable"),
        ("garbage -- /gpfs/short", "unparseable"),
    ],
)
def test_unknown_letters_and_bad_lines_become_errors_for_their_file(line, reason):
    states, _ = parse_file_state_short(line + "\n" + SAMPLE)
    path = line.rsplit("-- ", 1)[1]
    assert isinstance(states[path], StateError)
    assert reason in states[path].reason
    assert isinstance(states["/gpfs/gpfs0/sample_file"], FileState)


def test_lines_without_a_path_are_returned_as_stray():
    states, stray = parse_file_state_short("GLESL999E: something broke\n\n" + SAMPLE)
    assert stray == ["GLESL999E: something broke"]
    assert len(states) == 3


RECALL_OK = """\
2021-12-31 10:33:51 GLESL268I: 10 file name(s) have been provided to recall.
2021-12-31 10:33:51 GLESL700I: Task selective_recall was created successfully, task ID is 18860.
2021-12-31 10:33:54 GLESL839I: All 10 file(s) has been successfully processed.
"""


def test_recall_success():
    out = parse_recall_output(RECALL_OK)
    assert (out.provided, out.succeeded, out.task_id, out.errors) == (10, 10, "18860", [])
    assert out.all_succeeded


@pytest.mark.parametrize(
    "task_id",
    [
        "1000",
        "1005:1111:4444",
        "1000:1002:1003:1004:1005:1006",
        "tmp15nwx2vl",
        "tmp15nwx2vl:1000:1002",
        "tmp15nwx2vl_123:tmpn9km_wyx:1001",
    ],
)
def test_recall_task_ids_of_every_form_are_kept_whole(task_id):
    """The forms EE releases print (docs/eeadm.md), as text, the line's full stop left out."""
    line = f"GLESL700I: Task selective_recall was created successfully, task ID is {task_id}."
    assert parse_recall_output(line).task_id == task_id
    assert parse_recall_output(f"2025-01-02 03:04:05 {line}\n").task_id == task_id


def test_recall_failure_collects_errors_but_not_duplicate_task():
    text = (
        "2021-12-31 10:33:51 GLESL268I: 3 file name(s) have been provided to recall.\n"
        "2021-12-31 10:33:52 GLESM431E: duplicate task, merged.\n"
        "2021-12-31 10:33:59 GLESL016E: Failed to read file /gpfs/a from tape X.\n"
    )
    out = parse_recall_output(text)
    assert out.provided == 3
    assert out.errors == ["GLESL016E: Failed to read file /gpfs/a from tape X."]
    assert not out.all_succeeded
    assert "GLESL016E" in out.summary()


def test_recall_garbage_is_no_success():
    out = parse_recall_output("\x00\xffnonsense\n")
    assert not out.all_succeeded
    assert out.summary() == "no result reported by eeadm"


@pytest.mark.parametrize(
    ("text", "task"),
    [
        (
            "2021-12-31 10:33:51 GLESL700I: Task selective_recall was created successfully, "
            "task ID is 18860.\n",
            "18860",
        ),
        (
            "GLESL700I: Task selective_recall was created successfully, task ID is 1000:2000.",
            "1000:2000",
        ),
        ("GLESL268I: 10 file name(s) have been provided to recall.\n", None),
    ],
)
def test_a_starting_recall_names_its_task(text, task):
    assert find_task_id(text) == task


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("=== Task Information ===\nTask ID: 1:1001\nStatus: running\n", "running"),
        ("Task ID: 7\nStatus: Completed\nSuccess  -  -  -- /gpfs/a\n", "completed"),
        ("  status : waiting", "waiting"),
        ("GLESL018E: Task 9 does not exist.\n", None),
    ],
)
def test_task_show_says_whether_ee_still_works_on_a_task(text, status):
    assert parse_task_status(text) == status
    assert (status in TASK_ACTIVE) == (status in ("running", "waiting"))
