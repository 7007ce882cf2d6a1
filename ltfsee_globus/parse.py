"""Pure parsers for what `eeadm` prints (docs/eeadm.md).

Nothing here runs a command: each function takes text and returns data, so it
can be tested on the captured samples. Anything not in a known form becomes an
error value for the file it concerns, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

#: Letters of `eeadm file state -s` we understand, and what they mean.
STATE_NAMES = {"R": "resident", "P": "premigrated", "M": "migrated"}
ON_DISK = frozenset({"R", "P"})

_STATE_LINE = re.compile(
    r"^(?P<letter>\S+)\s+(?P<replicas>\d+)\s+(?P<t1>\S+)\s+(?P<t2>\S+)\s+(?P<t3>\S+)"
    r"\s+--\s(?P<path>/.*)$"
)
_TRAILING_PATH = re.compile(r"\s--\s(?P<path>/.*)$")


@dataclass(frozen=True)
class FileState:
    """One file's state as `eeadm file state -s` reports it."""

    path: str
    letter: str
    replicas: int
    tapes: tuple[str, ...]

    @property
    def on_disk(self) -> bool:
        return self.letter in ON_DISK

    @property
    def migrated(self) -> bool:
        return self.letter == "M"

    def tape_ids(self) -> list[str]:
        """Volume serials (the part before the first `@`) of the tapes."""
        return [t.split("@", 1)[0] for t in self.tapes]

    def as_json(self) -> dict:
        return {
            "state": self.letter,
            "replicas": self.replicas,
            "tapes": list(self.tapes),
            "path": self.path,
        }


@dataclass(frozen=True)
class StateError:
    """A file whose state could not be read; `reason` says why."""

    path: str | None
    reason: str


def parse_file_state_short(text: str) -> tuple[dict[str, FileState | StateError], list[str]]:
    """Parse every line of `eeadm file state -s` output.

    Returns a mapping path -> FileState or StateError, and the lines that could
    not be attributed to any path (for logging). Unknown state letters and
    malformed lines that still end in `-- /path` become errors for that path.
    """
    results: dict[str, FileState | StateError] = {}
    stray: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        m = _STATE_LINE.match(line)
        if m is None:
            tail = _TRAILING_PATH.search(line)
            if tail:
                path = tail.group("path")
                results[path] = StateError(path, f"unparseable eeadm line: {line.strip()!r}")
            else:
                stray.append(line)
            continue
        path = m.group("path")
        letter = m.group("letter")
        if letter not in STATE_NAMES:
            results[path] = StateError(path, f"unsupported file state {letter!r}")
            continue
        tapes = tuple(t for t in (m.group("t1"), m.group("t2"), m.group("t3")) if t != "-")
        results[path] = FileState(path, letter, int(m.group("replicas")), tapes)
    return results, stray


_CODE = re.compile(r"\b(?P<code>GLES[A-Z]\d{3}(?P<sev>[IWE]))\b:?\s*(?P<msg>.*)$")
_PROVIDED = re.compile(r"(\d+) file name\(s\) have been provided")
_ALL_OK = re.compile(r"All (\d+) file\(s\) ha(?:s|ve) been successfully processed")
#: A task ID: `1000`, and the newer forms `1005:1111:4444`, `tmp15nwx2vl`,
#: `tmp15nwx2vl:1000:1002`, `tmp15nwx2vl_123:tmpn9km_wyx:1001` (docs/eeadm.md).
_TASK_ID = re.compile(r"task ID is ([A-Za-z0-9_]+(?::[A-Za-z0-9_]+)*)")
#: A message code that reports a duplicate task, which is not a failure.
DUPLICATE_TASK = "GLESM431E"


@dataclass
class RecallOutput:
    """What an `eeadm recall` run said about itself."""

    provided: int | None = None
    succeeded: int | None = None
    task_id: str | None = None  # as EE printed it (not always a number)
    errors: list[str] = field(default_factory=list)

    @property
    def all_succeeded(self) -> bool:
        return self.succeeded is not None and not self.errors

    def summary(self) -> str:
        """One line for logs and for a file's `last_error`."""
        if self.errors:
            return "; ".join(self.errors[:3])
        if self.succeeded is not None:
            return f"all {self.succeeded} file(s) processed"
        return "no result reported by eeadm"


def find_task_id(text: str) -> str | None:
    """The task ID a recall printed (`task ID is N`), as printed; None before it has."""
    m = _TASK_ID.search(text)
    return m.group(1) if m else None


#: `eeadm task show`'s status line (the simulator's form; EE's JSON says the same words)
_TASK_STATUS = re.compile(r"^\s*Status\s*:\s*(\w+)", re.M | re.I)
#: statuses of a task EE is still working on (docs/eeadm.md)
TASK_ACTIVE = frozenset({"waiting", "running"})


def parse_task_status(text: str) -> str | None:
    """The status `eeadm task show N` gives (`waiting`, `running`, `completed`),
    lower case; None when the output says none."""
    m = _TASK_STATUS.search(text)
    return m.group(1).lower() if m else None


def parse_recall_output(text: str) -> RecallOutput:
    """Parse the messages of `eeadm recall`: provided count, success, task id, errors."""
    out = RecallOutput()
    for line in text.splitlines():
        if m := _PROVIDED.search(line):
            out.provided = int(m.group(1))
        if m := _ALL_OK.search(line):
            out.succeeded = int(m.group(1))
        if (m := _TASK_ID.search(line)) and out.task_id is None:
            out.task_id = m.group(1)
        code = _CODE.search(line)
        if code and code.group("sev") == "E" and code.group("code") != DUPLICATE_TASK:
            out.errors.append(f"{code.group('code')}: {code.group('msg').strip()}")
    return out


# -- eeadm drive list ---------------------------------------------------------------
#: Drive states that mean "working" when EE prints no status (EE 1.3.0.x
#: before the `status` field; the states IBM files under status ok).
OK_DRIVE_STATES = frozenset(
    {"mounted", "not_mounted", "mounting", "in_use", "unmounting", "standby"}
)
#: The text form's columns, as its header names them.
_DRIVE_COLUMNS = (
    "Drive S/N",
    "Status",
    "State",
    "Type",
    "Role",
    "Library",
    "Node ID",
    "Tape",
    "Node Group",
    "Task ID",
)


class DriveListError(ValueError):
    """`eeadm drive list` printed nothing we can read as a list of drives."""


@dataclass(frozen=True)
class Drive:
    """One tape drive as `eeadm drive list` shows it."""

    id: str
    library: str
    state: str
    role: str
    status: str = ""  # ok, info, error; "" where EE does not print it
    tape: str = ""  # the tape it holds ("" none)
    node_group: str = ""
    task: str = ""

    @property
    def serves_recalls(self) -> bool:
        """Role has `r` and the drive works: status ok, or without a status
        field a state IBM counts as ok."""
        working = self.status == "ok" if self.status else self.state in OK_DRIVE_STATES
        return "r" in self.role and working


def parse_drive_list(text: str) -> list[Drive]:
    """The drives of `eeadm drive list --json` (an object with a `payload`
    list) or of its text form (a table under a header line); DriveListError
    for anything else. A row that is not a drive is skipped."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return _drives_json(stripped)
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if line.lstrip().startswith("Drive S/N"):
            return _drives_text(line, lines[n + 1 :])
    raise DriveListError(f"no drive list in the output: {stripped[:120]!r}")


def _drives_json(text: str) -> list[Drive]:
    try:
        payload = json.loads(text).get("payload")
    except (ValueError, AttributeError):
        raise DriveListError("eeadm drive list --json printed no JSON object") from None
    if not isinstance(payload, list):
        raise DriveListError("eeadm drive list --json printed no payload list")
    out = []
    for d in payload:
        if not isinstance(d, dict) or not isinstance(d.get("id"), str):
            continue
        tape = str(d.get("tape_barcode") or "")
        out.append(
            Drive(
                id=d["id"],
                library=str(d.get("library_name") or ""),
                state=str(d.get("state") or ""),
                role=str(d.get("role") or ""),
                status=str(d.get("status") or ""),
                tape=tape,
                node_group=str(d.get("nodegroup_name") or ""),
                task=str(d.get("task_id") or ""),
            )
        )
    return out


def _drives_text(header: str, rows: list[str]) -> list[Drive]:
    """Cells cut at the header's column starts (a cell may be empty)."""
    starts = []
    for name in _DRIVE_COLUMNS:
        at = header.find(name)
        if at < 0:
            raise DriveListError(f"eeadm drive list's header has no {name!r} column")
        starts.append(at)
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    out = []
    for row in rows:
        if not row.strip():
            continue
        cells = [row[a:b].strip() if b else row[a:].strip() for a, b in bounds]
        words = row.split()
        if len(words) == len(_DRIVE_COLUMNS):  # columns wider than the header's
            cells = words
        if not cells[0] or " " in cells[0]:
            continue
        plain = [("" if c == "-" else c) for c in cells]
        out.append(
            Drive(
                id=plain[0],
                status=plain[1],
                state=plain[2],
                role=plain[4],
                library=plain[5],
                tape=plain[7],
                node_group=plain[8],
                task=plain[9],
            )
        )
    return out


def recall_drives(drives: list[Drive]) -> dict[str, int]:
    """Per library: the drives that can serve recalls now."""
    out: dict[str, int] = {}
    for d in drives:
        out.setdefault(d.library, 0)
        if d.serves_recalls:
            out[d.library] += 1
    return out
