"""Who may use the web page: tokens, loopback, Host checks; the server's start and stop.

The server runs in-process, as `imgwatch run` hosts it: serve(config, stop) in a thread on a
free port, over the package's store. Refusing to start goes through the real `imgwatch web`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from imgwatch.config import Config, load_config
from imgwatch.errors import ConfigError
from imgwatch.web import WebServer
from imgwatch.web.security import COOKIE_NAME, access_token, is_loopback
from imgwatch.web.server import WebUnavailable, bind
from tests.helpers import make_config, process_env
from tests.web.conftest import PhotoSet

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


def test_a_store_of_another_model_is_refused_for_uploads(web_config: Config, photo_set: PhotoSet) -> None:
    web_config.embedding.seed = 1  # resnet50/random-seed1, while the store holds random-seed0
    with serving(web_config) as url, client_for(url) as client:
        response = client.post("/api/search", files={"image": ("a.jpg", photo_set.photos["camera"].read_bytes())})
    assert response.status_code == 409
    assert "resnet50/random-seed0" in response.json()["error"] and "--weights" in response.json()["error"]


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
