"""The drives: `eeadm drive list` parsed (docs/eeadm.md's samples), run (JSON
or text, failing, hanging, garbage), watched by the stager, recorded for
operators, and the simulator's own list and `drive down|up`."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from ltfsee_globus.drives import DriveWatch
from ltfsee_globus.eeadm import Eeadm, EeadmError
from ltfsee_globus.parse import Drive, DriveListError, parse_drive_list, recall_drives
from ltfsee_globus.sim.library import Library

pytestmark = pytest.mark.both_engines

#: EE 1.3's text form, two libraries, TS1160 drives (docs/eeadm.md).
TEXT = """\
Drive S/N     Status  State        Type    Role  Library    Node ID  Tape      Node Group  Task ID
00000783D23A  ok      mounted      TS1160   mrg  BelferLib  26       B00001JE  G0          -
00000783D21A  ok      not_mounted  TS1160   mrg  PriceLib   28       -         G1          -
00000783D22A  error   missing      TS1160   mrg  PriceLib   28       -         G1          -
00000783D24A  ok      in_use       TS1160   m-g  BelferLib  26       B00002JE  G0          4412
"""
#: EE 1.3.0.x's --json form without `status` (docs/eeadm.md; ids shortened there).
JSON = json.dumps(
    {
        "payload": [
            {"id": "0007827B3B", "state": "in_use", "type": "LTO8", "role": "mrg",
             "library_id": "cd0b9fdd", "library_name": "hsm_lib1", "address": 262,
             "node_id": 6, "node_hostname": "hsmarchive1-data", "tape_barcode": "013019L8",
             "nodegroup_name": "G0", "task_id": "1338"},
            {"id": "000782AC2B", "state": "unassigned", "type": "", "role": "---",
             "library_id": "cd0b9fdd", "library_name": "hsm_lib1", "address": 267,
             "node_id": -1, "node_hostname": "", "tape_barcode": "", "nodegroup_name": "",
             "task_id": ""},
            {"id": "00078D29A2", "state": "mounting", "type": "LTO8", "role": "mrg",
             "library_name": "hsm_lib1", "tape_barcode": "013020L8", "task_id": "1301"},
        ],
        "version": 1,
    }
)  # fmt: skip


def test_text_form():
    drives = parse_drive_list(TEXT)
    assert [(d.id, d.library, d.status, d.state, d.role, d.tape, d.task) for d in drives] == [
        ("00000783D23A", "BelferLib", "ok", "mounted", "mrg", "B00001JE", ""),
        ("00000783D21A", "PriceLib", "ok", "not_mounted", "mrg", "", ""),
        ("00000783D22A", "PriceLib", "error", "missing", "mrg", "", ""),
        ("00000783D24A", "BelferLib", "ok", "in_use", "m-g", "B00002JE", "4412"),
    ]
    # a drive in error serves nothing; a role without r serves no recall
    assert recall_drives(drives) == {"BelferLib": 1, "PriceLib": 1}


def test_json_form_without_status_counts_working_states():
    drives = parse_drive_list(JSON)
    assert [d.tape for d in drives] == ["013019L8", "", "013020L8"]
    assert recall_drives(drives) == {"hsm_lib1": 2}  # unassigned (---) serves nothing


@pytest.mark.parametrize(
    ("status", "state", "role", "serves"),
    [
        ("ok", "mounted", "mrg", True),
        ("ok", "not_mounted", "r", True),
        ("info", "locked", "mrg", False),
        ("info", "disabled", "mrg", False),
        ("error", "check_tape_drive", "mrg", False),
        ("ok", "mounted", "mg", False),
        ("", "standby", "mrg", True),
        ("", "disconnected", "mrg", False),
        ("", "not_installed", "mrg", False),
    ],
)
def test_which_drives_serve_recalls(status, state, role, serves):
    assert Drive("d", "lib", state, role, status).serves_recalls is serves


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "GLESL001E: something went wrong\n",
        "{not json",
        '{"payload": 3}',
        "[1, 2]",
        "Drive S/N  Status\nx  y\n",  # a header without the columns
    ],
)
def test_garbage_is_a_clear_error(garbage):
    with pytest.raises(DriveListError):
        parse_drive_list(garbage)


def test_rows_that_are_not_drives_are_skipped():
    text = TEXT + "\n  (4 drives)\n"
    assert len(parse_drive_list(text)) == 4
    assert parse_drive_list('{"payload": [{"id": 3}, "x", {"id": "A1"}]}')[0].id == "A1"


# -- running it ---------------------------------------------------------------------------
def test_the_simulator_prints_both_forms_of_its_drives(sim):
    eeadm = Eeadm(sim.command, timeout=10)
    drives = eeadm.drive_list()
    assert eeadm._drive_json is True
    assert [(d.id, d.library, d.status, d.role) for d in drives] == [
        ("SIM000000000", "ts4500", "ok", "mrg"),
        ("SIM000000001", "ts4500", "ok", "mrg"),
    ]
    text = subprocess.run(
        [*sim.command, "drive", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert parse_drive_list(text) == drives


def test_text_form_where_ee_has_no_json(sim, monkeypatch):
    monkeypatch.setenv("EEADM_SIM_DRIVE_LIST", "text")
    eeadm = Eeadm(sim.command, timeout=10)
    assert recall_drives(eeadm.drive_list()) == {"ts4500": 2}
    assert recall_drives(eeadm.drive_list()) == {"ts4500": 2}
    # --json was tried once, then the text form only
    assert [c for c in sim.invocations("drive")] == [
        "drive list --json",
        "drive list",
        "drive list",
    ]


def test_a_drive_taken_down_serves_no_recall_and_the_library_reads_with_the_rest(sim):
    lib = Library(sim.root)
    try:
        lib.set_drive("SIM000000001", enabled=False)
        drives = Eeadm(sim.command, timeout=10).drive_list()
        assert [(d.status, d.state) for d in drives][1] == ("info", "disabled")
        assert recall_drives(drives) == {"ts4500": 1}
        files = sim.files("M")
        subprocess.run([*sim.command, "recall"], input="\n".join(files), text=True, check=True,
                       capture_output=True)  # fmt: skip
        used = {r[0] for r in lib.conn.execute("SELECT DISTINCT drive FROM work")}
        assert used == {0}
        with pytest.raises(Exception, match="GLESL640E"):
            lib.set_drive("SIM000000009", enabled=True)
    finally:
        lib.close()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("echo 'GLESL001E: no' >&2; exit 3", "exited with 3"),
        ("echo 'Segmentation fault'", "printed no list of drives"),
        ("sleep 5", "timed out"),
    ],
    ids=["failing", "garbage", "hanging"],
)
def test_watch_keeps_the_drives_last_seen_and_warns_once(
    fake_eeadm, tmp_path, make_store, body, why, caplog
):
    from ltfsee_globus.config import load_settings

    mode = tmp_path / "broken"
    cmd = fake_eeadm(f"""\
        if [ -e {mode} ]; then {body}; fi
        echo '{JSON}'
        """)
    store = make_store()
    settings = load_settings(
        {"AUTH_KEY": "k", "EEADM_COMMAND": cmd[0], "STATE_DIR": str(tmp_path / "s")}
    )
    watch = DriveWatch(settings, Eeadm(cmd, timeout=1), store)
    assert watch.per_library(["hsm_lib1"]) is None  # not known yet: batches as before
    watch.read()
    assert watch.per_library(["hsm_lib1", ""]) == {"hsm_lib1": 2, "": 2}
    assert watch.per_library(["HSM_LIB1"]) == {"HSM_LIB1": 2}  # a name EE does not print
    assert "names no library HSM_LIB1" in caplog.text
    tapes = [("hsm_lib1", f"{v}@pool@hsm_lib1") for v in ("013019L8", "013020L8", "013021L8")]
    assert watch.mounted(tapes) == set(tapes[:2])
    watch.hold("hsm_lib1", tapes[2][1], drives=2)  # a recall of it ended: its drive holds it
    assert watch.mounted(tapes) == set(tapes)
    watch.hold("hsm_lib1", "OTHER@pool@hsm_lib1", drives=2, given=True)  # that drive reads on
    assert watch.mounted(tapes) == set(tapes[:2])
    assert {d.id: d.recall for d in store.ops.drives()} == {
        "0007827B3B": True,
        "000782AC2B": False,
        "00078D29A2": True,
    }
    mode.touch()
    caplog.set_level(logging.INFO, logger="ltfsee_globus.drives")
    watch.read()
    watch.read()
    warnings = [r for r in caplog.records if "drive list failed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert why in warnings[0].getMessage()
    assert "last seen stay in force" in warnings[0].getMessage()
    assert why in watch.error
    assert watch.per_library(["hsm_lib1"]) == {"hsm_lib1": 2}
    mode.unlink()
    watch.read()
    assert watch.error is None and "answers again" in caplog.text


def test_tape_drives_overrides_the_list(fake_eeadm, tmp_path, make_store):
    from ltfsee_globus.config import load_settings

    calls = tmp_path / "calls"
    cmd = fake_eeadm(f"echo x >> {calls}; exit 1")
    settings = load_settings(
        {"AUTH_KEY": "k", "EEADM_COMMAND": cmd[0], "STATE_DIR": str(tmp_path), "TAPE_DRIVES": 3}
    )
    watch = DriveWatch(settings, Eeadm(cmd, timeout=1), make_store())
    watch.refresh()
    assert watch.per_library(["a", ""]) == {"a": 3, "": 3}
    assert not calls.exists()  # never asked


def test_a_failed_first_read_leaves_the_drives_unknown(fake_eeadm, tmp_path, make_store, caplog):
    from ltfsee_globus.config import load_settings

    cmd = fake_eeadm("exit 1")
    settings = load_settings({"AUTH_KEY": "k", "EEADM_COMMAND": cmd[0], "STATE_DIR": str(tmp_path)})
    watch = DriveWatch(settings, Eeadm(cmd, timeout=1), make_store())
    watch.refresh()
    assert watch.per_library(["lib"]) is None
    assert "drives not known: recalls go to EE in batches" in caplog.text
    with pytest.raises(EeadmError):
        Eeadm(cmd, timeout=1).drive_list()
