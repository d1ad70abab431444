"""systemd's service notification protocol (sd_notify(3)): readiness, status, watchdog pings.

Under a ``Type=notify`` unit systemd passes a datagram socket in ``$NOTIFY_SOCKET``
(a path, or an abstract name when it starts with "@"); every notification is one
datagram of newline-separated ``KEY=VALUE`` lines. Outside systemd the variable is
unset and every function here does nothing, so callers need no checks of their own.
A failed send never raises: it is logged once and the service goes on (systemd then
decides, e.g. a missing READY=1 times the start out).

Hand-written on purpose (the protocol is one ``sendto``): of the packages on PyPI,
``sdnotify`` (last release 2017) connects once at import time and hides every error
behind a bare ``except``, ``systemd-watchdog`` raises on a failed send and has no
STOPPING/RELOADING, and ``systemd-python``/``cysystemd`` need libsystemd to build or run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

from imgwatch.log import get_logger

log = get_logger("imgwatch.sdnotify")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
_reported_failure = False  # a broken socket is logged once, not on every watchdog ping


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. systemd ≥ 254's "vsock:": not used for local services


def notify(*fields: str) -> bool:
    """Send ``fields`` (``KEY=VALUE`` each) as one notification; True if it was sent."""
    global _reported_failure
    value = os.environ.get(NOTIFY_SOCKET, "")
    if not value:
        return False
    address = _address(value)
    try:
        if address is None:
            raise OSError(f"unsupported {NOTIFY_SOCKET} address {value!r}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as exc:
        if not _reported_failure:
            _reported_failure = True
            log.warning("sd_notify_failed", socket=value, error=str(exc),
                        note="systemd gets no readiness or watchdog notifications from this process")
        return False
    return True


def ready() -> None:
    """Start-up is complete: a ``Type=notify`` unit becomes active."""
    notify("READY=1")


def stopping() -> None:
    """Shutting down (systemd shows "deactivating" until the process exits)."""
    notify("STOPPING=1")


def reloading() -> None:
    """Re-reading the configuration; send ready() when done (as ``Type=notify-reload`` expects)."""
    notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def status(text: str) -> None:
    """One line for ``systemctl status`` (newlines would end the field: they become spaces)."""
    notify("STATUS=" + " ".join(text.splitlines()))


def watchdog() -> None:
    """Tell systemd this process is alive (``WatchdogSec=``); send every watchdog_interval()."""
    notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings: half of ``$WATCHDOG_USEC``; None if no watchdog is set
    (or it is meant for another process, ``$WATCHDOG_PID``)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


@contextlib.contextmanager
def watchdog_pings(healthy: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Ping the watchdog from a thread every watchdog_interval() while ``healthy()`` says so.

    For processes whose main thread blocks for long stretches (an RQ worker running a job):
    a hung or frozen process stops pinging and systemd restarts it. A no-op without a watchdog.
    """
    interval = watchdog_interval()
    if interval is None:
        yield
        return
    done = threading.Event()

    def ping() -> None:
        while True:
            if healthy():
                watchdog()
            if done.wait(interval):
                return

    thread = threading.Thread(target=ping, name="sd-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class Listener:
    """The receiving end: a datagram socket bound to a fresh abstract address.

    For a parent that waits until its children are ready: pass ``address`` to a child as
    its ``$NOTIFY_SOCKET`` and count the READY=1 it sends (``imgwatch run`` and its
    workers). Use as a context manager.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind("")  # Linux autobind: a unique abstract name, no file to clean up
        name = self._sock.getsockname()
        self.address = "@" + (name[1:].decode() if isinstance(name, bytes) else name[1:])

    def receive(self, timeout: float | None = None) -> dict[str, str] | None:
        """The next notification as {KEY: VALUE}, or None if none came within ``timeout`` seconds."""
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(4096)
        except TimeoutError:
            return None
        fields = (line.partition("=") for line in data.decode(errors="replace").splitlines())
        return {key: value for key, sep, value in fields if sep}

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
