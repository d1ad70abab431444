"""The duplicates page a person can finish: paging, "keep this", "not duplicates", "move the
others" and "resolve all shown" (confirmed from the server's dry run, undone with "Undo"), and the
writes' defences (the token, requests from other sites, the form key), against a real `imgwatch
web` over a store of its own (the actions change it), in real Chromium where a person would click.

The library: scikit-image photos each with a resized copy (look-alike groups at 0.99995, as in
test_api.py), and SERIES distinct noise images each with a byte copy (exact-copy groups, more than
one page of them). Indexed through the real Embedder, the copies' vectors reused as a worker finds
them by content hash. Copies move into [duplicates] move_to, a folder beside the library; after a
move is undone its files are indexed again as `imgwatch run` would (``indexed_again``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from imgwatch.display import human_size
from imgwatch.embedding import Embedded, Embedder, EmbeddingModel
from imgwatch.store import ImageRecord, open_store
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.web.duplicates_view import GROUPS_PER_PAGE
from tests.helpers import make_config, process_env
from tests.web.conftest import WebServer, start_server, stop_server

SERIES = GROUPS_PER_PAGE + 5  # exact-copy groups: one page and a bit
LOOK_ALIKE = "threshold=0.99995"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "retina", "hubble_deep_field")
TOKEN = "Qp4-another.long~token_9876543210"
CROSS_SITE = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}


@dataclass
class Library:
    root: Path
    photos: dict[str, Path]  # short name -> indexed path ("astronaut", "astronaut-small", ...)
    data_dir: Path
    env: dict[str, str]
    moved_to: Path  # [duplicates] move_to
    records: list[ImageRecord]  # as indexed


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, photo_arrays: dict[str, Any], random_model: EmbeddingModel,
            queue_server: EmbeddedValkey) -> Library:
    import numpy as np
    from PIL import Image

    tmp = tmp_path_factory.mktemp("duplicates-actions")
    root = tmp / "photos"
    (root / "small").mkdir(parents=True)
    (root / "series" / "copies").mkdir(parents=True)
    photos: dict[str, Path] = {}
    for name in PHOTOS:
        image = Image.fromarray(np.asarray(photo_arrays[name])).convert("RGB")
        photos[name] = root / f"{name}.jpg"
        image.save(photos[name], quality=90)
        photos[f"{name}-small"] = root / "small" / f"{name}-small.jpg"
        image.resize((image.width // 2, image.height // 2)).save(photos[f"{name}-small"], quality=80)
    noise = np.random.default_rng(7)
    for number in range(SERIES):
        photos[f"series-{number}"] = root / "series" / f"{number:03d}.png"
        Image.fromarray(noise.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos[f"series-{number}"])
        photos[f"series-{number}-copy"] = root / "series" / "copies" / f"{number:03d}.png"
        shutil.copy2(photos[f"series-{number}"], photos[f"series-{number}-copy"])

    env = process_env(tmp, IMGWATCH_QUEUE_REDIS_URL=queue_server.url, IMGWATCH_QUEUE_NAME="test-duplicates-actions",
                      IMGWATCH_GENERAL_ROOTS=str(root), IMGWATCH_DUPLICATES_MOVE_TO=str(tmp / "moved"))
    env.pop("IMGWATCH_WEB_TOKEN", None)
    config = make_config(tmp / "data")
    originals = [path for name, path in photos.items() if not name.endswith("-copy")]
    with Embedder(random_model, batch_size=8) as embedder, open_store(config) as store:
        store.ensure_model(random_model.identity, random_model.dim)
        records: dict[str, ImageRecord] = {}
        for result in embedder.embed_files([str(path) for path in originals]):
            assert isinstance(result, Embedded), result
            facts = result.facts
            records[facts.path] = ImageRecord(facts.path, facts.sha256, facts.size, facts.mtime_ns, result.width,
                                              result.height, random_model.identity, result.vector)
        for number in range(SERIES):  # a byte copy: the same content, its own file
            original, copy = records[str(photos[f"series-{number}"])], photos[f"series-{number}-copy"]
            records[str(copy)] = ImageRecord(str(copy), original.sha256, original.size, copy.stat().st_mtime_ns,
                                             original.width, original.height, original.model, original.embedding)
        store.upsert(list(records.values()))
        store.link(list(records.values()), config.links.threshold, config.links.top_k)
    return Library(root, photos, tmp / "data", env, tmp / "moved", list(records.values()))


@pytest.fixture(scope="module")
def server(library: Library) -> Iterator[WebServer]:
    started = start_server(library.env, library.data_dir.parent / "web.log")
    yield started
    stop_server(started)


@pytest.fixture
def client(server: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as opened:
        yield opened


@pytest.fixture
def undecided(library: Library) -> Iterator[None]:
    """Every decision a test makes is dropped after it, so each test starts from the same groups."""
    yield
    with open_store(make_config(library.data_dir), create=False) as store:
        hashes = [image.sha256 for image in store.get_many([str(p) for p in library.photos.values()]).values()]
        store.forget_decisions(hashes)


@pytest.fixture
def indexed_again(library: Library) -> Iterator[None]:
    """After the test, the files an undo put back are in the store again, as `imgwatch run` indexes them."""
    yield
    with open_store(make_config(library.data_dir), create=False) as store:
        missing = [record for record in library.records
                   if record.path not in store.get_many([r.path for r in library.records])]
        assert all(os.path.exists(record.path) for record in missing), "a photo was not put back"
        store.upsert(missing)
        store.link(missing, make_config(library.data_dir).links.threshold, make_config(library.data_dir).links.top_k)


def moved_target(library: Library, path: Path) -> Path:
    """Where a copy moves: below move_to, below its root's name, as it was below the root."""
    return library.moved_to / library.root.name / path.relative_to(library.root)


def form_key(client: httpx.Client) -> str:
    found = re.search(r'name="form_key" value="([^"]+)"', client.get(f"/duplicates?{LOOK_ALIKE}").text)
    assert found, "the page holds no form key"
    return found.group(1)


def group_of(page: Any, path: Path) -> Any:
    """The group section holding the tile of ``path``."""
    return page.locator("section.group", has=page.locator(f'.tile[data-path="{path}"]'))


# -- paging ----------------------------------------------------------------------------------------


def test_the_page_shows_a_page_of_groups_with_links_to_the_rest(page: Any, server: WebServer, client: httpx.Client,
                                                                tmp_path: Path) -> None:
    page.goto(server.url + "/duplicates?exact=1")
    assert page.locator("section.group").count() == GROUPS_PER_PAGE
    assert page.locator("#pager-top .range").inner_text() == f"groups 1–{GROUPS_PER_PAGE} of {SERIES}"
    assert page.locator("#pager-top a[rel=prev]").count() == 0
    (tmp_path / "page-1.png").write_bytes(page.screenshot(full_page=False))

    page.locator("#pager-bottom a[rel=next]").click()
    page.wait_for_url(re.compile(r"/duplicates\?exact=1&threshold=0\.95&page=2$"))  # the listing is kept
    assert page.locator("section.group").count() == SERIES - GROUPS_PER_PAGE
    assert page.locator("#pager-top .range").inner_text() == f"groups {GROUPS_PER_PAGE + 1}–{SERIES} of {SERIES}"
    assert page.locator("#pager-top a[rel=next]").count() == 0
    page.locator("#pager-top a[rel=prev]").click()
    page.wait_for_url(re.compile(r"/duplicates\?exact=1&threshold=0\.95$"))

    first = client.get("/api/duplicates?exact=1").json()
    assert (first["page"], first["pages"], first["per_page"], first["total"]) == (1, 2, GROUPS_PER_PAGE, SERIES)
    assert len(first["groups"]) == GROUPS_PER_PAGE
    second = client.get("/api/duplicates?exact=1&page=2").json()
    assert len(second["groups"]) == SERIES - GROUPS_PER_PAGE
    assert not {g["keep"] for g in first["groups"]} & {g["keep"] for g in second["groups"]}
    past = client.get("/api/duplicates?exact=1&page=9").json()  # past the last page: the last
    assert past["page"] == 2 and past["groups"] == second["groups"]
    for bad in ("0", "-1", "two", "1.5"):
        refused = client.get(f"/api/duplicates?exact=1&page={bad}")
        assert refused.status_code == 400 and refused.json() == {"error": "page must be a whole number from 1"}


# -- decisions -------------------------------------------------------------------------------------


def test_keep_this_records_the_decision_and_hides_the_group(page: Any, server: WebServer, library: Library,
                                                            undecided: None, tmp_path: Path) -> None:
    astronaut, small = library.photos["astronaut"], library.photos["astronaut-small"]
    page.goto(f"{server.url}/duplicates?{LOOK_ALIKE}")
    group = group_of(page, small)
    assert group.locator(".tile").first.get_attribute("data-path") == str(astronaut)  # the rule keeps the larger
    assert group.locator(".member").first.locator(".keep-this").count() == 0  # the keeper has nothing to choose
    (tmp_path / "before.png").write_bytes(page.screenshot())

    group.locator(".member", has=page.locator(f'.tile[data-path="{small}"]')).get_by_role("button",
                                                                                        name="Keep this").click()
    page.wait_for_selector("#notice")
    assert page.locator("#notice").inner_text() == ("Decided: keep astronaut-small.jpg over 1 other photo of its "
                                                    "group; the group is hidden until another copy joins.")
    assert group_of(page, small).count() == 0
    assert re.search(r"/duplicates\?threshold=0\.99995&notice=[\w-]+$", page.url)
    (tmp_path / "after.png").write_bytes(page.screenshot())
    with open_store(make_config(library.data_dir), create=False) as store:
        images = store.get_many([str(astronaut), str(small)])
        [decision] = store.decisions_about({images[str(small)].sha256})
    assert decision.kind == "keep" and decision.keep == images[str(small)].sha256
    assert decision.hashes == {images[str(astronaut)].sha256, images[str(small)].sha256}

    page.goto(f"{server.url}/duplicates?{LOOK_ALIKE}&all=1")  # shown decided, the chosen one kept
    assert group_of(page, small).locator(".tile").first.get_attribute("data-path") == str(small)


def test_not_duplicates_records_the_decision_for_the_whole_group(page: Any, server: WebServer, library: Library,
                                                                 undecided: None) -> None:
    chelsea, small = library.photos["chelsea"], library.photos["chelsea-small"]
    page.goto(f"{server.url}/duplicates?{LOOK_ALIKE}")
    group_of(page, chelsea).get_by_role("button", name="Not duplicates").click()
    page.wait_for_selector("#notice")
    assert page.locator("#notice").inner_text() == ("Decided: the 2 photos kept by chelsea.jpg are not duplicates; "
                                                    "their group is hidden until another copy joins.")
    assert group_of(page, chelsea).count() == 0
    with open_store(make_config(library.data_dir), create=False) as store:
        [decision] = store.decisions_about({store.get_many([str(small)])[str(small)].sha256})
    assert decision.kind == "not_duplicates" and len(decision.hashes) == 2


def test_exact_copies_offer_neither_keep_this_nor_not_duplicates(page: Any, server: WebServer) -> None:
    page.goto(server.url + "/duplicates?exact=1")
    assert page.locator("section.group").count() == GROUPS_PER_PAGE
    assert page.locator(".keep-this").count() == 0 and page.get_by_role("button", name="Not duplicates").count() == 0


def test_an_action_on_a_group_no_longer_listed_says_to_reload(client: httpx.Client, library: Library) -> None:
    not_a_keeper = str(library.photos["series-0-copy"])
    answer = client.post(f"/duplicates/decide?{LOOK_ALIKE}", headers={"x-imgwatch-form": form_key(client)},
                         data={"action": "not_duplicates", "group": not_a_keeper})
    assert answer.status_code == 409 and "is listed any more" in answer.text and "reload the page" in answer.text


# -- moving the others, and undo ----------------------------------------------------------------------


def test_move_the_others_after_a_confirmation_then_undo_puts_them_back(
        page: Any, server: WebServer, client: httpx.Client, library: Library, indexed_again: None,
        tmp_path: Path) -> None:
    retina, copy = library.photos["retina"], library.photos["retina-small"]
    data, mtime_ns, target = copy.read_bytes(), copy.stat().st_mtime_ns, moved_target(library, copy)
    manifests_before = set((library.data_dir / "moves").glob("moves-*.json"))
    page.goto(f"{server.url}/duplicates?{LOOK_ALIKE}")
    group_of(page, retina).get_by_role("link", name="Move the others…").click()
    page.wait_for_url(re.compile(r"/duplicates/confirm\?threshold=0\.99995&group="))
    assert page.locator("#plan").inner_text() == (
        f"Move 1 copy ({human_size(len(data))}) of the group kept by retina.jpg out of the library into "
        f"{library.moved_to}. Each keeper stays; a manifest is written first, and “Undo” puts every file back.")
    (tmp_path / "confirm.png").write_bytes(page.screenshot())
    plan = client.get(f"/api/duplicates/plan?{LOOK_ALIKE}&group={retina}").json()
    assert (plan["moves"], plan["bytes"], plan["destination"], plan["refused"]) == (
        1, len(data), str(library.moved_to), [])
    assert copy.exists() and not target.exists()  # a dry run moves nothing

    page.locator("#confirm-move").click()
    page.wait_for_url(re.compile(r"/duplicates\?threshold=0\.99995&notice="))
    [manifest] = set((library.data_dir / "moves").glob("moves-*.json")) - manifests_before
    assert page.locator("#notice span").inner_text() == (
        f"Moved 1 copy ({human_size(len(data))}) into {library.moved_to}; manifest {manifest.name}.")
    assert group_of(page, retina).count() == 0
    assert not copy.exists() and target.read_bytes() == data and retina.exists()
    assert str(copy) in manifest.read_text()
    (tmp_path / "moved.png").write_bytes(page.screenshot())

    page.locator("#undo").click()
    page.wait_for_url(re.compile(r"/duplicates\?threshold=0\.99995&notice="))
    assert page.locator("#notice span").inner_text().startswith(
        f"Put back 1 copy ({human_size(len(data))}) where they were ({manifest.name}).")
    assert copy.read_bytes() == data and copy.stat().st_mtime_ns == mtime_ns and not target.exists()


def test_resolve_all_shown_moves_the_copies_of_every_group_listed_on_every_page(
        page: Any, server: WebServer, library: Library, indexed_again: None, tmp_path: Path) -> None:
    copies = [library.photos[f"series-{number}-copy"] for number in range(SERIES)]
    size = sum(copy.stat().st_size for copy in copies)
    page.goto(server.url + "/duplicates?exact=1")
    assert page.locator("section.group").count() == GROUPS_PER_PAGE  # the page shows fewer than it resolves
    page.locator("#resolve-all").click()
    page.wait_for_url(re.compile(r"/duplicates/confirm\?exact=1&threshold=0\.95&resolve=all$"))
    assert page.locator("#plan").inner_text() == (
        f"Move {SERIES} copies ({human_size(size)}) of all {SERIES} groups listed (every page), out of the library "
        f"into {library.moved_to}. Each keeper stays; a manifest is written first, and “Undo” puts every file back.")
    (tmp_path / "confirm-all.png").write_bytes(page.screenshot())
    page.locator("#cancel").click()  # nothing happens on the way back
    page.wait_for_url(re.compile(r"/duplicates\?exact=1&threshold=0\.95$"))
    assert all(copy.exists() for copy in copies)

    page.locator("#resolve-all").click()
    page.locator("#confirm-move").click()
    page.wait_for_url(re.compile(r"/duplicates\?exact=1&threshold=0\.95&notice="))
    assert page.locator("#notice span").inner_text().startswith(f"Moved {SERIES} copies ({human_size(size)}) into ")
    assert page.locator("section.group").count() == 0
    assert page.locator(".empty").inner_text() == "No two photos have the same content."
    assert not any(copy.exists() for copy in copies)
    assert all(moved_target(library, copy).exists() for copy in copies)
    assert all(library.photos[f"series-{number}"].exists() for number in range(SERIES))  # the keepers stay

    page.locator("#undo").click()
    page.wait_for_url(re.compile(r"/duplicates\?exact=1&threshold=0\.95&notice="))
    assert page.locator("#notice span").inner_text().startswith(f"Put back {SERIES} copies ({human_size(size)})")
    assert all(copy.exists() for copy in copies) and not any(moved_target(library, c).exists() for c in copies)


# -- the writes' defences ----------------------------------------------------------------------------


def test_a_write_needs_the_form_key_and_a_request_from_another_site_is_refused(
        client: httpx.Client, library: Library, undecided: None) -> None:
    fields = {"action": "not_duplicates", "group": str(library.photos["rocket"])}
    key = form_key(client)
    for headers, data, why in [
        ({}, fields, "lacks the page's form key"),
        ({}, {**fields, "form_key": key[:-1] + "x"}, "lacks the page's form key"),
        ({"x-imgwatch-form": "not-it"}, fields, "lacks the page's form key"),
        ({**CROSS_SITE}, {**fields, "form_key": key}, "a cross-site request"),
        ({"origin": "http://attacker.example"}, {**fields, "form_key": key}, "http://attacker.example"),
    ]:
        refused = client.post(f"/duplicates/decide?{LOOK_ALIKE}", headers=headers, data=data)
        assert refused.status_code == 403 and why in refused.text, (headers, refused.text)
        assert len(refused.text.strip().splitlines()) == 1
    assert client.get(f"/api/duplicates?{LOOK_ALIKE}&all=1").json()["hidden"] == 0  # nothing was decided
    for route, data in [("/duplicates/move", {"group": fields["group"]}), ("/duplicates/move", {"resolve": "all"}),
                        ("/duplicates/undo", {"manifest": "moves-20260101T000000-000000.json"})]:
        refused = client.post(f"{route}?{LOOK_ALIKE}", data=data)
        assert refused.status_code == 403 and "lacks the page's form key" in refused.text
    assert library.photos["rocket-small"].exists()

    done = client.post(f"/duplicates/decide?{LOOK_ALIKE}", data={**fields, "form_key": key})
    assert done.status_code == 303 and done.headers["location"].startswith(f"/duplicates?{LOOK_ALIKE}&notice=")
    assert client.get(f"/api/duplicates?{LOOK_ALIKE}").json()["hidden"] == 1
    # the search by upload writes nothing and needs no key (its form works without JavaScript)
    searched = client.post("/api/search?top=1", files={"image": ("a.jpg", library.photos["camera"].read_bytes())})
    assert searched.status_code == 200


def test_with_a_token_the_page_acts_for_the_browser_holding_it_and_scripts_need_no_form_key(
        browser: Any, library: Library, undecided: None, indexed_again: None, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    server = start_server({**library.env, "IMGWATCH_WEB_TOKEN_FILE": str(token_file)}, tmp_path / "web.log")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/duplicates?{LOOK_ALIKE}&token={TOKEN}")  # the cookie, then the page without it
        page.wait_for_url(re.compile(rf"/duplicates\?{LOOK_ALIKE}$"))
        group_of(page, library.photos["coffee"]).get_by_role("button", name="Not duplicates").click()
        page.wait_for_selector("#notice")
        assert group_of(page, library.photos["coffee"]).count() == 0
        hubble, copy = library.photos["hubble_deep_field"], library.photos["hubble_deep_field-small"]
        group_of(page, hubble).get_by_role("link", name="Move the others…").click()
        page.locator("#confirm-move").click()
        page.wait_for_url(re.compile(r"/duplicates\?threshold=0\.99995&notice="))
        assert page.locator("#notice span").inner_text().startswith("Moved 1 copy")
        assert not copy.exists() and moved_target(library, copy).exists()
        page.locator("#undo").click()
        page.wait_for_url(re.compile(r"/duplicates\?threshold=0\.99995&notice="))
        assert page.locator("#notice span").inner_text().startswith("Put back 1 copy")
        assert copy.exists() and not moved_target(library, copy).exists()

        camera = str(library.photos["camera"])
        with httpx.Client(base_url=server.url, timeout=60) as client:
            fields = {"action": "not_duplicates", "group": camera}
            assert client.post(f"/duplicates/decide?{LOOK_ALIKE}", data=fields).status_code == 401  # no token
            bearer = {"authorization": f"Bearer {TOKEN}"}
            by_script = client.post(f"/duplicates/decide?{LOOK_ALIKE}", headers=bearer, data=fields)
            assert by_script.status_code == 303, by_script.text
            assert client.get(f"/api/duplicates?{LOOK_ALIKE}", headers=bearer).json()["hidden"] == 2
    finally:
        context.close()
        stop_server(server)


def test_a_move_to_inside_a_watched_folder_is_refused_in_one_line_and_nothing_moves(
        library: Library, tmp_path: Path) -> None:
    inside = library.root / "duplicates"
    server = start_server({**library.env, "IMGWATCH_DUPLICATES_MOVE_TO": str(inside)}, tmp_path / "web.log")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            refused = client.get(f"/api/duplicates/plan?{LOOK_ALIKE}&resolve=all")
            assert refused.status_code == 409
            assert refused.json()["error"].startswith(f"{inside} is inside the watched folder {library.root}")
            page = client.get(f"/duplicates/confirm?{LOOK_ALIKE}&group={library.photos['rocket']}")
            assert page.status_code == 409 and "is inside the watched folder" in page.text
            moved = client.post(f"/duplicates/move?{LOOK_ALIKE}", headers={"x-imgwatch-form": form_key(client)},
                                data={"resolve": "all"})
            assert moved.status_code == 409
        assert not inside.exists() and library.photos["rocket-small"].exists()
    finally:
        stop_server(server)
