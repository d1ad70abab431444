"""sd_notify against real AF_UNIX datagram sockets, in-process and from `imgwatch daemon`/`worker`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from imgwatch import sdnotify
from imgwatch.valkey_server import EmbeddedValkey
from tests.helpers import process_env


class Receiver:
    """A datagram socket the test binds, standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # what $NOTIFY_SOCKET holds

    def messages(self, timeout: float = 5.0) -> list[str]:
        """Every datagram that arrives within ``timeout`` seconds of the last one."""
        received = []
        self.sock.settimeout(timeout)
        while True:
            try:
                received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return received
            self.sock.settimeout(0.2)

    def wait_for(self, wanted: str, timeout: float, sender: subprocess.Popen[str] | None = None) -> list[str]:
        """Datagrams up to and including the first one holding the line ``wanted``
        (failing early, with its stderr, if ``sender`` exits first)."""
        received: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(min(1.0, max(0.01, deadline - time.monotonic())))
            try:
                received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                if sender is not None and sender.poll() is not None:
                    _, stderr = sender.communicate()
                    raise AssertionError(f"exited {sender.returncode} before {wanted!r}; got {received}; "
                                         f"stderr: {stderr[-2000:]}") from None
                continue
            if wanted in received[-1].splitlines():
                return received
        raise AssertionError(f"no {wanted!r} within {timeout}s; got {received}")


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A socket bound to a file path (how systemd passes /run/systemd/notify), set as $NOTIFY_SOCKET."""
    folder = tempfile.mkdtemp(prefix="sdn")  # short: unix socket paths are limited to 107 bytes
    path = os.path.join(folder, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield Receiver(sock, path)
    shutil.rmtree(folder)


@pytest.fixture(autouse=True)
def fresh_failure_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdnotify, "_reported_failure", False)


def test_each_call_sends_its_datagram(receiver: Receiver) -> None:
    sdnotify.ready()
    sdnotify.status("indexing 3 folders\nsecond line")
    sdnotify.watchdog()
    sdnotify.stopping()
    sdnotify.reloading()
    first, second, third, fourth, fifth = receiver.messages(timeout=2)
    assert (first, second, third, fourth) == (
        "READY=1", "STATUS=indexing 3 folders second line", "WATCHDOG=1", "STOPPING=1")
    reloading, monotonic = fifth.split("\n")
    assert reloading == "RELOADING=1"
    # systemd checks MONOTONIC_USEC against CLOCK_MONOTONIC: it must be now, in microseconds
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert monotonic.startswith("MONOTONIC_USEC=") and 0 <= now_usec - int(monotonic.split("=")[1]) < 5_000_000


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        name = f"imgwatch-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        sdnotify.ready()
        sock.settimeout(2)
        assert sock.recv(100) == b"READY=1"


def test_everything_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with structlog.testing.capture_logs() as logs:
        assert sdnotify.notify("READY=1") is False
        sdnotify.ready()
        sdnotify.status("x")
        sdnotify.watchdog()
        sdnotify.stopping()
        sdnotify.reloading()
    assert logs == []


@pytest.mark.parametrize("address", ["/nonexistent/imgwatch/notify", "@imgwatch-nobody-listens-here", "vsock:2:9"])
def test_a_failed_send_never_raises_and_is_logged_once(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    with structlog.testing.capture_logs() as logs:
        assert sdnotify.notify("READY=1") is False
        sdnotify.watchdog()
        sdnotify.watchdog()
    assert [entry["event"] for entry in logs] == ["sd_notify_failed"]
    assert logs[0]["socket"] == address and logs[0]["log_level"] == "warning"


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "", "soon", "-5"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None


def test_watchdog_pings_from_a_thread_while_healthy(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 0.05 s
    healthy = threading.Event()
    healthy.set()
    with sdnotify.watchdog_pings(healthy.is_set):
        received = [receiver.sock.recv(100) for _ in range(3)]
        healthy.clear()
        time.sleep(0.1)  # a ping in flight may still land
        receiver.messages(timeout=0.1)
        assert receiver.messages(timeout=0.3) == []  # unhealthy: silence, so systemd's watchdog fires
    assert received == [b"WATCHDOG=1"] * 3
    assert not any(t.name == "sd-watchdog" for t in threading.enumerate())


def test_watchdog_pings_is_a_no_op_without_a_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    before = threading.active_count()
    with sdnotify.watchdog_pings():
        assert threading.active_count() == before


def test_listener_receives_what_a_child_process_sends() -> None:
    with sdnotify.Listener() as listener:
        assert listener.address.startswith("@")
        env = dict(os.environ, NOTIFY_SOCKET=listener.address)
        code = "from imgwatch import sdnotify; sdnotify.status('loading'); sdnotify.ready()"
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
        assert listener.receive(timeout=5) == {"STATUS": "loading"}
        assert listener.receive(timeout=5) == {"READY": "1"}
        assert listener.receive(timeout=0.1) is None


# -- the real commands ----------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, queue_server: EmbeddedValkey, receiver: Receiver) -> dict[str, str]:
    (tmp_path / "photos").mkdir()
    return process_env(
        tmp_path,
        IMGWATCH_QUEUE_REDIS_URL=queue_server.url,
        IMGWATCH_QUEUE_NAME=f"sdnotify-{tmp_path.name}",
        IMGWATCH_GENERAL_ROOTS=str(tmp_path / "photos"),
        NOTIFY_SOCKET=receiver.address,
        WATCHDOG_USEC="1000000",  # WatchdogSec=1: a ping every 0.5 s
    )


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr


def test_daemon_sends_ready_status_and_watchdog_pings(
    env: dict[str, str], tmp_path: Path, receiver: Receiver
) -> None:
    root = tmp_path / "photos"
    daemon = subprocess.Popen([sys.executable, "-m", "imgwatch", "daemon", str(root)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        received = receiver.wait_for("READY=1", timeout=60, sender=daemon)
        assert received[-1] == "READY=1"
        received = receiver.wait_for("WATCHDOG=1", timeout=5, sender=daemon)
        assert "STATUS=watching 1 folder(s)" in received
        receiver.wait_for("WATCHDOG=1", timeout=5, sender=daemon)  # and again: the pings go on
        assert daemon.poll() is None
    finally:
        code, stderr = _stop(daemon)
    assert code == 0, stderr


def test_daemon_sends_no_ready_when_it_cannot_start(env: dict[str, str], receiver: Receiver) -> None:
    # no roots: the daemon refuses to start, and systemd must not see it as ready
    del env["IMGWATCH_GENERAL_ROOTS"]
    result = subprocess.run([sys.executable, "-m", "imgwatch", "daemon"], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert "READY=1" not in receiver.messages(timeout=0.5)


def test_worker_sends_ready_once_its_model_is_loaded(env: dict[str, str], receiver: Receiver) -> None:
    worker = subprocess.Popen([sys.executable, "-m", "imgwatch", "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        receiver.wait_for("READY=1", timeout=120, sender=worker)
        receiver.wait_for("WATCHDOG=1", timeout=5, sender=worker)
        receiver.wait_for("WATCHDOG=1", timeout=5, sender=worker)
        assert worker.poll() is None
    finally:
        code, stderr = _stop(worker)
    assert code == 0, stderr
    assert '"worker_ready"' in stderr
