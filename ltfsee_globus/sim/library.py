"""A simulated Spectrum Archive tape library kept on disk.

The library lives in one directory: the "file system" (real sparse stub files
under `<dir>/gpfs0`) and a SQLite store (`<dir>/.eeadm-sim/library.db`) with
tapes, drives, file placement and states, recall tasks and counters.

Time is simulated: `sim_now() = (wall - origin) * time_scale`, so one simulated
hour can pass in seconds. The model is a lazy discrete-event simulation: every
`eeadm-sim` process, before it reads or changes anything, takes the store's
write lock and advances the schedule up to the current simulated time. Every
decision is taken at the simulated instant it belongs to, so the result does
not depend on which process happens to advance it, nor when.

Scheduling follows EE: each recall is a task split into per-tape work; within
a work item files are read in tape order; a free drive prefers work for the
tape it holds, else the oldest waiting work whose tape is not in another
drive; tapes stay mounted until their drive is needed for another tape.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

SIM_SUBDIR = ".eeadm-sim"
FS_ROOT = "gpfs0"
SCHEMA_VERSION = 1


@dataclass
class Timing:
    """Per-operation costs in simulated seconds (LTO-8/9 class defaults)."""

    mount: float = 60.0  # robot move + load/thread
    unmount: float = 60.0  # rewind + unload
    locate_full: float = 60.0  # locate from one end of the tape to the other
    read_rate: float = 300e6  # bytes per second
    task_overhead: float = 3.0  # fixed cost of a task before tape work starts
    tape_length: int = 18 * 10**12  # bytes of tape addressed by positions


SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tapes (
    volser TEXT PRIMARY KEY, pool TEXT NOT NULL, library TEXT NOT NULL,
    free_at REAL NOT NULL DEFAULT 0);
CREATE TABLE drives (
    id INTEGER PRIMARY KEY, library TEXT NOT NULL, tape TEXT, head INTEGER NOT NULL DEFAULT 0,
    free_at REAL NOT NULL DEFAULT 0, last_used REAL NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1);
CREATE TABLE files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, state TEXT NOT NULL, tape TEXT,
    position INTEGER, damaged INTEGER NOT NULL DEFAULT 0);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, created REAL NOT NULL, started REAL, finished REAL,
    resident INTEGER NOT NULL, library TEXT, n_files INTEGER NOT NULL,
    n_failed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE task_files (
    task_id INTEGER NOT NULL, path TEXT NOT NULL, tape TEXT, ok INTEGER,
    message TEXT, done_at REAL, applied INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, path));
CREATE INDEX task_files_pending ON task_files (applied, done_at);
CREATE TABLE work (
    id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, tape TEXT NOT NULL,
    library TEXT NOT NULL, arrival REAL NOT NULL, drive INTEGER, started REAL, finished REAL);
CREATE INDEX work_waiting ON work (drive, arrival);
CREATE TABLE counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""
#: Copies beyond a file's first (files.tape): copy 2 and 3, as EE keeps them.
COPIES = """
CREATE TABLE IF NOT EXISTS copies (
    path TEXT NOT NULL, copy INTEGER NOT NULL, tape TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (path, copy));
"""
#: Whether a drive is in service (`eeadm-sim drive down|up`), for libraries
#: made before drives could go down.
DRIVE_ENABLED = "ALTER TABLE drives ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1"
#: EE keeps at most three copies of a file.
MAX_COPIES = 3

COUNTERS = ("tasks", "mounts", "unmounts", "locates", "bytes_read", "files_recalled", "failures")


class SimError(Exception):
    """The simulated library cannot do what was asked."""


def store_path(root: Path) -> Path:
    return root / SIM_SUBDIR / "library.db"


class Library:
    """Handle on one simulated library directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        db = store_path(self.root)
        if not db.exists():
            raise SimError(
                f"no simulated library in {self.root} (run: ltfsee-globus simulator init)"
            )
        self.conn = sqlite3.connect(db, timeout=60, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA busy_timeout = 60000")
        self.conn.execute(COPIES)  # libraries made before copies existed
        if not self._drives_have_enabled():
            # Under the write lock and asked again: processes opening an old
            # library at once must not both add the column.
            self.conn.execute("BEGIN IMMEDIATE")
            if not self._drives_have_enabled():
                self.conn.execute(DRIVE_ENABLED)
            self.conn.execute("COMMIT")
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        self.origin = float(meta["origin"])
        self.time_scale = float(meta["time_scale"])
        self.timing = Timing(**json.loads(meta["timing"]))

    def _drives_have_enabled(self) -> bool:
        return any(r[1] == "enabled" for r in self.conn.execute("PRAGMA table_info(drives)"))

    def close(self) -> None:
        self.conn.close()

    # -- time -------------------------------------------------------------
    def sim_now(self) -> float:
        return (time.time() - self.origin) * self.time_scale

    def real_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.time_scale

    @contextmanager
    def locked(self) -> Iterator[float]:
        """A write transaction with the schedule advanced to now; yields now."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            now = self.sim_now()
            self._advance(now)
            yield now
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- queries ------------------------------------------------------------
    def file_states(
        self, paths: Iterable[str]
    ) -> list[tuple[str, sqlite3.Row | None, bool, list[str]]]:
        """(path, row or None, exists on disk, its copies as VOLSER@POOL@LIBRARY)
        for each path, schedule advanced."""
        out = []
        with self.locked():
            for p in paths:
                row = self.conn.execute("SELECT * FROM files WHERE path = ?", (p,)).fetchone()
                out.append((p, row, os.path.isfile(p), [t for t, _ in self._copies(p, row)]))
        return out

    def _copies(self, path: str, row: sqlite3.Row | None) -> list[tuple[str, str]]:
        """(VOLSER@POOL@LIBRARY, library) of each copy of a file, first copy first."""
        if row is None or row["tape"] is None:
            return []
        rows = self.conn.execute(
            "SELECT t.volser, t.pool, t.library FROM ("
            "  SELECT 1 AS copy, ? AS tape UNION ALL"
            "  SELECT copy, tape FROM copies WHERE path = ?"
            ") c JOIN tapes t ON t.volser = c.tape ORDER BY c.copy",
            (row["tape"], path),
        )
        return [(f"{v}@{pool}@{lib}", lib) for v, pool, lib in rows]

    def paths(self, state: str | None = None) -> list[str]:
        """The library's files, by path; only those in `state` (R, P, M) if given."""
        rows = self.conn.execute(
            "SELECT path FROM files WHERE ?1 IS NULL OR state = ?1 ORDER BY path", (state,)
        )
        return [r[0] for r in rows]

    @classmethod
    def list_paths(cls, root: str | os.PathLike, state: str | None = None) -> list[str]:
        """paths() of the library at `root`, opened and closed for the call."""
        lib = cls(root)
        try:
            return lib.paths(state)
        finally:
            lib.close()

    def libraries(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT library FROM tapes ORDER BY library")
        return [r[0] for r in rows]

    # -- recall -------------------------------------------------------------
    def submit_recall(self, paths: list[str], library: str | None, resident: bool) -> int:
        """Create a recall task and its per-tape work; returns the task id."""
        with self.locked() as now:
            if library is not None and library not in self.libraries():
                raise SimError(f"GLESL012E: Library {library} does not exist.")
            cur = self.conn.execute(
                "INSERT INTO tasks (created, resident, library, n_files) VALUES (?, ?, ?, ?)",
                (now, int(resident), library, len(paths)),
            )
            task_id = int(cur.lastrowid or 0)
            self._count("tasks", 1)
            tapes: dict[tuple[str, str], None] = {}
            for p in dict.fromkeys(paths):
                tape, ok, msg = self._classify(p, library, resident)
                done_at = now if ok is not None else None
                self.conn.execute(
                    "INSERT INTO task_files (task_id, path, tape, ok, message, done_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (task_id, p, tape, ok, msg, done_at),
                )
                if ok is None:
                    lib = self.conn.execute(
                        "SELECT library FROM tapes WHERE volser = ?", (tape,)
                    ).fetchone()[0]
                    tapes[(tape, lib)] = None
            arrival = now + self.timing.task_overhead
            for tape, lib in tapes:
                self.conn.execute(
                    "INSERT INTO work (task_id, tape, library, arrival) VALUES (?, ?, ?, ?)",
                    (task_id, tape, lib, arrival),
                )
            self._advance(now)
        return task_id

    def _classify(
        self, path: str, library: str | None, resident: bool
    ) -> tuple[str | None, int | None, str | None]:
        """(tape, ok, message) of one listed file; ok None means tape work is needed."""
        row = self.conn.execute("SELECT * FROM files WHERE path = ?", (path,)).fetchone()
        if row is None:
            if os.path.isfile(path):
                return None, 1, "already resident"
            return None, 0, f"GLESL011E: File {path} does not exist."
        if row["state"] == "R":
            return None, 1, "already resident"
        if row["state"] == "P":
            if resident:
                self.conn.execute("UPDATE files SET state = 'R' WHERE path = ?", (path,))
            return None, 1, "already premigrated"
        for tape, tape_lib in self._copies(path, row):
            if library is None or tape_lib == library:
                return tape.split("@", 1)[0], None, None
        return None, 0, f"GLESL013E: File {path} is not on a tape of library {library}."

    def task_status(self, task_id: int) -> tuple[bool, float | None, list[sqlite3.Row]]:
        """(finished, next simulated time something happens to it, its files)."""
        task = self.conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if task is None:
            raise SimError(f"GLESL018E: Task {task_id} does not exist.")
        files = self.conn.execute(
            "SELECT * FROM task_files WHERE task_id = ? ORDER BY path", (task_id,)
        ).fetchall()
        if task["finished"] is not None:
            return True, None, files
        pending = [f["done_at"] for f in files if f["done_at"] is not None and not f["applied"]]
        return False, min(pending) if pending else None, files

    # -- the schedule ---------------------------------------------------------
    def _count(self, name: str, n: float) -> None:
        self.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def _advance(self, now: float) -> None:
        """Run every scheduling decision due up to `now`, then apply finished reads."""
        drives = [dict(r) for r in self.conn.execute("SELECT * FROM drives ORDER BY id")]
        while True:
            waiting = self.conn.execute(
                "SELECT w.*, max(w.arrival, t.free_at) AS ready FROM work w "
                "JOIN tapes t ON t.volser = w.tape "
                "WHERE w.drive IS NULL AND w.arrival <= ? ORDER BY w.arrival, w.id",
                (now,),
            ).fetchall()
            if not waiting:
                break
            choice = self._choose(drives, waiting, now)
            if choice is None:
                break
            self._execute(*choice)
        self._apply(now)

    @staticmethod
    def _choose(drives: list[dict], waiting: list[sqlite3.Row], now: float):
        """The (drive, work, start) to schedule next, or None if nothing starts by now."""
        best = None
        for d in drives:
            if d["free_at"] > now or not d["enabled"]:
                continue
            elsewhere = {o["tape"] for o in drives if o is not d and o["tape"]}
            eligible = [
                w for w in waiting if w["library"] == d["library"] and w["tape"] not in elsewhere
            ]
            if not eligible:
                continue
            start = max(d["free_at"], min(w["ready"] for w in eligible))
            if start > now:
                continue
            avail = [w for w in eligible if w["ready"] <= start]
            same = [w for w in avail if w["tape"] == d["tape"]]
            work = same[0] if same else avail[0]
            key = (start, not same, d["tape"] is not None, d["last_used"], d["id"])
            if best is None or key < best[0]:
                best = (key, d, work, start)
        return None if best is None else best[1:]

    def _execute(self, drive: dict, work: sqlite3.Row, start: float) -> None:
        """Do one work item on one drive from `start`; record when each file is read."""
        t = start
        timing = self.timing
        if drive["tape"] != work["tape"]:
            if drive["tape"]:
                t += timing.unmount
                self._count("unmounts", 1)
                self.conn.execute(
                    "UPDATE tapes SET free_at = ? WHERE volser = ?", (t, drive["tape"])
                )
            t += timing.mount
            self._count("mounts", 1)
            drive["tape"], drive["head"] = work["tape"], 0
        files = self.conn.execute(
            "SELECT tf.path, f.size, f.damaged, CASE WHEN tf.tape = f.tape THEN f.position "
            "ELSE (SELECT c.position FROM copies c WHERE c.path = tf.path AND c.tape = tf.tape) "
            "END AS position FROM task_files tf JOIN files f ON f.path = tf.path "
            "WHERE tf.task_id = ? AND tf.tape = ? AND tf.done_at IS NULL ORDER BY position",
            (work["task_id"], work["tape"]),
        ).fetchall()
        for f in files:
            distance = abs(f["position"] - drive["head"])
            if distance:
                t += timing.locate_full * min(distance / timing.tape_length, 1.0)
                self._count("locates", 1)
            if f["damaged"]:
                ok, msg = 0, f"GLESL016E: Failed to read file {f['path']} from tape {work['tape']}."
                drive["head"] = f["position"]
            else:
                t += f["size"] / timing.read_rate
                self._count("bytes_read", f["size"])
                ok, msg = 1, None
                drive["head"] = f["position"] + f["size"]
            self.conn.execute(
                "UPDATE task_files SET ok = ?, message = ?, done_at = ? "
                "WHERE task_id = ? AND path = ?",
                (ok, msg, t, work["task_id"], f["path"]),
            )
        drive["free_at"] = drive["last_used"] = t
        self.conn.execute(
            "UPDATE drives SET tape = ?, head = ?, free_at = ?, last_used = ? WHERE id = ?",
            (drive["tape"], drive["head"], t, t, drive["id"]),
        )
        self.conn.execute(
            "UPDATE work SET drive = ?, started = ?, finished = ? WHERE id = ?",
            (drive["id"], start, t, work["id"]),
        )
        self.conn.execute(
            "UPDATE tasks SET started = ? WHERE id = ? AND (started IS NULL OR started > ?)",
            (start, work["task_id"], start),
        )

    def _apply(self, now: float) -> None:
        """Apply file results whose time has come; finish tasks with nothing left."""
        rows = self.conn.execute(
            "SELECT tf.*, t.resident FROM task_files tf JOIN tasks t ON t.id = tf.task_id "
            "WHERE tf.applied = 0 AND tf.done_at IS NOT NULL AND tf.done_at <= ?",
            (now,),
        ).fetchall()
        touched = set()
        for r in rows:
            if r["tape"] is not None:  # a file read from tape
                if r["ok"]:
                    self.conn.execute(
                        "UPDATE files SET state = ? WHERE path = ? AND state = 'M'",
                        ("R" if r["resident"] else "P", r["path"]),
                    )
                    self._count("files_recalled", 1)
                else:
                    self._count("failures", 1)
            self.conn.execute(
                "UPDATE task_files SET applied = 1 WHERE task_id = ? AND path = ?",
                (r["task_id"], r["path"]),
            )
            touched.add(r["task_id"])
        for task_id in touched:
            left = self.conn.execute(
                "SELECT count(*) FROM task_files WHERE task_id = ? AND applied = 0", (task_id,)
            ).fetchone()[0]
            if left == 0:
                end, failed = self.conn.execute(
                    "SELECT max(done_at), sum(ok = 0) FROM task_files WHERE task_id = ?",
                    (task_id,),
                ).fetchone()
                self.conn.execute(
                    "UPDATE tasks SET finished = ?, n_failed = ?, "
                    "started = coalesce(started, created) WHERE id = ?",
                    (end, failed or 0, task_id),
                )

    # -- drives -------------------------------------------------------------
    @staticmethod
    def serial(drive_id: int) -> str:
        """A drive's serial number as `eeadm drive list` shows it."""
        return f"SIM{drive_id:09d}"

    def drives(self) -> list[dict]:
        """Each drive now: serial, library, tape it holds, whether it reads
        (and for which task), whether it is in service."""
        with self.locked() as now:
            rows = self.conn.execute(
                "SELECT d.*, (SELECT w.task_id FROM work w WHERE w.drive = d.id "
                "AND w.started <= ?1 AND w.finished > ?1 LIMIT 1) AS task "
                "FROM drives d ORDER BY d.id",
                (now,),
            ).fetchall()
        return [
            {
                "serial": self.serial(r["id"]),
                "library": r["library"],
                "tape": r["tape"],
                "busy": r["free_at"] > now,
                "task": r["task"],
                "enabled": bool(r["enabled"]),
            }
            for r in rows
        ]

    def set_drive(self, serial: str, enabled: bool) -> None:
        """Take a drive out of service or put it back (`eeadm drive down|up`).
        A drive taken down finishes the read it is doing and takes no more."""
        ids = {self.serial(r[0]): r[0] for r in self.conn.execute("SELECT id FROM drives")}
        if serial not in ids:
            raise SimError(f"GLESL640E: Drive {serial} does not exist.")
        with self.locked():
            self.conn.execute(
                "UPDATE drives SET enabled = ? WHERE id = ?", (int(enabled), ids[serial])
            )

    # -- administration -----------------------------------------------------
    def damage(self, paths: Iterable[str]) -> int:
        """Mark files unreadable so their recalls fail (for failure tests)."""
        with self.locked():
            n = 0
            for p in paths:
                n += self.conn.execute("UPDATE files SET damaged = 1 WHERE path = ?", (p,)).rowcount
        return n

    def migrate(self, paths: Iterable[str]) -> int:
        """Put premigrated/resident files back to migrated (as a site policy would)."""
        with self.locked():
            n = 0
            for p in paths:
                n += self.conn.execute(
                    "UPDATE files SET state = 'M' WHERE path = ? AND tape IS NOT NULL", (p,)
                ).rowcount
        return n

    def stats(self) -> dict:
        """Counters, per-task timings and file-state totals, as JSON-ready data."""
        with self.locked() as now:
            counters = {name: 0 for name in COUNTERS}
            counters.update(dict(self.conn.execute("SELECT name, value FROM counters")))
            states = dict(self.conn.execute("SELECT state, count(*) FROM files GROUP BY state"))
            tasks = [
                {
                    "id": r["id"],
                    "files": r["n_files"],
                    "failed": r["n_failed"],
                    "created": round(r["created"], 3),
                    "started": None if r["started"] is None else round(r["started"], 3),
                    "finished": None if r["finished"] is None else round(r["finished"], 3),
                }
                for r in self.conn.execute("SELECT * FROM tasks ORDER BY id")
            ]
            drives = [dict(r) for r in self.conn.execute("SELECT * FROM drives ORDER BY id")]
            n_tapes = self.conn.execute("SELECT count(*) FROM tapes").fetchone()[0]
        return {
            "sim_now": round(now, 3),
            "time_scale": self.time_scale,
            "timing": asdict(self.timing),
            "counters": {k: int(v) for k, v in counters.items()},
            "file_states": states,
            "tapes": n_tapes,
            "drives": drives,
            "tasks": tasks,
        }


@dataclass
class Layout:
    """What `init` builds: how many files, where, on what."""

    files: int = 300
    dirs: int = 10
    tapes: int = 6
    drives: int = 2
    libraries: int = 1
    placement: str = "clustered"  # or "random"
    premigrated: float = 0.1
    resident: float = 0.1
    min_size: int = 1 * 10**6
    max_size: int = 100 * 10**6
    time_scale: float = 100.0
    seed: int = 1
    subdir: str = "demo"
    groups: int = 1  # >1 nests the directories as <subdir>/setG/runD (one set per transfer)
    copies: int = 1  # tapes holding each migrated file: other pools, other libraries if any


def init_library(root: str | os.PathLike, layout: Layout, timing: Timing | None = None) -> Path:
    """Create a new simulated library under `root`; returns the file-system root."""
    root = Path(root).resolve()
    if store_path(root).exists():
        raise SimError(f"{root} already holds a simulated library")
    timing = timing or Timing()
    if not 1 <= layout.copies <= min(MAX_COPIES, layout.tapes):
        raise SimError(f"copies must be 1 to {min(MAX_COPIES, layout.tapes)} (one per tape)")
    rng = random.Random(layout.seed)
    (root / SIM_SUBDIR).mkdir(parents=True, exist_ok=True)
    fs = root / FS_ROOT
    libs = ["ts4500"] if layout.libraries == 1 else [f"lib{i}" for i in range(layout.libraries)]
    pools = max(2, layout.copies)  # the copies of a file are in different pools
    tapes = [(f"JD{i:04d}L9", f"POOL{i % pools}", libs[i % len(libs)]) for i in range(layout.tapes)]

    top = fs / layout.subdir
    if layout.groups > 1:
        dirs = [
            top / f"set{d * layout.groups // layout.dirs}" / f"run{d:03d}"
            for d in range(layout.dirs)
        ]
    else:
        dirs = [top / f"run{d:03d}" for d in range(layout.dirs)]
    files: list[tuple[Path, int]] = []
    for i in range(layout.files):
        d = dirs[i * layout.dirs // layout.files]
        files.append((d / f"file{i:05d}.dat", rng.randint(layout.min_size, layout.max_size)))

    n_res = int(layout.files * layout.resident)
    n_pre = int(layout.files * layout.premigrated)
    order = list(range(layout.files))
    rng.shuffle(order)
    state = {i: "R" for i in order[:n_res]}
    state.update({i: "P" for i in order[n_res : n_res + n_pre]})

    # Groups of files written together: whole directories (clustered) or single files.
    on_tape = [i for i in range(layout.files) if state.get(i) != "R"]
    if layout.placement == "clustered":
        by_dir: dict[Path, list[int]] = {}
        for i in on_tape:
            by_dir.setdefault(files[i][0].parent, []).append(i)
        chunks = list(by_dir.values())
        tape_of = {id(c): tapes[n % len(tapes)][0] for n, c in enumerate(chunks)}
    elif layout.placement == "random":
        chunks = [[i] for i in on_tape]
        tape_of = {id(c): rng.choice(tapes)[0] for c in chunks}
    else:
        raise SimError(f"unknown placement {layout.placement!r}")
    # Copy k of a chunk goes on the k-th tape after its first: another pool, and
    # another library while there are libraries left.
    index = {volser: n for n, (volser, _, _) in enumerate(tapes)}
    placed: dict[str, list[tuple[list[int], int]]] = {volser: [] for volser, _, _ in tapes}
    for c in chunks:
        for k in range(layout.copies):
            placed[tapes[(index[tape_of[id(c)]] + k) % len(tapes)][0]].append((c, k))
    position: dict[tuple[int, int], tuple[str, int]] = {}
    for volser, _pool, _lib in tapes:
        mine = placed[volser]
        rng.shuffle(mine)
        slot = timing.tape_length // (len(mine) + 1) if mine else 0
        for n, (chunk, k) in enumerate(mine):
            pos = slot * n + rng.randrange(max(slot // 2, 1))
            for i in chunk:
                position[(i, k)] = (volser, pos)
                pos += files[i][1]

    conn = sqlite3.connect(store_path(root), isolation_level=None)
    with conn:
        conn.executescript(SCHEMA + COPIES)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("PRAGMA journal_mode = WAL")
        meta = {
            "origin": repr(time.time()),
            "time_scale": repr(layout.time_scale),
            "timing": json.dumps(asdict(timing)),
            "layout": json.dumps(asdict(layout)),
        }
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        conn.executemany("INSERT INTO tapes (volser, pool, library) VALUES (?, ?, ?)", tapes)
        conn.executemany(
            "INSERT INTO drives (id, library) VALUES (?, ?)",
            [(n, libs[n % len(libs)]) for n in range(layout.drives * len(libs))],
        )
        rows = []
        for i, (path, size) in enumerate(files):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.truncate(size)
            tape, pos = position.get((i, 0), (None, None))
            rows.append((str(path), size, state.get(i, "M"), tape, pos))
        conn.executemany(
            "INSERT INTO files (path, size, state, tape, position) VALUES (?, ?, ?, ?, ?)", rows
        )
        conn.executemany(
            "INSERT INTO copies (path, copy, tape, position) VALUES (?, ?, ?, ?)",
            [
                (str(files[i][0]), k + 1, volser, pos)
                for (i, k), (volser, pos) in position.items()
                if k > 0
            ],
        )
    conn.close()
    return fs
