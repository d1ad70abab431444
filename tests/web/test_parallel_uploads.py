"""Parallel big uploads against the real `imgwatch web`: each gets its own right answer, none a 500,
and the decode budget never deadlocks, also when one of them fails to decode.

Three 81-megapixel PNGs (two of them the same) and a damaged one declaring as much do not fit
the budget together (photos/budget.py), so they take turns while the small JPEGs pass beside them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.photo_files import png_declaring
from tests.web.conftest import UPLOAD_LIMIT_MB, PhotoSet, WebServer

BIG_SIDE = 9000  # 81 MP: about 0.3 GB to decode, ~0.24 MB as a PNG of few colours
ANSWER_TIMEOUT_S = 300  # every answer must come: a deadlock would hold one for good


@pytest.fixture(scope="module")
def client(web_server: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.url, timeout=ANSWER_TIMEOUT_S,
                      limits=httpx.Limits(max_connections=16)) as opened:
        yield opened


def big_png(colour: tuple[int, int, int]) -> bytes:
    picture = Image.new("RGB", (BIG_SIDE, BIG_SIDE), colour)
    picture.paste((255, 255, 255), (BIG_SIDE // 4, BIG_SIDE // 4, BIG_SIDE // 2, BIG_SIDE // 2))
    encoded = io.BytesIO()
    picture.save(encoded, "PNG")
    assert len(encoded.getvalue()) < UPLOAD_LIMIT_MB * 2**20
    return encoded.getvalue()


def search(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/api/search?top=5", files={"image": (name, data, "application/octet-stream")})


def ranking(response: httpx.Response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(result["path"], round(result["score"], 4)) for result in response.json()["results"]]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_parallel_big_uploads_each_get_their_own_answer(client: httpx.Client, photo_set: PhotoSet) -> None:
    uploads = {f"big-{i}.png": big_png((80 * i, 200 - 80 * i, 90)) for i in range(2)}
    uploads |= {name: photo_set.photos[name].read_bytes() for name in ("camera", "rocket")}
    alone = {name: ranking(search(client, name, data)) for name, data in uploads.items()}  # one at a time
    assert all(alone.values())
    broken = png_declaring(BIG_SIDE, BIG_SIDE)  # reserves a big share, then fails to decode

    names = [*uploads, "big-0.png", "broken.png"]
    with ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(lambda name: search(client, name, uploads.get(name, broken)), names))

    for name, answer in zip(names, answers, strict=True):
        if name == "broken.png":
            assert answer.status_code == 422 and "broken.png" in answer.text, answer.text
        else:
            assert ranking(answer) == alone[name], name
    after = search(client, "camera", uploads["camera"])  # the budget is whole again
    assert ranking(after) == alone["camera"]
