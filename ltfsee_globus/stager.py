"""The stager: the only code that runs `eeadm recall`.

It flushes queued files per library into batches when the oldest has waited
BATCH_WINDOW seconds and the queue has been quiet for BATCH_QUIET (at most
BATCH_MAX_WAIT), or when BATCH_MAX_FILES are ready, keeps at most
RECALL_CONCURRENCY recalls running, verifies each finished batch with batched
`eeadm file state -s` calls, and retries what is still not on disk with
back-off before marking it failed. It also runs the tape-aware prefetcher.

By default a batch takes every tape ready in a library and EE shares them
over its drives. A site that knows how many drives a library gives our
recalls sets TAPE_DRIVES: then each recall reads one tape, at most
TAPE_DRIVES run at once, a drive that finished a tape keeps it while files
for it are queued, and a free drive takes the tape with the most queued
files. That is the choice EE makes oldest-first; made on counts, it lets
thin tapes gather files while fat ones are read (bench/online_model.py).

One stager runs per STATE_DIR (an flock on `stager.lock`). A recall's output
goes to a file, not a pipe, so `eeadm` keeps running if we die; on start-up
the stager adopts a batch whose process is still alive and verifies one whose
process is gone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .config import Settings
from .eeadm import Eeadm, EeadmError
from .parse import FileState, parse_recall_output
from .placement import NoCopy, Placement, place
from .prefetch import Prefetcher
from .store import DONE, FAILED, QUEUED, Store, StoreUnavailable, Update

log = logging.getLogger(__name__)

#: How often an adopted recall (started by an earlier stager) is checked.
ADOPT_POLL = 1.0
#: Retention: how often finished records are pruned, and how many per transaction
#: and per pass (short transactions: polls never wait long for the store).
PRUNE_EVERY = 60.0
PRUNE_CHUNK = 1000
PRUNE_PASS = 20


class StagerLock:
    """An exclusive flock on STATE_DIR/stager.lock, held while the stager runs."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "stager.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def is_held(self) -> bool:
        """True when some process holds the lock (asked without taking it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


#: /proc/PID/stat flag of a kernel thread (its command line is empty too).
PF_KTHREAD = 0x00200000


def _process_alive(pid: int, marker: str) -> bool:
    """True if `pid` runs and its command line mentions `marker` (not a reused pid).

    A process between two exec()s (sudo starting eeadm, a wrapper script)
    shows an empty command line for a moment: that is still our process. A
    zombie shows one too, and is gone."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()  # state, ppid, ..., flags (7th)
    if fields[0] == "Z" or int(fields[6]) & PF_KTHREAD:  # gone, or a reused pid
        return False
    return not cmdline or marker.encode() in cmdline


def _regular_size(path: str) -> int | None:
    """The size of a regular file (what a recall of it puts on disk), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class Stager:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        eeadm: Eeadm,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.eeadm = eeadm
        self.clock = clock
        self.batch_dir = settings.state_dir / "batches"
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        self.prefetcher = Prefetcher(settings, store, eeadm)
        self._threads: dict[int, threading.Thread] = {}
        self._wake = threading.Event()
        self._progress_at = 0.0
        self._pruned_at = 0.0
        #: (library, tape) of one-tape recalls just finished: the drive still holds it
        self._freed: deque[tuple[str, str]] = deque()

    # -- the loop ---------------------------------------------------------------
    def run(self, stop: threading.Event, lock_retry: float = 5.0) -> None:
        """Take the lock (waiting for it), recover, then work until `stop` is set."""
        lock = StagerLock(self.settings.state_dir)
        announced = False
        while not lock.try_acquire():
            if not announced:
                log.info("another stager holds %s; standing by", lock.path)
                announced = True
            if stop.wait(lock_retry):
                return
        log.info("stager started (pid %d)", os.getpid())
        try:  # the first step recovers what an earlier stager left running
            stalled = False
            while not stop.is_set():
                try:
                    delay = self.step()
                    if stalled:
                        log.warning("the store can be written again; stager resumed")
                    stalled = False
                except StoreUnavailable as exc:
                    if not stalled:
                        log.warning("stager waits: %s", exc)
                    stalled, delay = True, 5.0
                except Exception:
                    log.exception("stager step failed; retrying")
                    delay = 5.0
                self._wake.wait(min(delay, self.settings.STAGER_POLL))
                self._wake.clear()
        finally:
            lock.release()
            log.info("stager stopped")

    def step(self) -> float:
        """One pass: reap, prefetch, flush due batches. Returns seconds to the next due."""
        self._reap()
        self.recover()  # batches left running with no thread: a result not recorded
        if self.settings.PREFETCH:
            self.prefetcher.run_triggers()
        self.intake()
        now = self.clock()
        s = self.settings
        if now >= self._progress_at + s.PROGRESS_INTERVAL:
            self._progress_at = now
            self.progress()
        if now >= self._pruned_at + PRUNE_EVERY:
            self._pruned_at = now
            self.prune(now)
        next_due = float("inf")
        # polls whose file states are being looked up will queue more files soon
        busy = self.store.queue.lookups_running(s.EEADM_TIMEOUT)
        freed = self._take_freed()
        for row in self.store.queue.queued_by_library():
            newest = now if busy else row.newest
            ready, due_at = row.n, self.due_at(row.oldest, newest)
            due = ready >= s.BATCH_MAX_FILES or due_at <= now
            if s.TAPE_DRIVES:
                self._dispatch_by_tape(row.library, due, freed.get(row.library, []))
            else:
                while due and self._free_slots() > 0:
                    claimed = self.store.queue.claim(row.library, s.BATCH_MAX_FILES)
                    if claimed is None:
                        break
                    self.start_batch(*claimed, library=row.library)
                    ready -= len(claimed[1])
                    due = ready >= s.BATCH_MAX_FILES or due_at <= now
            if due_at > now:  # once due, what is left waits for a recall to end (a wake)
                next_due = min(next_due, due_at - now)
        retry_at = self.store.queue.next_retry_at()
        if retry_at is not None:
            next_due = min(next_due, retry_at - now)
        return max(next_due, 0.0)

    def due_at(self, oldest: float, newest: float) -> float:
        """When a library's queue should go: its oldest file has waited
        BATCH_WINDOW and nothing was queued (nor looked up for a poll) for
        BATCH_QUIET (a burst of requests and the prefetch it triggers go
        together), but never later than BATCH_MAX_WAIT after the oldest."""
        s = self.settings
        quiet = max(oldest + s.BATCH_WINDOW, newest + s.BATCH_QUIET)
        return min(quiet, oldest + max(s.BATCH_MAX_WAIT, s.BATCH_WINDOW))

    def _free_slots(self) -> int:
        return self.settings.RECALL_CONCURRENCY - len(self.store.queue.running_batches())

    def _dispatch_by_tape(self, library: str, due: bool, freed: list[str]) -> None:
        """TAPE_DRIVES: one recall per tape, at most TAPE_DRIVES in the library at
        once. A tape whose recall just ended goes again at once if files for it
        are queued (its drive holds it: no mount); once the queue is due, free
        drives take the tapes with the most queued files (oldest first on a tie)."""
        running = [b for b in self.store.queue.running_batches() if b.library == library]
        free = self.settings.TAPE_DRIVES - len(running)
        busy = {b.tape for b in running}
        queued = self.store.queue.queued_tapes(library)
        order = [t for t in dict.fromkeys(freed) if t in queued and t not in busy]
        if due:
            rest = [t for t in queued if t not in busy and t not in order]
            order += sorted(rest, key=lambda t: (-queued[t][0], queued[t][1], t))
        for tape in order[: max(free, 0)]:
            claimed = self.store.queue.claim(library, self.settings.BATCH_MAX_FILES, tape=tape)
            if claimed is not None:
                self.start_batch(*claimed, library=library, tape=tape)

    def _take_freed(self) -> dict[str, list[str]]:
        """The tapes of one-tape recalls that ended since the last pass, per library."""
        out: dict[str, list[str]] = {}
        while self._freed:
            library, tape = self._freed.popleft()
            out.setdefault(library, []).append(tape)
        return out

    def _reap(self) -> None:
        for batch_id, thread in list(self._threads.items()):
            if not thread.is_alive():
                thread.join()
                del self._threads[batch_id]

    def wait_idle(self) -> None:
        """Join every recall thread (tests; in service a stopping stager leaves
        its recalls running, to be adopted after the restart)."""
        for thread in list(self._threads.values()):
            thread.join()
        self._reap()

    # -- one batch ------------------------------------------------------------------
    def _files(self, batch_id: int) -> tuple[Path, Path]:
        return self.batch_dir / f"{batch_id}.list", self.batch_dir / f"{batch_id}.log"

    def start_batch(
        self, batch_id: int, paths: list[str], library: str, tape: str | None = None
    ) -> None:
        list_file, _ = self._files(batch_id)
        tmp = list_file.with_suffix(".tmp")
        try:
            tmp.write_text("".join(p + "\n" for p in paths), encoding="utf-8")
            os.replace(tmp, list_file)
        except OSError as exc:  # STATE_DIR full: recover() puts the files back later
            log.warning("batch %d: cannot write its file list: %s", batch_id, exc.strerror)
            return
        log.info(
            "batch %d: recalling %d file(s)%s%s",
            batch_id,
            len(paths),
            f" from tape {tape}" if tape else "",
            f" in library {library}" if library else "",
        )
        thread = threading.Thread(
            target=self._run_batch,
            args=(batch_id, library),
            name=f"recall-{batch_id}",
            daemon=True,
        )
        self._threads[batch_id] = thread
        thread.start()

    def _run_batch(self, batch_id: int, library: str) -> None:
        list_file, log_file = self._files(batch_id)
        try:
            result = self.eeadm.recall(
                list_file,
                library=library or None,
                resident=self.settings.RECALL_RESIDENT,
                timeout=self.settings.RECALL_TIMEOUT,
                log_path=log_file,
                on_start=lambda pid: self.store.queue.set_batch_pid(batch_id, pid),
            )
            output, failure = result.output, None
            if result.returncode != 0:
                failure = f"eeadm recall exited with {result.returncode}"
        except EeadmError as exc:
            output, failure = exc.output, str(exc)
        self._finish_or_defer(batch_id, output, failure)

    def _finish_or_defer(self, batch_id: int, output: str, failure: str | None) -> None:
        """finish(); when the store cannot take the result, the batch stays
        running with no thread, and recover() verifies it again later."""
        try:
            self.finish(batch_id, output, failure)
        except StoreUnavailable as exc:
            log.warning("batch %d: result not recorded, verified again later: %s", batch_id, exc)
        else:
            batch = self.store.queue.batch(batch_id)
            if batch is not None and batch.tape is not None:
                self._freed.append((batch.library, batch.tape))
        self._wake.set()

    def _adopt(self, batch_id: int, pid: int, marker: str) -> None:
        while _process_alive(pid, marker):
            time.sleep(ADOPT_POLL)
        _, log_file = self._files(batch_id)
        output = log_file.read_text(errors="replace") if log_file.exists() else ""
        self._finish_or_defer(batch_id, output, None)

    def intake(self) -> None:
        """First look at new WLCG stage-request files: on disk, to recall, or failed.

        One batched `eeadm file state` per chunk; migrated files join the
        queue the Globus endpoint feeds (or the recall already holding them).
        """
        rows = self.store.requests.unchecked(self.settings.LOOKUP_MAX_FILES)
        if not rows:
            return
        sizes = {path: size for _, path in rows if (size := _regular_size(path)) is not None}
        try:
            states = self.eeadm.file_state(list(sizes))
        except EeadmError as exc:
            log.warning("stage request intake deferred: %s", exc)
            return
        for request_id, path in rows:
            st = states.get(path)
            where = (None, None)
            if st is None:
                state, error = "FAILED", "No such file or directory"
            elif not isinstance(st, FileState):
                state, error = "FAILED", st.reason
            elif st.on_disk:
                state, error = "COMPLETED", None
            else:
                try:
                    p = self.place(st, request_id)
                    state, error, where = None, None, (p.library, p.tape)
                except NoCopy as exc:
                    state, error = "FAILED", str(exc)
            self.store.requests.intake(request_id, path, state, error, where, size=sizes.get(path))

    def place(self, st: FileState, taskid: str | None, avoid: str | None = None) -> Placement:
        """The library and copy to recall a file from (see placement.place)."""
        return place(
            st.tapes,
            self.settings.LTFSEE_LIB,
            taskid=taskid,
            busy=self.store.tapes.busy_tapes,
            load=self.store.tapes.library_load,
            avoid=avoid,
        )

    def prune(self, now: float) -> int:
        """Forget records finished more than RETENTION_DAYS ago, a chunk at a time."""
        before = now - self.settings.RETENTION_DAYS * 86400
        total = 0
        for _ in range(PRUNE_PASS):
            n = self.store.queue.prune(before, PRUNE_CHUNK)
            total += n
            if n < PRUNE_CHUNK:
                break
        if total:
            log.info(
                "retention: %d finished record(s) older than %g days pruned",
                total,
                self.settings.RETENTION_DAYS,
            )
        return total

    def progress(self) -> None:
        """Mark files of running batches that are already on disk as done.

        One batched `eeadm file state` call over every file still recalling,
        so Globus can start moving the first files of a long recall while the
        rest are read, and polls still never run eeadm.
        """
        running = {
            b.id: self.store.queue.batch_files(b.id) for b in self.store.queue.running_batches()
        }
        paths = [p for files in running.values() for p in files]
        if not paths:
            return
        try:
            states = self.eeadm.file_state(paths)
        except EeadmError as exc:
            log.warning("progress check failed: %s", exc)
            return
        for batch_id, files in running.items():
            done = [
                Update(p, DONE, tape=st.tapes[0] if st.tapes else None)
                for p in files
                if isinstance(st := states.get(p), FileState) and st.on_disk
            ]
            if done:
                self.store.queue.mark_done(batch_id, done)

    def finish(self, batch_id: int, output: str, failure: str | None) -> None:
        """Verify a batch's files with eeadm and record the verdict for each."""
        parsed = parse_recall_output(output)
        said = parsed.summary() if parsed.errors else None
        reason = ": ".join(x for x in (failure, said) if x) or None
        attempts = self.store.queue.batch_files(batch_id)
        batch = self.store.queue.batch(batch_id)
        library = batch.library if batch is not None else None
        try:
            states = self.eeadm.file_state(list(attempts))
        except EeadmError as exc:
            log.warning("batch %d: cannot verify (%s); files go back to the queue", batch_id, exc)
            states = {}
            reason = reason or f"verification failed: {exc}"
        now = self.clock()
        updates = []
        for p, n in attempts.items():
            st = states.get(p)
            if isinstance(st, FileState) and st.on_disk:
                tape = st.tapes[0] if st.tapes else None
                updates.append(Update(p, DONE, tape=tape))
                continue
            if st is not None and not isinstance(st, FileState):
                why = st.reason
            else:
                why = reason or "file still not on disk after recall"
            most = self.settings.RECALL_MAX_ATTEMPTS
            elsewhere = self._elsewhere(st, library)
            if elsewhere is not None and n < most:
                log.warning(
                    "batch %d: %s not on disk (attempt %d of %d), retried at once from its "
                    "copy in library %s: %s",
                    batch_id,
                    p,
                    n,
                    most,
                    elsewhere.library,
                    why,
                )
                updates.append(
                    Update(
                        p,
                        QUEUED,
                        last_error=why,
                        not_before=now,
                        tape=elsewhere.tape,
                        library=elsewhere.library,
                    )
                )
            elif n >= most:
                log.warning("batch %d: %s failed after %d attempt(s): %s", batch_id, p, n, why)
                updates.append(Update(p, FAILED, last_error=f"after {n} attempt(s): {why}"))
            else:
                delay = self.settings.RECALL_RETRY_DELAY * 2 ** (n - 1)
                log.warning(
                    "batch %d: %s not on disk (attempt %d of %d), retried in %.0f s: %s",
                    batch_id,
                    p,
                    n,
                    most,
                    delay,
                    why,
                )
                updates.append(Update(p, QUEUED, last_error=why, not_before=now + delay))
        ok = sum(u.status == DONE for u in updates)
        outcome = "succeeded" if ok == len(updates) else ("failed" if ok == 0 else "partial")
        self.store.queue.finish_batch(
            batch_id,
            outcome=outcome,
            detail=reason or parsed.summary(),
            eeadm_task_id=parsed.task_id,
            updates=updates,
        )
        log.info(
            "batch %d: %s, %d/%d on disk%s",
            batch_id,
            outcome,
            ok,
            len(updates),
            f" ({reason})" if reason else "",
        )

    def _elsewhere(self, st: object, failed_in: str | None) -> Placement | None:
        """A copy of a file that failed to recall in library `failed_in` that
        lives in another library we may use, if any."""
        if not isinstance(st, FileState) or not failed_in:
            return None
        try:
            p = self.place(st, None, avoid=failed_in)
        except NoCopy:
            return None
        return p if p.library not in (None, failed_in) else None

    # -- restart ------------------------------------------------------------------------
    def recover(self) -> None:
        """Adopt running batches whose eeadm is alive; verify those whose eeadm
        is gone. At start-up that is every running batch; later, those whose
        result could not be recorded or whose start failed halfway."""
        for b in self.store.queue.running_batches():
            if b.id in self._threads:
                continue
            list_file, _ = self._files(b.id)
            if b.pid and _process_alive(b.pid, str(list_file)):
                log.info("batch %d: eeadm (pid %d) still running; adopting", b.id, b.pid)
                thread = threading.Thread(
                    target=self._adopt,
                    args=(b.id, b.pid, str(list_file)),
                    name=f"adopt-{b.id}",
                    daemon=True,
                )
                self._threads[b.id] = thread
                thread.start()
            else:
                log.info("batch %d: eeadm is gone; verifying its files", b.id)
                _, log_file = self._files(b.id)
                output = log_file.read_text(errors="replace") if log_file.exists() else ""
                self.finish(b.id, output, None)
