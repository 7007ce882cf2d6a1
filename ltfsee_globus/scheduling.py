"""Which tapes go to EE next: the stager's scheduling policy, as a pure function.

When the drives are known, the stager hands EE one tape's files per recall
and about one recall per recall drive, so that we, not EE's first-come
queue, choose what a free drive reads next. A request that arrives should
wait about one piece (RECALL_MAX_BYTES at the drives' rate) for a drive,
and a tape split over recalls is read in several passes, each locating
across it. So a drive given work reads the whole tape (`long`) only when
another drive comes back within a piece's time (one reading pieces, one
free, or a whole tape expected to end), else a piece bounded in bytes:
some drive always comes back within about a piece, and no more drives
read pieces than that takes (one at most, none while whole tapes end
often enough; with one drive, every recall is a piece). Before a rate
was seen, all drives but one read whole tapes. `plan` makes the choice from a snapshot:

- inputs: the queue per library, tape and requester (files, bytes, when the
  tape's oldest ready file was queued, priority), the recall drives of each
  library, the recalls running (their tape and requesters), the tapes a drive
  holds, which libraries' queues are due, and the clock;
- output: the tapes to start now, in order.

Like the Kubernetes scheduler it filters (what may start), scores (which
first) and binds (takes a drive, counts it against the tape's requesters
before the next choice, and makes it long or a piece as above):

- filter: a library with a free recall drive; a tape no recall reads, with a
  file ready; its library's queue due (BATCH_WINDOW and friends), or the tape
  just read by a drive that is free again (no mount: it goes at once);
- score, best first: the higher priority (KEY_PRIORITY); the requester with
  the fewest drives in use, a drive it just freed counted (max-min fairness:
  a requester that holds drives, or just held one, gives the next free one
  to a requester that holds none); a tape a free drive holds (no mount:
  the drive that reads pieces goes on with its tape); a tape with a file a
  client asked for before one only prefetch wants (a Globus transfer shows
  a window of its files and moves on only as they arrive, and its walk is
  what feeds prefetch: drives that read ahead while the window waits starve
  the queue later); a tape whose oldest file has waited `aged` seconds
  (nothing starves); among tapes clients asked for, more bytes, then more
  files (a mount reads more); the oldest (tapes only prefetch wants go in
  the order prefetch queued them: the order of the client's walk, so they
  are read ahead of it);
- overlap: when nobody else waits in a library (every tape waiting for a
  drive is the same requester's), a tape being read that has more files
  queued gets its next piece handed over in the last OVERLAP of the running
  piece's expected time (its bytes at the rate the library's drives were
  seen to read), so its drive reads on without a gap (EE gives a free drive
  the tape it holds first); early enough to cover the hand-over, late
  enough that a request arriving meanwhile waits little more than a piece;
  the rest of the tape whole when a drive reading a whole tape is expected
  free within a piece's time of the running piece's end.

Priorities choose the next recall; they never interrupt one (CTA's rule).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Seconds after which a tape's oldest file outranks bigger tapes.
AGED = 600.0
#: The share of a piece's expected time left when its tape's next piece is
#: handed over (nobody else waiting): EE starts it the moment the drive is done.
OVERLAP = 0.15


@dataclass(frozen=True)
class TapeWork:
    """What waits for one tape: every requester's files together."""

    library: str
    tape: str
    files: int
    bytes: int
    oldest: float  # when its oldest ready file was queued
    requesters: frozenset[str]
    priority: int = 0
    asked: int = 0  # files a client asked for (the others only prefetch queued)


@dataclass(frozen=True)
class Running:
    """A recall in flight: its library, tape (None: several), requesters,
    and when it was handed to EE with how many bytes (for its expected end)."""

    library: str
    tape: str | None
    requesters: frozenset[str]
    started: float = 0.0
    bytes: int = 0
    long: bool = False  # more than a piece: a whole tape's files, unbounded


@dataclass(frozen=True)
class Start:
    """Start a recall of `tape` in `library`: `long`, every file of it (up
    to BATCH_MAX_FILES), else a piece (RECALL_MAX_BYTES); `overlap`, a next
    piece handed over while the tape's current one still runs. With
    `asked_first` (a requester that held no drive while another did, such
    as a small request beside a restore, wants the tape) the recall takes
    only the files clients asked for while the tape has any: it waits for
    its own files, not for its directory's prefetch. A piece otherwise
    takes the asked files first and fills up with the others."""

    library: str
    tape: str
    overlap: bool = False
    long: bool = False
    asked_first: bool = False


@dataclass(frozen=True)
class Window:
    """When a library's queue may go: its oldest file has waited `window`
    and nothing was queued (nor looked up for a poll) for `quiet` (a burst of
    requests and the prefetch it triggers go together), but never later than
    `max_wait` after the oldest; or at once with `max_files` ready
    (BATCH_WINDOW, BATCH_QUIET, BATCH_MAX_WAIT, BATCH_MAX_FILES)."""

    window: float
    quiet: float
    max_wait: float
    max_files: int

    def due_at(self, oldest: float, newest: float) -> float:
        quiet = max(oldest + self.window, newest + self.quiet)
        return min(quiet, oldest + max(self.max_wait, self.window))


def due(
    rows: Iterable, window: Window, now: float, looking_up: bool
) -> tuple[dict[str, tuple[int, bool]], float]:
    """The libraries whose queue may go now, from the store's rows per
    library, tape and requester (store.QueuedTape): their files ready, and
    whether by time rather than by count; and seconds until the next one
    may. `looking_up`: polls' file states are being looked up (they will
    queue more files soon: the queue is not quiet)."""
    by_library: dict[str, list] = {}
    for r in rows:
        if r.oldest is not None:
            by_library.setdefault(r.library, []).append(r)
    out: dict[str, tuple[int, bool]] = {}
    next_due = float("inf")
    for library, rs in by_library.items():
        oldest = min(r.oldest for r in rs)
        newest = now if looking_up else max(r.newest for r in rs)
        ready, at = sum(r.files for r in rs), window.due_at(oldest, newest)
        if ready >= window.max_files or at <= now:
            out[library] = ready, at <= now
        else:
            next_due = min(next_due, at - now)
    return out, next_due


def gather(rows: Iterable) -> list[TapeWork]:
    """TapeWork per tape from the store's rows per library, tape and requester
    (store.QueuedTape); a tape with nothing ready (every file waits for a
    retry) is left out."""
    by_tape: dict[tuple[str, str], list] = {}
    for r in rows:
        if r.oldest is not None:
            by_tape.setdefault((r.library, r.tape), []).append(r)
    return [
        TapeWork(
            library=library,
            tape=tape,
            files=sum(r.files for r in rs),
            bytes=sum(r.bytes for r in rs),
            oldest=min(r.oldest for r in rs),
            requesters=frozenset(r.owner for r in rs),
            priority=max(r.priority for r in rs),
            asked=sum(r.asked for r in rs),
        )
        for (library, tape), rs in by_tape.items()
    ]


def plan(
    queue: Sequence[TapeWork],
    drives: Mapping[str, int],
    running: Sequence[Running],
    *,
    due: Collection[str],
    freed: Collection[Running] = (),
    mounted: Collection[tuple[str, str]] = (),
    rates: Mapping[str, float] | None = None,
    piece: int = 0,
    now: float,
    aged: float = AGED,
) -> list[Start]:
    """The recalls to start now (see the module's docstring).

    `drives`: recall drives per library (a library it does not name starts
    nothing); `due`: libraries whose queue may go; `freed`: recalls of one
    tape just ended, their drive free and holding the tape (their
    requesters count as still holding it for this choice, so a requester
    whose piece just ended does not win a tie against one who waits);
    `mounted`: (library, tape) a drive holds (from `eeadm drive list`);
    `rates`: bytes per second a drive of each library was seen to read (a
    library without one gets no overlap, and all its drives but one read
    whole tapes); `piece`: the bytes of a piece."""
    use: Counter[str] = Counter(r for run in (*running, *freed) for r in run.requesters)
    just_read = {(f.library, f.tape) for f in freed}
    starts: list[Start] = []
    for library, count in sorted(drives.items()):
        busy = [r for r in running if r.library == library]
        reading = {r.tape for r in busy if r.tape is not None}
        # a tape's next piece waiting in EE behind its running one holds no drive
        free = count - len(reading) - sum(r.tape is None for r in busy)
        waiting = [
            w
            for w in queue
            if w.library == library
            and w.tape not in reading
            and (library in due or (library, w.tape) in just_read)
        ]
        held = {t for lib, t in (*just_read, *mounted) if lib == library}
        longs = sum(r.long for r in busy)
        rate = rates.get(library, 0.0) if rates else 0.0
        busy_now = _Busy.of(busy, rate, piece)
        while free > 0 and waiting:
            best = min(waiting, key=lambda w: _score(w, use, held, now, aged))
            waiting.remove(best)
            free -= 1
            if busy_now is not None:
                # a drive left free takes work later in this pass, or stays free
                long = free > 0 or busy_now.whole_tape(now)
                busy_now.add(now, best.bytes if long else 0)
            else:
                long = longs < count - 1
            longs += long
            newcomer = min(use[r] for r in best.requesters) == 0 and any(use.values())
            starts.append(Start(library, best.tape, long=long, asked_first=newcomer))
            use.update(best.requesters)
            held.discard(best.tape)
        if rate > 0:
            started = {s.tape for s in starts if s.library == library}
            others = {
                r
                for w in queue
                if w.library == library and w.tape not in reading | started
                for r in w.requesters
            }
            starts += _overlaps(queue, busy, library, others, rate, piece, now)
    return starts


@dataclass
class _Busy:
    """What the drives of a library reading tapes are doing, for the choice
    between a whole tape and a piece (see the module's docstring): when
    each drive reading a whole tape is expected free, and how many read
    pieces (they come back within a piece's time anyway)."""

    rate: float
    piece: int
    ends: list[float]
    pieces: int

    @classmethod
    def of(cls, busy: Sequence[Running], rate: float, piece: int) -> _Busy | None:
        """From the recalls running (None before a rate was seen). A tape's
        recalls count from when the first was handed over; it is read whole
        if one of them is more than a piece."""
        if rate <= 0 or piece <= 0:
            return None
        first: dict[str, float] = {}
        size: Counter[str] = Counter()
        whole: set[str] = set()
        for r in busy:
            if r.tape is not None:
                first[r.tape] = min(first.get(r.tape, r.started), r.started)
                size[r.tape] += r.bytes
                if r.bytes > piece:
                    whole.add(r.tape)
        ends = [first[t] + size[t] / rate for t in whole]
        return cls(rate, piece, ends, len(first) - len(whole))

    def whole_tape(self, at: float) -> bool:
        """Whether a drive given work at `at` reads the whole tape: only if
        another drive comes back within a piece's time of `at` (one reading
        pieces, or a whole tape expected to end), so that whoever comes
        next waits about one piece."""
        seconds = self.piece / self.rate
        return self.pieces > 0 or any(e - at <= seconds for e in self.ends)

    def add(self, at: float, size: int) -> None:
        """A drive given work at `at`: `size` bytes of a whole tape, or 0 for a piece."""
        if size > self.piece:
            self.ends.append(at + size / self.rate)
        else:
            self.pieces += 1


def _score(
    w: TapeWork, use: Counter[str], held: set[str], now: float, aged: float
) -> tuple[int, int, bool, bool, bool, int, int, float, str]:
    """Smaller is better: see the module's docstring."""
    return (
        -w.priority,
        min(use[r] for r in w.requesters) if w.requesters else 0,
        w.tape not in held,
        w.asked == 0,
        now - w.oldest < aged,
        -w.bytes if w.asked else 0,  # only prefetch wants it: in the order it was
        -w.files if w.asked else 0,  # queued (a walk's order), ahead of the client
        w.oldest,
        w.tape,
    )


def _overlaps(
    queue: Sequence[TapeWork],
    busy: Sequence[Running],
    library: str,
    others: set[str],
    rate: float,
    piece: int,
    now: float,
) -> list[Start]:
    """Next pieces of tapes being read (one recall each so far) that have more
    files queued, handed over in the last OVERLAP of the running piece's
    expected time: its drive reads on without a gap. Only for a tape whose
    requesters include everyone else waiting in the library (`others`): a
    requester alone, or one whose work waits anyway, loses no drive time;
    anyone else gets the drive when the piece ends. The rest of the tape
    goes whole or in a piece as any drive's work does (_Busy), from the
    running piece's expected end."""
    once = {r.tape: r for r in busy if r.tape is not None}
    twice = {t for t, n in Counter(r.tape for r in busy).items() if n > 1}
    starts = []
    for w in queue:
        run = once.get(w.tape)
        if w.library != library or run is None or w.tape in twice:
            continue
        if not others <= w.requesters:
            continue
        expected = run.bytes / rate
        if now - run.started >= (1 - OVERLAP) * expected:
            rest = _Busy.of([r for r in busy if r.tape != w.tape], rate, piece)
            long = rest is not None and rest.whole_tape(run.started + expected)
            starts.append(Start(library, w.tape, overlap=True, long=long))
    return starts
