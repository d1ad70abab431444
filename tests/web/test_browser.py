"""The web page in a real browser: headless Chromium driven by Playwright, against `imgwatch web`.

Skipped, with the reason, where Chromium or Playwright is missing (Debian: apt-get install
chromium; pip install playwright; never `playwright install`, which downloads a browser).
"""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from imgwatch.display import KEPT_END
from imgwatch.web.state import LARGE_SIZE
from tests.helpers import process_env
from tests.web.browser import CHROMIUM
from tests.web.conftest import DNG_SIZE, ODD_NAME, PORTRAIT_NAMES, PhotoSet, WebServer, start_server, stop_server

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH for the browser tests (Debian: apt-get install chromium)")


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


def left_out(page: Any) -> list[tuple[str, str]]:
    """(name, title: the full path) of each photo the page says it left out as the query itself."""
    if not page.locator("#left-out").is_visible():
        return []
    return [(link.inner_text(), link.get_attribute("title")) for link in page.locator("#left-out a").all()]


def test_an_uploaded_indexed_photo_is_left_out_saying_so_then_click_through_neighbours(
        page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    camera = str(photo_set.photos["camera"])
    page.goto(web_server.url + "/")
    page.set_input_files("#file", camera)

    found = results(page)
    assert camera not in [path for path, _ in found]  # not first at 1.0000: left out, and said so
    assert left_out(page) == [("camera.jpg", camera)]
    assert [score for _, score in found] == sorted((score for _, score in found), reverse=True)
    assert len(found) == len(photo_set.photos) - 1  # top 20 > what is indexed: everything else, ranked
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
    assert str(retina) not in [path for path, _ in found]
    assert left_out(page) == [("retina.jpg", str(retina))]
    assert "retina.jpg" in page.locator("#result-title").inner_text()


def test_an_upload_that_is_not_an_image_says_why(page: Any, web_server: WebServer, tmp_path: Any) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo at all\n")
    page.goto(web_server.url + "/")
    page.set_input_files("#file", str(notes))
    page.wait_for_selector("#message.error")
    assert "notes.jpg" in page.locator("#message").inner_text()
    assert "not a recognised image format" in page.locator("#message").inner_text()


def test_search_by_an_indexed_path_leaves_the_photo_itself_out(
        page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    rocket = str(photo_set.photos["rocket"])
    page.goto(web_server.url + "/")
    page.fill("#path", rocket)
    page.click(".by-path button")
    found = results(page)
    assert rocket not in [path for path, _ in found]
    assert str(photo_set.photos["victim"]) in [path for path, _ in found]  # a smaller copy is another file
    assert left_out(page) == [("rocket.jpg", rocket)]
    page.locator("#left-out a").click()  # the photo left out is a click away
    page.wait_for_url(re.compile(r"/photo\?path="))
    assert page.locator(".facts .path").inner_text() == rocket


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


def test_duplicates_page_switches_to_exact_copies_and_says_why_each_keeper(
        page: Any, web_server: WebServer, photo_set: PhotoSet, tmp_path: Path) -> None:
    from imgwatch.store import ImageRecord, open_store
    from tests.helpers import make_config

    # A byte-for-byte copy of astronaut.jpg (mtime kept) indexed beside it, as a worker would, for this test only.
    original = photo_set.photos["astronaut"]
    again = photo_set.root / "copies" / "astronaut copy.jpg"
    shutil.copy2(original, again)
    with open_store(make_config(photo_set.data_dir)) as store:
        stored = store.get(str(original))
        assert stored is not None
        [embedding] = store.embeddings_by_hash([stored.sha256], stored.model).values()
        store.upsert([ImageRecord(str(again), stored.sha256, stored.size, again.stat().st_mtime_ns, stored.width,
                                  stored.height, stored.model, embedding.vector)])
    try:
        page.goto(web_server.url + "/duplicates?threshold=0.99995")
        assert page.locator("#show-alike").get_attribute("aria-current") == "page"
        assert page.locator("#show-exact").get_attribute("aria-current") is None
        for group in page.locator("section.group").all():  # why its keeper, and each other's score against it
            assert group.locator(".reason").inner_text().startswith("Keep ")
            assert group.locator(".tile").first.locator(".score").count() == 0
            assert all(0.99995 <= float(score) <= 1 for score in group.locator(".tile .score").all_inner_texts())
        reasons = {group.locator(".tile").first.get_attribute("data-path"): group.locator(".reason").inner_text()
                   for group in page.locator("section.group").all()}
        assert reasons[str(photo_set.photos["coffee-dng"])] == "Keep coffee.dng: RAW preferred over JPEG"
        assert reasons[str(photo_set.photos["chelsea-heic"])] == "Keep chelsea.heic: HEIC preferred over JPEG"
        wait_for_images(page)
        (tmp_path / "duplicates-look-alike.png").write_bytes(page.screenshot(full_page=True))  # looked at too

        page.click("#show-exact")
        page.wait_for_url(re.compile(r"/duplicates\?exact=1&threshold=0\.99995$"))  # kept for the way back
        assert page.locator("#show-exact").get_attribute("aria-current") == "page"
        [group] = page.locator("section.group").all()  # the resized and re-encoded copies are not exact ones
        assert [tile.get_attribute("data-path") for tile in group.locator(".tile").all()] == [str(original), str(again)]
        assert group.locator(".reason").inner_text() == (
            "Keep astronaut.jpg: no copy mark in the name (astronaut copy.jpg has one)")
        assert "exact copies" in group.locator("h2").inner_text()
        wait_for_images(page)
        screenshot = tmp_path / "duplicates-exact.png"  # looked at when this test was written
        screenshot.write_bytes(page.screenshot(full_page=True))

        page.click("#show-alike")  # back to look-alikes at the threshold shown before
        page.wait_for_url(re.compile(r"/duplicates\?threshold=0\.99995$"))
    finally:
        with open_store(make_config(photo_set.data_dir)) as store:
            store.remove([str(again)])
        again.unlink()


def test_status_page_shows_counts_and_failed_files(page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    page.goto(web_server.url + "/status")
    assert int(page.locator("#images").inner_text()) == len(photo_set.photos)
    assert int(page.locator("#links").inner_text()) > 0
    assert page.locator("#workers").inner_text() == "0"
    failed = page.locator("#failed-files tbody tr")
    assert failed.count() == 1
    assert failed.locator("td").first.inner_text() == str(photo_set.broken)
    reason = failed.locator("td").nth(1).inner_text()  # beside the path, the reason does not repeat it
    assert reason.startswith("cannot decode: truncated") and str(photo_set.broken) not in reason, reason


def test_status_page_lists_each_watched_folder_with_its_state_and_images(
        page: Any, web_server: WebServer, photo_set: PhotoSet, tmp_path: Path) -> None:
    from imgwatch.daemon.roots import MISSING_ROOT_DETAIL
    from imgwatch.workqueue import WorkQueue
    from imgwatch.workqueue.root_states import MISSING, NOT_WATCHABLE, WATCHING, RootState, RootStates
    from tests.helpers import make_config

    config = make_config(tmp_path / "data", **{"queue.redis_url": web_server.env["IMGWATCH_QUEUE_REDIS_URL"],
                                               "queue.name": photo_set.queue_name})
    typo = "/mnt/" + "a-share-with-a-long-name-that-is-not-mounted-yet/" * 3 + "photos"
    share = str(tmp_path / "share")
    published = RootStates.for_queue(WorkQueue.from_config(config))
    published.publish("browser-test", [  # as a running daemon publishes them
        RootState(str(photo_set.root), WATCHING),
        RootState(typo, MISSING, MISSING_ROOT_DETAIL),
        RootState(share, NOT_WATCHABLE, f"cannot watch {share}: the inotify watch limit is reached; raise it "
                                        "(sysctl fs.inotify.max_user_watches=524288, and in /etc/sysctl.d/ to keep it) "
                                        "or set watch.observer = \"polling\"; until then only rescans "
                                        "(watch.rescan_seconds) find changes there"),
    ])
    try:
        page.goto(web_server.url + "/status")
        rows = page.locator("#roots tbody tr")
        shown = {row.locator("td.path").inner_text().splitlines()[0]:
                 (row.locator(".root-state").inner_text(), row.locator("td.count").inner_text()) for row in rows.all()}
        assert shown == {typo: ("missing", "0"), share: ("not watchable", "0"),
                         str(photo_set.root): ("watching", str(len(photo_set.photos)))}
        assert "fix `general.roots` or the ROOT argument" in rows.filter(has_text=typo).inner_text()
        assert page.locator(".root-state.trouble").count() == 2
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # long paths wrap
        screenshot = tmp_path / "status-folders.png"  # looked at when this test was written
        screenshot.write_bytes(page.screenshot(full_page=True))
    finally:
        published.withdraw("browser-test")


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
        assert str(photo_set.photos["coffee"]) not in [path for path, _ in found]
        assert left_out(page) == [("coffee.jpg", str(photo_set.photos["coffee"]))]
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


# -- pictures that line up -------------------------------------------------------------------

TILE_BACKGROUND = (0xE6, 0xE6, 0xE1)  # style.css --tile (light scheme), around a contained photo


def boxes(page: Any, selector: str) -> list[dict[str, float]]:
    return [element.bounding_box() for element in page.locator(selector).all()]


def assert_tiles_line_up(page: Any, selector: str) -> None:
    """Every tile the same size with a square frame, its image inside the frame, and the tiles of
    each row level: top and bottom."""
    tiles, frames, images = (boxes(page, f"{selector}{part}") for part in ("", " .frame", " img"))
    assert tiles and len(tiles) == len(frames) == len(images)
    first = tiles[0]
    for tile, frame, image in zip(tiles, frames, images, strict=True):
        assert (tile["width"], tile["height"]) == (pytest.approx(first["width"], abs=0.5),
                                                   pytest.approx(first["height"], abs=0.5)), (tile, first)
        assert frame["width"] == pytest.approx(frame["height"], abs=0.5), frame  # a square, portrait or not
        assert frame["x"] - 0.5 <= image["x"] and image["x"] + image["width"] <= frame["x"] + frame["width"] + 0.5
        assert frame["y"] - 0.5 <= image["y"] and image["y"] + image["height"] <= frame["y"] + frame["height"] + 0.5
    rows: dict[int, list[dict[str, float]]] = {}
    for tile in tiles:
        rows.setdefault(round(tile["y"]), []).append(tile)
    for row in rows.values():  # level rows: one top, one bottom
        assert len({round(tile["y"] + tile["height"]) for tile in row}) == 1, row


def painted_columns(screenshot: bytes, frame: dict[str, float]) -> Any:
    """For each pixel column of ``frame`` in the screenshot: True where the photo is painted
    (anything but the tile's background)."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(screenshot)) as shot:
        pixels = np.asarray(shot.convert("RGB").crop((round(frame["x"]), round(frame["y"]),
                                                       round(frame["x"] + frame["width"]),
                                                       round(frame["y"] + frame["height"]))), dtype=int)
    return (np.abs(pixels - np.array(TILE_BACKGROUND)).max(axis=2) > 8).any(axis=0)[2:-2]  # not the edges' blend


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 900}, {"width": 390, "height": 844}])
def test_portrait_photos_fill_the_same_square_tile_as_the_rest_on_every_grid(
        browser: Any, web_server: WebServer, photo_set: PhotoSet, tmp_path: Any, viewport: dict[str, int]) -> None:
    portrait, edit = (photo_set.photos[name] for name in PORTRAIT_NAMES)
    context = browser.new_context(viewport=viewport)
    try:
        page = context.new_page()
        pages = {"search": (path_url(web_server, "/", portrait) + "&top=20", "#results .tile"),
                 "photo": (path_url(web_server, "/photo", portrait), "#neighbours .tile"),
                 "duplicates": (web_server.url + "/duplicates?threshold=0.999", "section.group .tile")}
        for name, (url, selector) in pages.items():
            page.goto(url)
            page.wait_for_selector(selector)
            page.locator(selector).last.scroll_into_view_if_needed()
            wait_for_images(page)
            shot = page.screenshot(full_page=True)
            (tmp_path / f"{name}-{viewport['width']}.png").write_bytes(shot)  # to look at when this fails
            assert_tiles_line_up(page, selector)
            assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), name

        # The portrait (300 x 512) is contained: upright in the middle of its square, the tile's
        # background at both sides, the whole photo's height shown.
        page.goto(pages["search"][0])
        tile = page.locator(f'#results .tile[data-path="{edit}"]')
        tile.scroll_into_view_if_needed()
        wait_for_images(page)
        frame = tile.locator(".frame").bounding_box()
        painted = painted_columns(page.screenshot(), frame)
        shown_width = painted.sum() / len(painted)
        assert shown_width == pytest.approx(300 / 512, abs=0.04), shown_width
        sixth = len(painted) // 6
        assert painted[:sixth].mean() < 0.05 and painted[-sixth:].mean() < 0.05  # background at both sides
        assert painted[2 * sixth: -2 * sixth].all()  # the photo in the middle
    finally:
        context.close()


def test_names_that_begin_alike_keep_the_end_that_tells_them_apart(
        page: Any, web_server: WebServer, photo_set: PhotoSet) -> None:
    page.goto(web_server.url + "/duplicates?threshold=0.999")  # both variants, as tiles made by the server
    shown = {}
    for name in PORTRAIT_NAMES.values():
        tile = page.locator(f'section.group .tile[data-path="{photo_set.root / name}"]')
        end = tile.locator(".name-end")
        assert end.inner_text() == name[-KEPT_END:]
        tile_box, end_box = tile.bounding_box(), end.bounding_box()
        assert end_box["x"] + end_box["width"] <= tile_box["x"] + tile_box["width"]  # wholly visible
        start = tile.locator(".name-start")
        assert start.evaluate("element => element.scrollWidth > element.clientWidth")  # the start gave way
        shown[name] = end.inner_text()
    assert len(set(shown.values())) == 2

    # The tiles the page makes itself, after a search by upload, split names the same way.
    page.goto(web_server.url + "/")
    page.set_input_files("#file", str(photo_set.photos["astronaut"]))
    results(page)
    for name in PORTRAIT_NAMES.values():
        end = page.locator(f'#results .tile[data-path="{photo_set.root / name}"] .name-end')
        assert end.inner_text() == name[-KEPT_END:]


def test_the_status_page_keeps_long_paths_inside_its_cards_and_says_why_the_queue_is_out_of_reach(
        browser: Any, tmp_path: Any) -> None:
    """No `imgwatch run` here, and a data dir whose path has no place to break a line."""
    import tempfile

    # Under /tmp itself: the queue's socket path, below the data dir, must stay within AF_UNIX's 108 bytes.
    short = Path(tempfile.mkdtemp(prefix="iw-", dir="/tmp"))
    data_dir = short / "Photos_of_the_whole_family_2019_to_2024_backup" / "imgwatch"
    env = process_env(tmp_path, IMGWATCH_GENERAL_DATA_DIR=str(data_dir))
    env.pop("IMGWATCH_QUEUE_REDIS_URL", None)
    server = start_server(env, tmp_path / "web.log")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(server.url + "/status")
        (tmp_path / "status.png").write_bytes(page.screenshot(full_page=True))
        queue = page.locator(".card", has_text="Queue").locator(".muted").inner_text()
        socket = data_dir / "queue" / "redis.sock"
        assert queue == (f"cannot reach the queue at unix://{socket} (No such file or directory): start "
                         "`imgwatch run` (it starts the embedded queue) or set queue.redis_url to an external Redis")
        for card in page.locator(".card").all():
            card_box = card.bounding_box()
            assert card.evaluate("element => element.scrollWidth <= element.clientWidth")
            for text in card.locator("p").all():
                box = text.bounding_box()
                assert box["x"] + box["width"] <= card_box["x"] + card_box["width"], text.inner_text()
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        context.close()
        stop_server(server)
        shutil.rmtree(short)
