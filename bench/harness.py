"""The tests' harness (tests/support: gunicorn and eeadm wrappers, a throwaway
PostgreSQL cluster) for the benchmarks,
which run as scripts from bench/ (`python bench/workloads.py`)."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ltfsee_globus import pgcluster
from support import devserver

__all__ = ["devserver", "pgcluster", "source_tree"]


def source_tree(work: Path, ref: str) -> Path:
    """This repository's source tree at git `ref`, exported under `work` (an
    earlier build to run beside this one: devserver.start(..., root=it))."""
    dest = work / ("src-" + ref.replace("/", "_"))  # a ref may hold slashes
    if not dest.exists():
        dest.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(devserver.ROOT), "archive", ref], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest
