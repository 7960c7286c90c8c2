"""The recorders' base (helpers/recording.py), without Ray: a recorder whose sample counts.

What the four recorders (Serve's status, the replica sampler, metrics scrapes, the request
loop) rely on: rows kept in order, a stop that is quick and can be repeated, threads that
end, and a sample's error that comes out of stop() and results() instead of dying with the
thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from helpers.errors import AlreadyStartedError
from helpers.recording import MarkedRecorder, Recorder


class Counter(Recorder[int, list[int]]):
    """Samples 0, 1, 2, ...; ``fail_at`` raises instead of that sample."""

    def __init__(
        self, *, period_s: float = 0.01, fail_at: int | None = None, threads: int = 1
    ) -> None:
        super().__init__(period_s=period_s, name="counter", threads=threads)
        self.fail_at = fail_at
        self.next = 0
        self.stops = 0
        self._counting = threading.Lock()

    def sample(self) -> list[int]:
        with self._counting:
            n, self.next = self.next, self.next + 1
        if n == self.fail_at:
            raise ValueError(f"sample {n} failed")
        return [n]

    def on_stop(self) -> None:
        self.stops += 1

    def results(self) -> list[int]:
        return self.rows()


def _until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    # Generous: only a broken recorder waits this long, and the machine may be busy.
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the recorder did not get there in time"
        time.sleep(0.005)


def _alive(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(name)]


def test_rows_come_in_order_and_stop_ends_the_thread() -> None:
    with Counter() as counter:
        assert [t.daemon for t in _alive("counter")] == [True]
        _until(lambda: len(counter.rows()) >= 5)
    rows = counter.results()
    assert rows == list(range(len(rows))) and len(rows) >= 5
    assert not _alive("counter")
    assert counter.started


def test_stop_is_quick_idempotent_and_runs_on_stop_once() -> None:
    counter = Counter(period_s=60.0).start()  # one sample, then a minute's wait
    _until(lambda: counter.rows() == [0])
    started = time.monotonic()
    assert counter.stop() == [0]
    assert time.monotonic() - started < 10.0, "stop() ends the minute's wait between samples"
    assert counter.stop() == [0] and counter.stops == 1
    assert not _alive("counter")


def test_a_recorder_runs_once() -> None:
    counter = Counter().start()
    try:
        with pytest.raises(AlreadyStartedError, match="This Counter was already started"):
            counter.start()
    finally:
        counter.stop()
    with pytest.raises(AlreadyStartedError):
        counter.start()
    never = Counter()
    assert never.stop() == [] and never.stops == 0 and not never.started


def test_a_failed_sample_ends_the_recording_and_comes_out_of_stop_and_results() -> None:
    counter = Counter(fail_at=3).start()
    _until(lambda: not _alive("counter"))  # the error ended the thread
    assert counter.next == 4, "no sample after the failed one"
    for read in (counter.stop, counter.results, counter.rows):
        with pytest.raises(ValueError, match="sample 3 failed"):
            read()
    assert counter.stops == 0, "no last sample after a failure"


def test_the_error_of_a_with_body_wins_over_the_recorders() -> None:
    with pytest.raises(KeyError), Counter(fail_at=0) as counter:
        _until(lambda: not _alive("counter"))
        raise KeyError("the body's own error")
    with pytest.raises(ValueError, match="sample 0 failed"):
        counter.results()  # still there for whoever reads the rows


def test_several_threads_share_the_rows_and_one_failure_stops_them_all() -> None:
    with Counter(threads=3) as counter:
        assert sorted(t.name for t in _alive("counter")) == ["counter-0", "counter-1", "counter-2"]
        _until(lambda: len(counter.rows()) >= 12)
    rows = counter.results()
    assert sorted(rows) == list(range(len(rows)))  # each sample kept once
    assert not _alive("counter")

    failing = Counter(threads=3, fail_at=20).start()
    _until(lambda: not _alive("counter"))
    with pytest.raises(ValueError, match="sample 20 failed"):
        failing.stop()


class Clock(MarkedRecorder[float, list[float]]):
    """Samples the time, after ``work_s`` of work."""

    def __init__(self, *, period_s: float, work_s: float = 0.0) -> None:
        super().__init__(period_s=period_s, name="clock")
        self.work_s = work_s

    def sample(self) -> list[float]:
        time.sleep(self.work_s)
        return [time.time()]

    def results(self) -> list[float]:
        return self.rows()


def test_the_wait_comes_after_each_sample() -> None:
    """The interval is period_s plus the sample's own time: a slow source is never polled back
    to back (the recorders' timing before the base, kept)."""
    with Clock(period_s=0.1, work_s=0.1) as clock:
        _until(lambda: len(clock.rows()) >= 4)
    times = clock.results()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.19, gaps


def test_marks_share_the_recorders_clock() -> None:
    with Clock(period_s=0.01) as clock:
        _until(lambda: len(clock.rows()) >= 2)
        clock.mark("halfway")
        marked = clock.events()["t"].iloc[0]
        _until(lambda: clock.rows()[-1] > marked)
    events, times = clock.events(), clock.results()
    assert list(events.columns) == ["t", "event"] and list(events["event"]) == ["halfway"]
    assert times[0] < events["t"].iloc[0] < times[-1]


def test_a_request_loop_whose_send_raises_says_so() -> None:
    """Lesson 11's careful client is the learner's function: a bug in it used to end its
    threads silently (fewer requests, no error); now stop() raises it."""
    from helpers.traffic import RequestLoop

    def broken_send(session: object, url: str, **_: object) -> dict:
        raise TypeError("careful_request() got an unexpected keyword argument")

    loop = RequestLoop("http://127.0.0.1:9/", send=broken_send, concurrency=2).start()
    _until(lambda: not _alive("request-loop"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        loop.stop()
