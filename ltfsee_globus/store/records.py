"""What the store hands out: plain typed records and the states they use.

Code above the store sees these records and intent-named operations, never a
database row, a column list or a driver type, so either engine can serve it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")

#: File statuses: waiting for a batch, in a running recall, on disk, given up.
QUEUED, RECALLING, DONE, FAILED = "queued", "recalling", "done", "failed"
ACTIVE = (QUEUED, RECALLING)
STATUSES = (QUEUED, RECALLING, DONE, FAILED)

#: WLCG Tape REST file states.
SUBMITTED, STARTED, COMPLETED, CANCELLED = "SUBMITTED", "STARTED", "COMPLETED", "CANCELLED"
FINAL = (COMPLETED, "FAILED", CANCELLED)

#: What is counted per task about prefetch: queued, later asked for, dropped.
PREFETCH_FIELDS = ("files", "bytes", "asked_files", "asked_bytes", "dropped_files", "dropped_bytes")

#: Monotonic totals (Prometheus counters), kept by the store's triggers.
TOTALS = (
    "queued",
    "retried",
    "recalled",
    "recalled_bytes",
    "failed",
    "batches_succeeded",
    "batches_partial",
    "batches_failed",
)


@cache
def _fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, is it a bool) of each field of a record class."""
    return tuple((f.name, f.type == "bool") for f in fields(cls))


def from_row(cls: type[T], row: Mapping[str, Any]) -> T:
    """A record of `cls` from a row mapping (column name to value); columns
    the record has no field for are ignored, a missing one takes its default.
    SQLite's integer flags become bools."""
    values = {
        name: bool(row[name]) if is_bool else row[name]
        for name, is_bool in _fields(cls)
        if name in row
    }
    return cls(**values)


@dataclass(frozen=True)
class FileRecord:
    """A file the service has been asked about (or prefetched)."""

    path: str
    library: str
    status: str  # queued, recalling, done, failed
    attempts: int
    last_error: str | None
    batch_id: int | None
    prefetched: bool
    requested: bool  # a client asked for it (not only prefetch)
    size: int | None
    tape: str | None
    queued_at: float
    not_before: float
    created_at: float
    updated_at: float
    finished_at: float | None
    known: bool = False  # lookup(): the requester it named has asked for it before
    owner: str = ""  # the requester it was queued for (a Globus task, a WLCG request)
    priority: int = 0  # its key's scheduling priority

    def __post_init__(self) -> None:
        # a tape not known: SQLite keeps '' (its files are keyed by tape)
        if self.tape == "":
            object.__setattr__(self, "tape", None)


@dataclass(frozen=True)
class Update:
    """What the stager decided for one file of a finished batch."""

    path: str
    status: str
    last_error: str | None = None
    not_before: float = 0.0
    size: int | None = None
    tape: str | None = None
    library: str | None = None  # another library's copy, for the next attempt


@dataclass(frozen=True)
class Batch:
    """One `eeadm recall`."""

    id: int
    library: str
    status: str  # running, done
    n_files: int
    pid: int | None
    eeadm_task_id: str | None  # as EE printed it: `eeadm task show ID -r` tells more
    started_at: float
    ended_at: float | None
    outcome: str | None  # succeeded, partial, failed
    detail: str | None
    tape: str | None  # the one tape it reads (TAPE_DRIVES), else None
    files_done: int = 0  # batches(): its files on disk so far
    node: str | None = None  # the node whose stager started it
    epoch: int | None = None  # the stager lease's epoch it was started under
    owners: str = ""  # who queued its files (requester keys, one a line)
    bytes: int = 0  # what its files hold, as far as known

    @property
    def requesters(self) -> frozenset[str]:
        return frozenset(o for o in self.owners.split("\n") if o)


@dataclass(frozen=True)
class QueuedTape:
    """Queued files of one library and tape (tape "": not known) that one
    requester queued; `oldest`: when the tape's oldest file ready now was
    queued (None: every file of it waits for a retry)."""

    library: str
    tape: str
    owner: str
    priority: int
    files: int
    bytes: int
    newest: float
    oldest: float | None
    asked: int = 0  # of `files`, those a client asked for (not only prefetch)


@dataclass(frozen=True)
class TapeQueue:
    """Queued files of one library and tape (a file of unknown tape: tape "")."""

    library: str
    tape: str
    files: int
    bytes: int
    oldest_age: float


@dataclass(frozen=True)
class Backlog:
    """Queued files of one library."""

    library: str
    files: int
    oldest_age: float


@dataclass(frozen=True)
class StageRequest:
    """A WLCG stage request."""

    id: str
    owner: str
    created_at: float
    started_at: float | None


@dataclass(frozen=True)
class RequestSummary:
    """A WLCG stage request as operators see it: who made it (a key's name,
    a token's sub@issuer, a DN) and how far its files are."""

    id: str
    owner: str
    created_at: float
    files: int
    completed: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class RequestFile:
    """One file of a WLCG stage request."""

    request_id: str
    asked_as: str  # the path as the client wrote it (what it is answered as)
    path: str  # normalised: the file the service stages
    position: int
    state: str
    error: str | None
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class PrefetchTally:
    """What prefetch queued for one task, and what became of it."""

    taskid: str
    files: int
    bytes: int
    asked_files: int
    asked_bytes: int
    dropped_files: int
    dropped_bytes: int


@dataclass(frozen=True)
class TapeDrive:
    """A drive as the stager last read it from `eeadm drive list`."""

    id: str
    library: str
    status: str
    state: str
    role: str
    tape: str
    recall: bool  # it can serve recalls now
    age: float  # seconds since it was read


@dataclass(frozen=True)
class EeadmHealth:
    """How one eeadm subcommand answered lately, whichever process ran it."""

    subcommand: str
    at: float
    outcome: str
    seconds: float
    calls: int
    failures: int
    last_error: str | None
    last_error_at: float | None
    age: float  # seconds since `at`


@dataclass(frozen=True)
class OperatorAction:
    """A change an operator made by hand (the CLI)."""

    at: float
    who: str
    action: str
    target: str
    files: int


@dataclass(frozen=True)
class Counts:
    """Totals for the status page and metrics, O(1) whatever the store's size."""

    files: dict[str, int]  # per status, now
    batches: dict[str, int]  # running, done, now
    prefetch: dict[str, int]  # PREFETCH_FIELDS, ever
    totals: dict[str, int]  # TOTALS, ever
    oldest_queued_age: float | None
