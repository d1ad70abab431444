"""Who may use the web page: tokens, loopback, Host checks, requests from other sites, bad
bytes in queries, the token's redirect and strength; the server's start and stop.

The server runs in-process, as `imgwatch run` hosts it: serve(config, stop) in a thread on a
free port, over the package's store; or it is the package's real `imgwatch web` process.
Refusing to start goes through the real `imgwatch web`. Requests from other sites are sent
with the headers Chromium sends, and once by Chromium itself from a second local origin.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.client
import random
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from imgwatch.config import Config, load_config
from imgwatch.errors import ConfigError, ModelMismatchError, WebUnavailable
from imgwatch.web import WebServer
from imgwatch.web.security import COOKIE_NAME, MIN_TOKEN_BITS, AccessGuard, access_token, is_loopback, token_bits
from imgwatch.web.server import bind
from tests.helpers import make_config, process_env
from tests.web.conftest import PhotoSet, start_server, stop_server
from tests.web.conftest import WebServer as WebProcess

TOKEN = "Zx8-really.long~token_0123456789"


@pytest.fixture
def web_config(photo_set: PhotoSet) -> Config:
    return make_config(photo_set.data_dir)


@pytest.fixture
def with_token(web_config: Config, tmp_path: Path) -> Config:
    token_file = tmp_path / "web-token"
    token_file.write_text(TOKEN + "\n")
    web_config.web.token_file = str(token_file)
    return web_config


@contextlib.contextmanager
def serving(config: Config) -> Iterator[str]:
    """As `imgwatch run` hosts it: WebServer.open(config) here, serve(stop) in a thread on a free
    port; yields its loopback URL, sets the stop event after."""
    config.web.port = 0
    web = WebServer.open(config)
    ready = threading.Event()
    stop = threading.Event()
    thread = threading.Thread(target=web.serve, args=(stop, lambda _url: ready.set()), name="test-web-serve")
    thread.start()
    try:
        assert ready.wait(30), "the server did not start"
        yield f"http://127.0.0.1:{web.url.rstrip('/').rsplit(':', 1)[1]}"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def client_for(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, follow_redirects=False)


def test_with_a_token_every_request_needs_it(with_token: Config, photo_set: PhotoSet) -> None:
    assert access_token(with_token) == TOKEN
    camera = quote(str(photo_set.photos["camera"]))
    with serving(with_token) as url, client_for(url) as client:
        for path in ["/", "/status", "/api/status", f"/thumb?path={camera}", "/static/style.css", "/nowhere"]:
            refused = client.get(path, headers={"host": "photos.example:8765"})
            assert refused.status_code == 401, path
            assert TOKEN not in refused.text
        assert client.get("/api/status", headers={"authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert client.get("/api/status", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get(f"/api/status?token={TOKEN[:-1]}").status_code == 401

        # ?token= once: a cookie, and a redirect to the same address without the token
        opened = client.get(f"/photo?path={camera}&token={TOKEN}")
        assert opened.status_code == 303
        assert opened.headers["location"] == f"/photo?path={camera}"
        cookie = opened.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.get(opened.headers["location"]).status_code == 200  # the client keeps the cookie
        assert client.get(f"/thumb?path={camera}").status_code == 200
        client.cookies.clear()
        assert client.get(f"/thumb?path={camera}").status_code == 401


def test_without_a_token_only_loopback_host_names_are_answered(web_config: Config) -> None:
    """A page elsewhere cannot reach it through a DNS name rebound to 127.0.0.1."""
    with serving(web_config) as url, client_for(url) as client:
        for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"):
            assert client.get("/api/status", headers={"host": host}).status_code == 200, host
        response = client.get("/api/status", headers={"host": "attacker.example:8765"})
        assert response.status_code == 400
        assert "images" not in response.text

        headers = client.get("/").headers
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"


def test_a_store_of_another_model_is_refused_when_the_server_opens(web_config: Config, photo_set: PhotoSet) -> None:
    web_config.embedding.seed = 1  # resnet50/random-seed1, while the store holds random-seed0
    with pytest.raises(ModelMismatchError) as refused:
        WebServer.open(web_config)  # before listening, not at the first upload
    assert "resnet50/random-seed0" in str(refused.value) and "--weights" in str(refused.value)


def test_the_token_never_comes_from_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[web]\ntoken = "{TOKEN}"\n')
    with pytest.raises(ConfigError, match=r"web\.token .* IMGWATCH_WEB_TOKEN or web\.token_file"):
        load_config(config_file, environ={})


@pytest.mark.parametrize(("token", "problem"), [("short", "at least 16"), ("with spaces in it 0123456789", "only")])
def test_weak_or_odd_tokens_are_refused(web_config: Config, tmp_path: Path, token: str, problem: str) -> None:
    (tmp_path / "token").write_text(token)
    web_config.web.token_file = str(tmp_path / "token")
    with pytest.raises(ConfigError, match=problem):
        access_token(web_config)


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.org", ""))


def test_web_refuses_a_non_loopback_host_without_a_token_in_one_line(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    env.pop("IMGWATCH_WEB_TOKEN", None)
    result = subprocess.run([sys.executable, "-m", "imgwatch", "web", "--host", "0.0.0.0", "--port", "0"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("imgwatch: error: web.host = '0.0.0.0' is reachable from other machines")
    assert "IMGWATCH_WEB_TOKEN" in result.stderr


def test_serve_in_a_thread_on_any_address_with_a_token_then_stop(with_token: Config) -> None:
    """How `imgwatch run` hosts it: served from a thread, stopped by the event, the port freed."""
    with_token.web.host = "0.0.0.0"
    with serving(with_token) as url:
        assert httpx.get(f"{url}/api/status", timeout=30).status_code == 401
        answer = httpx.get(f"{url}/api/status", headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["store"]["images"] > 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/status", timeout=5)


def test_a_port_in_use_is_one_clear_error() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(WebUnavailable, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*web\.port"):
            bind("127.0.0.1", port)
    finally:
        taken.close()


@pytest.fixture(autouse=True)
def _no_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("IMGWATCH_WEB_TOKEN", raising=False)
    yield


def test_before_anything_is_indexed_the_pages_say_so(tmp_path: Path, photo_set: PhotoSet) -> None:
    config = make_config(tmp_path / "empty-data")
    with serving(config) as url, client_for(url) as client:
        assert client.get("/").status_code == 200
        assert client.get("/status").status_code == 200
        search = client.post("/api/search", files={"image": ("a.jpg", photo_set.photos["camera"].read_bytes())})
        assert search.status_code == 503 and "nothing is indexed" in search.json()["error"]
        duplicates = client.get("/duplicates")
        assert duplicates.status_code == 503 and "imgwatch run" in duplicates.text


# -- requests from other sites ----------------------------------------------------------------

SECURITY_HEADER_NAMES = ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy")
# What Chromium sends with each kind of request a page on another site can make.
FOREIGN_FETCH = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "empty",
                 "origin": "http://attacker.example"}
FOREIGN_IMAGE = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"}
FOREIGN_LINK = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document",
                "sec-fetch-user": "?1"}
FOREIGN_FORM = {**FOREIGN_LINK, "origin": "http://attacker.example"}
FOREIGN_FRAME = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "iframe"}


def assert_security_headers(response: httpx.Response) -> None:
    missing = [name for name in SECURITY_HEADER_NAMES if name not in response.headers]
    assert not missing, (response.status_code, missing, response.text)


def assert_refused_as_foreign(response: httpx.Response) -> None:
    assert response.status_code == 403, (response.status_code, response.text[:300])
    assert response.text.startswith("refused: ") and response.text.count("\n") == 1
    assert_security_headers(response)


def test_requests_from_another_site_are_refused_but_links_to_the_pages_open(
        web_server: WebProcess, photo_set: PhotoSet) -> None:
    camera = quote(str(photo_set.photos["camera"]))
    image = photo_set.photos["camera"].read_bytes()
    same_site = {**FOREIGN_FETCH, "sec-fetch-site": "same-site", "origin": "http://127.0.0.1:1"}  # another port
    with client_for(web_server.url) as client:
        # posts: a script's no-preflight fetch, a form, from another port of this host
        for headers in (FOREIGN_FETCH, FOREIGN_FORM, same_site):
            assert_refused_as_foreign(client.post("/api/search", content=image,
                                                  headers={**headers, "content-type": "text/plain"}))
            assert_refused_as_foreign(client.post("/", files={"image": ("a.jpg", image)}, headers=headers))
        # loads of images, the API, static files; a frame; a navigation to what is not a page
        for path, headers in [
            (f"/thumb?path={camera}", FOREIGN_IMAGE), (f"/view?path={camera}", FOREIGN_IMAGE),
            (f"/original?path={camera}", FOREIGN_IMAGE), ("/api/status", FOREIGN_FETCH),
            (f"/api/search?path={camera}", FOREIGN_FETCH), (f"/api/similar?path={camera}", FOREIGN_FETCH),
            ("/static/style.css", {**FOREIGN_IMAGE, "sec-fetch-dest": "style"}),
            (f"/photo?path={camera}", FOREIGN_FRAME), ("/api/status", FOREIGN_LINK),
            (f"/thumb?path={camera}", FOREIGN_LINK),
        ]:
            assert_refused_as_foreign(client.get(path, headers=headers))
        # a browser without Sec-Fetch-Site (plain HTTP to another machine): its Origin decides
        assert_refused_as_foreign(client.post("/api/search", content=image, headers={"origin": "http://attacker.example"}))
        assert_refused_as_foreign(client.post("/api/search", content=image, headers={"origin": "null"}))

        # a link from elsewhere opens the pages; the page itself, what the user types, and curl work
        for path in ("/", f"/photo?path={camera}", "/status"):
            assert client.get(path, headers=FOREIGN_LINK).status_code == 200, path
        own = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty",
               "origin": web_server.url}
        assert client.post("/api/search?top=1", files={"image": ("a.jpg", image)}, headers=own).status_code == 200
        assert client.post("/api/search?top=1", files={"image": ("a.jpg", image)},
                           headers={"origin": web_server.url}).status_code == 200
        typed = {"sec-fetch-site": "none", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
        assert client.get(f"/thumb?path={camera}", headers=typed).status_code == 200
        assert client.get("/api/status").status_code == 200


def test_with_a_token_the_bearer_header_passes_from_anywhere_the_cookie_does_not(with_token: Config) -> None:
    with serving(with_token) as url, client_for(url) as client:
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/status", headers={**FOREIGN_FETCH, **bearer}).status_code == 200
        empty_upload = client.post("/api/search", content=b"", headers={**FOREIGN_FETCH, **bearer})
        assert empty_upload.status_code == 400 and "empty" in empty_upload.json()["error"]  # past the guard
        assert client.get("/api/status", headers={**FOREIGN_FETCH, "authorization": "Bearer wrong-token-01234567"}
                          ).status_code == 403

        cookie = {"cookie": f"{COOKIE_NAME}={TOKEN}"}
        assert client.get("/api/status", headers=cookie).status_code == 200
        assert_refused_as_foreign(client.get("/api/status", headers={**FOREIGN_FETCH, **cookie}))
        # a link carrying the token still opens the page (and sets the cookie)
        assert client.get(f"/?token={TOKEN}", headers=FOREIGN_LINK).status_code == 303


CROSS_SITE_PAGE = """<!doctype html>
<form id="upload" method="post" enctype="multipart/form-data" action="{target}/api/search">
  <input type="file" name="image" id="file"></form>
<script>
  const bytes = Uint8Array.from(atob("{image}"), c => c.charCodeAt(0));
  fetch("{target}/api/search", {{method: "POST", mode: "no-cors", body: bytes,
                                  headers: {{"content-type": "text/plain"}}}})
    .then(() => {{
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], "a.jpg", {{type: "image/jpeg"}}));
      document.getElementById("file").files = transfer.files;
      document.getElementById("upload").submit();
    }});
</script>
"""


@pytest.mark.parametrize("attacker_host", ["localhost", "127.0.0.1"])  # another site; the same site, another port
def test_a_page_on_another_origin_cannot_make_the_browser_search(
        web_server: WebProcess, photo_set: PhotoSet, tmp_path: Path, attacker_host: str) -> None:
    """Chromium opens a page served from a second local origin whose script POSTs an image to
    imgwatch (fetch without preflight) and then submits a form with it: both are refused, and
    the server never loads its model."""
    from tests.web.browser import CHROMIUM, CHROMIUM_ARGS

    if CHROMIUM is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright for the browser tests")
    import http.server

    server = start_server(web_server.env, tmp_path / "web.log")  # its own log: a fresh process, no model yet
    site = tmp_path / "site"
    site.mkdir()
    image = base64.b64encode(photo_set.photos["camera"].read_bytes()).decode()
    (site / "index.html").write_text(CROSS_SITE_PAGE.format(target=server.url, image=image))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=attacker.serve_forever, name="test-attacker-site", daemon=True).start()
    answers: dict[str, list[int]] = {}
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.on("response", lambda response: answers.setdefault(
                f"{response.request.method} {response.url}", []).append(response.status))
            page.goto(f"http://{attacker_host}:{attacker.server_address[1]}/index.html")
            page.wait_for_url(f"{server.url}/api/search", timeout=30_000)  # the form went
            page.wait_for_load_state()
            shown = page.locator("body").inner_text()
            browser.close()
    finally:
        attacker.shutdown()
        attacker.server_close()
        stop_server(server)
    assert answers.get(f"POST {server.url}/api/search") == [403, 403], answers
    assert shown.startswith("refused: a ")
    log = server.log.read_text()
    assert "random_weights" not in log and "engine_ready" not in log, log  # the model never loaded


# -- bad bytes in the query ---------------------------------------------------------------------

PATH_ROUTES = ["/", "/photo", "/thumb", "/view", "/original", "/api/search", "/api/similar", "/api/image"]
JSON_ROUTES = {"/thumb", "/view", "/original", "/api/search", "/api/similar", "/api/image"}


@pytest.mark.parametrize("query", ["path=/x%FF", "path=%C3", "pa%FFth=/x", "path=/x&top=%FF"])
@pytest.mark.parametrize("route", PATH_ROUTES)
def test_a_query_that_is_not_utf8_is_400_with_the_headers(
        web_server: WebProcess, route: str, query: str) -> None:
    """No indexed path is spelled so (the workers refuse names that are not UTF-8): 400, no traceback."""
    log_before = web_server.log.read_text()
    response = httpx.get(f"{web_server.url}{route}?{query}", timeout=60)
    assert response.status_code == 400, response.text[:500]
    assert_security_headers(response)
    if route in JSON_ROUTES:
        assert "not valid UTF-8" in response.json()["error"]
    else:
        assert response.headers["content-type"].startswith("text/html") and "not valid UTF-8" in response.text
    assert web_server.log.read_text().count("\n") - log_before.count("\n") <= 1


def test_an_upload_named_with_a_nul_or_bad_bytes_is_400(web_server: WebProcess, photo_set: PhotoSet) -> None:
    """(A NUL in a path is a 404, as for any path that is not indexed: tests/web/test_api.py.)"""
    image = photo_set.photos["camera"].read_bytes()
    log_before = web_server.log.read_text()
    for query in ("name=a%00", "name=a.jpg%00", "name=a.%00", "name=a%FF.jpg"):
        response = httpx.post(f"{web_server.url}/api/search?{query}", content=image, timeout=60)
        assert response.status_code == 400, (query, response.text)
        assert "NUL" in response.json()["error"] or "UTF-8" in response.json()["error"]
        assert_security_headers(response)
    form = (b'--cut\r\nContent-Disposition: form-data; name="image"; filename="a.j\0pg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n--cut--\r\n")  # a NUL byte, as sent raw
    multipart = httpx.post(f"{web_server.url}/api/search", content=form,
                           headers={"content-type": "multipart/form-data; boundary=cut"}, timeout=60)
    assert multipart.status_code == 400 and "NUL" in multipart.json()["error"], multipart.text
    assert web_server.log.read_text().count("\n") - log_before.count("\n") <= 1


def test_an_unexpected_failure_is_a_500_with_the_security_headers(web_config: Config) -> None:
    """The guard wraps Starlette's own error handler, so even a failure nobody foresaw carries them."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from imgwatch.web import create_app

    def fails(_request: object) -> None:
        raise RuntimeError("nobody foresaw this")

    app = create_app(web_config)
    assert isinstance(app, AccessGuard) and isinstance(app.app, Starlette)  # the guard outside Starlette
    app.app.router.routes.append(Route("/fails", fails))

    async def ask(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path)

    page = asyncio.run(ask("/fails"))
    assert page.status_code == 500 and "its log says why" in page.text and "nobody foresaw" not in page.text
    assert_security_headers(page)


# -- the token bootstrap's redirect ----------------------------------------------------------------


@pytest.mark.parametrize(("target", "location"), [
    ("//evil.example/", "/evil.example/"),
    ("/\\evil.example/", "/evil.example/"),
    ("///\\//evil.example/x?a=1", "/evil.example/x?a=1"),
    ("/%2F%2Fevil.example/", "/%2F%2Fevil.example/"),
    ("/photo?path=%2Fa.jpg", "/photo?path=%2Fa.jpg"),
])
def test_the_token_redirect_stays_on_this_server(with_token: Config, target: str, location: str) -> None:
    """http.client sends the request target exactly as written and follows no redirect."""
    separator = "&" if "?" in target else "?"
    with serving(with_token) as url:
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        try:
            connection.request("GET", f"{target}{separator}token={TOKEN}")
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
    assert response.status == 303
    assert response.getheader("location") == location
    assert response.getheader("x-frame-options") == "DENY"


# -- the token's strength and its file ---------------------------------------------------------------


def test_tokens_from_a_random_generator_are_accepted(web_config: Config, tmp_path: Path) -> None:
    """As secrets.token_hex / token_urlsafe make them, from a seeded generator so the test cannot flake
    (the estimate refuses a 32-character hex token only when it happens to be nearly all digits
    with many repeats: about once in 10^8)."""
    generator = random.Random(21)
    tokens = []
    for size in (16, 24, 32):
        for _ in range(3000):
            raw = generator.randbytes(size)
            tokens += [raw.hex(), base64.urlsafe_b64encode(raw).rstrip(b"=").decode()]
    weakest = min(tokens, key=token_bits)
    assert token_bits(weakest) >= MIN_TOKEN_BITS + 20, weakest
    (tmp_path / "token").write_text(weakest)
    web_config.web.token_file = str(tmp_path / "token")
    assert access_token(web_config) == weakest
    assert token_bits(secrets.token_urlsafe(32)) >= MIN_TOKEN_BITS


@pytest.mark.parametrize("token", ["a" * 16, "a" * 64, "0123456789abcdef", "abcdabcdabcdabcd", "ZYXWVUTSRQPONMLK",
                                   "0123456789abcdef0123456789abcdef", "a1b2a1b2a1b2a1b2a1b2a1b2",
                                   "password12345678"])
def test_plain_tokens_are_refused_in_one_line(web_config: Config, tmp_path: Path, token: str) -> None:
    (tmp_path / "token").write_text(token)
    web_config.web.token_file = str(tmp_path / "token")
    with pytest.raises(ConfigError, match=r"too easy to guess .*secrets\.token_urlsafe") as refused:
        access_token(web_config)
    assert "\n" not in str(refused.value) and token not in str(refused.value)


def test_a_token_file_others_can_read_is_warned_about_once(tmp_path: Path) -> None:
    token_file = tmp_path / "web-token"
    token_file.write_text(TOKEN + "\n")
    env = process_env(tmp_path, IMGWATCH_WEB_TOKEN_FILE=str(token_file))
    env.pop("IMGWATCH_WEB_TOKEN", None)
    for mode, warnings in ((0o644, 1), (0o600, 0)):
        token_file.chmod(mode)
        log = tmp_path / f"web-{mode:o}.log"
        stop_server(start_server(env, log))
        lines = [line for line in log.read_text().splitlines() if "web_token_file_readable" in line]
        assert len(lines) == warnings, log.read_text()
        assert all(f"chmod 600 {token_file}" in line and str(token_file) in line for line in lines)
