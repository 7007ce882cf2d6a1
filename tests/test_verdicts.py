"""A finished recall's verdict per file (verdicts.verdicts), on a table."""

from __future__ import annotations

import pytest

from ltfsee_globus.parse import FileState, StateError
from ltfsee_globus.placement import Placement
from ltfsee_globus.store import DONE, FAILED, QUEUED, Update
from ltfsee_globus.verdicts import outcome, verdicts

NOW = 1000.0
ON_DISK = FileState("/g/a", "P", 1, ("T1@p@lib0",))
MIGRATED = FileState("/g/a", "M", 1, ("T1@p@lib0",))
ELSEWHERE = Placement("lib1", "T9@p@lib1")


@pytest.mark.parametrize(
    ("state", "attempts", "copy", "expected"),
    [
        (ON_DISK, 1, None, Update("/g/a", DONE, tape="T1@p@lib0")),
        (MIGRATED, 1, None, Update("/g/a", QUEUED, "EE said no", not_before=NOW + 60)),
        (MIGRATED, 2, None, Update("/g/a", QUEUED, "EE said no", not_before=NOW + 120)),
        (MIGRATED, 3, None, Update("/g/a", FAILED, "after 3 attempt(s): EE said no")),
        (
            MIGRATED,
            1,
            ELSEWHERE,
            Update(
                "/g/a", QUEUED, "EE said no", not_before=NOW, tape=ELSEWHERE.tape, library="lib1"
            ),
        ),
        (MIGRATED, 3, ELSEWHERE, Update("/g/a", FAILED, "after 3 attempt(s): EE said no")),
        (
            StateError("/g/a", "strayed"),
            1,
            None,
            Update("/g/a", QUEUED, "strayed", not_before=NOW + 60),
        ),
        (None, 1, None, Update("/g/a", QUEUED, "EE said no", not_before=NOW + 60)),
    ],
    ids=[
        "on disk",
        "first retry",
        "back-off doubles",
        "out of attempts",
        "another library's copy at once",
        "no copy beats the last attempt",
        "a state eeadm could not give",
        "no state at all",
    ],
)
def test_verdicts(state, attempts, copy, expected):
    states = {} if state is None else {"/g/a": state}
    [got] = verdicts(
        7,
        {"/g/a": attempts},
        states,
        "EE said no",
        now=NOW,
        max_attempts=3,
        retry_delay=60.0,
        elsewhere=lambda st: copy,
    )
    assert got == expected


def test_without_a_reason_the_file_is_said_not_on_disk():
    [got] = verdicts(
        7, {"/g/a": 1}, {"/g/a": MIGRATED}, None, now=NOW, max_attempts=3,
        retry_delay=60.0, elsewhere=lambda st: None,
    )  # fmt: skip
    assert got.last_error == "file still not on disk after recall"


def test_outcome():
    done, queued = Update("/a", DONE), Update("/b", QUEUED)
    assert [outcome([done]), outcome([done, queued]), outcome([queued])] == [
        "succeeded",
        "partial",
        "failed",
    ]
