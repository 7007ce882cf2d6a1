"""The stager: the only code that runs `eeadm recall`; its loop and mechanics.

Each pass looks at new WLCG request files (verify.py), checks the progress
of running recalls, and starts what is due. A library's queue is due when
its oldest file has waited BATCH_WINDOW seconds and the queue has been
quiet for BATCH_QUIET (at most BATCH_MAX_WAIT), or when BATCH_MAX_FILES are
ready. What starts then depends on whether the drives are known
(drives.py: `eeadm drive list`, or TAPE_DRIVES):

- known: one tape's files per recall (all drives but one whole tapes, the
  last pieces of RECALL_MAX_BYTES), about one recall per recall drive;
  which tape next is scheduling.plan's choice
  (fair among requesters, a drive keeps its tape, the oldest never starves);
- not known: batches of every ready tape of a library, at most
  RECALL_CONCURRENCY running, and EE shares them over its drives.

Each finished recall is verified with batched `eeadm file state -s` calls
(verify.py, verdicts.py) and what is still not on disk retried with
back-off before it is marked failed. It also runs the tape-aware prefetcher.

One stager leads across every process and node that share the store: the
one holding the stager lease (store/leases.py, leader.py), whose writes are
fenced by its epoch; the others stand by. A recall's output goes to a file,
not a pipe, so `eeadm` keeps running if we die, and a stager that takes
over follows what EE still does (recovery.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .config import Settings
from .drives import DriveWatch
from .eeadm import Eeadm, EeadmError
from .leader import Leadership
from .prefetch import Prefetcher
from .recovery import Recovering
from .scheduling import Running, Window, gather, plan
from .scheduling import due as due_libraries
from .store import Batch, LeaseLost, Store, StoreUnavailable
from .store.db import process_owner
from .store.records import QueuedTape
from .verify import Verifying

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Retention: how often finished records are pruned, and how many per transaction
#: and per pass (short transactions: polls never wait long for the store).
PRUNE_EVERY = 60.0
PRUNE_CHUNK = 1000
PRUNE_PASS = 20
#: Seconds after which a process that stopped saying it is there (killed, its
#: node gone) leaves the node table; until then the table shows it as gone.
FORGET_MEMBERS = 86400.0
#: One-tape recalls per library whose read rate is remembered.
RATES = 8


def running_of(batch: Batch, piece: int) -> Running:
    """A running batch as the scheduler sees it (long: more than a `piece`)."""
    return Running(
        batch.library,
        batch.tape,
        batch.requesters,
        batch.started_at,
        batch.bytes,
        long=batch.bytes > piece,
    )


class Stager(Recovering, Verifying):
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
        self.drives = DriveWatch(settings, eeadm, store)
        self._threads: dict[int, threading.Thread] = {}
        self._wake = threading.Event()
        #: the lease this stager leads by (run()); None when driven directly (tests)
        self.leadership: Leadership | None = None
        self._progress_at = 0.0
        self._pruned_at = 0.0
        #: one-tape recalls just finished: their drive still holds the tape
        self._freed: deque[Running] = deque()
        #: batches whose EE task ended, being verified: they hold no drive
        self._released: set[int] = set()
        #: bytes per second of the last RATES one-tape recalls per library; the
        #: fastest (a piece with no mount, not waiting in EE) times an overlap
        self._rates: dict[str, deque[float]] = {}

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
        """One pass: reap, prefetch, start what is due. Returns seconds to the next due."""
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
        self.drives.refresh()
        queue = self.store.queue.tapes()
        window = Window(s.BATCH_WINDOW, s.BATCH_QUIET, s.BATCH_MAX_WAIT, s.BATCH_MAX_FILES)
        looking_up = self.store.queue.lookups_running(s.EEADM_TIMEOUT)
        due, next_due = due_libraries(queue, window, now, looking_up)
        # in this order: a recall thread releases its batch (its EE task
        # ended), then frees its tape, then records the batch done; so a tape
        # seen freed is never also seen holding its drive, and the tape that
        # drive holds is not passed over for one that needs a mount
        freed = self._take_freed()
        released = self._released.copy()  # (a set other threads change: copied at once)
        running = [b for b in self.store.queue.running_batches() if b.id not in released]
        drives = self.drives.per_library(
            {q.library for q in queue} | {b.library for b in running} | {f.library for f in freed}
        )
        if drives is None:
            self._dispatch_batches(due)
        else:
            self._dispatch_tapes(queue, drives, running, freed, due, now)
        retry_at = self.store.queue.next_retry_at()
        if retry_at is not None:
            next_due = min(next_due, retry_at - now)
        return max(next_due, 0.0)

    def _dispatch_batches(self, due: dict[str, tuple[int, bool]]) -> None:
        """Drives not known: batches of every ready tape of a library, at most
        RECALL_CONCURRENCY running, and EE shares the tapes over its drives."""
        s = self.settings
        for library, (ready, by_time) in sorted(due.items()):
            while ready > 0 and self._free_slots() > 0 and self._may_start():
                claimed = self.store.queue.claim(
                    library, s.BATCH_MAX_FILES, started_by=self._started_by()
                )
                if claimed is None:
                    break
                self.start_batch(*claimed, library=library)
                ready -= len(claimed[1])
                if ready < s.BATCH_MAX_FILES and not by_time:
                    break

    def _dispatch_tapes(
        self,
        queue: list[QueuedTape],
        drives: dict[str, int],
        running: list[Batch],
        freed: list[Running],
        due: dict[str, tuple[int, bool]],
        now: float,
    ) -> None:
        """Drives known: one tape's piece per recall, chosen by scheduling.plan."""
        work = gather(queue)
        piece = self.settings.RECALL_MAX_BYTES
        for f in freed:
            if f.tape is not None:
                self.drives.hold(f.library, f.tape, drives[f.library])
        starts = plan(
            work,
            drives,
            [running_of(b, piece) for b in running],
            due=due,
            freed=freed,
            mounted=self.drives.mounted((w.library, w.tape) for w in work),
            rates={lib: max(seen) for lib, seen in self._rates.items()},
            piece=piece,
            now=now,
        )
        for start in starts:
            if not self._may_start():
                break
            claimed = self.store.queue.claim(
                start.library,
                self.settings.BATCH_MAX_FILES,
                tape=start.tape,
                started_by=self._started_by(),
                max_bytes=0 if start.long else piece,
                asked_first=start.asked_first,
            )
            if claimed is not None:
                self.start_batch(*claimed, library=start.library, tape=start.tape or None)
                if not start.overlap:  # a drive is given this tape: it holds no other
                    self.drives.hold(start.library, start.tape, drives[start.library], given=True)

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

    def _take_freed(self) -> list[Running]:
        """The one-tape recalls that ended since the last pass."""
        out = []
        while self._freed:
            out.append(self._freed.popleft())
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
        self.drives.join()

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
        running with no thread, and recover() verifies it again later.

        Its drive is free once EE's task has ended: the loop is woken to give
        it the next piece while this thread verifies the files (a gap between
        two pieces of a tape costs a drive's time)."""
        self._release(batch_id)
        try:
            self.finish(batch_id, output, failure)
        except (StoreUnavailable, LeaseLost) as exc:
            log.warning("batch %d: result not recorded, verified again later: %s", batch_id, exc)
        finally:
            self._released.discard(batch_id)
        self.drives.soon()
        self._wake.set()

    def _release(self, batch_id: int) -> None:
        """A recall whose EE task ended no longer holds a drive: a one-tape
        recall's drive still holds its tape (freed, for the next choice)."""
        try:
            batch = self.store.queue.batch(batch_id)
        except StoreUnavailable:
            return
        self._released.add(batch_id)
        if batch is not None and batch.tape is not None:
            self._freed.append(running_of(batch, self.settings.RECALL_MAX_BYTES))
            seconds = self.clock() - batch.started_at
            if batch.bytes and seconds > 0:  # what the library's drives read, lately
                self._rates.setdefault(batch.library, deque(maxlen=RATES)).append(
                    batch.bytes / seconds
                )
        self._wake.set()

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
        if gone := self._facts.leases.forget_members(FORGET_MEMBERS):
            log.info("node table: %d process(es) silent for a day forgotten", gone)
        return total
