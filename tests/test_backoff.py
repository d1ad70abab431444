"""The one doubling backoff, and an outage's log lines and attempts, on a clock the test moves."""

from __future__ import annotations

from imgwatch.backoff import Backoff, Outage
from tests.helpers import FakeClock, logged, timed_logs


def test_a_backoff_doubles_up_to_its_most_and_starts_over_when_reset() -> None:
    backoff = Backoff(0.25, 3.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert [backoff.next_delay() for _ in range(2)] == [0.25, 0.5]


def test_an_outage_is_one_warning_attempts_wait_for_the_backoff_and_its_end_is_one_info_line() -> None:
    clock = FakeClock()
    outage = Outage("queue", first_delay=1.0, max_delay=4.0, clock=clock)
    with timed_logs() as logs:
        assert outage.ready() and not outage.active
        assert outage.ended() is False  # no outage: nothing to end, nothing logged
        waits = []
        for _ in range(5):
            outage.failed(ConnectionError("refused"), held=3)
            wait = 0.0
            while not outage.ready():
                clock.now += 0.5
                wait += 0.5
            waits.append(wait)
        assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
        assert outage.active
        assert outage.ended(held_paths=3) is True
        assert outage.ready() and not outage.active

    [started] = logged(logs, "queue_unreachable")
    assert (started["error"], started["held"]) == ("refused", 3) and "up to 4 s" in started["note"]
    [ended] = logged(logs, "queue_back")
    assert (ended["seconds"], ended["failed_attempts"], ended["held_paths"]) == (15.0, 5, 3)


def test_a_new_outage_starts_from_the_first_delay_and_can_name_its_own_log_lines() -> None:
    clock = FakeClock()
    outage = Outage("/photos", first_delay=1.0, max_delay=8.0, clock=clock, events=("root_unreadable", "root_readable"))
    with timed_logs() as logs:
        for _ in range(3):
            outage.failed(OSError("I/O error"))
            clock.now += 8
        outage.ended()
        outage.failed(OSError("I/O error"))
        clock.now += 0.5
        assert not outage.ready()
        clock.now += 0.5
        assert outage.ready()
    assert len(logged(logs, "root_unreadable")) == 2 and len(logged(logs, "root_readable")) == 1
