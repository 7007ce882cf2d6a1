"""What the stager learns from EE about files: the first look at a WLCG
request's files (intake), progress of running recalls, and the verification
of a finished one (its files' verdicts: verdicts.py). One batched
`eeadm file state -s` call each, never a call per file.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable

from .config import Settings
from .eeadm import Eeadm, EeadmError
from .parse import FileState, parse_recall_output
from .placement import NoCopy, Placement, place
from .store import DONE, Store, Update
from .verdicts import outcome, verdicts

log = logging.getLogger(__name__)


def _regular_size(path: str) -> int | None:
    """The size of a regular file (what a recall of it puts on disk), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class Verifying:
    """The stager's looks at file states (a part of Stager)."""

    settings: Settings
    store: Store
    eeadm: Eeadm
    clock: Callable[[], float]

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
        updates = verdicts(
            batch_id,
            attempts,
            states,
            reason,
            now=self.clock(),
            max_attempts=self.settings.RECALL_MAX_ATTEMPTS,
            retry_delay=self.settings.RECALL_RETRY_DELAY,
            elsewhere=lambda st: self._elsewhere(st, library),
        )
        result = outcome(updates)
        self.store.queue.finish_batch(
            batch_id,
            outcome=result,
            detail=reason or parsed.summary(),
            eeadm_task_id=parsed.task_id,
            updates=updates,
        )
        log.info(
            "batch %d: %s, %d/%d on disk%s",
            batch_id,
            result,
            sum(u.status == DONE for u in updates),
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
