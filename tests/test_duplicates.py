"""Duplicate groups: the pure grouping rule, one file under two names, exact copies, both backends,
real photos through ResNet50, the CLI. The keeper rule itself: test_keeper.py.

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
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
    find_exact_copies,
    group_exact,
    group_links,
)
from imgwatch.embedding import Embedded, Embedder, EmbeddingModel
from imgwatch.errors import ThresholdBelowLinks
from imgwatch.store import EmbeddedGraphStore, GraphStore, ImageRecord, Link, StoredImage, open_store
from tests.helpers import MODEL, angled, axis, imgwatch, make_config, make_record, process_env
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


def test_a_group_is_a_keeper_and_the_images_at_the_threshold_against_it_never_a_chain() -> None:
    # a–b and b–c at or above 0.95, a–c below: a chain, not one group.
    a, b, c = image("/p/a.jpg", 4000, 3000), image("/p/b.jpg", 2000, 1500), image("/p/c.jpg", 1000, 750)
    links = [Link("/p/a.jpg", "/p/b.jpg", 0.97), Link("/p/b.jpg", "/p/c.jpg", 0.96), Link("/p/a.jpg", "/p/c.jpg", 0.9),
             Link("/p/x.jpg", "/p/y.jpg", 0.99)]
    facts = facts_of(a, b, c, image("/p/x.jpg"), image("/p/y.jpg"))

    groups = group_links(links, facts, threshold=0.95)

    # a has the most pixels: it keeps, with b; c is below the threshold against a and alone.
    assert [paths(g) for g in groups] == [["/p/a.jpg", "/p/b.jpg"], ["/p/x.jpg", "/p/y.jpg"]]
    assert groups[0].scores == (1.0, 0.97) and groups[0].reason == "more pixels: 4000×3000 vs 2000×1500"
    assert (groups[1].strongest, groups[1].weakest, groups[1].scores) == (0.99, 0.99, (1.0, 0.99))
    assert group_links(links, facts, threshold=0.98) == [groups[1]]
    assert group_links([], facts, threshold=0.5) == []

    # b the keeper (the most pixels now): a and c both score at least 0.95 against it: one group.
    facts["/p/b.jpg"] = image("/p/b.jpg", 8000, 6000)
    [group, _] = group_links(links, facts, threshold=0.95)
    assert paths(group) == ["/p/b.jpg", "/p/a.jpg", "/p/c.jpg"] and group.scores == (1.0, 0.97, 0.96)


def test_a_component_left_over_after_its_keeper_makes_groups_of_its_own() -> None:
    # One component k–a–b–m–n (links 0.99 along the chain only).
    facts = facts_of(image("/p/k.jpg", 900, 900), image("/p/a.jpg"), image("/p/b.jpg"), image("/p/m.jpg"),
                     image("/p/n.jpg", 50, 50))
    links = [Link("/p/a.jpg", "/p/k.jpg", 0.99), Link("/p/a.jpg", "/p/b.jpg", 0.99),
             Link("/p/b.jpg", "/p/m.jpg", 0.99), Link("/p/m.jpg", "/p/n.jpg", 0.99)]

    groups = group_links(links, facts, threshold=0.95)

    # k keeps a; among b, m, n the rule picks b (equal to m, first path), which keeps m; n is left alone.
    assert [paths(g) for g in groups] == [["/p/k.jpg", "/p/a.jpg"], ["/p/b.jpg", "/p/m.jpg"]]
    assert groups[1].reason == "all else equal: first in path order"


def test_a_member_without_a_stored_link_to_the_keeper_is_scored_by_the_stored_vectors() -> None:
    # Links are cut at links.top_k: k–c was never stored, though c is as close to k as b is.
    facts = facts_of(image("/p/k.jpg", 900, 900), image("/p/b.jpg"), image("/p/c.jpg"), image("/p/far.jpg"))
    links = [Link("/p/b.jpg", "/p/k.jpg", 0.99), Link("/p/b.jpg", "/p/c.jpg", 0.99),
             Link("/p/b.jpg", "/p/far.jpg", 0.99)]
    unit = {"/p/k.jpg": np.array([1.0, 0.0]), "/p/b.jpg": np.array([0.99, math.sqrt(1 - 0.99**2)]),
            "/p/c.jpg": np.array([0.98, -math.sqrt(1 - 0.98**2)]), "/p/far.jpg": np.array([0.5, math.sqrt(0.75)])}
    asked: list[list[str]] = []

    def vectors(images: list[StoredImage]) -> dict[str, np.ndarray]:
        asked.append(sorted(i.path for i in images))
        return {i.path: unit[i.path] for i in images}

    [group] = group_links(links, facts, threshold=0.95, vectors=vectors)

    assert paths(group) == ["/p/k.jpg", "/p/b.jpg", "/p/c.jpg"] and group.scores == pytest.approx((1, 0.99, 0.98))
    # One read, of the keeper and its neighbours' neighbours that it has no link with.
    assert asked == [["/p/c.jpg", "/p/far.jpg", "/p/k.jpg"]]
    assert [paths(g) for g in group_links(links, facts, threshold=0.95)] == [["/p/k.jpg", "/p/b.jpg"]]  # no vectors


def test_the_vectors_of_every_component_waiting_for_them_are_read_together() -> None:
    # Two components as above (k–b, b–c, no k–c link): each keeper needs c's vector; one read for both,
    # not one per keeper (a round trip each to a Neo4j server).
    unit, facts, links = {}, {}, []
    for scene in ("p", "q"):
        k, b, c = f"/{scene}/k.jpg", f"/{scene}/b.jpg", f"/{scene}/c.jpg"
        facts.update(facts_of(image(k, 900, 900), image(b), image(c)))
        links += [Link(b, k, 0.99), Link(b, c, 0.99)]
        unit.update({k: np.array([1.0, 0.0]), b: np.array([0.99, math.sqrt(1 - 0.99**2)]),
                     c: np.array([0.98, -math.sqrt(1 - 0.98**2)])})
    asked: list[list[str]] = []

    def vectors(images: list[StoredImage]) -> dict[str, np.ndarray]:
        asked.append(sorted(i.path for i in images))
        return {i.path: unit[i.path] for i in images}

    groups = group_links(links, facts, threshold=0.95, vectors=vectors)

    assert [paths(g) for g in groups] == [["/p/k.jpg", "/p/b.jpg", "/p/c.jpg"], ["/q/k.jpg", "/q/b.jpg", "/q/c.jpg"]]
    assert asked == [["/p/c.jpg", "/p/k.jpg", "/q/c.jpg", "/q/k.jpg"]]


def test_groups_come_biggest_first_then_by_their_first_path() -> None:
    facts = facts_of(*(image(f"/p/{name}") for name in ["m1", "m2", "a1", "a2", "z1", "z2", "z3"]))
    links = [Link("/p/m1", "/p/m2", 0.99), Link("/p/z1", "/p/z2", 0.99), Link("/p/z1", "/p/z3", 0.99),
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
    reason = "more pixels: 4000×3000 vs 800×600"

    assert as_json([group]) == [{
        "keep": "/p/big.jpg", "reason": reason, "exact": False, "strongest": 0.99912, "weakest": 0.99912,
        "decision": None,  # none recorded (see test_decisions.py)
        "images": [
            {"path": "/p/big.jpg", "width": 4000, "height": 3000, "size": 5_100_000, "keep": True, "score": 1.0,
             "same_file": []},
            {"path": "/p/small.jpg", "width": 800, "height": 600, "size": 120_400, "keep": False, "score": 0.99912,
             "same_file": []},
        ],
    }]
    assert list(csv.reader(io.StringIO(as_csv([group])))) == [
        ["group", "path", "keep", "width", "height", "size", "score", "reason", "decision"],
        ["1", "/p/big.jpg", "true", "4000", "3000", "5100000", "1.000000", reason, ""],
        ["1", "/p/small.jpg", "false", "800", "600", "120400", "0.999120", "", ""],
    ]
    assert as_text([group], 0.95).splitlines() == [
        f"group 1: 2 images, keep: {reason}",
        "* keep  4000x3000    5.1 MB          /p/big.jpg",
        "          800x600  120.4 kB  0.9991  /p/small.jpg",
        "",
        "1 group of duplicates at ≥ 0.95: 2 images, 1 besides the ones to keep (nothing was deleted)",
    ]
    [exact] = group_exact([["/p/big.jpg", "/p/small.jpg"]], facts_of(big, small))
    assert as_text([exact], None).splitlines() == [
        f"group 1: 2 exact copies, keep: {reason}",
        "* keep  4000x3000    5.1 MB  /p/big.jpg",
        "          800x600  120.4 kB  /p/small.jpg",
        "",
        "1 group of exact copies: 2 images, 1 besides the ones to keep (nothing was deleted)",
    ]
    assert as_json([exact])[0]["exact"] is True and as_json([exact])[0]["images"][1]["score"] == 1.0
    assert as_text([], 0.95) == "no duplicates at ≥ 0.95" and as_text([], None) == "no exact copies"
    assert as_csv([]) == "group,path,keep,width,height,size,score,reason,decision"


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


# -- one file under two names: a symbolic link and its target, two hard links (real files) -----------


@dataclass(frozen=True)
class Names:
    target: str  # a photo
    link: str  # a symbolic link to it, its path the shortest
    hard: str  # a hard link of it
    copy: str  # a real copy: another file with the same bytes


@pytest.fixture
def names(tmp_path: Path) -> Names:
    (tmp_path / "photos").mkdir()
    target = tmp_path / "photos" / "IMG_1.jpg"
    target.write_bytes(b"\xff\xd8 the same bytes")
    link, hard, copy = tmp_path / "L.jpg", tmp_path / "photos" / "IMG_1-hardlink.jpg", tmp_path / "photos" / "B.jpg"
    link.symlink_to(target)
    os.link(target, hard)
    shutil.copyfile(target, copy)
    return Names(str(target), str(link), str(hard), str(copy))


def test_a_symlink_and_its_target_or_two_hard_links_are_one_file_never_a_pair(names: Names) -> None:
    one_file = [names.target, names.link, names.hard]
    facts = facts_of(*(image(path) for path in one_file))
    links = [Link.between(a, b, 1.0) for a in one_file for b in one_file if a < b]

    assert group_links(links, facts, threshold=0.95) == []
    assert group_exact([sorted(one_file)], facts) == []


def test_a_link_is_listed_with_its_file_and_never_kept(names: Names) -> None:
    everything = [names.target, names.link, names.hard, names.copy]
    facts = facts_of(*(image(path) for path in everything))  # all equal but their names
    links = [Link.between(a, b, 1.0) for a in everything for b in everything if a < b]

    for group in [*group_links(links, facts, threshold=0.95), *group_exact([sorted(everything)], facts)]:
        # B.jpg and L.jpg have the shortest paths, but L.jpg is the target under another name and B.jpg a copy:
        # the pair is the target (its shortest name that is no link) and B.jpg.
        assert paths(group) == [names.copy, names.target] and group.reason == "shorter path"
        assert group.same_file == {names.target: tuple(sorted([names.hard, names.link]))}
        assert f"        = {names.link} (the same file)" in as_text([group], 0.95).splitlines()
        assert as_json([group])[0]["images"][1]["same_file"] == sorted([names.hard, names.link])

    # The target not indexed (an excluded folder): its link is a photo, but a copy that is a file keeps.
    without_target = {path: facts[path] for path in (names.link, names.copy)}
    [group] = group_links([Link.between(names.link, names.copy, 1.0)], without_target, threshold=0.95)
    assert paths(group) == [names.copy, names.link] and group.reason == "a file, not a symbolic link like L.jpg"


# -- find_duplicates on each backend (the embedded store and the Neo4j stand-in) ---------------------


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


def test_same_content_groups_and_exact_copies_on_each_backend(embedded_or_stand_in_store: GraphStore) -> None:
    store = embedded_or_stand_in_store
    records = [
        make_record("/lib/b/one.jpg", axis(0), sha256="1" * 64),
        make_record("/lib/a/one.jpg", axis(0), sha256="1" * 64),
        make_record("/lib/alone.jpg", axis(1), sha256="2" * 64),
        make_record("/lib/three-c.jpg", axis(2), sha256="3" * 64, size=10),
        make_record("/lib/three-a.jpg", axis(2), sha256="3" * 64, size=10),
        make_record("/lib/three-b.jpg", axis(2), sha256="3" * 64, size=10),
        make_record("/lib/look-alike.jpg", angled(0.999, 2), sha256="4" * 64),  # like three-*, not the same
    ]
    store.upsert(records)  # not linked: exact copies need no links

    assert list(store.same_content_groups()) == [
        ["/lib/a/one.jpg", "/lib/b/one.jpg"], ["/lib/three-a.jpg", "/lib/three-b.jpg", "/lib/three-c.jpg"]]
    groups = find_exact_copies(store)
    assert [paths(g) for g in groups] == [
        ["/lib/three-a.jpg", "/lib/three-b.jpg", "/lib/three-c.jpg"], ["/lib/a/one.jpg", "/lib/b/one.jpg"]]
    assert all(g.exact and g.scores == (1.0,) * len(g.images) for g in groups)
    assert find_duplicates(store, 0.95) == []  # no links: nothing looks alike
    store.remove(["/lib/three-a.jpg", "/lib/three-b.jpg"])
    assert list(store.same_content_groups()) == [["/lib/a/one.jpg", "/lib/b/one.jpg"]]


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
    # The full-size original and its exact copy tie on pixels and bytes: the older file wins.
    assert group.keep == photo_library.original == str(photo_library.root / "2024" / "astronaut.png")
    assert group.reason.startswith("older file: modified ")
    assert paths(group)[1] == str(photo_library.root / "backup" / "astronaut.png")  # the best score: 1
    assert sorted((i.width, i.height) for i in group.images) == [(256, 256), (384, 384), (512, 512), (512, 512)]
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
    assert lines[0].startswith("group 1: 4 images, keep: older file: modified ")
    assert lines[1].startswith("* keep  512x512") and lines[1].endswith(f"  {photo_library.original}")
    assert all(PHOTO_THRESHOLD <= float(line.split()[3]) <= 1.0 for line in lines[2:5])  # each one's score
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
    assert rows[0]["reason"].startswith("older file: modified ") and rows[0]["score"] == "1.000000"


def test_cli_duplicates_exact_groups_only_identical_files_and_follows_prefer_folders(
        cli_env: dict[str, str], photo_library: PhotoLibrary) -> None:
    backup = str(photo_library.root / "backup" / "astronaut.png")  # the byte-for-byte copy; the others are resized

    [group] = json.loads(imgwatch(cli_env, "duplicates", "--exact", "--json").stdout)
    assert [(i["path"], i["keep"], i["score"]) for i in group["images"]] == [
        (photo_library.original, True, 1.0), (backup, False, 1.0)]
    assert group["exact"] is True and group["reason"].startswith("older file: modified ")
    text = imgwatch(cli_env, "duplicates", "--exact").stdout.splitlines()
    assert text[0].startswith("group 1: 2 exact copies, keep: older file") and text[1].endswith(photo_library.original)
    assert text[-1] == "1 group of exact copies: 2 images, 1 besides the ones to keep (nothing was deleted)"

    preferring = {**cli_env, "IMGWATCH_DUPLICATES_PREFER_FOLDERS": str(photo_library.root / "backup")}
    [group] = json.loads(imgwatch(preferring, "duplicates", "--exact", "--json").stdout)
    assert group["keep"] == backup and group["reason"] == f"in a preferred folder: {photo_library.root / 'backup'}"

    both = imgwatch(cli_env, "duplicates", "--exact", "--threshold", "0.99", check=False)
    assert both.returncode == 2 and "--exact and --threshold exclude each other" in both.stderr


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
