"""`imgwatch migrate`: a store copied into another backend is the same store.

Runs embedded → embedded always, and embedded ↔ Neo4j when the test server is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgwatch.errors import ReindexConflict
from imgwatch.store import GraphStore, ModelMismatchError, open_store
from imgwatch.store.migrate import migrate
from tests.helpers import DIM, MODEL, WEIGHTS_FILE, axis, backend_config, make_record, random_unit_vectors, wipe_neo4j

COUNT = 40


def open_fresh(kind: str, tmp_path: Path) -> GraphStore:
    config = backend_config(kind, tmp_path)
    if kind == "neo4j":
        wipe_neo4j(config)
    return open_store(config)


@pytest.fixture(params=[("embedded", "embedded"), ("embedded", "neo4j"), ("neo4j", "embedded")],
                ids=lambda pair: "-to-".join(pair))
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[GraphStore, GraphStore]]:
    source_kind, target_kind = request.param
    source = open_fresh(source_kind, tmp_path / "source")
    target = open_fresh(target_kind, tmp_path / "target")
    try:
        yield source, target
    finally:
        source.close()
        target.close()


def fill(store: GraphStore) -> list[str]:
    store.ensure_model(MODEL, DIM, WEIGHTS_FILE)
    vectors = random_unit_vectors(COUNT, seed=7)
    records = [make_record(f"/photos/{i:03d}.jpg", vectors[i], size=i, mtime_ns=1000 + i) for i in range(COUNT)]
    store.upsert(records)
    store.link(records[:30], threshold=0.2, top_k=3)  # the last ten stay unlinked
    return [r.path for r in records]


def assert_same_store(source: GraphStore, target: GraphStore, paths: list[str]) -> None:
    assert (target.stats().images, target.stats().links) == (source.stats().images, source.stats().links)
    assert (target.stats().model, target.stats().dim) == (MODEL, DIM)
    assert target.recorded_weights_file() == WEIGHTS_FILE  # commands with no weights configured use it there too
    assert target.get_many(paths) == source.get_many(paths)  # facts, linked flags, indexed_at
    for path in paths:
        assert [(m.path, round(m.score, 5)) for m in target.neighbours(path)] == \
               [(m.path, round(m.score, 5)) for m in source.neighbours(path)]
    copied = {image.record.path: image for image in target.export_images("", 1000)}
    for image in source.export_images("", 1000):
        twin = copied[image.record.path]
        assert (twin.record.embedding == image.record.embedding).all()  # float32, bit for bit
        assert twin.linked == image.linked and twin.pick_bar == pytest.approx(image.pick_bar)
        assert twin.indexed_at == image.indexed_at is not None  # when it was embedded, not copied


def test_migration_copies_images_embeddings_and_links(stores: tuple[GraphStore, GraphStore]) -> None:
    source, target = stores
    paths = fill(source)
    assert source.stats().links > 0
    progress: dict[str, int] = {}

    report = migrate(source, target, page_size=7,
                     progress=lambda phase, n: progress.__setitem__(phase, progress.get(phase, 0) + n))

    assert (report.images_copied, report.images_skipped) == (COUNT, 0)
    assert report.links_copied == source.stats().links
    assert progress == {"images": COUNT, "links": source.stats().links}
    assert_same_store(source, target, paths)
    # The copy searches like the original, and re-linking there keeps the same links
    # (the neighbours' pick bars came along).
    query = random_unit_vectors(1, seed=99)[0]
    assert [m.path for m in target.nearest(query, 5)] == [m.path for m in source.nearest(query, 5)]
    relinked = make_record(paths[3], random_unit_vectors(COUNT, seed=7)[3])
    source.link([relinked], threshold=0.2, top_k=3)
    target.link([relinked], threshold=0.2, top_k=3)
    assert {m.path for m in target.neighbours(paths[3])} == {m.path for m in source.neighbours(paths[3])}


def test_an_interrupted_migration_resumes_where_it_stopped(stores: tuple[GraphStore, GraphStore]) -> None:
    source, target = stores
    paths = fill(source)

    class Interrupted(Exception):
        pass

    def stop_after_two_pages(phase: str, count: int) -> None:
        stop_after_two_pages.pages += 1  # type: ignore[attr-defined]
        if stop_after_two_pages.pages == 2:  # type: ignore[attr-defined]
            raise Interrupted

    stop_after_two_pages.pages = 0  # type: ignore[attr-defined]
    with pytest.raises(Interrupted):
        migrate(source, target, page_size=10, progress=stop_after_two_pages)
    assert target.stats().images == 20 and target.stats().links == 0

    report = migrate(source, target, page_size=10)

    assert (report.images_copied, report.images_skipped) == (COUNT - 20, 20)
    assert_same_store(source, target, paths)
    again = migrate(source, target, page_size=10)  # a finished migration repeated changes nothing
    assert (again.images_copied, again.images_skipped) == (0, COUNT)
    assert_same_store(source, target, paths)


def test_a_target_holding_another_models_embeddings_is_refused(stores: tuple[GraphStore, GraphStore]) -> None:
    source, target = stores
    fill(source)
    target.ensure_model("other-model/v2", DIM)
    target.upsert([make_record("/elsewhere/x.jpg", axis(0), model="other-model/v2")])

    with pytest.raises(ModelMismatchError):
        migrate(source, target)

    assert target.stats().images == 1


def test_a_source_changing_model_is_refused_before_anything_is_copied(
    stores: tuple[GraphStore, GraphStore],
) -> None:
    source, target = stores
    fill(source)
    source.begin_space("other-model/v2", DIM)

    with pytest.raises(ReindexConflict, match="changing model to other-model/v2 .*imgwatch reindex --abort"):
        migrate(source, target)

    assert target.stats().images == 0


def test_an_empty_source_copies_nothing(stores: tuple[GraphStore, GraphStore]) -> None:
    source, target = stores
    report = migrate(source, target)
    assert (report.images_copied, report.links_copied) == (0, 0)
    assert target.stats().images == 0


def test_duplicate_decisions_go_along_with_when_they_were_made_and_a_rerun_adds_none(
        stores: tuple[GraphStore, GraphStore]) -> None:
    source, target = stores
    paths = fill(source)
    facts = source.get_many(paths)
    burst = source.record_decision("not_duplicates", [facts[p].sha256 for p in paths[:3]], decided_at=1_700_000_000.5)
    kept = source.record_decision("keep", [facts[paths[5]].sha256, facts[paths[4]].sha256])
    every_hash = {image.sha256 for image in facts.values()}

    assert migrate(source, target, page_size=2).decisions_copied == 2  # the burst spans two pages: copied once
    assert set(target.decisions_about(every_hash)) == {burst, kept}
    assert target.decisions_about([facts[paths[4]].sha256])[0].keep == facts[paths[5]].sha256
    migrate(source, target, page_size=2)
    assert set(target.decisions_about(every_hash)) == {burst, kept}
