"""The one place that runs `eeadm`.

Commands are argument lists (never a shell), every run has a timeout, and any
failure raises `EeadmError` carrying the command, exit code and output. The
command prefix comes from configuration, e.g. `sudo -n /opt/ibm/ltfsee/bin/eeadm`
or the simulator `eeadm-sim`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .parse import (
    Drive,
    DriveListError,
    FileState,
    StateError,
    find_task_id,
    parse_drive_list,
    parse_file_state_short,
    parse_task_status,
)

log = logging.getLogger(__name__)

#: Longest command line we build for one `file state` call (bytes of paths).
DEFAULT_MAX_ARG_BYTES = 96 * 1024


class EeadmError(Exception):
    """`eeadm` could not be run, failed, or timed out."""

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str],
        returncode: int | None = None,
        output: str = "",
        timed_out: bool = False,
        unavailable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.command = list(command)
        self.returncode = returncode
        self.output = output
        self.timed_out = timed_out
        self.unavailable = unavailable
        self.retry_after = retry_after  # seconds: a client may try again then


def _subcommand(args: Sequence[str]) -> str:
    """`file state`, `recall`, `node list`: the leading words, not options or paths."""
    return " ".join(itertools.takewhile(str.isalpha, args[:2]))


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str


#: Seconds between looks at a starting recall's output for its task ID, and
#: the bytes of its start that are read for it.
TASK_WATCH, TASK_HEAD = 0.2, 65536


def _ended(proc: subprocess.Popen, seconds: float) -> bool:
    """Whether `proc` ends (and is reaped) within `seconds`.

    One blocking wait on a pidfd (Linux 5.3+), so a recall that runs for hours
    costs no wake-ups; Popen.wait(timeout) would wake every 50 ms to look,
    each wake taking the GIL from the request threads. Kernels without pidfd
    (RHEL 8) get that polling wait."""
    if proc.returncode is not None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # ENOSYS: no pidfd on this kernel
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        waiter = select.poll()
        waiter.register(fd, select.POLLIN)
        deadline = time.monotonic() + seconds
        while not waiter.poll(min(max(deadline - time.monotonic(), 0.0), 3600.0) * 1000):
            if time.monotonic() >= deadline:
                return False
    finally:
        os.close(fd)
    proc.wait()  # it has ended: this reaps it
    return True


def _watch_for_task(
    proc: subprocess.Popen, log_path: Path, deadline: float, on_task: Callable[[str], None]
) -> None:
    """Wait until the process has printed its task ID (then tell on_task),
    ended, or reached the deadline."""
    while time.monotonic() < deadline:
        try:
            with open(log_path, "rb") as fh:  # the task line comes first: read only the head
                head = fh.read(TASK_HEAD).decode("utf-8", errors="replace")
        except OSError:
            head = ""
        if (task_id := find_task_id(head)) is not None:
            on_task(task_id)
            return
        if _ended(proc, min(TASK_WATCH, max(deadline - time.monotonic(), 0.0))):
            return  # ended before it printed one: the caller reads what it said


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group of `proc` (sudo and eeadm below it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


#: Told of every run: subcommand, outcome (ok, failed, timeout, unavailable),
#: seconds, and what went wrong (None when it went well).
Observer = Callable[[str, str, float, str | None], None]


class Eeadm:
    """Runs `eeadm` subcommands with a configured prefix and timeout."""

    def __init__(
        self,
        command: Sequence[str],
        timeout: float,
        max_arg_bytes: int = DEFAULT_MAX_ARG_BYTES,
        env: dict[str, str] | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.command = list(command)
        self.timeout = timeout
        self.max_arg_bytes = max_arg_bytes
        self.env = env
        self.observe = observe
        #: whether `drive list --json` works here (None: not tried yet)
        self._drive_json: bool | None = None

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float | None = None,
        log_path: Path | None = None,
        on_start: Callable[[int], None] | None = None,
        on_task: Callable[[str], None] | None = None,
        check: bool = True,
    ) -> Result:
        """Run `eeadm ARGS`, wait for it, return its combined output.

        With `log_path` the output goes to that file instead of a pipe, so a
        long recall keeps running (and its output is kept) if we die.
        `on_start(pid)` is called once the process exists, `on_task(id)` (with
        `log_path`) as soon as it has printed its EE task ID.
        """
        started = time.monotonic()
        outcome, error = "failed", "interrupted"
        try:
            res = self._run(args, timeout, log_path, on_start, on_task, check)
            outcome = "ok" if res.returncode == 0 else "failed"
            error = None if res.returncode == 0 else f"exited with {res.returncode}"
            return res
        except EeadmError as exc:
            outcome = "timeout" if exc.timed_out else "unavailable" if exc.unavailable else "failed"
            error = str(exc)
            raise
        finally:
            if self.observe is not None:
                self.observe(_subcommand(args), outcome, time.monotonic() - started, error)

    def _run(
        self,
        args: Sequence[str],
        timeout: float | None,
        log_path: Path | None,
        on_start: Callable[[int], None] | None,
        on_task: Callable[[str], None] | None,
        check: bool,
    ) -> Result:
        argv = [*self.command, *args]
        timeout = self.timeout if timeout is None else timeout
        sink = open(log_path, "wb") if log_path else subprocess.PIPE  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        except OSError as exc:
            raise EeadmError(
                f"cannot run {argv[0]}: {exc.strerror}", command=argv, unavailable=True
            ) from exc
        finally:
            if log_path:
                sink.close()  # type: ignore[union-attr]
        if on_start:
            on_start(proc.pid)
        deadline = time.monotonic() + timeout
        try:
            if log_path is not None:  # no pipe to wait on: wait for the process
                if on_task is not None:
                    _watch_for_task(proc, log_path, deadline, on_task)
                if not _ended(proc, max(deadline - time.monotonic(), 0.0)):
                    raise subprocess.TimeoutExpired(argv, timeout)
            stdout, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, _ = proc.communicate()
            output = self._output(stdout, log_path)
            raise EeadmError(
                f"eeadm {_subcommand(args)} timed out after {timeout:g}s",
                command=argv,
                output=output,
                timed_out=True,
            ) from None
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        output = self._output(stdout, log_path)
        if check and proc.returncode != 0:
            raise EeadmError(
                f"eeadm {_subcommand(args)} exited with {proc.returncode}",
                command=argv,
                returncode=proc.returncode,
                output=output,
            )
        return Result(proc.returncode, output)

    @staticmethod
    def _output(stdout: bytes | None, log_path: Path | None) -> str:
        data = log_path.read_bytes() if log_path is not None else stdout or b""
        return data.decode("utf-8", errors="replace")

    def chunks(self, paths: Iterable[str]) -> Iterator[list[str]]:
        """Split paths into groups whose command line stays under max_arg_bytes."""
        chunk: list[str] = []
        size = 0
        for p in paths:
            n = len(p.encode()) + 1
            if chunk and size + n > self.max_arg_bytes:
                yield chunk
                chunk, size = [], 0
            chunk.append(p)
            size += n
        if chunk:
            yield chunk

    def node_list(self, timeout: float | None = None) -> str:
        """`eeadm node list`: the cheapest call that shows EE answers (readiness)."""
        return self.run(["node", "list"], timeout=timeout).output

    def drive_list(self) -> list[Drive]:
        """`eeadm drive list --json`, or its text form where EE has no `--json`
        (the form that worked is remembered). EeadmError when neither runs or
        prints a list of drives."""
        forms = [["drive", "list", "--json"], ["drive", "list"]]
        if self._drive_json is not None:
            forms = forms[:1] if self._drive_json else forms[1:]
        failure = None
        for args in forms:
            res = self.run(args, check=False)
            said = f"eeadm {' '.join(args)}"
            if res.returncode != 0:
                failure = f"{said} exited with {res.returncode}"
                continue
            try:
                drives = parse_drive_list(res.output)
            except DriveListError as exc:
                failure = f"{said} printed no list of drives: {exc}"
                continue
            self._drive_json = "--json" in args
            return drives
        raise EeadmError(
            failure or "eeadm drive list failed",
            command=[*self.command, *forms[-1]],
            output=res.output,
        )

    def file_state(self, paths: Sequence[str]) -> dict[str, FileState | StateError]:
        """States of many files, with as few `eeadm file state -s` calls as fit.

        A call that exits non-zero still yields the lines it printed; a path
        it said nothing about gets a StateError. Only a call that printed
        nothing usable (or could not run, or timed out) raises EeadmError.
        """
        results: dict[str, FileState | StateError] = {}
        for chunk in self.chunks(paths):
            res = self.run(["file", "state", "-s", "--", *chunk], check=False)
            parsed, stray = parse_file_state_short(res.output)
            if res.returncode != 0 and not parsed:
                raise EeadmError(
                    f"eeadm file state exited with {res.returncode}",
                    command=[*self.command, "file", "state", "-s", "--", "..."],
                    returncode=res.returncode,
                    output=res.output,
                )
            if stray:
                log.warning("eeadm file state printed unparsed lines: %r", stray[:5])
            for p in chunk:
                results[p] = parsed.get(p) or StateError(p, "eeadm reported no state for the file")
        return results

    def recall(
        self,
        list_file: Path,
        *,
        library: str | None,
        resident: bool,
        timeout: float,
        log_path: Path,
        on_start: Callable[[int], None] | None = None,
        on_task: Callable[[str], None] | None = None,
    ) -> Result:
        """Run one `eeadm recall LISTFILE [-l LIB] [--resident]` to the end."""
        args = ["recall", str(list_file)]
        if library:
            args += ["-l", library]
        if resident:
            args.append("--resident")
        return self.run(
            args,
            timeout=timeout,
            log_path=log_path,
            on_start=on_start,
            on_task=on_task,
            check=False,
        )

    def task_status(self, task_id: str) -> str | None:
        """`eeadm task show ID`'s status (`running`, `completed`, ...); None
        when EE knows no such task or says no status. EeadmError when eeadm
        cannot be asked."""
        res = self.run(["task", "show", task_id], check=False)
        return parse_task_status(res.output) if res.returncode == 0 else None
