"""The eeadm runner against fake eeadm scripts: output, failure, timeout, garbage."""

import os
import resource
import time

import pytest

from ltfsee_globus.eeadm import Eeadm, EeadmError
from ltfsee_globus.parse import FileState, StateError


def test_file_state_passes_paths_as_data_after_double_dash(fake_eeadm, tmp_path):
    argv_log = tmp_path / "argv"
    cmd = fake_eeadm(f"""\
        for a in "$@"; do echo "$a" >> '{argv_log}'; done
        echo "M  1  T1@P@L  -  -  -- /gpfs/a b"
        """)
    states = Eeadm(cmd, timeout=5).file_state(["/gpfs/a b"])
    assert argv_log.read_text().splitlines() == ["file", "state", "-s", "--", "/gpfs/a b"]
    assert isinstance(states["/gpfs/a b"], FileState)


def test_file_state_chunks_long_argument_lists(fake_eeadm, tmp_path):
    calls = tmp_path / "calls"
    cmd = fake_eeadm(f"""\
        echo x >> '{calls}'
        shift 4
        for p in "$@"; do echo "R  0  -  -  -  -- $p"; done
        """)
    paths = [f"/gpfs/dir/file{i:04d}" for i in range(100)]
    states = Eeadm(cmd, timeout=5, max_arg_bytes=500).file_state(paths)
    assert len(calls.read_text().splitlines()) == 4  # 20 bytes a path: 25 fit in 500
    assert all(isinstance(states[p], FileState) for p in paths)


def test_partial_output_with_failure_exit_keeps_what_was_printed(fake_eeadm):
    cmd = fake_eeadm("""\
        echo "P  1  T@P@L  -  -  -- /gpfs/ok"
        echo "GLESL011E: File /gpfs/missing does not exist." >&2
        exit 1
        """)
    states = Eeadm(cmd, timeout=5).file_state(["/gpfs/ok", "/gpfs/missing"])
    assert states["/gpfs/ok"].on_disk
    assert isinstance(states["/gpfs/missing"], StateError)


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ("echo 'GLESL999E: not running' >&2; exit 3", "returncode"),
        ("sleep 30", "timed_out"),
    ],
)
def test_failures_raise_eeadm_error_with_command_and_output(fake_eeadm, body, attr):
    eeadm = Eeadm(fake_eeadm(body), timeout=0.5)
    with pytest.raises(EeadmError) as info:
        eeadm.file_state(["/gpfs/a"])
    assert getattr(info.value, attr)
    assert info.value.command[0].endswith(eeadm.command[0])


def test_garbage_output_gives_per_file_errors_not_a_crash(fake_eeadm):
    cmd = fake_eeadm("printf '\\377\\376 nonsense\\n-- \\n'")
    states = Eeadm(cmd, timeout=5).file_state(["/gpfs/a"])
    assert isinstance(states["/gpfs/a"], StateError)


def test_missing_executable_is_unavailable(tmp_path):
    with pytest.raises(EeadmError) as info:
        Eeadm([str(tmp_path / "nope")], timeout=1).run(["node", "list"])
    assert info.value.unavailable


def test_timeout_kills_the_whole_process_group(fake_eeadm, tmp_path):
    pidfile = tmp_path / "child.pid"
    cmd = fake_eeadm(f"sleep 60 & echo $! > '{pidfile}'; wait")
    with pytest.raises(EeadmError):
        Eeadm(cmd, timeout=0.5).run(["recall"])
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_recall_output_goes_to_the_log_file(fake_eeadm, tmp_path):
    listing = tmp_path / "list"
    listing.write_text("/gpfs/a\n")
    cmd = fake_eeadm('echo "args: $*"')
    started = []
    res = Eeadm(cmd, timeout=5).recall(
        listing,
        library="lib1",
        resident=True,
        timeout=5,
        log_path=tmp_path / "log",
        on_start=started.append,
    )
    assert res.output.strip() == f"args: recall {listing} -l lib1 --resident"
    assert (tmp_path / "log").read_text() == res.output
    assert len(started) == 1 and started[0] > 0


def recall_printing_task(fake_eeadm, tmp_path, then: str, timeout: float, tasks: list):
    """A recall by a fake eeadm that prints task ID 7, then runs shell `then`."""
    listing = tmp_path / "list"
    listing.write_text("/gpfs/a\n")
    cmd = fake_eeadm(f"echo 'GLESL700I: Task selective_recall, task ID is 7.'; {then}")
    return Eeadm(cmd, timeout=5).recall(
        listing,
        library=None,
        resident=False,
        timeout=timeout,
        log_path=tmp_path / "log",
        on_task=tasks.append,
    )


def test_a_recall_that_outlives_its_timeout_is_killed_and_its_output_kept(fake_eeadm, tmp_path):
    tasks = []
    with pytest.raises(EeadmError) as info:
        recall_printing_task(fake_eeadm, tmp_path, "sleep 60", 0.5, tasks)
    assert info.value.timed_out
    assert tasks == ["7"]
    assert "task ID is 7" in info.value.output


def test_waiting_for_a_running_recall_does_not_wake_to_look(fake_eeadm, tmp_path):
    """A recall runs for hours: its thread sleeps until it ends (a pidfd), not
    waking every 50 ms as Popen.wait(timeout) does (about 25 times a second)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        pytest.skip("no pidfd here (Linux < 5.3, or not Linux)")
    tasks = []
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    res = recall_printing_task(fake_eeadm, tmp_path, "sleep 1.5", 30, tasks)
    switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before
    assert res.returncode == 0 and tasks == ["7"]
    assert switches < 15, f"the waiting thread woke {switches} times in 1.5 s"
