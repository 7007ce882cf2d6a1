"""What the store hands out: plain typed records, never database rows.

The store's interface is these records and intent-named operations, so code
above it does not depend on column names or on SQLite, and a second backend
can return the same records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_row(cls: type[T], row: Mapping[str, Any]) -> T:
    """A record of `cls` from a row (anything indexable by column name)."""
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        value = row[f.name]
        values[f.name] = bool(value) if f.type == "bool" else value
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
    known: bool  # the requester the lookup named has asked for it before


@dataclass(frozen=True)
class Batch:
    """One `eeadm recall`."""

    id: int
    library: str
    status: str  # running, done
    n_files: int
    pid: int | None
    eeadm_task_id: int | None
    started_at: float
    ended_at: float | None
    outcome: str | None  # succeeded, partial, failed
    detail: str | None
    tape: str | None  # the one tape it reads (TAPE_DRIVES), else None


@dataclass(frozen=True)
class LibraryQueue:
    """The files of one library ready for a recall now."""

    library: str
    n: int
    oldest: float
    newest: float


@dataclass(frozen=True)
class StageRequest:
    """A WLCG stage request."""

    id: str
    owner: str
    created_at: float
    started_at: float | None


@dataclass(frozen=True)
class RequestFile:
    """One file of a WLCG stage request."""

    request_id: str
    path: str
    position: int
    state: str
    error: str | None
    started_at: float | None
    finished_at: float | None
