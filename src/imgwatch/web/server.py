"""Serving the web page with uvicorn: `imgwatch web`, or a thread of `imgwatch run`.

The socket is bound here, before uvicorn starts, so a port in use or a bad address is one
ImgwatchError line (uvicorn itself would exit the process), and ``web.port = 0`` picks a free
port whose URL is then reported.

In `imgwatch run`: ``web = WebServer.open(config)`` in the main thread (fails fast), then
``threading.Thread(target=web.serve, args=(stop,))``; setting ``stop`` ends it within 0.2 s
plus the requests in flight (at most 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable

from imgwatch.config import Config
from imgwatch.errors import StoreError, WebUnavailable
from imgwatch.log import get_logger
from imgwatch.web.security import access_token, check_binding

log = get_logger("imgwatch.web")
STOP_POLL_SECONDS = 0.2


class WebServer:
    """The web page, checked and bound but not yet serving.

    ``WebServer.open(config)`` does everything that can fail at start (token, address, port) in
    the caller's thread, so `imgwatch run --web` can report it as one line before it starts
    anything else; ``serve()`` then runs in any thread until ``stop`` is set.
    """

    def __init__(self, config: Config, token: str | None, listener: socket.socket) -> None:
        self.config = config
        self.token = token
        self.listener = listener
        self.url = base_url(listener)

    @classmethod
    def open(cls, config: Config) -> WebServer:
        """Check the token, the address and the model searches by photo load, and listen;
        ConfigError, WebUnavailable, ModelMismatchError or WeightsUnavailable say why not."""
        token = access_token(config)
        check_binding(config, token)
        check_search_model(config)
        return cls(config, token, bind(config.web.host, config.web.port))

    def serve(self, stop: threading.Event | None = None, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until ``stop`` is set (or, in the main thread, SIGINT/SIGTERM); closes the socket after.

        ``on_ready(url)`` is called once it accepts connections. Signal handlers are installed
        only in the main thread, so it is safe to run in another one.
        """
        import uvicorn

        from imgwatch.web.app import create_app

        app = create_app(self.config, self.token)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                               timeout_graceful_shutdown=5, server_header=False))

        async def run() -> None:
            serving = asyncio.ensure_future(server.serve(sockets=[self.listener]))
            announced = False
            while not serving.done():
                if not announced and server.started:
                    announced = True
                    log.info("web_serving", url=self.url, token_required=self.token is not None)
                    if on_ready is not None:
                        on_ready(self.url)
                if stop is not None and stop.is_set():
                    server.should_exit = True
                await asyncio.wait({serving}, timeout=STOP_POLL_SECONDS)
            await serving

        try:
            asyncio.run(run())
        finally:
            self.close()
        log.info("web_stopped", url=self.url)

    def close(self) -> None:
        self.listener.close()


def serve(config: Config, stop: threading.Event | None = None,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Check, bind and serve the web page until ``stop`` is set: ``WebServer.open(config).serve(...)``.

    Raises ConfigError (no token for a non-loopback host, a bad token) or WebUnavailable
    (cannot listen) before serving anything.
    """
    WebServer.open(config).serve(stop, on_ready)


def check_search_model(config: Config) -> None:
    """What the first search by photo would refuse, refused at start: configured weights of another
    model than the store's, or the store's weights file moved or changed (see
    embedding.identity.query_weights). Costs a hash of a weights file, not a model load."""
    from imgwatch.embedding.identity import query_weights
    from imgwatch.store import open_store
    from imgwatch.web.state import RESTART_WEB

    try:
        with open_store(config, create=False) as store:
            recorded, recorded_file = store.recorded_model(), store.recorded_weights_file()
    except StoreError:
        return  # nothing indexed yet, or a store the pages report on: the first search checks again
    if recorded is not None:
        query_weights(config, recorded[0], recorded_file, RESTART_WEB)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (IPv4 or IPv6), or WebUnavailable saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise WebUnavailable(f"cannot listen on web.host = {host!r}: {exc.strerror}") from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise WebUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror}; set web.port (IMGWATCH_WEB_PORT) to another port"
        ) from None
    listener.set_inheritable(True)
    return listener


def base_url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    if listener.family == socket.AF_INET6:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):
        with contextlib.suppress(OSError):
            host = socket.gethostname()
    return f"http://{host}:{port}/"
