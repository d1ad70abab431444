"""End to end: `imgwatch run` as a user starts it, queried from a second "terminal"."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import RunningImgwatch, imgwatch, indexed_count, status, wait_for

pytestmark = pytest.mark.e2e


def test_photos_dropped_in_are_indexed_searchable_and_removed(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path],
    start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    staging = tmp_path / "staging"
    names = ["astronaut", "coffee", "chelsea", "rocket", "retina"]
    originals = {name: write_photo(staging / f"{name}.jpg", name) for name in names}
    write_photo(root / "already-there.png", "camera")  # present before start: found by reconciliation

    run = start_run(root)
    wait_for(lambda: status(env)["queue"] is not None, "the embedded queue")

    for name in names[:3]:
        shutil.copy(originals[name], root / f"{name}.jpg")
    # One photo written slowly, in chunks, like a download or a camera upload.
    data = originals["rocket"].read_bytes()
    slow = root / "album" / "rocket.jpg"
    slow.parent.mkdir()
    with open(slow, "wb") as handle:
        for start in range(0, len(data), len(data) // 5 + 1):
            handle.write(data[start : start + len(data) // 5 + 1])
            handle.flush()
            time.sleep(0.4)
    # One corrupt photo: the first half of a real JPEG.
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(originals["retina"].read_bytes()[: len(originals["retina"].read_bytes()) // 2])

    wait_for(lambda: indexed_count(env) == 5 and status(env)["queue"]["failed_files"],
             f"5 images indexed and one failure; log:\n{run.log()}")
    report = status(env)
    assert report["store"]["links"] > 0
    assert [f["path"] for f in report["queue"]["failed_files"]] == [str(corrupt)]
    assert str(corrupt) in report["queue"]["failed_files"][0]["reason"]

    # search from a "second terminal" with the photos as they were before being copied in: the
    # indexed file holds the same bytes, so it is the photo itself, left out and named
    for name, indexed in [("chelsea", root / "chelsea.jpg"), ("rocket", slow)]:
        searched = imgwatch(env, "search", str(originals[name]), "--json", "--top", "3")
        results = json.loads(searched.stdout)
        assert len(results) == 3 and str(indexed) not in {r["path"] for r in results}
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
        assert f"(the photo itself is left out: {indexed})" in searched.stderr, searched.stderr
    text = imgwatch(env, "search", str(originals["coffee"])).stdout.splitlines()
    assert len(text) == 4 and str(root / "coffee.jpg") not in {line.split()[-1] for line in text}

    neighbours = json.loads(imgwatch(env, "similar", str(root / "coffee.jpg"), "--json").stdout)
    assert neighbours and all(n["path"] != str(root / "coffee.jpg") for n in neighbours)

    (root / "coffee.jpg").unlink()
    wait_for(lambda: indexed_count(env) == 4, "the deleted photo to leave the store")
    gone = imgwatch(env, "similar", str(root / "coffee.jpg"), check=False)
    assert gone.returncode != 0 and "not indexed" in gone.stderr
    results = json.loads(imgwatch(env, "search", str(originals["coffee"]), "--json").stdout)
    assert str(root / "coffee.jpg") not in {r["path"] for r in results}

    assert run.stop() == 0, run.log()
    assert "Traceback" not in run.log()


def test_a_second_run_catches_up_with_changes_made_while_stopped(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path],
    start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root = tmp_path / "photos"
    write_photo(root / "a.jpg", "astronaut")
    write_photo(root / "b.jpg", "coffee")
    run = start_run(root)
    wait_for(lambda: indexed_count(env) == 2, f"first indexing; log:\n{run.log()}")
    assert run.stop() == 0

    (root / "a.jpg").unlink()
    write_photo(root / "c.jpg", "chelsea")
    offline = status(env)
    assert offline["queue"] is None and "imgwatch run" in offline["queue_error"]

    run = start_run(root)
    wait_for(lambda: indexed_count(env) == 2 and not imgwatch(
        env, "similar", str(root / "a.jpg"), check=False).returncode == 0, f"catch-up; log:\n{run.log()}")
    assert f"(the photo itself is left out: {root / 'c.jpg'})" in imgwatch(env, "search", str(root / "c.jpg")).stderr
    assert run.stop() == 0


def test_unavailable_weights_stop_run_with_a_clear_message(env: dict[str, str], tmp_path: Path) -> None:
    env["IMGWATCH_EMBEDDING_WEIGHTS"] = str(tmp_path / "missing-weights.pth")
    root = tmp_path / "photos"
    root.mkdir()
    result = subprocess.run([sys.executable, "-m", "imgwatch", "run", str(root)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "missing-weights.pth" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_web_serves_the_page_beside_the_pipeline(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path],
    start_run: Callable[..., RunningImgwatch],
) -> None:
    import socket
    import urllib.parse
    import urllib.request

    with socket.socket() as probe:  # a free port for the web page
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env["IMGWATCH_WEB_PORT"] = str(port)
    root = tmp_path / "photos"
    photo = write_photo(root / "a.jpg", "astronaut")
    write_photo(root / "b.jpg", "coffee")
    run = RunningImgwatch(env, root, tmp_path / "run-web.log", "--web")
    try:
        wait_for(lambda: indexed_count(env) == 2, f"indexing; log:\n{run.log()}")
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/api/status", timeout=10) as answer:
            assert json.load(answer)["store"]["images"] == 2
        query = urllib.parse.urlencode({"path": str(photo)})
        with urllib.request.urlopen(f"{base}/api/similar?{query}", timeout=10) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"{base}/", timeout=10) as page:
            assert "text/html" in page.headers["content-type"]
    finally:
        assert run.stop() == 0, run.log()
    assert "Traceback" not in run.log()
    assert '"web_serving"' in run.log()


def test_a_mixed_folder_of_phone_camera_and_new_formats_is_indexed_and_the_heic_finds_its_jpeg_twin(
    env: dict[str, str], tmp_path: Path, photo_arrays: dict[str, object],
    start_run: Callable[[Path], RunningImgwatch],
) -> None:
    """HEIC, AVIF, JPEG XL, DNG (with and without a preview) and a .jpg that is HEIC inside, beside JPEGs:
    one `imgwatch run` indexes them all, each decoded as what it is, upright and in sRGB."""
    from PIL import Image

    from imgwatch.datadir import DataDir
    from imgwatch.photos.reader import kind_of
    from imgwatch.store.embedded import EmbeddedGraphStore
    from tests.helpers import store_mismatch
    from tests.photo_files import (
        display_p3_profile,
        to_profile,
        write_avif,
        write_dng,
        write_heic,
        write_jpeg,
        write_jxl,
    )

    def photo(name: str) -> Image.Image:
        return Image.fromarray(photo_arrays[name])  # type: ignore[call-overload]

    root, data_dir = tmp_path / "photos", tmp_path / "data"
    for folder in ("iphone", "android", "exports", "camera", "transfers"):
        (root / folder).mkdir(parents=True)
    chelsea, astronaut, p3 = photo("chelsea"), photo("astronaut"), display_p3_profile()
    # An iPhone's photo: Display P3 pixels stored as the sensor saw them (a quarter turn to the left) with
    # orientation 6 to show them upright; beside it the "most compatible" sRGB JPEG the phone exports.
    heic = write_heic(to_profile(chelsea, p3).transpose(Image.Transpose.ROTATE_90), root / "iphone" / "IMG_0001.HEIC",
                      exif_orientation=6, icc_profile=p3)
    twin = write_jpeg(chelsea, root / "iphone" / "IMG_0001.JPG")
    expected = {  # path: (format, what was decoded, upright width and height as indexed)
        heic: ("HEIF", "decoded", chelsea.size),
        twin: ("JPEG", "decoded", chelsea.size),
        write_avif(photo("coffee"), root / "android" / "PXL_20240601_101500123.avif"): ("AVIF", "decoded", (600, 400)),
        write_jxl(photo("rocket"), root / "exports" / "rocket.jxl"): ("JXL", "decoded", (640, 427)),
        write_dng(astronaut, root / "camera" / "DSC_0001.dng", preview=astronaut): (
            "RAW", "embedded preview", (512, 512)),
        write_dng(photo("immunohistochemistry"), root / "camera" / "DSC_0002.dng"): (
            "RAW", "half-size demosaic", (512, 512)),
        write_heic(photo("camera"), root / "transfers" / "IMG_0002.jpg"): ("HEIF", "decoded", (512, 512)),
    }
    extensions = ("heic", "jpg", "avif", "jxl", "dng")

    run = start_run(root)
    wait_for(lambda: store_mismatch(data_dir, root, extensions) is None,
             f"every photo indexed: {store_mismatch(data_dir, root, extensions)}; log:\n{run.log()}")
    report = status(env)
    assert report["store"]["images"] == len(expected) and report["queue"]["failed_files"] == []
    with EmbeddedGraphStore(DataDir(data_dir).store_file) as store:
        stored = store.get_many([str(path) for path in expected])
    for path, (kind, source, size) in expected.items():
        assert (*kind_of(path.read_bytes(), str(path)), (stored[str(path)].width, stored[str(path)].height)) == (
            kind, source, size), path

    # The HEIC, decoded upright and converted from Display P3, embeds as its sRGB JPEG twin does: they are
    # each other's nearest photo, ~4e-6 apart (measured: sideways it would be ~4e-4 off, its P3 pixels taken
    # as sRGB ~3e-5), and every other photo is ~7e-4 or more away (random weights score different photos
    # 0.997-0.9993). `similar` reads the links: no second model load.
    for query, twin_of_it in ((heic, twin), (twin, heic)):
        neighbours = json.loads(imgwatch(env, "similar", str(query), "--json").stdout)
        assert neighbours[0]["path"] == str(twin_of_it), neighbours
        assert neighbours[0]["score"] >= 1 - 1e-5, neighbours
        assert neighbours[0]["score"] - neighbours[1]["score"] >= 1e-4, neighbours
    assert run.stop() == 0, run.log()
    assert "Traceback" not in run.log()
