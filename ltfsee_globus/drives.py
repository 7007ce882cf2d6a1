"""The drives each library gives recalls: read from `eeadm drive list`, or
TAPE_DRIVES where the site sets it.

The stager reads the list every DRIVE_REFRESH seconds and soon after a
recall ends (a drive may have gone or come back), on a thread of its own so
that a hanging `eeadm` never holds up the stager's loop. A list that cannot
be read (eeadm failing, hanging, printing garbage) leaves the drives last
seen in force, with one WARNING until it reads again; if none was ever seen,
the drives are not known and recalls go to EE as they did before the
service knew drives (RECALL_CONCURRENCY batches per library). What was read
goes to the store, where the status page, /api/status, /metrics and
readiness find it whichever process serves them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from .config import Settings
from .eeadm import Eeadm, EeadmError
from .parse import Drive, recall_drives
from .store import Store, StoreUnavailable

log = logging.getLogger(__name__)

#: Seconds between two reads that a recall's end asks for.
MIN_GAP = 10.0
#: Seconds the first read may hold up the stager's first pass (so that it
#: starts with the drives known, unless eeadm hangs).
FIRST_WAIT = 10.0


class DriveWatch:
    """The recall drives per library as last read, refreshed in the background."""

    def __init__(
        self,
        settings: Settings,
        eeadm: Eeadm,
        store: Store,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.eeadm = eeadm
        self.store = store
        self.clock = clock
        #: the drives last read; None until a list was read
        self.drives: list[Drive] | None = None
        #: why the last read failed (None: it worked, or none was tried)
        self.error: str | None = None
        self._read_at = float("-inf")
        self._soon = False
        self._thread: threading.Thread | None = None
        #: libraries the list does not name, warned about once
        self._said: set[str] = set()
        #: per library, the tapes its drives hold as our recalls tell (oldest
        #: first): a drive keeps the tape it read until it is given another;
        #: the list says so too, but only at its next read
        self._held: dict[str, list[str]] = {}

    def soon(self) -> None:
        """A recall ended: read the list again at the next refresh."""
        self._soon = True

    def refresh(self) -> None:
        """Start a read when one is due and none runs (never with TAPE_DRIVES);
        the first is waited for, up to FIRST_WAIT."""
        if self.settings.TAPE_DRIVES or (self._thread is not None and self._thread.is_alive()):
            return
        now = self.clock()
        gap = MIN_GAP if self._soon else self.settings.DRIVE_REFRESH
        if now < self._read_at + gap:
            return
        self.join()
        self._read_at, self._soon = now, False
        self._thread = threading.Thread(target=self.read, name="drive-list", daemon=True)
        self._thread.start()
        if self.drives is None and self.error is None:
            self._thread.join(FIRST_WAIT)

    def join(self) -> None:
        """Wait for a read in progress (tests, and a stopping stager)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def read(self) -> None:
        """Read `eeadm drive list` now; on failure keep what was known."""
        try:
            drives = self.eeadm.drive_list()
        except EeadmError as exc:
            if self.error is None:
                kept = (
                    "the drives last seen stay in force"
                    if self.drives is not None
                    else "drives not known: recalls go to EE in batches"
                )
                log.warning("eeadm drive list failed (%s); %s", exc, kept)
            self.error = str(exc)
            return
        if self.error is not None:
            log.info("eeadm drive list answers again")
        before = None if self.drives is None else recall_drives(self.drives)
        self.drives, self.error = drives, None
        now = recall_drives(drives)
        if now != before:
            log.info(
                "recall drives in service: %s",
                ", ".join(f"{lib or '-'} {n}" for lib, n in sorted(now.items())) or "none",
            )
        try:
            self.store.ops.set_drives(drives)
        except StoreUnavailable as exc:
            log.info("drives not recorded for operators: %s", exc)

    def per_library(self, libraries: Iterable[str]) -> dict[str, int] | None:
        """Recall drives for each of `libraries`; None while not known. A
        library the list does not name ("": recalls without `-l`, which EE
        may run in any library; or a name EE spells otherwise) gets every
        recall drive of the list: its queue never waits for a name."""
        libraries = set(libraries)
        if self.settings.TAPE_DRIVES:
            return dict.fromkeys(libraries, self.settings.TAPE_DRIVES)
        if self.drives is None:
            return None
        counts = recall_drives(self.drives)
        unnamed = sorted(lib for lib in libraries - set(counts) - self._said if lib)
        if unnamed:
            self._said.update(unnamed)
            log.warning(
                "eeadm drive list names no library %s: its recalls count every recall drive",
                ", ".join(unnamed),
            )
        return {lib: counts.get(lib, sum(counts.values())) for lib in libraries}

    def mounted(self, tapes: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of `tapes` (library, tape), those a drive holds: as the list last
        read says, or as our recalls since tell."""
        volsers = {d.tape for d in self.drives or () if d.tape and d.serves_recalls}
        held = {(lib, t) for lib, ts in self._held.items() for t in ts}
        return {(lib, t) for lib, t in tapes if t.split("@")[0] in volsers or (lib, t) in held}

    def hold(self, library: str, tape: str, drives: int, given: bool = False) -> None:
        """A drive of `library` holds `tape`: a recall of it ended or, `given`,
        a recall of it was handed to EE (then the drive holding the oldest
        other tape, unless this one was held, no longer holds that); at most
        one tape a drive."""
        held = self._held.setdefault(library, [])
        if tape in held:
            held.remove(tape)
        elif given and held:
            held.pop(0)
        if not given:
            held.append(tape)
        del held[: max(len(held) - drives, 0)]
