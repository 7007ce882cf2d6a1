"""The simulated eeadm: output forms, state changes, failures, the tape model."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from ltfsee_globus.parse import parse_file_state_short, parse_recall_output
from ltfsee_globus.sim.library import Library


def eeadm(sim, *args, stdin=None, **env):
    return subprocess.run(
        [*sim.command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EEADM_SIM_DIR": str(sim.root), **env},
    )


def states(sim, paths):
    parsed, stray = parse_file_state_short(eeadm(sim, "file", "state", "-s", *paths).stdout)
    assert stray == []
    return {p: s.letter for p, s in parsed.items()}


def test_demo_library_has_the_promised_shape(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ltfsee_globus.cli",
            "simulator",
            "init",
            str(tmp_path / "demo"),
            "--demo",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    lib = Library(tmp_path / "demo")
    counts = lib.stats()["file_states"]
    lib.close()
    assert counts["M"] >= 200 and counts["P"] > 0 and counts["R"] > 0
    assert len(list((tmp_path / "demo" / "gpfs0" / "demo").iterdir())) >= 5


def test_recall_from_list_file_moves_migrated_to_premigrated(sim, tmp_path):
    paths = sim.files("M")[:5]
    listing = tmp_path / "list"
    listing.write_text("\n".join(paths) + "\n")
    res = eeadm(sim, "recall", str(listing))
    assert res.returncode == 0, res.stderr
    out = parse_recall_output(res.stdout)
    assert (out.provided, out.succeeded) == (5, 5) and out.task_id == "1:1001"
    assert set(states(sim, paths).values()) == {"P"}


def test_task_ids_come_in_the_colon_form_or_plain_and_task_show_takes_either(sim):
    first, second = sim.files("M")[:2]
    colon = parse_recall_output(eeadm(sim, "recall", stdin=first).stdout).task_id
    plain = parse_recall_output(
        eeadm(sim, "recall", stdin=second, EEADM_SIM_TASK_IDS="plain").stdout
    ).task_id
    assert (colon, plain) == ("1:1001", "2")
    for task in (colon, "1", plain):
        shown = eeadm(sim, "task", "show", task, "-r")
        assert shown.returncode == 0 and f"Task ID: {task}" in shown.stdout
    assert eeadm(sim, "task", "show", "tmpx:1").returncode == 1


def test_recall_from_stdin_with_resident(sim):
    paths = sim.files("M")[:2] + sim.files("P")[:1]
    res = eeadm(sim, "recall", "--resident", stdin="\n".join(paths))
    assert res.returncode == 0, res.stderr
    assert set(states(sim, paths).values()) == {"R"}


def test_damaged_and_missing_files_fail_the_recall(sim, tmp_path):
    good, bad = sim.files("M")[:2]
    lib = Library(sim.root)
    lib.damage([bad])
    lib.close()
    res = eeadm(sim, "recall", stdin=f"{good}\n{bad}\n{sim.fs}/missing\n")
    assert res.returncode == 1
    out = parse_recall_output(res.stdout + res.stderr)
    assert any("GLESL016E" in e for e in out.errors)
    assert any("does not exist" in e for e in out.errors)
    assert states(sim, [good, bad]) == {good: "P", bad: "M"}


def test_unknown_library_is_an_error(sim):
    res = eeadm(sim, "recall", "-l", "nolib", stdin=sim.files("M")[0])
    assert res.returncode == 1 and "GLESL012E" in res.stderr


def test_file_state_of_unmanaged_and_missing_files(sim):
    extra = sim.fs / "new.dat"
    extra.write_text("x")
    res = eeadm(sim, "file", "state", "-s", str(extra), str(sim.fs / "gone"))
    assert res.returncode == 1 and "does not exist" in res.stderr
    assert parse_file_state_short(res.stdout)[0][str(extra)].letter == "R"


def test_long_form_and_task_show(sim):
    path = sim.files("M")[0]
    assert "State: migrated" in eeadm(sim, "file", "state", path).stdout
    eeadm(sim, "recall", stdin=path)
    out = eeadm(sim, "task", "show", "1", "-r").stdout
    assert out.splitlines()[-1].startswith("Success") and out.endswith(f"-- {path}\n")


def test_one_recall_mounts_each_tape_once(make_sim):
    sim = make_sim(files=90, dirs=9, tapes=3, drives=2, premigrated=0, resident=0)
    assert eeadm(sim, "recall", stdin="\n".join(sim.files())).returncode == 0
    lib = Library(sim.root)
    c = lib.stats()["counters"]
    lib.close()
    assert c["mounts"] == 3 and c["files_recalled"] == 90 and c["tasks"] == 1


def test_concurrent_recalls_share_one_consistent_library(make_sim):
    sim = make_sim(files=80, dirs=8, tapes=4, drives=2, premigrated=0, resident=0)
    files = sim.files()
    env = {**os.environ, "EEADM_SIM_DIR": str(sim.root)}
    procs = [
        subprocess.Popen(
            [*sim.command, "recall"],
            stdin=subprocess.PIPE,
            text=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(8)
    ]
    for n, proc in enumerate(procs):
        proc.communicate("\n".join(files[n::8]))
    assert [p.returncode for p in procs] == [0] * 8
    lib = Library(sim.root)
    stats = lib.stats()
    lib.close()
    assert stats["counters"]["tasks"] == 8
    assert stats["counters"]["files_recalled"] == 80
    assert stats["file_states"] == {"P": 80}
    assert all(t["finished"] >= t["started"] >= t["created"] for t in stats["tasks"])


def test_a_library_made_before_drives_could_go_down_is_upgraded_once_under_many_openers(make_sim):
    sim = make_sim(files=6, dirs=1, tapes=1, drives=1)
    old = sqlite3.connect(sim.root / ".eeadm-sim" / "library.db")
    old.execute("ALTER TABLE drives DROP COLUMN enabled")  # as libraries were made before
    old.commit()
    old.close()
    env = {**os.environ, "EEADM_SIM_DIR": str(sim.root)}
    procs = [
        subprocess.Popen(
            [*sim.command, "drive", "list"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    lib = Library(sim.root)
    columns = [r[1] for r in lib.conn.execute("PRAGMA table_info(drives)")]
    lib.close()
    assert columns.count("enabled") == 1


def test_one_file_recalls_cost_more_mounts_than_one_batch(make_sim):
    sim = make_sim(
        files=24, dirs=4, tapes=4, drives=1, premigrated=0, resident=0, placement="random"
    )
    for path in sim.files():
        assert eeadm(sim, "recall", stdin=path).returncode == 0
    lib = Library(sim.root)
    mounts = lib.stats()["counters"]["mounts"]
    lib.close()
    assert mounts > 4


def test_stats_cli_prints_json(sim):
    out = subprocess.run(
        [sys.executable, "-m", "ltfsee_globus.cli", "simulator", "stats", str(sim.root)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    assert set(data["counters"]) >= {"tasks", "mounts", "unmounts", "locates", "bytes_read"}


@pytest.mark.parametrize("args", [["recall", "/nonexistent-list"], ["recall"]])
def test_bad_recall_lists_fail_cleanly(sim, args):
    res = eeadm(sim, *args, stdin="")
    assert res.returncode == 1 and "GLESL00" in res.stderr


def test_missing_sim_dir_is_a_clear_error(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "ltfsee_globus.sim.cli", "node", "list"],
        env={**os.environ, "EEADM_SIM_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "no simulated library" in res.stderr


def test_copies_are_in_other_pools_and_libraries_and_each_library_reads_its_own(make_sim):
    sim = make_sim(
        "copies", files=12, dirs=3, tapes=4, libraries=2, copies=2, premigrated=0, resident=0
    )
    files = sim.files("M")
    parsed, _ = parse_file_state_short(eeadm(sim, "file", "state", "-s", *files).stdout)
    for st in parsed.values():
        (v1, p1, l1), (v2, p2, l2) = (t.split("@") for t in st.tapes)
        assert st.replicas == 2 and v1 != v2 and p1 != p2 and l1 != l2
    first = parsed[files[0]]
    other = first.tapes[1].split("@")
    res = eeadm(sim, "recall", "-l", other[2], stdin=files[0] + "\n")
    assert res.returncode == 0, res.stdout + res.stderr
    [(tape,)] = sim._query("SELECT tape FROM task_files WHERE path = ?", (files[0],))
    assert tape == other[0]  # read from the copy in the library named
    assert states(sim, [files[0]]) == {files[0]: "P"}


def test_copies_must_fit_the_tapes(tmp_path):
    from ltfsee_globus.sim.library import Layout, SimError, init_library

    with pytest.raises(SimError, match="copies must be 1 to 2"):
        init_library(tmp_path / "x", Layout(tapes=2, copies=3))


def test_a_recall_goes_on_in_the_library_when_its_client_is_killed(make_sim, wait_for):
    """As an EE task outlives the `eeadm recall` that created it, so does the
    simulator's: what a stager taking over from a dead node relies on."""
    sim = make_sim("slow", time_scale=20.0)  # a mount takes seconds, not milliseconds
    paths = sim.files("M")[:3]
    task = sim.recall_then_kill(paths)
    assert "Status: running" in eeadm(sim, "task", "show", task).stdout
    assert set(states(sim, paths).values()) == {"M"}
    wait_for(
        lambda: "Status: completed" in eeadm(sim, "task", "show", task).stdout,
        60,
        "the task to end without its client",
    )
    assert set(states(sim, paths).values()) == {"P"}
