"""Who may use the web page: loopback by default, a token for anything else.

* Bound to a loopback address without a token, the page answers only requests whose
  ``Host`` names this machine (``localhost``, ``127.0.0.1``, ``[::1]``), so a web site
  cannot reach it through a DNS name rebound to 127.0.0.1.
* With a token (``$IMGWATCH_WEB_TOKEN`` or ``web.token_file``; required on any other
  address) every request must carry it: ``Authorization: Bearer TOKEN``, or the cookie the
  page sets when opened once with ``?token=TOKEN`` (it then redirects to the same address
  without the token, so the token stays out of the browser's history).
* Every response carries headers that keep the page from being framed, from loading
  anything from elsewhere, and from having responses sniffed as another type.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from imgwatch.config import WEB_TOKEN_ENV, Config, web_token
from imgwatch.errors import ConfigError

MIN_TOKEN_LENGTH = 16
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")  # what a cookie can carry unquoted
COOKIE_NAME = "imgwatch_token"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'none'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def access_token(config: Config) -> str | None:
    """The configured token, checked; ConfigError for one too short to be a secret."""
    token = web_token(config)
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"the web token (from {WEB_TOKEN_ENV} or web.token_file) has {len(token)} characters; use at "
            f"least {MIN_TOKEN_LENGTH}, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if token is not None and not TOKEN_CHARACTERS.fullmatch(token):
        raise ConfigError(
            f"the web token (from {WEB_TOKEN_ENV} or web.token_file) may contain only letters, digits and "
            "._~+/=-, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def check_binding(config: Config, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token (one line, no traceback)."""
    if token is None and not is_loopback(config.web.host):
        raise ConfigError(
            f"web.host = {config.web.host!r} is reachable from other machines, so the web page needs an access "
            f"token: set {WEB_TOKEN_ENV} or web.token_file (or keep web.host = \"127.0.0.1\")"
        )


def host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:8765`` -> ``::1``, ``example:80`` -> ``example``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class AccessGuard:
    """ASGI middleware: the token check (or the loopback Host check) and the security headers."""

    def __init__(self, app: ASGIApp, token: str | None, host: str) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = {"localhost", "127.0.0.1", "::1", host.strip().strip("[]").lower()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        if self.token is None:
            if host_name(headers.get("host", "")) not in self.allowed_hosts:
                await _plain(send_with_headers, 400, "this page answers only to localhost, 127.0.0.1 or [::1]")
                return
            await self.app(scope, receive, send_with_headers)
            return
        if self._presented(headers):
            await self.app(scope, receive, send_with_headers)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        offered = [value for key, value in query if key == "token"]
        if offered and self._matches(offered[-1]) and scope["method"] in ("GET", "HEAD"):
            await self._remember(scope, send_with_headers)
            return
        await _plain(send_with_headers, 401, "an access token is required: open the page once with ?token=TOKEN "
                     "or send the header Authorization: Bearer TOKEN",
                     extra=[(b"www-authenticate", b'Bearer realm="imgwatch"')])

    def _matches(self, candidate: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self.token.encode("utf-8"))

    def _presented(self, headers: dict[str, str]) -> bool:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._matches(credentials.strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            return False
        morsel = cookie.get(COOKIE_NAME)
        return morsel is not None and self._matches(morsel.value)

    async def _remember(self, scope: Scope, send: Send) -> None:
        """Set the token cookie and redirect to the same page without ?token=."""
        raw_query: bytes = scope.get("query_string", b"")
        rest = b"&".join(part for part in raw_query.split(b"&") if part and not part.startswith(b"token="))
        location = scope.get("raw_path") or scope["path"].encode("utf-8")
        location += b"?" + rest if rest else b""
        cookie = f"{COOKIE_NAME}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location),
                                (b"set-cookie", cookie.encode("latin-1")),
                                (b"cache-control", b"no-store"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
