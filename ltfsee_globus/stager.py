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

One stager leads across every process and node that share the store: the
one holding the stager lease (store/leases.py, leader.py), whose writes are
fenced by its epoch; the others stand by. A recall's output goes to a file,
not a pipe, so `eeadm` keeps running if we die, and EE's task goes on without
its client anyway: a stager that takes over adopts a batch whose `eeadm` runs
on its node, follows one whose EE task is known until EE has let it go, and
then (or at once, when no task is known) verifies its files.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .config import Settings
from .eeadm import Eeadm, EeadmError
from .leader import Leadership
from .parse import TASK_ACTIVE, FileState, parse_recall_output
from .placement import NoCopy, Placement, place
from .prefetch import Prefetcher
from .store import DONE, FAILED, QUEUED, LeaseLost, Store, StoreUnavailable, Update
from .store.db import process_owner

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How often an adopted recall (started by an earlier stager) is checked.
ADOPT_POLL = 1.0
#: Retention: how often finished records are pruned, and how many per transaction
#: and per pass (short transactions: polls never wait long for the store).
PRUNE_EVERY = 60.0
PRUNE_CHUNK = 1000
PRUNE_PASS = 20


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
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        #: who this stager is in the lease and the node table: host:pid
        self.owner = owner or process_owner()
        #: the unfenced store, for the facts of a recall that runs (its pid, its
        #: EE task): recorded even after the lease is lost, for the next leader
        self._facts = store
        self.store = store
        self.eeadm = eeadm
        self.clock = clock
        self.batch_dir = settings.state_dir / "batches"
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        self.prefetcher = Prefetcher(settings, store, eeadm)
        self._threads: dict[int, threading.Thread] = {}
        self._wake = threading.Event()
        #: the lease this stager leads by (run()); None when driven directly (tests)
        self.leadership: Leadership | None = None
        self._progress_at = 0.0
        self._pruned_at = 0.0
        #: (library, tape) of one-tape recalls just finished: the drive still holds it
        self._freed: deque[tuple[str, str]] = deque()

    # -- the loop ---------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Stand by for the stager lease, lead while it holds, stand by again
        if it is lost, until `stop` is set (then hand it over)."""
        leadership = Leadership(self.store, self.settings, self.owner)
        base = self.store
        try:
            while (epoch := leadership.wait(stop)) is not None:
                self.leadership = leadership
                self.store = base.fenced(leadership.owner, epoch)
                self.prefetcher.store = self.store
                try:
                    self._lead(stop, leadership)
                finally:
                    leadership.step_down(hand_over=stop.is_set())
        finally:
            leadership.leave()

    def _lead(self, stop: threading.Event, leadership: Leadership) -> None:
        """Work while the lease is ours; the first step recovers what an
        earlier stager left running."""
        log.info("stager started (pid %d)", os.getpid())
        stalled = False
        while not stop.is_set() and leadership.remaining() > 0:
            try:
                delay = self.step()
                if stalled:
                    log.warning("the store can be written again; stager resumed")
                stalled = False
            except LeaseLost as exc:
                log.warning("stager steps down: %s", exc)
                break
            except StoreUnavailable as exc:
                if not stalled:
                    log.warning("stager waits: %s", exc)
                stalled, delay = True, 5.0
            except Exception:
                log.exception("stager step failed; retrying")
                delay = 5.0
            self._wake.wait(min(delay, self.settings.STAGER_POLL))
            self._wake.clear()
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
                while due and self._free_slots() > 0 and self._may_start():
                    claimed = self.store.queue.claim(
                        row.library, s.BATCH_MAX_FILES, started_by=self._started_by()
                    )
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

    def _may_start(self) -> bool:
        """Whether a recall may start now: the lease is ours for at least half
        of STAGER_LEASE more (always, for a stager driven without a lease)."""
        if self.leadership is None:
            return True
        return self.leadership.remaining() >= self.settings.STAGER_LEASE / 2

    def _started_by(self) -> tuple[str, int] | None:
        """(node, epoch) a new batch records: who to ask about it after a take-over."""
        if self.leadership is None or self.leadership.epoch is None:
            return None
        return self.settings.node, self.leadership.epoch

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
            if not self._may_start():
                break
            claimed = self.store.queue.claim(
                library, self.settings.BATCH_MAX_FILES, tape=tape, started_by=self._started_by()
            )
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
        by = self._started_by()
        log.info(
            "batch %d: recalling %d file(s)%s%s%s",
            batch_id,
            len(paths),
            f" from tape {tape}" if tape else "",
            f" in library {library}" if library else "",
            f" (node {by[0]}, lease epoch {by[1]})" if by else "",
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
        if not self._may_start():  # frozen or slow since the claim: the next leader verifies it
            log.warning("batch %d: not started, the stager lease is running out", batch_id)
            return
        try:
            result = self.eeadm.recall(
                list_file,
                library=library or None,
                resident=self.settings.RECALL_RESIDENT,
                timeout=self.settings.RECALL_TIMEOUT,
                log_path=log_file,
                on_start=lambda pid: self._note(batch_id, self._facts.queue.set_batch_pid, pid),
                on_task=lambda task: self._note(batch_id, self._facts.queue.set_batch_task, task),
            )
            output, failure = result.output, None
            if result.returncode != 0:
                failure = f"eeadm recall exited with {result.returncode}"
        except EeadmError as exc:
            output, failure = exc.output, str(exc)
        self._finish_or_defer(batch_id, output, failure)

    @staticmethod
    def _note(batch_id: int, record: Callable[[int, T], None], value: T) -> None:
        """Record what a running recall told (its pid, its EE task). These are
        facts, not decisions: a stager that lost its lease records them too
        (unfenced), so that the one leading now can follow the recall. When
        the store cannot take them the recall runs on, verified at its end."""
        try:
            record(batch_id, value)
        except (StoreUnavailable, LeaseLost) as exc:
            log.warning("batch %d: %r not recorded: %s", batch_id, value, exc)

    def _finish_or_defer(self, batch_id: int, output: str, failure: str | None) -> None:
        """finish(); when the store cannot take the result, the batch stays
        running with no thread, and recover() verifies it again later."""
        try:
            self.finish(batch_id, output, failure)
        except (StoreUnavailable, LeaseLost) as exc:
            log.warning("batch %d: result not recorded, verified again later: %s", batch_id, exc)
        else:
            batch = self.store.queue.batch(batch_id)
            if batch is not None and batch.tape is not None:
                self._freed.append((batch.library, batch.tape))
        self._wake.set()

    def _adopt(self, batch_id: int, pid: int, marker: str) -> None:
        while _process_alive(pid, marker):
            time.sleep(ADOPT_POLL)
        self._finish_or_defer(batch_id, self._batch_log(batch_id), None)

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
        """Take over running batches no thread of ours watches: at start-up
        (or after a take-over) every running batch; later, those whose result
        could not be recorded or whose start failed halfway.

        - its `eeadm` runs here (this node, its pid alive): wait for it;
        - else EE may still be working on it (a recall outlives its client,
          and another node's is not ours to see): while EE says its task is
          waiting or running, wait; then verify its files;
        - no task known: on this node the client died before EE named one,
          so verify now; from another node, wait up to STAGER_LEASE for the
          task ID first (a leader frozen or slow just after it started the
          recall records it when it wakes), then follow it or verify.
        Verifying puts a file that is on disk to done and the others back in
        the queue, so a file is recalled again only after EE let it go."""
        for b in self.store.queue.running_batches():
            if b.id in self._threads:
                continue
            list_file, _ = self._files(b.id)
            here = b.node in (None, self.settings.node)
            if here and b.pid and _process_alive(b.pid, str(list_file)):
                log.info("batch %d: eeadm (pid %d) still running; adopting", b.id, b.pid)
                self._watch(b.id, self._adopt, b.id, b.pid, str(list_file))
            elif b.eeadm_task_id:
                log.info(
                    "batch %d (node %s, epoch %s): its client is gone; following EE task %s",
                    b.id,
                    b.node or "-",
                    b.epoch if b.epoch is not None else "-",
                    b.eeadm_task_id,
                )
                self._watch(b.id, self._follow_task, b.id, b.eeadm_task_id)
            elif not here:
                log.info("batch %d (node %s): no EE task known yet; waiting for it", b.id, b.node)
                self._watch(b.id, self._await_task, b.id)
            else:
                log.info("batch %d: eeadm is gone; verifying its files", b.id)
                self.finish(b.id, self._batch_log(b.id), None)

    def _watch(self, batch_id: int, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"adopt-{batch_id}", daemon=True)
        self._threads[batch_id] = thread
        thread.start()

    def _batch_log(self, batch_id: int) -> str:
        """What the batch's recall printed, if it ran on this node."""
        _, log_file = self._files(batch_id)
        return log_file.read_text(errors="replace") if log_file.exists() else ""

    def _await_task(self, batch_id: int) -> None:
        """Another node's batch with no EE task recorded: follow its task once
        its ID is, or verify after STAGER_LEASE."""
        deadline = time.monotonic() + self.settings.STAGER_LEASE
        while time.monotonic() < deadline:
            batch = self.store.queue.batch(batch_id)
            if batch is None or batch.status != "running":
                return
            if batch.eeadm_task_id:
                log.info("batch %d: following EE task %s", batch_id, batch.eeadm_task_id)
                self._follow_task(batch_id, batch.eeadm_task_id)
                return
            time.sleep(ADOPT_POLL)
        log.info("batch %d: no EE task named; verifying its files", batch_id)
        self._finish_or_defer(batch_id, self._batch_log(batch_id), None)

    def _follow_task(self, batch_id: int, task_id: str) -> None:
        """Wait while EE works on the task (or cannot be asked), then verify
        the batch's files; stop following once the lease is lost (the next
        leader follows it)."""
        while self.leadership is None or self.leadership.remaining() > 0:
            try:
                status = self.eeadm.task_status(task_id)
            except EeadmError as exc:
                log.info("batch %d: cannot ask EE about task %s (%s)", batch_id, task_id, exc)
                status = "waiting"
            if status not in TASK_ACTIVE:  # completed, or a task EE no longer knows
                break
            time.sleep(ADOPT_POLL)
        else:
            return
        self._finish_or_defer(batch_id, self._batch_log(batch_id), None)
