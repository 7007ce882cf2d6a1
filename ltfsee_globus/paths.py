"""Checking client-supplied paths before anything touches them.

Refusals are domain errors (PathRefused, OutsideRoots); the API maps them to
400 and 403, the WLCG intake to a failed file, prefetch to a skipped name.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence


class PathRefused(ValueError):
    """A path that may not reach the file system or eeadm; says why (HTTP 400)."""


class OutsideRoots(PathRefused):
    """A path outside the managed file systems (HTTP 403, saying nothing more)."""

    def __init__(self) -> None:
        super().__init__("path is outside the managed file systems")


MAX_PATH = 4096
# Control characters (C0, DEL, C1: Unicode's category Cc) and the line and
# paragraph separators (Zl, Zp): each may end a line of eeadm's output as
# Python splits it (str.splitlines). One compiled scan, as every poll runs it.
_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_GLOB = re.compile(r"[*?\[\]]")


def normalise(raw: object) -> str:
    """An absolute, normalised path, or PathRefused saying what is wrong.

    Refuses what could reach `eeadm` as anything but one file name: relative
    paths, `..`, names that are not valid UTF-8, control characters and line
    separators (a newline would split the recall list or eeadm's answer), glob
    characters and components starting with `-`.
    """
    if not isinstance(raw, str) or not raw:
        raise PathRefused("path must be a non-empty string")
    if len(raw) > MAX_PATH:
        raise PathRefused(f"path is longer than {MAX_PATH} characters")
    try:
        raw.encode("utf-8")  # file names found by a walk may hold undecodable bytes
    except UnicodeEncodeError:
        raise PathRefused("path is not valid UTF-8") from None
    if _BREAKS.search(raw):
        raise PathRefused("path contains a control character or line break")
    if not raw.startswith("/"):
        raise PathRefused("path must be absolute")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused("path must not contain '..'")
    if _GLOB.search(raw):
        raise PathRefused("path must not contain glob characters (*?[])")
    if any(p.startswith("-") for p in parts):
        raise PathRefused("path components must not start with '-'")
    return "/" + "/".join(parts)


def under(path: str, roots: Sequence[str]) -> str | None:
    """The root of `roots` that contains `path`, or None."""
    for root in roots:
        root = root.rstrip("/")
        if path == root or path.startswith(root + "/"):
            return root
    return None


def check_managed(raw: object, roots: Sequence[str], *, resolve: bool = True) -> str:
    """Normalise `raw` and require it under a managed root; with `resolve`,
    where its links lead too (see check_resolved). 403 says nothing about
    whether the file exists."""
    path = normalise(raw)
    if under(path, roots) is None:
        raise OutsideRoots
    if resolve:
        check_resolved(path, roots)
    return path


@functools.lru_cache(maxsize=16)
def _real_roots(roots: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(os.path.realpath(r) for r in roots)


def in_real_roots(real: str, roots: Sequence[str]) -> bool:
    """Whether `real`, a path with its links resolved, is under one of `roots`
    (resolved too: a root may itself be reached through a link)."""
    return under(real, _real_roots(tuple(roots))) is not None


def check_resolved(path: str, roots: Sequence[str]) -> None:
    """403 when symbolic links take `path` out of the managed roots.

    Needed before the file system or eeadm is touched; a file the store
    already holds was checked when it was queued.
    """
    if not in_real_roots(os.path.realpath(path), roots):
        raise OutsideRoots


def is_clean_name(name: str) -> bool:
    """True when a directory entry's name may be part of a path the API accepts
    (see normalise): for names found by walking the file system."""
    try:
        return name not in ("", ".", "..") and normalise("/" + name) == "/" + name
    except PathRefused:
        return False
