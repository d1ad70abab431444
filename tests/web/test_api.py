"""The JSON API and the image routes over HTTP, against the real `imgwatch web` process.

Images are served only by an indexed path, exactly as stored: traversal, encodings, paths
outside the index and symbolic links all get 404, and never a file's bytes. Uploads beyond
web.max_upload_mb get 413 however they are sent.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from tests.web.conftest import UPLOAD_LIMIT_MB, PhotoSet, WebServer, start_server, stop_server

IMAGE_ROUTES = ["/thumb", "/view", "/original", "/photo", "/api/image", "/api/similar", "/api/search"]


@pytest.fixture(scope="module")
def client(web_server: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.url, timeout=60) as opened:
        yield opened


def q(path: object) -> str:
    return quote(os.fsencode(str(path)), safe="")


# -- the API ---------------------------------------------------------------------------------


def test_search_by_upload_of_an_indexed_photo_leaves_it_out_and_names_it(
        client: httpx.Client, photo_set: PhotoSet) -> None:
    camera = photo_set.photos["camera"]
    response = client.post("/api/search?top=3", files={"image": ("camera.jpg", camera.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    left_out = [{"path": str(camera), "name": "camera.jpg", "photo": f"/photo?path={quote(str(camera))}"}]
    assert body["top"] == 3 and body["query"] == {"name": "camera.jpg", "left_out": left_out}
    assert str(camera) not in [r["path"] for r in body["results"]]  # not first at 1.0000: it is the query
    assert len(body["results"]) == 3  # three others, all the same
    first = body["results"][0]
    if first["path"].endswith((".jpg", ".png")):  # a size Pillow reads as the store does
        assert (first["width"], first["height"]) == Image.open(first["path"]).size
    assert client.get(first["thumbnail"]).headers["content-type"] == "image/jpeg"
    assert client.get(first["photo"]).status_code == 200


def test_search_by_raw_body_and_by_indexed_path(client: httpx.Client, photo_set: PhotoSet) -> None:
    coffee = photo_set.photos["coffee"]
    raw = client.post("/api/search?top=2&name=coffee.jpg", content=coffee.read_bytes(),
                      headers={"content-type": "image/jpeg"}).json()
    by_path = client.get(f"/api/search?top=2&path={q(coffee)}").json()
    assert [r["path"] for r in raw["results"]] == [r["path"] for r in by_path["results"]]  # the same ranking
    assert str(coffee) not in [r["path"] for r in by_path["results"]] and len(by_path["results"]) == 2
    assert by_path["query"]["path"] == str(coffee)
    assert [item["path"] for item in by_path["query"]["left_out"]] == [str(coffee)]
    assert [item["path"] for item in raw["query"]["left_out"]] == [str(coffee)]  # the same bytes


def test_search_with_a_photo_that_is_not_indexed_leaves_nothing_out(client: httpx.Client, photo_set: PhotoSet) -> None:
    outside = photo_set.outside
    body = client.post("/api/search?top=3", files={"image": (outside.name, outside.read_bytes(), "image/jpeg")}).json()
    assert body["query"] == {"name": outside.name, "left_out": []}
    assert len(body["results"]) == 3


def test_similar_image_duplicates_and_status(client: httpx.Client, photo_set: PhotoSet) -> None:
    astronaut = photo_set.photos["astronaut"]
    similar = client.get(f"/api/similar?path={q(astronaut)}").json()
    assert similar["path"] == str(astronaut)
    neighbours = [n["path"] for n in similar["neighbours"]]
    assert neighbours[0] == str(photo_set.photos["astronaut-copy"])  # the same pixels, as PNG
    assert str(astronaut) not in neighbours

    facts = client.get(f"/api/image?path={q(astronaut)}").json()
    assert facts["path"] == str(astronaut) and facts["name"] == "astronaut.jpg"
    assert (facts["width"], facts["height"]) == Image.open(astronaut).size
    assert facts["size"] == astronaut.stat().st_size
    assert facts["links"] == len(neighbours) and facts["indexed_at"] is not None

    duplicates = client.get("/api/duplicates?threshold=0.99995").json()
    assert duplicates["threshold"] == 0.99995
    group = next(g for g in duplicates["groups"] if g["keep"] in (str(astronaut), neighbours[0]))
    assert {str(astronaut), neighbours[0]} <= {image["path"] for image in group["images"]}
    assert [image["keep"] for image in group["images"]].count(True) == 1
    assert group["reason"] and group["exact"] is False and group["images"][0]["score"] == 1.0
    exact = client.get("/api/duplicates?exact=1").json()
    assert (exact["exact"], exact["threshold"], exact["groups"]) == (True, None, [])  # no two files are the same
    below_links = client.get("/api/duplicates?threshold=0.5")
    assert below_links.status_code == 400 and "links.threshold" in below_links.json()["error"]

    status = client.get("/api/status").json()
    assert status["store"]["images"] == len(photo_set.photos)
    assert [f["path"] for f in status["queue"]["failed_files"]] == [str(photo_set.broken)]


def test_the_original_is_the_indexed_file(client: httpx.Client, photo_set: PhotoSet) -> None:
    chelsea = photo_set.photos["chelsea"]
    response = client.get(f"/original?path={q(chelsea)}")
    assert response.status_code == 200
    assert response.content == chelsea.read_bytes()
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_bad_parameters_are_400(client: httpx.Client, photo_set: PhotoSet) -> None:
    camera = q(photo_set.photos["camera"])
    for url in ["/api/similar", "/thumb", f"/api/search?path={camera}&top=0", f"/api/search?path={camera}&top=x",
                "/api/duplicates?threshold=high", "/api/duplicates?exact=yes"]:
        response = client.get(url)
        assert response.status_code == 400, url
        assert response.json()["error"]


# -- thumbnails and caching ------------------------------------------------------------------


def test_thumbnails_carry_cache_headers_and_revalidate_with_304(client: httpx.Client, photo_set: PhotoSet) -> None:
    rocket = photo_set.photos["rocket"]
    first = client.get(f"/thumb?path={q(rocket)}")
    assert first.status_code == 200
    thumbnail = Image.open(io.BytesIO(first.content))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) == 256
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    assert first.headers["last-modified"]

    again = client.get(f"/thumb?path={q(rocket)}", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag

    versioned = client.get(f"/thumb?path={q(rocket)}&v=1")  # URLs the pages use: kept a day
    assert versioned.headers["cache-control"] == "private, max-age=86400"
    large = Image.open(io.BytesIO(client.get(f"/view?path={q(rocket)}").content))
    assert large.size == Image.open(rocket).size  # smaller than the large view: never enlarged


# -- only indexed paths ------------------------------------------------------------------------


def not_indexed_paths(photo_set: PhotoSet) -> list[str]:
    root = photo_set.root
    camera = photo_set.photos["camera"]
    link = root / "link-to-camera.jpg"  # a symlink to an indexed photo is not itself indexed
    if not link.is_symlink():
        link.symlink_to(camera)
    linked_folder = root / "linked-folder"  # nor is a photo reached through a symlinked folder
    if not linked_folder.is_symlink():
        linked_folder.symlink_to(photo_set.outside.parent)
    return [
        f"{root}/../{root.name}/camera.jpg",  # resolves to an indexed photo, but is not its path
        f"{root}/./camera.jpg",
        f"{root}//camera.jpg",
        f"{root}/copies/../camera.jpg",
        f"{root}/../../../../../../etc/passwd",
        "/etc/passwd",
        "camera.jpg",  # relative
        "../camera.jpg",
        str(photo_set.outside),  # a real photo outside the index
        str(photo_set.broken),  # in the folder, refused by the decoder
        str(link),
        str(linked_folder / photo_set.outside.name),
        str(camera) + "\0.jpg",
        str(camera).upper(),
    ]


@pytest.mark.parametrize("route", IMAGE_ROUTES)
def test_paths_that_are_not_indexed_are_404(client: httpx.Client, photo_set: PhotoSet, route: str) -> None:
    for path in not_indexed_paths(photo_set):
        response = client.get(f"{route}?path={q(path)}")
        assert response.status_code == 404, (route, path, response.text[:200])
        assert response.headers["content-type"].split(";")[0] in ("application/json", "text/html")


def test_encoded_and_raw_traversal_in_the_url_is_404(web_server: WebServer, photo_set: PhotoSet) -> None:
    """Raw request lines, as an attacker would send them (no client-side normalising)."""
    root = str(photo_set.root)
    targets = [
        f"/thumb?path={root}/../../../etc/passwd",
        f"/thumb?path={quote(root)}%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"/thumb?path={quote(root)}%2F%2e%2e%2F%2e%2e%2Fetc%2Fpasswd",
        f"/thumb?path={quote(root)}%252F..%252Fcamera.jpg",  # double-encoded
        "/original?path=%2Fetc%2Fpasswd",
        f"/original?path={quote(root)}/..%2F{photo_set.root.name}%2Fcamera.jpg",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2Fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fconfig.py",
        "/static//etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
    ]
    host, port = web_server.url.removeprefix("http://").split(":")
    for target in targets:
        status, body = raw_get(host, int(port), target)
        assert status in (400, 404), (target, status)
        assert b"root:" not in body and b"import" not in body, target


def raw_get(host: str, port: int, target: str) -> tuple[int, bytes]:
    import socket

    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_an_indexed_file_swapped_for_a_link_to_a_secret_is_not_served(
        client: httpx.Client, photo_set: PhotoSet, tmp_path: Path) -> None:
    victim = photo_set.photos["victim"]
    assert client.get(f"/original?path={q(victim)}").status_code == 200
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET: the server's own files\n")
    shutil.copy2(victim, tmp_path / "victim.jpg")
    victim.unlink()
    victim.symlink_to(secret)
    try:
        for route in ("/thumb", "/view", "/original"):
            response = client.get(f"{route}?path={q(victim)}")
            assert response.status_code in (404, 409, 422), (route, response.status_code)
            assert b"TOP SECRET" not in response.content
    finally:  # the photo is back as it was indexed, for the other tests
        victim.unlink()
        shutil.copy2(tmp_path / "victim.jpg", victim)


def test_an_indexed_file_swapped_for_another_photo_is_served_by_no_route(
        client: httpx.Client, photo_set: PhotoSet, tmp_path: Path) -> None:
    victim, other = photo_set.photos["victim"], photo_set.outside  # a real photo that was never indexed
    shutil.copy2(victim, tmp_path / "victim.jpg")
    victim.unlink()
    victim.symlink_to(other)  # a real photo, so any route that rendered it would answer 200
    try:
        for route in ("/thumb", "/view", "/original", "/api/search"):
            response = client.get(f"{route}?path={q(victim)}")
            assert response.status_code == 409, (route, response.status_code, response.text)
            assert "changed since it was indexed" in response.json()["error"]
        assert client.get(f"/?path={q(victim)}").status_code == 409  # the search page by path
    finally:  # the photo is back as it was indexed (a new inode: checked by its content again)
        victim.unlink()
        shutil.copy2(tmp_path / "victim.jpg", victim)
    assert client.get(f"/thumb?path={q(victim)}").status_code == 200


# -- uploads -----------------------------------------------------------------------------------


def test_oversized_uploads_are_413_however_they_are_sent(client: httpx.Client) -> None:
    too_big = os.urandom(int((UPLOAD_LIMIT_MB + 0.5) * 2**20))
    multipart = client.post("/api/search", files={"image": ("big.jpg", too_big, "image/jpeg")})
    assert multipart.status_code == 413
    assert f"{UPLOAD_LIMIT_MB} MiB" in multipart.json()["error"]
    assert client.post("/api/search", content=too_big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start:start + 64 * 1024]

    chunked = client.post("/api/search", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert chunked.status_code == 413
    assert client.get("/api/status").status_code == 200  # and the server carries on


def test_uploads_that_are_not_images_are_422_naming_the_upload(client: httpx.Client) -> None:
    response = client.post("/api/search", files={"image": ("notes.png", b"just text\n", "image/png")})
    assert response.status_code == 422
    assert response.json()["error"].startswith("cannot decode notes.png: not a recognised image format")
    empty = client.post("/api/search", files={"image": ("empty.jpg", b"", "image/jpeg")})
    assert empty.status_code == 400
    missing = client.post("/api/search", files={"photo": ("a.jpg", b"x", "image/jpeg")})
    assert missing.status_code == 400 and "'image'" in missing.json()["error"]


def test_an_extreme_aspect_ratio_upload_is_refused_like_the_workers_refuse_it(client: httpx.Client) -> None:
    strip = io.BytesIO()
    Image.new("RGB", (6000, 20), "white").save(strip, "PNG")
    response = client.post("/api/search", files={"image": ("strip.png", strip.getvalue(), "image/png")})
    assert response.status_code == 422
    assert "aspect ratio" in response.json()["error"]


def test_a_server_with_no_weights_configured_searches_with_the_stores(
    web_server: WebServer, photo_set: PhotoSet, client: httpx.Client,
) -> None:
    env = dict(web_server.env)
    del env["IMGWATCH_EMBEDDING_WEIGHTS"]  # not the default ImageNet weights (not downloadable here): the store's
    other = start_server(env, photo_set.data_dir.parent / "web-unconfigured.log")
    camera = photo_set.photos["camera"]
    upload = {"image": ("camera.jpg", camera.read_bytes(), "image/jpeg")}
    try:
        with httpx.Client(base_url=other.url, timeout=60) as unconfigured:
            response = unconfigured.post("/api/search", files=upload)
            assert response.status_code == 200, response.text
    finally:
        stop_server(other)
    assert response.json() == client.post("/api/search", files=upload).json()  # random weights, seed 0
    assert "download" not in other.log.read_text()
