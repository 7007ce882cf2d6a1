"""The tests' harness (tests/support: gunicorn and eeadm wrappers, a throwaway
PostgreSQL cluster) for the benchmarks,
which run as scripts from bench/ (`python bench/workloads.py`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ltfsee_globus import pgcluster
from support import devserver

__all__ = ["devserver", "pgcluster"]
