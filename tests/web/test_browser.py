"""The web page in a real browser: headless Chromium driven by Playwright, against `imgwatch web`.

Skipped, with the reason, where Chromium or Playwright is missing (Debian: apt-get install
chromium; pip install playwright; never `playwright install`, which downloads a browser).
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from imgwatch.web.state import LARGE_SIZE
from tests.web.conftest import DNG_SIZE, ODD_NAME, PhotoSet, WebServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH for the browser tests (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright for the browser tests")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, web_server: WebServer) -> Iterator[Any]:
    """A fresh page; fails the test on a console error (a CSP violation, a script error).

    Refused requests (HTTP 4xx) are the server's answers: each test checks those it causes.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not [e for e in errors if not e.startswith("Failed to load resource")], errors


def path_url(server: WebServer, route: str, path: object) -> str:
    return f"{server.url}{route}?path={quote(str(path))}"


def results(page: Any, selector: str = "#results .tile") -> list[tuple[str, float]]:
    """(path, score) of each tile shown, in page order."""
    page.wait_for_selector(selector)
    return [(tile.get_attribute("data-path"), float(tile.locator(".score").inner_text()))
            for tile in page.locator(selector).all()]


def wait_for_images(page: Any) -> None:
    """Every image on the page loaded and decoded (no broken thumbnails)."""
    page.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
        " && !document.querySelector('.tile.broken')")


def test_upload_shows_the_photo_first_then_click_through_neighbours(
        page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    camera = str(photo_set.photos["camera"])
    page.goto(web_server.url + "/")
    page.set_input_files("#file", camera)

    found = results(page)
    assert found[0][0] == camera
    assert found[0][1] == pytest.approx(1.0, abs=1e-3)
    assert [score for _, score in found] == sorted((score for _, score in found), reverse=True)
    assert len(found) == len(photo_set.photos)  # top 20 > what is indexed: everything, ranked
    page.locator("#results .tile img").last.scroll_into_view_if_needed()
    wait_for_images(page)
    assert page.locator("#query-preview img").is_visible()

    page.select_option("#top", "10")  # asks again with the same photo
    page.wait_for_function("() => document.querySelectorAll('#results .tile').length === 10")

    page.locator("#results .tile").nth(1).click()
    second = found[1][0]
    page.wait_for_url(re.compile(r"/photo\?path="))
    assert page.locator(".facts .path").inner_text() == second
    wait_for_images(page)
    neighbours = results(page, "#neighbours .tile")
    assert neighbours and second not in [path for path, _ in neighbours]

    page.locator("#neighbours .tile").first.click()  # on to a neighbour's neighbours
    page.wait_for_function(f"() => document.querySelector('.facts .path').textContent === {neighbours[0][0]!r}")
    assert results(page, "#neighbours .tile")


def test_a_photo_dropped_on_the_page_is_searched(page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    retina = photo_set.photos["retina"]
    page.goto(web_server.url + "/")
    page.evaluate(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        [base64.b64encode(retina.read_bytes()).decode(), retina.name],
    )
    found = results(page)
    assert found[0] == (str(retina), pytest.approx(1.0, abs=1e-3))
    assert "retina.jpg" in page.locator("#result-title").inner_text()


def test_an_upload_that_is_not_an_image_says_why(page: Any, web_server: WebServer, tmp_path: Any) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo at all\n")
    page.goto(web_server.url + "/")
    page.set_input_files("#file", str(notes))
    page.wait_for_selector("#message.error")
    assert "notes.jpg" in page.locator("#message").inner_text()
    assert "not a recognised image format" in page.locator("#message").inner_text()


def test_search_by_an_indexed_path(page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    rocket = str(photo_set.photos["rocket"])
    page.goto(web_server.url + "/")
    page.fill("#path", rocket)
    page.click(".by-path button")
    found = results(page)
    assert found[0] == (rocket, pytest.approx(1.0, abs=1e-3))


def test_duplicates_page_shows_groups_with_the_keeper_marked(
        page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    page.goto(web_server.url + "/duplicates?threshold=0.99995")
    groups = page.locator("section.group")
    assert groups.count() >= 1
    astronauts = {str(photo_set.photos["astronaut"]), str(photo_set.photos["astronaut-copy"])}
    group_paths = [{t.get_attribute("data-path") for t in g.locator(".tile").all()} for g in groups.all()]
    assert astronauts in group_paths or any(astronauts <= paths for paths in group_paths)
    for group in groups.all():  # exactly one keeper per group, marked, and it comes first
        assert group.locator(".tile.marked").count() == 1
        assert group.locator(".tile").first.locator(".badge").inner_text().lower() == "keep"
    wait_for_images(page)

    page.select_option("#threshold", "0.99")  # the page follows the threshold chosen
    page.wait_for_url(re.compile(r"/duplicates\?threshold=0\.99$"))
    assert page.locator("section.group").count() >= 1


def test_status_page_shows_counts_and_failed_files(page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    page.goto(web_server.url + "/status")
    assert int(page.locator("#images").inner_text()) == len(photo_set.photos)
    assert int(page.locator("#links").inner_text()) > 0
    assert page.locator("#workers").inner_text() == "0"
    failed = page.locator("#failed-files tbody tr")
    assert failed.count() == 1
    assert failed.locator("td").first.inner_text() == str(photo_set.broken)
    assert "truncated" in failed.locator("td").nth(1).inner_text()


def test_a_file_name_with_html_is_shown_as_text(page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    page.goto(path_url(web_server, "/photo", photo_set.photos["odd"]))
    assert page.locator(".facts h1").inner_text() == ODD_NAME
    assert page.locator(".facts b").count() == 0
    wait_for_images(page)


def test_a_path_that_is_not_indexed_is_a_404_page(page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    response = page.goto(path_url(web_server, "/photo", photo_set.outside))
    assert response.status == 404
    assert "is not indexed" in page.locator("#error-message").inner_text()


def test_the_search_form_works_without_javascript(browser: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(web_server.url + "/")
        page.set_input_files("#file", str(photo_set.photos["coffee"]))
        page.select_option("#top", "10")
        page.click("#upload-form button[type=submit]")
        found = results(page)
        assert found[0] == (str(photo_set.photos["coffee"]), pytest.approx(1.0, abs=1e-3))
        assert len(found) == 10
    finally:
        context.close()


@pytest.mark.parametrize(("name", "photo", "shown_format"), [
    ("chelsea-heic", "chelsea", "HEIF"),
    ("coffee-dng", "coffee", "RAW, indexed from its embedded preview"),
])
def test_a_heic_and_a_raw_photo_are_shown_as_the_photo_with_their_format(
        page: Any, web_server: WebServer, photo_set: PhotoSet, photo_arrays: dict[str, Any], tmp_path: Any,
        name: str, photo: str, shown_format: str) -> None:
    """Browsers cannot show HEIC or RAW: the page shows their JPEG renditions, and those are the photo."""
    import io

    import numpy as np
    from PIL import Image

    path = photo_set.photos[name]
    source = Image.fromarray(np.asarray(photo_arrays[photo]))  # what the file was written from
    expected_size = DNG_SIZE if path.suffix == ".dng" else source.size
    page.goto(path_url(web_server, "/photo", path))
    wait_for_images(page)  # the large view and every neighbour's thumbnail, none broken
    assert page.locator(".facts h1").inner_text() == path.name
    assert page.locator(".facts dt:text-is('Format') + dd").inner_text() == shown_format
    assert page.locator("#neighbours .tile img").count() > 0
    natural = page.evaluate("() => [document.getElementById('large').naturalWidth,"
                            " document.getElementById('large').naturalHeight]")
    assert natural == [min(side, LARGE_SIZE) for side in expected_size]  # the whole photo, never enlarged

    # What a person sees in the large view's box is the photo, not a broken-image icon or an empty box.
    screenshot = tmp_path / f"{name}.png"  # written here: screenshot(path=) leaves Playwright an executor thread
    screenshot.write_bytes(page.screenshot())
    box = page.locator("#large").bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100
    with Image.open(screenshot) as shot:
        shown = shot.convert("RGB").crop((round(box["x"]), round(box["y"]), round(box["x"] + box["width"]),
                                          round(box["y"] + box["height"])))
    small = (64, round(64 * source.height / source.width))
    shown_pixels = np.asarray(shown.resize(small, Image.Resampling.BOX), dtype=float)
    source_pixels = np.asarray(source.resize(small, Image.Resampling.BOX), dtype=float)
    correlation = np.corrcoef(shown_pixels.ravel(), source_pixels.ravel())[0, 1]  # another photo: < 0.3
    assert correlation > 0.9, f"the large view is not the photo (correlation {correlation:.3f}; see {screenshot})"
    mean_difference = np.abs(shown_pixels.reshape(-1, 3).mean(0) - source_pixels.reshape(-1, 3).mean(0))
    assert mean_difference.max() < 12, mean_difference

    view = page.request.get(path_url(web_server, "/view", path))
    assert view.status == 200 and view.headers["content-type"] == "image/jpeg"
    thumbnail = page.request.get(path_url(web_server, "/thumb", path))
    assert thumbnail.status == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.body())) as opened:
        assert opened.format == "JPEG" and max(opened.size) == 256
    original = page.request.get(path_url(web_server, "/original", path))
    assert original.status == 200 and original.body() == path.read_bytes()
    assert original.headers["content-disposition"].startswith("attachment")  # a download, not a broken page
    with page.expect_download() as download:  # and the browser does download it
        page.locator(".actions a", has_text="Open the original").click()
    assert download.value.failure() is None
    assert download.value.suggested_filename == path.name  # saved under its own name, not "original"
