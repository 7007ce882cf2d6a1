"""What a request handler works with: the core plus the web tier's own parts,
kept on the app under one extension key."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import Flask, current_app

from ..lookup import StateLookup
from ..placement import Once
from ..policy import Policy
from ..services import Core
from ..stager import Stager
from ..tokens import Keys

EXTENSION = "ltfsee"


@dataclass
class Services(Core):
    """The core, the coalescing state lookup, who may stage what (the policy
    and the token issuers' keys), and (embedded) the stager thread."""

    lookup: StateLookup
    policy: Policy
    token_keys: Keys
    #: tasks whose explicit library was overridden (logged once per task)
    notes: Once = field(default_factory=Once)
    stager: Stager | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start_stager(self) -> Stager:
        """Run the stager in a background thread of this process (embedded mode).

        It waits for the STATE_DIR lock, so with several workers exactly one
        stages and the others stand by to take over if it dies.
        """
        if self.stager is None:
            self.stager = Stager(self.settings, self.store, self.eeadm, self.clock)
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.stager.run, args=(self._stop,), name="stager", daemon=True
            )
            self._thread.start()
        return self.stager

    def stop_stager(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.stager is not None:
            self.stager.wait_idle()
            self.stager = None


def services(app: Flask | None = None) -> Services:
    """The Services of `app`, or of the app handling the current request."""
    return (app or current_app).extensions[EXTENSION]
