"""Duplicate groups: the pure grouping rule, both backends, real photos through ResNet50, the CLI.

With seeded random weights ResNet50 scores every pair of real photos about 0.998
(measured on scikit-image's samples: unrelated photos at most 0.99941), while an exact
copy scores 1.0 and a resized or re-encoded copy at least 0.99998. So the real-photo
tests link at the usual links.threshold (0.8, which links everything here) and group at
PHOTO_THRESHOLD, between the two: copies must group, the other photos must not.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgwatch.duplicates import (
    DEFAULT_THRESHOLD,
    DuplicateGroup,
    as_csv,
    as_json,
    as_json_text,
    as_text,
    check_threshold,
    find_duplicates,
    group_links,
    human_size,
    keep_order,
)
from imgwatch.embedding import Embedded, Embedder, EmbeddingModel
from imgwatch.errors import ThresholdBelowLinks
from imgwatch.store import EmbeddedGraphStore, GraphStore, ImageRecord, Link, StoredImage, open_store
from tests.helpers import DIM, MODEL, angled, axis, imgwatch, make_config, make_record, process_env
from tests.store.neo4j_stand_in import fake_store

PHOTO_THRESHOLD = 0.9999
LINKS_THRESHOLD, LINKS_TOP_K = 0.8, 10  # the config defaults


def image(path: str, width: int = 100, height: int = 100, size: int = 1000) -> StoredImage:
    return StoredImage(path=path, sha256="-", size=size, mtime_ns=0, width=width, height=height, model=MODEL)


def facts_of(*images: StoredImage) -> dict[str, StoredImage]:
    return {i.path: i for i in images}


def paths(group: DuplicateGroup) -> list[str]:
    return [i.path for i in group.images]


# -- the grouping rule, on plain numbers -----------------------------------------------------------


def test_links_at_or_above_the_threshold_join_images_into_groups_through_chains() -> None:
    facts = facts_of(*(image(f"/p/{name}.jpg") for name in "abcdexy"))
    links = [Link("/p/a.jpg", "/p/b.jpg", 0.97), Link("/p/b.jpg", "/p/c.jpg", 0.95),  # a–b–c: one group
             Link("/p/a.jpg", "/p/d.jpg", 0.9499),  # below: d stays out
             Link("/p/x.jpg", "/p/y.jpg", 0.99)]

    groups = group_links(links, facts, threshold=0.95)

    assert [paths(g) for g in groups] == [["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"], ["/p/x.jpg", "/p/y.jpg"]]
    assert (groups[0].strongest, groups[0].weakest) == (0.97, 0.95)
    assert groups[0].scores == (0.97, 0.97, 0.95)  # each image's strongest link inside the group
    assert (groups[1].strongest, groups[1].weakest, groups[1].scores) == (0.99, 0.99, (0.99, 0.99))
    assert group_links(links, facts, threshold=0.98) == [groups[1]]
    assert group_links([], facts, threshold=0.5) == []


def test_the_keeper_has_the_most_pixels_then_the_largest_file_then_the_shortest_first_path() -> None:
    def keeper(*images: StoredImage) -> str:
        links = [Link.between(images[0].path, other.path, 0.99) for other in images[1:]]
        [group] = group_links(links, facts_of(*images), threshold=0.95)
        assert group.keep == group.images[0].path
        return group.keep

    # Resolution first, even against a bigger file and a shorter path.
    assert keeper(image("/p/a.jpg", 800, 600, size=900_000), image("/p/long-name.jpg", 4000, 3000, size=100)) \
        == "/p/long-name.jpg"
    # Same resolution: the larger file.
    assert keeper(image("/p/a.jpg", 800, 600, size=10), image("/p/bb.jpg", 800, 600, size=20)) == "/p/bb.jpg"
    # Same resolution and size: the shorter path, then the alphabetically first.
    assert keeper(image("/p/copy/x.jpg"), image("/p/x.jpg"), image("/p/y.jpg")) == "/p/x.jpg"
    # width * height, not width: 1000x1000 beats 1500x600.
    assert keeper(image("/p/wide.jpg", 1500, 600), image("/p/square.jpg", 1000, 1000)) == "/p/square.jpg"
    assert sorted([image("/p/b"), image("/p/a")], key=keep_order)[0].path == "/p/a"
    # The original before a bigger re-encode: a camera's RAW, then a phone's HEIC, AVIF or JPEG XL.
    assert keeper(image("/p/IMG_1.CR3", 3000, 2000, size=20), image("/p/IMG_1.JPG", 6000, 4000, size=900)) \
        == "/p/IMG_1.CR3"
    assert keeper(image("/p/IMG_2.jpg", 4032, 3024, size=900), image("/p/IMG_2.HEIC", 4032, 3024, size=20)) \
        == "/p/IMG_2.HEIC"
    assert keeper(image("/p/x.avif", 800, 600), image("/p/x.dng", 400, 300), image("/p/x.png", 900, 700)) \
        == "/p/x.dng"


def test_groups_come_biggest_first_then_by_their_first_path() -> None:
    facts = facts_of(*(image(f"/p/{name}") for name in ["m1", "m2", "a1", "a2", "z1", "z2", "z3"]))
    links = [Link("/p/m1", "/p/m2", 0.99), Link("/p/z1", "/p/z2", 0.99), Link("/p/z2", "/p/z3", 0.99),
             Link("/p/a1", "/p/a2", 0.99)]

    assert [paths(g)[0] for g in group_links(links, facts, threshold=0.95)] == ["/p/z1", "/p/a1", "/p/m1"]


def test_a_link_to_an_image_no_longer_stored_is_left_out_and_bridges_nothing() -> None:
    facts = facts_of(image("/p/a"), image("/p/c"))  # b was removed after the links were read
    links = [Link("/p/a", "/p/b", 0.99), Link("/p/b", "/p/c", 0.99)]

    assert group_links(links, facts, threshold=0.95) == []


def test_a_threshold_below_links_threshold_is_refused_naming_both() -> None:
    check_threshold(0.8, 0.8)
    check_threshold(0.95, 0.8)
    with pytest.raises(ThresholdBelowLinks) as raised:
        check_threshold(0.7, 0.8)
    message = str(raised.value)
    assert "0.7" in message and "links.threshold (0.8)" in message and "--threshold 0.8" in message


def test_output_as_json_csv_and_text() -> None:
    big, small = image("/p/big.jpg", 4000, 3000, 5_100_000), image("/p/small.jpg", 800, 600, 120_400)
    [group] = group_links([Link("/p/big.jpg", "/p/small.jpg", 0.99912)], facts_of(big, small), threshold=0.95)

    assert as_json([group]) == [{
        "keep": "/p/big.jpg", "strongest": 0.99912, "weakest": 0.99912,
        "images": [
            {"path": "/p/big.jpg", "width": 4000, "height": 3000, "size": 5_100_000, "keep": True, "score": 0.99912},
            {"path": "/p/small.jpg", "width": 800, "height": 600, "size": 120_400, "keep": False, "score": 0.99912},
        ],
    }]
    assert list(csv.reader(io.StringIO(as_csv([group])))) == [
        ["group", "path", "keep", "width", "height", "size"],
        ["1", "/p/big.jpg", "true", "4000", "3000", "5100000"],
        ["1", "/p/small.jpg", "false", "800", "600", "120400"],
    ]
    assert as_text([group], 0.95).splitlines() == [
        "group 1: 2 images, cosine 0.9991",
        "* keep  4000x3000    5.1 MB  /p/big.jpg",
        "          800x600  120.4 kB  /p/small.jpg",
        "",
        "1 group of duplicates at ≥ 0.95: 2 images, 1 besides the ones to keep (nothing was deleted)",
    ]
    assert as_text([], 0.95) == "no duplicates at ≥ 0.95"
    assert as_csv([]) == "group,path,keep,width,height,size"
    assert [human_size(n) for n in (0, 999, 1000, 120_400, 5_100_000, 3 * 10**9, 10**16)] == [
        "0 B", "999 B", "1.0 kB", "120.4 kB", "5.1 MB", "3.0 GB", "10000.0 TB"]


def test_a_path_that_is_not_utf8_is_shown_not_crashed_on() -> None:
    odd = "/p/caf\udce9.jpg"  # b"/p/caf\xe9.jpg" as os.fsdecode gives it
    [group] = group_links([Link.between(odd, "/p/b.jpg", 0.99)], facts_of(image(odd), image("/p/b.jpg")), 0.95)
    assert "/p/caf\\xe9.jpg" in as_text([group], 0.95) and "/p/caf\\xe9.jpg" in as_csv([group])
    as_text([group], 0.95).encode("utf-8")  # strict UTF-8 streams can write it


def test_a_path_with_control_characters_is_shown_escaped_in_text_and_csv_and_exact_in_json() -> None:
    odd = "/p/\x1b[31mred\nfake\x9b.jpg"
    [group] = group_links([Link.between(odd, "/p/b.jpg", 0.99)], facts_of(image(odd), image("/p/b.jpg")), 0.95)
    text = as_text([group], 0.95)
    assert "  /p/\\x1b[31mred\\nfake\\x9b.jpg" in text and len(text.splitlines()) == 5  # no line of its own
    assert list(csv.reader(io.StringIO(as_csv([group]))))[2][1] == "/p/\\x1b[31mred\\nfake\\x9b.jpg"
    assert json.loads(as_json_text([group]))[0]["images"][1]["path"] == odd  # JSON is exact (and escaped by JSON)


# -- find_duplicates on each backend (the embedded store and the Neo4j stand-in) ---------------------


@pytest.fixture(params=["embedded", "neo4j-stand-in"])
def embedded_or_stand_in_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    """An empty embedded store, then the Neo4j stand-in, with MODEL/DIM recorded."""
    opened: GraphStore = (EmbeddedGraphStore(tmp_path / "store.sqlite3") if request.param == "embedded"
                          else fake_store()[0])
    opened.ensure_model(MODEL, DIM)
    yield opened
    opened.close()


def test_find_duplicates_reads_the_links_and_facts_of_a_store(embedded_or_stand_in_store: GraphStore) -> None:
    records = [
        make_record("/lib/original.jpg", axis(0), width=4000, height=3000, size=5_000_000),
        make_record("/lib/copy.jpg", axis(0), width=4000, height=3000, size=5_000_000),
        make_record("/lib/small.jpg", angled(0.99, 1), width=800, height=600, size=100_000),
        make_record("/lib/cousin.jpg", angled(0.9, 2)),  # linked at 0.8, not a duplicate at 0.95
        make_record("/lib/other.jpg", axis(3)),
        make_record("/lib/pair-a.jpg", angled(0.3, 4)),
        make_record("/lib/pair-b.jpg", angled(0.3, 4), size=2000),
    ]
    embedded_or_stand_in_store.upsert(records)
    embedded_or_stand_in_store.link(records, threshold=0.8, top_k=10)

    groups = find_duplicates(embedded_or_stand_in_store, threshold=0.95)

    assert [paths(g) for g in groups] == [
        ["/lib/copy.jpg", "/lib/original.jpg", "/lib/small.jpg"],  # equal: the shorter path first
        ["/lib/pair-b.jpg", "/lib/pair-a.jpg"],  # the larger file first
    ]
    assert groups[0].keep == "/lib/copy.jpg"
    assert groups[0].weakest == pytest.approx(0.99, abs=1e-5) and groups[0].strongest == pytest.approx(1.0, abs=1e-5)
    assert [g.keep for g in find_duplicates(embedded_or_stand_in_store, threshold=0.8)] == [
        "/lib/copy.jpg", "/lib/pair-b.jpg"]
    assert len(find_duplicates(embedded_or_stand_in_store, threshold=0.8)[0].images) == 4  # the cousin joins at 0.8
    assert find_duplicates(embedded_or_stand_in_store) == find_duplicates(embedded_or_stand_in_store,
                                                                          threshold=DEFAULT_THRESHOLD)
    assert embedded_or_stand_in_store.stats().images == len(records)  # nothing is ever deleted


# -- real photos through the real ResNet50 code ------------------------------------------------------


@dataclass(frozen=True)
class PhotoLibrary:
    root: Path
    original: str  # astronaut at full size (512x512)
    copies: list[str]  # an exact copy and two resized copies of it
    unrelated: list[str]  # the other sample photos
    records: list[ImageRecord]


def write_library(root: Path, write_photo: Callable[..., Path]) -> tuple[str, list[str], list[str]]:
    from PIL import Image

    original = write_photo(root / "2024" / "astronaut.png", "astronaut")
    exact = root / "backup" / "astronaut.png"
    exact.parent.mkdir(parents=True)
    shutil.copyfile(original, exact)
    with Image.open(original) as full:
        (root / "phone").mkdir()
        full.resize((256, 256), Image.Resampling.LANCZOS).save(root / "phone" / "a.jpg", quality=90)
        full.resize((384, 384), Image.Resampling.LANCZOS).save(root / "astro-384.png")
    unrelated = [write_photo(root / "2024" / f"{name}.png", name)
                 for name in ["coffee", "chelsea", "rocket", "camera", "hubble_deep_field"]]
    copies = [str(exact), str(root / "phone" / "a.jpg"), str(root / "astro-384.png")]
    return str(original), copies, [str(p) for p in unrelated]


def embed(model: EmbeddingModel, files: list[str]) -> list[ImageRecord]:
    """What a worker stores for each file (decoded, embedded, its facts)."""
    with Embedder(model, batch_size=4) as embedder:
        results = list(embedder.embed_files(files))
    assert all(isinstance(result, Embedded) for result in results), results
    return [ImageRecord(path=r.facts.path, sha256=r.facts.sha256, size=r.facts.size, mtime_ns=r.facts.mtime_ns,
                        width=r.width, height=r.height, model=model.identity, embedding=r.vector)
            for r in results if isinstance(r, Embedded)]


@pytest.fixture
def photo_library(tmp_path: Path, write_photo: Callable[..., Path], random_model: EmbeddingModel) -> PhotoLibrary:
    root = tmp_path / "photos"
    original, copies, unrelated = write_library(root, write_photo)
    records = embed(random_model, sorted(str(p) for p in root.rglob("*") if p.is_file()))
    return PhotoLibrary(root, original, copies, unrelated, records)


def index_into(store: GraphStore, model: EmbeddingModel, records: list[ImageRecord]) -> None:
    """Upsert and link as workers do, at the default links.threshold and top_k."""
    store.ensure_model(model.identity, model.dim)
    store.upsert(records)
    store.link(records, LINKS_THRESHOLD, LINKS_TOP_K)


def test_copies_of_a_real_photo_form_one_group_and_the_largest_is_kept(
        photo_library: PhotoLibrary, random_model: EmbeddingModel, tmp_path: Path) -> None:
    with EmbeddedGraphStore(tmp_path / "store.sqlite3") as store:
        index_into(store, random_model, photo_library.records)
        scores = {(link.a, link.b): link.score for link in store.links_at_least(-1.0)}

        groups = find_duplicates(store, PHOTO_THRESHOLD)

    # The measured scores the threshold sits between (see the module docstring).
    copy_pairs = [pair for pair in scores if set(pair) <= {photo_library.original, *photo_library.copies}]
    assert len(copy_pairs) == 6 and min(scores[pair] for pair in copy_pairs) > PHOTO_THRESHOLD
    assert max(score for pair, score in scores.items() if pair not in copy_pairs) < PHOTO_THRESHOLD
    [group] = groups
    assert set(paths(group)) == {photo_library.original, *photo_library.copies}
    # The full-size original and its exact copy tie on pixels and bytes: the shorter path wins.
    assert group.keep == photo_library.original == str(photo_library.root / "2024" / "astronaut.png")
    assert paths(group)[1] == str(photo_library.root / "backup" / "astronaut.png")
    assert [(i.width, i.height) for i in group.images] == [(512, 512), (512, 512), (384, 384), (256, 256)]
    assert math.isclose(group.strongest, 1.0, abs_tol=1e-6) and group.weakest > PHOTO_THRESHOLD
    assert not set(photo_library.unrelated) & set(paths(group))


def test_the_same_photos_group_the_same_way_in_the_neo4j_stand_in(
        photo_library: PhotoLibrary, random_model: EmbeddingModel, tmp_path: Path) -> None:
    with EmbeddedGraphStore(tmp_path / "store.sqlite3") as embedded:
        index_into(embedded, random_model, photo_library.records)
        expected = find_duplicates(embedded, PHOTO_THRESHOLD)
    stand_in, _ = fake_store()
    index_into(stand_in, random_model, photo_library.records)

    found = find_duplicates(stand_in, PHOTO_THRESHOLD)

    assert [paths(g) for g in found] == [paths(g) for g in expected]
    assert found[0].keep == expected[0].keep == photo_library.original


# -- the CLI on a real store -------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, photo_library: PhotoLibrary, random_model: EmbeddingModel) -> dict[str, str]:
    """The environment of `imgwatch` processes whose data dir holds the library, indexed."""
    env = process_env(tmp_path)
    with open_store(make_config(Path(env["IMGWATCH_GENERAL_DATA_DIR"]))) as store:
        index_into(store, random_model, photo_library.records)
    return env


def test_cli_duplicates_prints_groups_with_the_keeper_marked(
    cli_env: dict[str, str], photo_library: PhotoLibrary
) -> None:
    text = imgwatch(cli_env, "duplicates", "--threshold", str(PHOTO_THRESHOLD)).stdout

    lines = text.splitlines()
    assert lines[0] == "group 1: 4 images, cosine " + lines[0].split("cosine ")[1]
    assert lines[1].startswith("* keep  512x512") and lines[1].endswith(f"  {photo_library.original}")
    assert {line.rsplit("  ", 1)[1] for line in lines[2:5]} == set(photo_library.copies)
    assert not any(line.startswith("* keep") for line in lines[2:5])
    assert lines[-1].startswith("1 group of duplicates at ≥ 0.9999: 4 images, 3 besides the ones to keep")


def test_cli_duplicates_as_json_and_csv(cli_env: dict[str, str], photo_library: PhotoLibrary) -> None:
    groups = json.loads(imgwatch(cli_env, "duplicates", "--threshold", str(PHOTO_THRESHOLD), "--json").stdout)

    [group] = groups
    assert group["keep"] == photo_library.original
    assert [(i["path"], i["keep"]) for i in group["images"]][0] == (photo_library.original, True)
    assert {i["path"] for i in group["images"]} == {photo_library.original, *photo_library.copies}
    first = group["images"][0]
    assert (first["width"], first["height"], first["size"]) == (512, 512, Path(photo_library.original).stat().st_size)
    assert all(PHOTO_THRESHOLD <= i["score"] <= 1.0 + 1e-6 for i in group["images"])

    rows = list(csv.DictReader(io.StringIO(
        imgwatch(cli_env, "duplicates", "--threshold", str(PHOTO_THRESHOLD), "--csv").stdout)))
    assert [(r["group"], r["path"], r["keep"]) for r in rows][0] == ("1", photo_library.original, "true")
    assert {r["path"] for r in rows} == {photo_library.original, *photo_library.copies}
    assert [r["keep"] for r in rows].count("true") == 1
    assert {(r["width"], r["height"]) for r in rows} == {("512", "512"), ("384", "384"), ("256", "256")}


def test_cli_duplicates_says_when_there_are_none_and_refuses_what_the_links_cannot_answer(
        tmp_path: Path, photo_library: PhotoLibrary, random_model: EmbeddingModel) -> None:
    env = process_env(tmp_path)
    missing = imgwatch(env, "duplicates", check=False)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "no imgwatch store" in missing.stderr

    unrelated = [r for r in photo_library.records if r.path in photo_library.unrelated]
    with open_store(make_config(Path(env["IMGWATCH_GENERAL_DATA_DIR"]))) as store:
        index_into(store, random_model, unrelated)
    none = imgwatch(env, "duplicates", "--threshold", str(PHOTO_THRESHOLD))
    assert none.stdout.strip() == "no duplicates at ≥ 0.9999"
    assert imgwatch(env, "duplicates", "--threshold", str(PHOTO_THRESHOLD), "--json").stdout.strip() == "[]"

    below = imgwatch(env, "duplicates", "--threshold", "0.5", check=False)
    assert below.returncode == 2 and below.stdout == ""
    [line] = below.stderr.strip().splitlines()
    assert line.startswith("imgwatch: error: duplicates at >= 0.5 cannot be found from the links")
    assert "links.threshold (0.8)" in line

    both = imgwatch(env, "duplicates", "--json", "--csv", check=False)
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_the_cli_default_threshold_is_the_modules() -> None:
    from imgwatch.cli import duplicates as command

    [option] = [p for p in command.params if p.name == "threshold"]
    assert option.default == DEFAULT_THRESHOLD
