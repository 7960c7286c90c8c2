"""One base for the background recorders: threads that sample until stopped, keeping rows.

A recorder (Serve's status, an autoscaler's target, Prometheus scrapes, a loop of requests)
runs beside a notebook cell while something changes, and hands the cell what it saw.
:class:`Recorder` owns the parts they all need: the daemon thread(s), the stop event, the
lock, the rows, ``start``/``stop``, the context manager, and what happens when a sample
raises. A subclass writes one :meth:`Recorder.sample` and builds its result in
:meth:`Recorder.results`; :class:`MarkedRecorder` also notes named events on the same clock.

The rules every recorder follows:

* **Timing.** Each thread waits :meth:`Recorder.wait_after` (``period_s`` by default) *after*
  each sample, so the interval is ``period_s`` plus the sample's own time: a slow dashboard
  is asked less often, never back to back. ``stop()`` ends a wait at once.
* **A sample that raises.** Errors a subclass expects (a node restarting, Serve's controller
  down for a moment) are its to catch in ``sample()``: it counts them and returns no row,
  or a row that says so. Any other exception is a bug or a broken premise, so it ends the
  recording (every thread), and :meth:`Recorder.rows` (so each ``results()``) and
  :meth:`Recorder.stop` raise it: a recorder never dies silently. The one exception: leaving a
  ``with`` block because its body raised, the body's error is the one reported.
* **One run.** A recorder starts once (a second ``start()`` raises
  :class:`~helpers.errors.AlreadyStartedError`); ``stop()`` may be called any number of times.

Usage::

    class Clock(Recorder[float, list[float]]):
        def sample(self) -> list[float]:
            return [time.time()]

        def results(self) -> list[float]:
            return self.rows()

    with Clock(period_s=0.5, name="clock") as clock:
        time.sleep(2)
    clock.results()                       # about 5 times, in order

Used by :mod:`helpers.serve_timeline`, :mod:`helpers.autoscaling`, :mod:`helpers.metrics` and
:mod:`helpers.traffic`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

# Only the package's leaf module (it imports nothing of helpers): no import upwards or in circles.
from helpers.errors import AlreadyStartedError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Recorder", "MarkedRecorder"]

RowT = TypeVar("RowT")
ResultT = TypeVar("ResultT")
SelfT = TypeVar("SelfT", bound="Recorder[Any, Any]")


class Recorder(Generic[RowT, ResultT]):
    """Call :meth:`sample` from ``threads`` daemon threads until stopped; keep its rows in order.

    ``period_s``: the wait after each sample (see :meth:`wait_after`). ``join_timeout_s``: how
    long ``stop()`` waits for each thread to finish its current sample (a thread still busy
    after that is left to end on its own; it is a daemon). ``name`` names the threads, for
    whoever lists a process's threads.
    """

    def __init__(
        self, *, period_s: float, name: str, threads: int = 1, join_timeout_s: float = 30.0
    ) -> None:
        self.period_s = period_s
        self.join_timeout_s = join_timeout_s
        self._name = name
        self._thread_count = threads
        self._rows: list[RowT] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: Exception | None = None
        self._stopped = False

    # --- what a subclass writes ------------------------------------------------------------

    def sample(self) -> Iterable[RowT]:
        """One look: the rows to keep (none is fine). Runs in a recorder thread."""
        raise NotImplementedError

    def results(self) -> ResultT:
        """What was recorded, as the caller wants it (build it from :meth:`rows`)."""
        raise NotImplementedError

    def wait_after(self, rows: list[RowT]) -> float:
        """Seconds to wait after a sample that gave ``rows``: ``period_s`` unless overridden."""
        return self.period_s

    def on_start(self) -> None:
        """Runs in the caller's thread before the first sample: what should fail at ``start()``."""

    def on_stop(self) -> None:
        """Runs in the caller's thread once, after the threads ended, unless a sample failed."""

    # --- the life of a recorder ------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once :meth:`start` has launched the threads (also after :meth:`stop`)."""
        return bool(self._threads)

    def start(self: SelfT) -> SelfT:
        """Start sampling in the background; returns the recorder, so ``rec = X(...).start()``."""
        if self._threads:
            raise AlreadyStartedError(type(self).__name__)
        self.on_start()
        names = (
            [self._name]
            if self._thread_count == 1
            else [f"{self._name}-{i}" for i in range(self._thread_count)]
        )
        self._threads = [threading.Thread(target=self._run, daemon=True, name=n) for n in names]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> ResultT:
        """Stop (each thread finishes its current sample) and return :meth:`results`.

        Raises the exception a sample raised, if one did.
        """
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.join_timeout_s)
        with self._lock:  # a dashboard's thread and the notebook may both stop a recorder
            first, self._stopped = not self._stopped, True
        if first and self._threads and self._error is None:
            self.on_stop()
        return self.results()

    def rows(self) -> list[RowT]:
        """A copy of the rows kept so far, in the order they came; raises a sample's error."""
        with self._lock:
            rows = list(self._rows)
        if self._error is not None:
            raise self._error
        return rows

    def keep(self, rows: Iterable[RowT]) -> None:
        """Add ``rows`` (for an :meth:`on_stop` that takes one last sample)."""
        with self._lock:
            self._rows.extend(rows)

    def __enter__(self: SelfT) -> SelfT:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.stop()
            return
        with contextlib.suppress(Exception):  # the body's error is the one to read
            self.stop()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                rows = list(self.sample())
                self.keep(rows)
                self._stop.wait(self.wait_after(rows))
        except Exception as err:  # noqa: BLE001 - kept for stop() and rows(), which raise it
            with self._lock:
                self._error = self._error or err
            self._stop.set()  # the other threads too: what they would add has a hole in it


class MarkedRecorder(Recorder[RowT, ResultT]):
    """A recorder that also notes named events ("deploy v2") on its clock, for the plots."""

    def __init__(
        self, *, period_s: float, name: str, threads: int = 1, join_timeout_s: float = 30.0
    ) -> None:
        super().__init__(
            period_s=period_s, name=name, threads=threads, join_timeout_s=join_timeout_s
        )
        self._events: list[dict[str, Any]] = []

    def mark(self, label: str) -> None:
        """Record an event (a deploy, a restart, a burst) at the current time."""
        with self._lock:
            self._events.append({"t": time.time(), "event": label})

    def events(self) -> pd.DataFrame:
        """The events marked so far: columns ``t`` (wall clock) and ``event``."""
        import pandas as pd

        with self._lock:
            return pd.DataFrame.from_records(list(self._events), columns=["t", "event"])
