"""Who may use the web page: loopback by default, a token for anything else.

* Bound to a loopback address without a token, the page answers only requests whose
  ``Host`` names this machine (``localhost``, ``127.0.0.1``, ``[::1]``), so a web site
  cannot reach it through a DNS name rebound to 127.0.0.1.
* With a token (``$IMGWATCH_WEB_TOKEN`` or ``web.token_file``; required on any other
  address) every request must carry it: ``Authorization: Bearer TOKEN``, or the cookie the
  page sets when opened once with ``?token=TOKEN`` (it then redirects to the same path on this
  server, never another host, without the token, so the token stays out of the browser's
  history). The cookie goes to every port of the host name: browsers do not keep cookies apart
  by port. The token must be random (:func:`token_bits`); a token file others can read is
  warned about.
* Requests from another site are refused (403): a page the user visits elsewhere cannot make
  the browser post an image here (which loads the model and burns CPU) nor load images or the
  API. A request is from another site when its ``Sec-Fetch-Site`` is ``cross-site`` or
  ``same-site`` (another port of this host is the same site), or, from a browser that sends no
  ``Sec-Fetch-Site`` (plain HTTP to another machine), when its ``Origin`` names another host
  and port than its ``Host``. Let through anyway: a request carrying the token as
  ``Authorization: Bearer`` (a browser cannot add it to a cross-site request without CORS,
  which this server never grants), and a top-level navigation (GET, ``Sec-Fetch-Mode:
  navigate``, ``Sec-Fetch-Dest: document``) to one of the pages, so a link to the page from
  elsewhere still opens it. Requests with neither header (curl, scripts) are answered as before.
* Every write (any POST but the searches, which write nothing) must carry the server's form key,
  a random value made at start and written into the pages' forms: the form field ``form_key`` or
  the header ``X-Imgwatch-Form``; without it the answer is 403. A browser fooled by another site
  cannot know it (the site cannot read this server's pages). Requests with ``Authorization:
  Bearer`` need no key. This stands behind the refusal of other sites' requests, for browsers that
  send neither ``Sec-Fetch-Site`` nor ``Origin``.
* Every response carries headers that keep the page from being framed, from loading
  anything from elsewhere, and from having responses sniffed as another type; the answers of
  Starlette's own error handler too, since the guard wraps the whole application.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote

from imgwatch.config import WEB_TOKEN_ENV, Config, web_token
from imgwatch.errors import ConfigError
from imgwatch.log import get_logger

log = get_logger("imgwatch.web")

MIN_TOKEN_LENGTH = 16
MIN_TOKEN_BITS = 80
# The classes a token's characters are drawn from, for the estimate of its strength.
TOKEN_CHARACTER_CLASSES = ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "._~+/=-")
TOKEN_ADVICE = "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")  # what a cookie can carry unquoted
COOKIE_NAME = "imgwatch_token"
FORM_KEY_FIELD = "form_key"
FORM_KEY_HEADER = "x-imgwatch-form"
MAX_FORM_BYTES = 64 * 1024  # a write's form (paths and switches); the body is read to find the key
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
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
    """The configured token, checked; ConfigError for one too short or too plain to be a secret.

    Logs a warning when web.token_file can be read by other users than its owner.
    """
    token = web_token(config)
    if config.web.token_file:
        warn_if_others_can_read(config.web.token_file)
    if token is None:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"the web token (from {WEB_TOKEN_ENV} or web.token_file) has {len(token)} characters; use at "
            f"least {MIN_TOKEN_LENGTH}, {TOKEN_ADVICE}"
        )
    if not TOKEN_CHARACTERS.fullmatch(token):
        raise ConfigError(
            f"the web token (from {WEB_TOKEN_ENV} or web.token_file) may contain only letters, digits and "
            f"._~+/=-, {TOKEN_ADVICE}"
        )
    if (bits := token_bits(token)) < MIN_TOKEN_BITS:
        raise ConfigError(
            f"the web token (from {WEB_TOKEN_ENV} or web.token_file) is too easy to guess (runs, sequences or "
            f"repeats: about {bits:.0f} bits, at least {MIN_TOKEN_BITS} needed); make a random one, "
            f"{TOKEN_ADVICE}"
        )
    return token


def token_bits(token: str) -> float:
    """A cautious estimate of a token's strength in bits: each character that adds something is worth
    log2 of the alphabet its character classes span (a-z, A-Z, 0-9, symbols).

    A character adds nothing when it continues a run or a step sequence (``aaa``, ``abc``, ``321``)
    or repeats a pair of characters seen before (``abcdabcd``). Random tokens of 128 bits score
    far above the bar: over 200,000 each of ``secrets.token_hex(16)`` and ``token_urlsafe(16)``
    none scored below 108 bits.
    """
    alphabet = sum(len(chars) for chars in TOKEN_CHARACTER_CLASSES if any(c in chars for c in token))
    codes = [ord(c) for c in token]
    pairs_seen: set[str] = set()
    adding = 0
    for index in range(len(token)):
        step = codes[index] - codes[index - 1] if index else 0
        continues = index >= 2 and abs(step) <= 1 and step == codes[index - 1] - codes[index - 2]
        pair = token[max(index - 1, 0):index + 1]
        if not continues and pair not in pairs_seen:
            adding += 1
        pairs_seen.add(pair)
    return adding * math.log2(alphabet) if alphabet > 1 else 0.0


def warn_if_others_can_read(token_file: str) -> None:
    """One warning when the token file's mode lets its group or other users read it."""
    path = os.path.expanduser(token_file)
    try:
        mode = os.stat(path).st_mode
    except OSError:  # reading it reports what is wrong
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("web_token_file_readable", path=path, mode=oct(stat.S_IMODE(mode)),
                    detail=f"other users can read the web token: chmod 600 {path}")


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


def from_another_site(method: str, path: str, headers: dict[str, str], pages: frozenset[str]) -> str | None:
    """Why a request is refused as coming from another site, or None (the rule: module docstring)."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        if site in ("same-origin", "none"):  # "none": typed, bookmarked, opened by the user
            return None
        navigation = (method in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate"
                      and headers.get("sec-fetch-dest") == "document")
        if navigation and path in pages:
            return None
        return (f"refused: a {site} request from another web page (only links to the pages may come "
                "from elsewhere; scripts send Authorization: Bearer TOKEN)")
    origin = headers.get("origin")
    if origin is None or origin.partition("://")[2].lower() == headers.get("host", "").lower():
        return None
    shown = origin.encode("ascii", "backslashreplace").decode("ascii")[:200]
    return f"refused: a request from another web page ({shown}); scripts send Authorization: Bearer TOKEN"


class AccessGuard:
    """ASGI middleware around the whole application: the token check (or the loopback Host check),
    the refusal of requests from other sites, and the security headers.

    ``pages``: the paths a link from another site may open (a top-level navigation); ``searches``:
    the paths a POST may reach without the form key (they write nothing). ``form_key``: made here,
    random per server, for the pages to put in their forms.
    """

    def __init__(self, app: ASGIApp, token: str | None, host: str, pages: frozenset[str],
                 searches: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.token = token
        self.pages = pages
        self.searches = searches
        self.form_key = secrets.token_urlsafe(32)
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
        if self.token is None and host_name(headers.get("host", "")) not in self.allowed_hosts:
            await _plain(send_with_headers, 400, "this page answers only to localhost, 127.0.0.1 or [::1]")
            return
        bearer = self.token is not None and self._bearer(headers)
        refusal = None if bearer else from_another_site(scope["method"], scope["path"], headers, self.pages)
        if refusal is not None:
            await _plain(send_with_headers, 403, refusal)
            return
        if self.token is None or bearer or self._cookie(headers):
            if not bearer and scope["method"] not in READ_ONLY_METHODS and scope["path"] not in self.searches:
                replayed = await self._with_form_key(headers, receive, send_with_headers)
                if replayed is None:
                    return
                receive = replayed
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

    def _bearer(self, headers: dict[str, str]) -> bool:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._matches(credentials.strip())

    def _cookie(self, headers: dict[str, str]) -> bool:
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            return False
        morsel = cookie.get(COOKIE_NAME)
        return morsel is not None and self._matches(morsel.value)

    async def _with_form_key(self, headers: dict[str, str], receive: Receive, send: Send) -> Receive | None:
        """``receive`` for the application when the write carries the form key (the header, or the
        field of a url-encoded form, whose body is read here and handed on); None once refused."""
        if self._is_form_key(headers.get(FORM_KEY_HEADER, "")):
            return receive
        body = b""
        if headers.get("content-type", "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return None  # the client went away
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > MAX_FORM_BYTES:
                    await _plain(send, 413, f"refused: a form larger than {MAX_FORM_BYTES // 1024} KiB")
                    return None
            offered = [value for key, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True)
                       if key == FORM_KEY_FIELD]
            if offered and self._is_form_key(offered[-1]):
                return _replay(body, receive)
        await _plain(send, 403, "refused: this write lacks the page's form key (reload the page and try again; "
                                f"scripts send Authorization: Bearer TOKEN, or the {FORM_KEY_FIELD} the page holds "
                                "as the header X-Imgwatch-Form)")
        return None

    def _is_form_key(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self.form_key.encode("ascii"))

    async def _remember(self, scope: Scope, send: Send) -> None:
        """Set the token cookie and redirect to the same page without ?token=."""
        raw_query: bytes = scope.get("query_string", b"")
        rest = b"&".join(part for part in raw_query.split(b"&") if part and not part.startswith(b"token="))
        location = local_location(scope.get("raw_path") or scope["path"].encode("utf-8"))
        location += b"?" + rest if rest else b""
        cookie = f"{COOKIE_NAME}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", location),
                                (b"set-cookie", cookie.encode("latin-1")),
                                (b"cache-control", b"no-store"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def local_location(raw_path: bytes) -> bytes:
    """``raw_path`` as a redirect that stays on this server: ``//evil.com/`` or ``/\\evil.com/`` would
    name another host, so leading slashes and backslashes become one ``/``; anything but the
    characters of a URL path is percent-encoded (a browser drops tabs and newlines, which could
    bring two slashes together again)."""
    return b"/" + quote(raw_path.lstrip(b"/\\"), safe="/%:@!$&'()*+,;=-._~").encode("ascii")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands on ``body`` read already, then what the client sends next (its disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
