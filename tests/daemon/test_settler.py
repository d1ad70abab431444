from __future__ import annotations

from pathlib import Path

from imgwatch.daemon.settler import Settler
from tests.helpers import FakeClock


def make(settle: float = 2.0, close_events: bool = True, grace: float = 30.0) -> tuple[Settler, FakeClock]:
    clock = FakeClock()
    return Settler(settle, close_events=close_events, unclosed_grace=grace, clock=clock), clock


def test_closed_file_is_released_only_after_it_was_stable_for_settle_seconds(tmp_path: Path) -> None:
    settler, clock = make()
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 10)
    settler.written(str(path))
    settler.closed(str(path))
    assert settler.due() == []  # first look: records size and mtime
    clock.now += 1.9
    assert settler.due() == []
    clock.now += 0.2
    assert settler.due() == [str(path)]
    assert len(settler) == 0


def test_a_file_still_open_for_writing_waits_for_its_close(tmp_path: Path) -> None:
    settler, clock = make(grace=30)
    path = tmp_path / "slow.jpg"
    path.write_bytes(b"x")
    settler.written(str(path))
    settler.due()
    clock.now += 10
    assert settler.due() == []  # stable, but the writer has not closed it
    settler.closed(str(path))
    settler.due()
    clock.now += 2
    assert settler.due() == [str(path)]


def test_growth_restarts_the_settle_timer(tmp_path: Path) -> None:
    settler, clock = make()
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    settler.closed(str(path))
    settler.due()
    clock.now += 1.5
    path.write_bytes(b"xx")  # size changed without an event reaching us yet
    assert settler.due() == []
    clock.now += 1.5
    assert settler.due() == []
    clock.now += 0.6
    assert settler.due() == [str(path)]


def test_unclosed_file_is_released_after_the_grace_period(tmp_path: Path) -> None:
    settler, clock = make(grace=30)
    path = tmp_path / "chmodded.jpg"
    path.write_bytes(b"x")
    settler.written(str(path))  # e.g. chmod: a modify event with no close after it
    settler.due()
    clock.now += 29
    assert settler.due() == []
    clock.now += 1.5
    assert settler.due() == [str(path)]


def test_polling_observers_rely_on_stability_alone(tmp_path: Path) -> None:
    settler, clock = make(close_events=False)
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    settler.written(str(path))
    settler.due()
    clock.now += 2.1
    assert settler.due() == [str(path)]


def test_deletions_and_vanished_files_are_released_at_once(tmp_path: Path) -> None:
    settler, _ = make()
    settler.gone(str(tmp_path / "deleted.jpg"))
    settler.written(str(tmp_path / "never-closed-and-gone.jpg"))
    assert sorted(settler.due()) == [str(tmp_path / "deleted.jpg"), str(tmp_path / "never-closed-and-gone.jpg")]


def test_many_events_for_one_path_become_one_release(tmp_path: Path) -> None:
    settler, clock = make()
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    for _ in range(50):
        settler.written(str(path))
    settler.closed(str(path))
    settler.gone(str(path))
    settler.closed(str(path))  # deleted and recreated: it is there again
    settler.due()
    clock.now += 3
    assert settler.due() == [str(path)]
    clock.now += 3
    assert settler.due() == []


def test_an_event_during_due_keeps_the_path_pending(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    clock = FakeClock()
    settler: Settler

    def stat_then_event(p: str) -> tuple[int, int]:
        if clock.now > 1001:
            settler.written(p)  # a new write lands while due() is looking at the file
        return (1, 1)

    settler = Settler(1.0, close_events=True, clock=clock, stat=stat_then_event)
    settler.closed(str(path))
    settler.due()
    clock.now += 2
    assert settler.due() == []
    assert len(settler) == 1
