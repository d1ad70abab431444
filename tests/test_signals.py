"""Ctrl-C and a service manager's SIGTERM set the stop event of a long-running command."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from imgwatch.signals import stop_on_signals


@pytest.fixture
def pytest_handlers_back() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_set_the_stop_event_instead_of_ending_the_process(
    signum: signal.Signals, pytest_handlers_back: None
) -> None:
    stop = stop_on_signals()
    assert not stop.is_set()
    os.kill(os.getpid(), signum)  # a real signal: without the handler this would end the test run
    assert stop.wait(5)
