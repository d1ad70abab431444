"""Decisions that stick: "not duplicates" and "keep this one", kept by content so that they outlive
rescans, moves and renames; a new copy brings the group back; the CLI records and drops them.

Real files on disk (their content hashes are what decisions hold), vectors chosen by hand so the
groups are known without the model; both backends (embedded, the Neo4j stand-in).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from imgwatch.decisions import decide_keep, decide_not_duplicates, undecide, with_decisions
from imgwatch.duplicates import DuplicateGroup, as_json, as_text, decided_day, find_duplicates, stored_unit_vectors
from imgwatch.errors import ImageNotFound, ImgwatchError
from imgwatch.store import GraphStore, ImageRecord, StoredImage, open_store
from imgwatch.use_cases import duplicates_to_show
from tests.helpers import DIM, MODEL, angled, axis, imgwatch, make_config, make_record, process_env

THRESHOLD = 0.95


def photo(path: Path, vector: np.ndarray, *, pixels: int = 1000) -> ImageRecord:
    """A real file at ``path`` (distinct content) and the record a worker would store for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = f"photo {path.name} {pixels}".encode()
    path.write_bytes(content)
    return make_record(str(path), vector, sha256=hashlib.sha256(content).hexdigest(), width=pixels, height=pixels,
                       size=len(content), mtime_ns=os.stat(path).st_mtime_ns)


def index(store: GraphStore, records: list[ImageRecord]) -> None:
    store.upsert(records)
    store.link(records, threshold=0.8, top_k=10)


def shown(store: GraphStore, show_decided: bool = False) -> tuple[list[DuplicateGroup], int]:
    return duplicates_to_show(store, exact=False, threshold=THRESHOLD, links_threshold=0.8, show_decided=show_decided)


def burst(root: Path) -> list[ImageRecord]:
    """Three shots of one scene: alike at >= 0.98, the first the largest (the rule's keeper)."""
    return [photo(root / "burst" / "1.jpg", axis(0), pixels=4000), photo(root / "burst" / "2.jpg", angled(0.99, 1)),
            photo(root / "burst" / "3.jpg", angled(0.99, 2))]


def test_a_burst_marked_not_duplicates_stays_hidden_after_a_rescan_and_a_move_until_a_new_copy_joins(
        embedded_or_stand_in_store: GraphStore, tmp_path: Path) -> None:
    records = burst(tmp_path)
    index(embedded_or_stand_in_store, records)
    [group], hidden = shown(embedded_or_stand_in_store)
    assert (len(group.images), group.decision, hidden) == (3, None, 0)

    decision = decide_not_duplicates(embedded_or_stand_in_store, [r.path for r in records])
    assert shown(embedded_or_stand_in_store) == ([], 1)

    index(embedded_or_stand_in_store, records)  # a rescan writes the same records again
    assert shown(embedded_or_stand_in_store) == ([], 1)
    moved = str(tmp_path / "elsewhere" / "two.jpg")
    os.makedirs(os.path.dirname(moved))
    os.rename(records[1].path, moved)
    assert embedded_or_stand_in_store.rename_paths([(records[1].path, moved)]) == 1  # as the daemon records a move
    assert shown(embedded_or_stand_in_store) == ([], 1)
    [decided], hidden = shown(embedded_or_stand_in_store, show_decided=True)
    assert decided.decided and decided.decision == decision and hidden == 0
    assert moved in [i.path for i in decided.images]
    assert "decided on " in as_text([decided], THRESHOLD) and ": not duplicates" in as_text([decided], THRESHOLD)

    joining = photo(tmp_path / "new" / "4.jpg", angled(0.985, 3))  # a new content, alike
    index(embedded_or_stand_in_store, [joining])
    [back], hidden = shown(embedded_or_stand_in_store)
    assert hidden == 0 and back.decision == decision and not back.decided and back.new == (joining.path,)
    assert "earlier decision on " in as_text([back], THRESHOLD) and joining.path in as_text([back], THRESHOLD)


def test_a_keep_decision_overrides_the_keeper_rule_and_scores_against_the_kept_one(
        embedded_or_stand_in_store: GraphStore, tmp_path: Path) -> None:
    records = burst(tmp_path)
    index(embedded_or_stand_in_store, records)
    [group], _ = shown(embedded_or_stand_in_store)
    assert group.keep == records[0].path  # the most pixels

    decide_keep(embedded_or_stand_in_store, records[2].path, [records[0].path, records[1].path])
    assert shown(embedded_or_stand_in_store) == ([], 1)
    [kept], _ = shown(embedded_or_stand_in_store, show_decided=True)
    assert kept.keep == records[2].path and kept.reason.startswith("kept by your decision on ")
    # Against 3 (e0·0.99 + e2·0.14): 1 at 0.99, 2 at 0.99² = 0.9801.
    assert [i.path for i in kept.images] == [records[2].path, records[0].path, records[1].path]
    assert kept.scores == pytest.approx((1.0, 0.99, 0.9801), abs=1e-4)
    assert f"decided on {decided_day(kept.decision)}: keep {records[2].path}" in as_text([kept], THRESHOLD)
    [data] = as_json([kept])
    assert data["decision"] == {"kind": "keep", "keep": records[2].path, "decided_at": kept.decision.decided_at,
                                "decided": True, "new": []}


def test_keep_decisions_in_many_groups_read_the_vectors_once(embedded_or_stand_in_store: GraphStore,
                                                             tmp_path: Path) -> None:
    """Each group a "keep" decision gives another keeper is scored again from the vectors: all of
    them in one read, not one per group (a round trip each to a Neo4j server, hundreds in a large library)."""
    scenes = []
    for scene, base in enumerate((0, 5)):  # two bursts, far apart: two groups
        shots = [axis(base), turned(base, 0.99, base + 2), turned(base, 0.99, base + 3)]
        scenes.append([photo(tmp_path / f"scene{scene}" / f"{shot}.jpg", vector, pixels=4000 if shot == 0 else 1000)
                       for shot, vector in enumerate(shots)])
    index(embedded_or_stand_in_store, [record for records in scenes for record in records])
    for records in scenes:
        decide_keep(embedded_or_stand_in_store, records[2].path, [records[0].path, records[1].path])
    reads: list[int] = []

    def counted(images: Sequence[StoredImage]) -> dict[str, np.ndarray]:
        reads.append(len(images))
        return stored_unit_vectors(embedded_or_stand_in_store, images)

    groups = find_duplicates(embedded_or_stand_in_store, THRESHOLD)
    kept, hidden = with_decisions(embedded_or_stand_in_store, groups, show_decided=True, vectors=counted)
    assert reads == [6] and hidden == 0
    assert sorted(group.keep for group in kept) == sorted(records[2].path for records in scenes)
    for group in kept:  # against the kept shot: the first at 0.99, the other at 0.99² = 0.9801
        assert group.scores == pytest.approx((1.0, 0.99, 0.9801), abs=1e-4)


def turned(base: int, cosine: float, other_axis: int) -> np.ndarray:
    """A unit vector whose cosine with e_base is ``cosine``, in the plane of e_base and e_other_axis."""
    vector = np.zeros(DIM, dtype=np.float32)
    vector[base], vector[other_axis] = cosine, np.sqrt(1.0 - cosine * cosine)
    return vector


def test_undecide_brings_the_group_back_and_an_unindexed_path_is_refused(
    embedded_or_stand_in_store: GraphStore, tmp_path: Path,
) -> None:
    records = burst(tmp_path)
    index(embedded_or_stand_in_store, records)
    decide_not_duplicates(embedded_or_stand_in_store, [r.path for r in records])

    assert undecide(embedded_or_stand_in_store, [records[0].path]) == 1
    [group], hidden = shown(embedded_or_stand_in_store)
    assert group.decision is None and hidden == 0
    with pytest.raises(ImageNotFound, match="nowhere.jpg is not indexed"):
        decide_not_duplicates(embedded_or_stand_in_store, [records[0].path, str(tmp_path / "nowhere.jpg")])
    assert embedded_or_stand_in_store.decisions_about([r.sha256 for r in records]) == []


def test_exact_copies_stay_duplicates_whatever_was_said_of_their_content_and_other_photos(
    embedded_or_stand_in_store: GraphStore, tmp_path: Path,
) -> None:
    records = burst(tmp_path)
    copy = tmp_path / "burst" / "1 copy.jpg"
    copy.write_bytes((tmp_path / "burst" / "1.jpg").read_bytes())
    records.append(dataclasses.replace(records[0], path=str(copy), mtime_ns=os.stat(copy).st_mtime_ns))
    index(embedded_or_stand_in_store, records)
    decide_not_duplicates(embedded_or_stand_in_store, [r.path for r in records])

    exact, hidden = duplicates_to_show(embedded_or_stand_in_store, exact=True, threshold=None, links_threshold=0.8,
                                       show_decided=False)
    assert [sorted(image.path for image in group.images) for group in exact] == [sorted([records[0].path, str(copy)])]
    assert hidden == 0
    with pytest.raises(ImgwatchError, match="same content: exact copies are always duplicates"):
        decide_not_duplicates(embedded_or_stand_in_store, [records[0].path, str(copy)])


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_decides_shows_decisions_in_json_and_undecides(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    records = burst(tmp_path / "photos")
    with open_store(make_config(Path(env["IMGWATCH_GENERAL_DATA_DIR"]))) as opened:
        opened.ensure_model(MODEL, DIM)
        index(opened, records)
    paths = [r.path for r in records]

    said = imgwatch(env, "duplicates", "--not-duplicates", *paths).stdout
    assert said.startswith("decided: the 3 images are not duplicates")
    assert json.loads(imgwatch(env, "duplicates", "--json").stdout) == []
    assert "(1 decided group hidden: --all shows them)" in imgwatch(env, "duplicates").stdout
    [group] = json.loads(imgwatch(env, "duplicates", "--all", "--json").stdout)
    assert group["decision"]["kind"] == "not_duplicates" and group["decision"]["decided"] is True
    keeper_row = next(csv.DictReader(io.StringIO(imgwatch(env, "duplicates", "--all", "--csv").stdout)))
    assert keeper_row["decision"].startswith("decided on ") and keeper_row["decision"].endswith(": not duplicates")

    imgwatch(env, "duplicates", "--keep", paths[1], paths[0], paths[2])
    [group] = json.loads(imgwatch(env, "duplicates", "--all", "--json").stdout)
    assert group["keep"] == paths[1] and group["decision"]["kind"] == "keep"

    assert imgwatch(env, "duplicates", "--undecide", paths[2]).stdout.startswith("dropped 1 decision")
    [group] = json.loads(imgwatch(env, "duplicates", "--json").stdout)
    assert group["decision"] is None and group["keep"] == paths[0]

    refused = imgwatch(env, "duplicates", "--not-duplicates", paths[0], str(tmp_path / "nowhere.jpg"), check=False)
    assert refused.returncode != 0 and "nowhere.jpg is not indexed" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
