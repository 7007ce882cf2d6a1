"""What a finished recall's verification means for each of its files: a pure
function, so the retry rules are tested on tables.

A file on disk is done; one still migrated is tried again: at once from a
copy in another library we may use, else after RECALL_RETRY_DELAY doubled
per attempt, until RECALL_MAX_ATTEMPTS, then failed with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from .parse import FileState, StateError
from .placement import Placement
from .store import DONE, FAILED, QUEUED, Update

log = logging.getLogger(__name__)


def verdicts(
    batch_id: int,
    attempts: Mapping[str, int],
    states: Mapping[str, FileState | StateError],
    reason: str | None,
    *,
    now: float,
    max_attempts: int,
    retry_delay: float,
    elsewhere: Callable[[FileState | StateError | None], Placement | None],
) -> list[Update]:
    """One Update per file of `attempts` (path -> attempts so far), from its
    state after the recall; `reason`: what the recall said went wrong;
    `elsewhere(state)`: a copy in another library, if any."""
    updates = []
    for p, n in attempts.items():
        st = states.get(p)
        if isinstance(st, FileState) and st.on_disk:
            updates.append(Update(p, DONE, tape=st.tapes[0] if st.tapes else None))
            continue
        if st is not None and not isinstance(st, FileState):
            why = st.reason
        else:
            why = reason or "file still not on disk after recall"
        other = elsewhere(st) if n < max_attempts else None
        if other is not None:
            log.warning(
                "batch %d: %s not on disk (attempt %d of %d), retried at once from its "
                "copy in library %s: %s",
                batch_id,
                p,
                n,
                max_attempts,
                other.library,
                why,
            )
            updates.append(
                Update(
                    p,
                    QUEUED,
                    last_error=why,
                    not_before=now,
                    tape=other.tape,
                    library=other.library,
                )
            )
        elif n >= max_attempts:
            log.warning("batch %d: %s failed after %d attempt(s): %s", batch_id, p, n, why)
            updates.append(Update(p, FAILED, last_error=f"after {n} attempt(s): {why}"))
        else:
            delay = retry_delay * 2 ** (n - 1)
            log.warning(
                "batch %d: %s not on disk (attempt %d of %d), retried in %.0f s: %s",
                batch_id,
                p,
                n,
                max_attempts,
                delay,
                why,
            )
            updates.append(Update(p, QUEUED, last_error=why, not_before=now + delay))
    return updates


def outcome(updates: list[Update]) -> str:
    """succeeded, partial or failed: how many of a batch's files are on disk."""
    ok = sum(u.status == DONE for u in updates)
    return "succeeded" if ok == len(updates) else ("failed" if ok == 0 else "partial")
