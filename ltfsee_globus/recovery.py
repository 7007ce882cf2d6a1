"""Taking over recalls no thread of this stager watches: at start-up or after
a take-over every running batch, later those whose result could not be
recorded. A recall outlives its client (its output goes to a file, and EE's
task goes on anyway), so a stager adopts a batch whose `eeadm` runs on its
node, follows one whose EE task is known until EE has let it go, and then
(or at once, when no task is known) verifies its files.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .config import Settings
from .eeadm import Eeadm, EeadmError
from .leader import Leadership
from .parse import TASK_ACTIVE
from .store import Store, StoreUnavailable

log = logging.getLogger(__name__)

#: How often an adopted recall (started by an earlier stager) is checked.
ADOPT_POLL = 1.0


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


class Recovering:
    """The stager's take-over of running batches (a part of Stager)."""

    settings: Settings
    store: Store
    eeadm: Eeadm
    leadership: Leadership | None
    _threads: dict[int, threading.Thread]

    # the stager's own, which these methods use (annotations: nothing shadowed)
    _files: Callable[[int], tuple[Path, Path]]
    finish: Callable[[int, str, str | None], None]
    _finish_or_defer: Callable[[int, str, str | None], None]

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
            try:
                batch = self.store.queue.batch(batch_id)
            except StoreUnavailable:  # asked again in a moment (the outage logs itself)
                time.sleep(ADOPT_POLL)
                continue
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

    def _adopt(self, batch_id: int, pid: int, marker: str) -> None:
        while _process_alive(pid, marker):
            time.sleep(ADOPT_POLL)
        self._finish_or_defer(batch_id, self._batch_log(batch_id), None)
