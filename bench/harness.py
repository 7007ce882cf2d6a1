"""The tests' harness (tests/support: gunicorn and eeadm wrappers, a throwaway
PostgreSQL cluster) for the benchmarks,
which run as scripts from bench/ (`python bench/workloads.py`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import devserver, pgcluster

__all__ = ["devserver", "pgcluster"]
