"""When `imgwatch run` starts a dead worker or queue server again: the rule, on a clock the test moves."""

from __future__ import annotations

from imgwatch.restart_policy import (
    CRASH_LOOP_DEATHS,
    CRASH_LOOP_SECONDS,
    QUEUE_RESTART_DELAY_MAX_SECONDS,
    RESTART_DELAY_MAX_SECONDS,
    RESTART_DELAY_MIN_SECONDS,
    STABLE_SECONDS,
    RestartPolicy,
)
from tests.helpers import FakeClock


def start_and_die(policy: RestartPolicy, clock: FakeClock, worker: int, uptime: float,
                  *, crashed: bool = True) -> tuple[float, bool]:
    policy.started(worker)
    clock.now += uptime
    restart = policy.died(worker, crashed=crashed)
    assert restart.uptime == uptime
    return restart.delay, restart.crash_loop_began


def test_restarts_back_off_then_a_crash_loop_waits_the_maximum_until_workers_stay_up() -> None:
    clock = FakeClock()
    policy = RestartPolicy(2, clock=clock)
    delays = [start_and_die(policy, clock, 0, uptime=5) for _ in range(6)]  # each dies 5 s after its start
    assert CRASH_LOOP_DEATHS == 5
    assert delays == [(1, False), (2, False), (4, False), (8, False), (RESTART_DELAY_MAX_SECONDS, True),
                      (RESTART_DELAY_MAX_SECONDS, False)]  # the crash loop is reported once
    assert policy.crash_loop and policy.recent_crashes == 6
    # A worker that stayed up a while: its next death is not part of a crash loop any more.
    clock.now += CRASH_LOOP_SECONDS
    assert start_and_die(policy, clock, 0, uptime=STABLE_SECONDS) == (RESTART_DELAY_MIN_SECONDS, False)
    assert not policy.crash_loop
    assert start_and_die(policy, clock, 0, uptime=1) == (2 * RESTART_DELAY_MIN_SECONDS, False)


def test_stopping_because_the_queue_was_out_of_reach_backs_off_but_is_no_crash_loop() -> None:
    clock = FakeClock()
    policy = RestartPolicy(1, clock=clock)
    restarts = [start_and_die(policy, clock, 0, uptime=1, crashed=False) for _ in range(8)]
    assert [delay for delay, _ in restarts] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert not any(began for _, began in restarts) and not policy.crash_loop and policy.recent_crashes == 0


def test_each_worker_backs_off_on_its_own_but_crashes_of_all_count_towards_a_crash_loop() -> None:
    clock = FakeClock()
    policy = RestartPolicy(5, clock=clock)
    assert start_and_die(policy, clock, 0, uptime=1) == (1, False)
    assert start_and_die(policy, clock, 0, uptime=1) == (2, False)
    assert start_and_die(policy, clock, 1, uptime=1) == (1, False)  # worker 0's deaths do not delay worker 1
    assert start_and_die(policy, clock, 2, uptime=1) == (1, False)
    assert start_and_die(policy, clock, 3, uptime=1) == (RESTART_DELAY_MAX_SECONDS, True)  # five crashes in all


def test_crashes_older_than_the_window_leave_it() -> None:
    clock = FakeClock()
    policy = RestartPolicy(1, clock=clock)
    first_crash = clock.now + 1
    for _ in range(CRASH_LOOP_DEATHS - 1):
        start_and_die(policy, clock, 0, uptime=1)
    clock.now = first_crash + CRASH_LOOP_SECONDS - 0.5  # the next death comes just after the first left the window
    assert start_and_die(policy, clock, 0, uptime=1)[1] is False
    assert policy.recent_crashes == CRASH_LOOP_DEATHS - 1


def test_a_queue_server_that_cannot_be_restarted_is_tried_later_and_later_until_it_is_back() -> None:
    policy = RestartPolicy(1, clock=FakeClock())
    delays = [policy.queue_server_retry_delay() for _ in range(7)]
    assert delays == [1, 2, 4, 8, 16, QUEUE_RESTART_DELAY_MAX_SECONDS, QUEUE_RESTART_DELAY_MAX_SECONDS]
    policy.queue_server_back()
    assert policy.queue_server_retry_delay() == RESTART_DELAY_MIN_SECONDS
