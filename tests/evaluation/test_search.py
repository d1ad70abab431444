"""Where a copy's original is looked for: the store's search, or the photos eval embedded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgwatch.evaluation.search import EmbeddedLibrary, StoreLibrary
from imgwatch.store import open_store
from tests.helpers import DIM, MODEL, angled, axis, make_config, make_record


def test_both_libraries_answer_best_first_with_each_photos_content(tmp_path: Path) -> None:
    vectors = [axis(0), angled(0.9, 1), angled(0.5, 2)]
    contents = ["a" * 64, "b" * 64, "c" * 64]
    paths = ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"]
    in_memory = EmbeddedLibrary(paths, contents, np.stack(vectors)).search(axis(0), 2)
    with open_store(make_config(tmp_path / "data")) as store:
        store.ensure_model(MODEL, DIM)
        store.upsert([make_record(p, v, sha256=c) for p, v, c in zip(paths, vectors, contents, strict=True)])
        stored = StoreLibrary(store).search(axis(0), 2)
    for hits in (in_memory, stored):
        assert [(h.path, h.content) for h in hits] == [("/p/a.jpg", "a" * 64), ("/p/b.jpg", "b" * 64)]
        assert [round(h.score, 4) for h in hits] == [1.0, 0.9]
