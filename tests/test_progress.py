from __future__ import annotations

import io

import pytest

from imgwatch.progress import BacklogTracker, TerminalProgress, follow_count, render


def test_drops_in_pending_count_as_done_and_new_work_grows_the_total() -> None:
    tracker = BacklogTracker()
    assert tracker.update(100, now=0.0).total == 100
    step = tracker.update(80, now=10.0)
    assert (step.done, step.total) == (20, 100)
    assert step.rate == pytest.approx(2.0)
    assert step.seconds_left == pytest.approx(40.0)
    grown = tracker.update(130, now=20.0)  # 50 new photos arrived while 0 more were done
    assert (grown.done, grown.total) == (20, 150)


def test_an_empty_queue_ends_the_backlog_and_the_next_one_starts_from_zero() -> None:
    tracker = BacklogTracker()
    tracker.update(10, now=0.0)
    tracker.update(4, now=3.0)
    assert tracker.update(0, now=5.0).total == 0
    fresh = tracker.update(7, now=100.0)
    assert (fresh.done, fresh.total, fresh.rate) == (0, 7, None)


def test_render_shows_done_total_rate_and_time_left() -> None:
    tracker = BacklogTracker()
    tracker.update(480, now=0.0)
    line = render(tracker.update(360, now=30.0), width=10)
    assert line == "[##........] 120/480 paths  4.0/s  1m 30s left"


def test_nothing_is_drawn_off_a_terminal() -> None:
    stream = io.StringIO()  # isatty() is False, like a pipe or the journal
    display = TerminalProgress(stream)
    display.show(5, now=0.0)
    display.show(2, now=1.0)
    display.close()
    assert stream.getvalue() == ""


def test_on_a_terminal_one_line_is_redrawn_and_cleared_when_done() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    display = TerminalProgress(stream)
    display.show(4, now=0.0)
    display.show(1, now=2.0)
    display.show(0, now=3.0)
    display.close()
    frames = stream.getvalue().split("\r\x1b[2K")
    assert "0/4 paths" in frames[1] and "3/4 paths" in frames[2] and frames[-1] == ""


def test_pending_paths_estimates_past_the_jobs_whose_paths_are_counted() -> None:
    from imgwatch.workqueue import QueueSnapshot

    small = QueueSnapshot(queued_jobs=3, queued_paths=70, running_jobs=1, running_paths=32, workers=1)
    assert small.pending_paths == 102
    # 1000 jobs counted hold 32000 paths; 2000 queued: about twice as many.
    large = QueueSnapshot(queued_jobs=2000, queued_paths=32000, running_jobs=1, running_paths=32, workers=1)
    assert large.pending_paths == 64032


def test_a_count_towards_a_total_is_followed_until_its_sample_ends() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    samples = iter([(0, 5), (2, 5), (5, 6), None])  # a photo arrived meanwhile: the total grew
    stream = Terminal()
    follow_count(lambda: next(samples), unit="images", interval=0.0, stream=stream)
    frames = stream.getvalue().split("\r\x1b[2K")
    assert "0/5 images" in frames[1] and "2/5 images" in frames[2] and "5/6 images" in frames[3]
    assert stream.getvalue().endswith("\n")
