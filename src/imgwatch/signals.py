"""How a long-running command learns it is to stop: Ctrl-C (SIGINT) or a service manager's SIGTERM."""

from __future__ import annotations

import signal
import threading


def stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM set from now on (instead of raising KeyboardInterrupt or
    ending the process): the command's loops wait on it and then stop cleanly.

    Call it from the main thread: only there may Python install signal handlers.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop
