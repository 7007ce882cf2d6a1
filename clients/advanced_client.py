#!/usr/bin/env python3
"""Globus stage app for DTNs that see the tape file system over NFS.

Like simple_client.py (keep both files in one directory), but first maps the
NFS path Globus gives to the GPFS path the service knows: the first DEPTH
components of the path (default 4: `/nfs/dataden/<export>`) are the NFS
mount point, looked up in /proc/mounts, or in the autofs map file named by
AUTOFS (`<export>  -options  server:/gpfs/path`, `*` and `&` understood).
`/nfs/dataden/<export>/rest` becomes `/gpfs/path/rest`. A path on no NFS
mount is sent unchanged. Exit codes as simple_client.py.
"""

from __future__ import annotations

import os
import posixpath
import sys
from collections.abc import Mapping
from pathlib import Path

from simple_client import EXIT_USAGE, StageError, run


def _remote_path(device: str) -> str | None:
    """`server:/gpfs/x` -> `/gpfs/x`."""
    _host, sep, remote = device.partition(":")
    return remote.rstrip("/") or "/" if sep and remote.startswith("/") else None


def export_from_mounts(mount_point: str, mounts_text: str) -> str | None:
    """The exported path of the NFS mount at `mount_point`, per /proc/mounts."""
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == mount_point and fields[2].startswith("nfs"):
            return _remote_path(fields[0])
    return None


def export_from_autofs(name: str, map_text: str) -> str | None:
    """The exported path for key `name` in an autofs map (`*` and `&` supported)."""
    wildcard = None
    for line in map_text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        location = fields[-1].replace("&", name)
        if fields[0] == name:
            return _remote_path(location)
        if fields[0] == "*":
            wildcard = _remote_path(location)
    return wildcard


def remap(path: str, depth: int, mounts_text: str, autofs_text: str | None) -> str:
    """The GPFS path for an NFS path, or `path` itself when it is on no NFS mount."""
    parts = path.split("/")
    if depth < 2 or len(parts) <= depth:
        return path
    mount_point = "/".join(parts[:depth])
    rest = "/".join(parts[depth:])
    if autofs_text is not None:
        export = export_from_autofs(parts[depth - 1], autofs_text)
    else:
        export = export_from_mounts(mount_point, mounts_text)
    return path if export is None else posixpath.join(export, rest)


def remapped_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with GLOBUS_STAGE_PATH mapped to its GPFS path."""
    out = dict(env)
    path = env.get("GLOBUS_STAGE_PATH", "")
    if not path:
        return out
    try:
        depth = int(env.get("DEPTH") or 4)
    except ValueError:
        raise StageError(EXIT_USAGE, "DEPTH must be a whole number") from None
    autofs = env.get("AUTOFS")
    try:
        autofs_text = Path(autofs).read_text() if autofs else None
        mounts_text = "" if autofs else Path("/proc/mounts").read_text()
    except OSError as exc:
        raise StageError(EXIT_USAGE, f"cannot read {exc.filename}: {exc.strerror}") from None
    out["GLOBUS_STAGE_PATH"] = remap(path, depth, mounts_text, autofs_text)
    return out


def main() -> int:
    try:
        env = remapped_env(os.environ)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    return run(env)


if __name__ == "__main__":
    sys.exit(main())
