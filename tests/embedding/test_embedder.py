"""Embedder over real files: good, broken, missing and unchanged ones mixed together."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from imgwatch.embedding import (
    EMBEDDING_DIM,
    DecodeError,
    Embedded,
    Embedder,
    EmbeddingModel,
    Failed,
    Missing,
    Unchanged,
)
from imgwatch.embedding.embedder import REUSE_LOOKUP_FILES

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")



@pytest.fixture(scope="module")
def photo_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for index, name in enumerate(PHOTOS):
        # Mix formats so both the JPEG draft path and the generic path are used.
        path = folder / (f"{name}.png" if index % 2 else f"{name}.jpg")
        photo(name).save(path, quality=90)  # quality is ignored for PNG
        paths[name] = str(path)
    return paths


@pytest.fixture()
def embedder(calibrated_model: EmbeddingModel) -> Iterator[Embedder]:
    # batch_size 2 with 5+ files exercises full batches, a partial tail and the read-ahead window.
    with Embedder(calibrated_model, batch_size=2, decode_threads=2) as instance:
        yield instance


@pytest.fixture(scope="module")
def reference_vectors(calibrated_model: EmbeddingModel, photo_paths: dict[str, str]) -> dict[str, np.ndarray]:
    with Embedder(calibrated_model, batch_size=1, decode_threads=1) as single:
        return {name: single.embed_file(path).vector for name, path in photo_paths.items()}


def test_mixed_good_bad_and_missing_files(
    tmp_path: Path,
    embedder: Embedder,
    photo_paths: dict[str, str],
    reference_vectors: dict[str, np.ndarray],
) -> None:
    good_jpeg = Path(photo_paths["astronaut"]).read_bytes()
    bad = {
        "empty.jpg": b"",
        "half.jpg": good_jpeg[: len(good_jpeg) // 2],
        "notes.jpg": b"not an image at all\n",
        "noise.png": np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
    }
    bad_paths = []
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        bad_paths.append(str(tmp_path / name))
    directory = tmp_path / "a-folder.jpg"
    directory.mkdir()
    missing = str(tmp_path / "deleted.jpg")
    good_paths = list(photo_paths.values())
    # Bad files interleaved with good ones so they share micro-batches.
    paths = [good_paths[0], bad_paths[0], good_paths[1], missing, bad_paths[1], good_paths[2],
             bad_paths[2], str(directory), good_paths[3], bad_paths[3], good_paths[4]]

    results = list(embedder.embed_files(paths))

    assert len(results) == len(paths)
    by_path = {_path_of(result): result for result in results}
    assert set(by_path) == set(paths)
    for name, path in photo_paths.items():
        result = by_path[path]
        assert isinstance(result, Embedded), result
        assert (result.width, result.height) == photo(name).size
        assert result.vector.shape == (EMBEDDING_DIM,) and result.vector.dtype == np.float32
        assert np.linalg.norm(result.vector) == pytest.approx(1.0, abs=1e-5)
        # Batched with broken neighbours, still the same vector as embedded alone.
        np.testing.assert_allclose(result.vector, reference_vectors[name], atol=1e-5)
    for path in bad_paths:
        result = by_path[path]
        assert isinstance(result, Failed), result
        assert result.reason.startswith(f"cannot decode {path}: ")
    unreadable = by_path[str(directory)]
    assert isinstance(unreadable, Failed) and unreadable.reason.startswith(f"cannot read {directory}")
    assert by_path[missing] == Missing(missing)


def test_results_are_deterministic(embedder: Embedder, photo_paths: dict[str, str]) -> None:
    paths = list(photo_paths.values())

    first = list(embedder.embed_files(paths))
    second = list(embedder.embed_files(paths))

    assert [_path_of(r) for r in first] == [_path_of(r) for r in second]
    for a, b in zip(first, second, strict=True):
        assert isinstance(a, Embedded) and isinstance(b, Embedded)
        np.testing.assert_array_equal(a.vector, b.vector)


def test_known_hash_skips_decoding(embedder: Embedder, photo_paths: dict[str, str]) -> None:
    unchanged_path = photo_paths["coffee"]
    changed_path = photo_paths["rocket"]
    known = {
        unchanged_path: hashlib.sha256(Path(unchanged_path).read_bytes()).hexdigest(),
        changed_path: "0" * 64,  # stale hash from an older version of the file
    }

    results = {_path_of(r): r for r in embedder.embed_files([unchanged_path, changed_path], known)}

    unchanged = results[unchanged_path]
    assert isinstance(unchanged, Unchanged)
    assert unchanged.facts.sha256 == known[unchanged_path]
    assert unchanged.facts.size == Path(unchanged_path).stat().st_size
    assert isinstance(results[changed_path], Embedded)


def test_same_image_gives_identical_vector_across_calls(
    embedder: Embedder, photo_paths: dict[str, str]
) -> None:
    first = embedder.embed_file(photo_paths["chelsea"])
    second = embedder.embed_file(photo_paths["chelsea"])

    np.testing.assert_array_equal(first.vector, second.vector)
    assert first.facts == second.facts


def test_each_photo_ranks_itself_first(
    embedder: Embedder, photo_paths: dict[str, str], reference_vectors: dict[str, np.ndarray]
) -> None:
    names = list(reference_vectors)
    matrix = np.stack([reference_vectors[name] for name in names])
    for name, path in photo_paths.items():
        query = embedder.embed_file(path).vector
        scores = matrix @ query
        assert names[int(np.argmax(scores))] == name


def test_resaved_copy_finds_its_original_first(
    tmp_path: Path, embedder: Embedder, reference_vectors: dict[str, np.ndarray]
) -> None:
    # A near-duplicate (smaller, re-encoded) must still rank its own original above the others.
    names = list(reference_vectors)
    matrix = np.stack([reference_vectors[name] for name in names])
    for name in names:
        original = photo(name)
        copy_path = tmp_path / f"{name}-copy.jpg"
        original.resize((original.width * 3 // 4, original.height * 3 // 4)).save(copy_path, quality=70)
        query = embedder.embed_file(str(copy_path)).vector
        assert names[int(np.argmax(matrix @ query))] == name


def test_embed_file_raises_for_bad_and_missing_files(tmp_path: Path, embedder: Embedder) -> None:
    text = tmp_path / "readme.jpg"
    text.write_text("hello")

    with pytest.raises(DecodeError, match="readme.jpg"):
        embedder.embed_file(str(text))
    with pytest.raises(FileNotFoundError):
        embedder.embed_file(str(tmp_path / "nope.jpg"))


def test_stopping_early_leaves_the_embedder_usable(embedder: Embedder, photo_paths: dict[str, str]) -> None:
    results = embedder.embed_files(list(photo_paths.values()) * 4)
    assert isinstance(next(results), Embedded)
    results.close()  # the consumer walks away; pending decodes are cancelled

    again = list(embedder.embed_files(list(photo_paths.values())))
    assert sorted(_path_of(r) for r in again) == sorted(photo_paths.values())
    assert all(isinstance(r, Embedded) for r in again)


def test_stored_contents_are_looked_up_once_for_the_files_read_and_reused_without_the_model(
    embedder: Embedder, photo_paths: dict[str, str], reference_vectors: dict[str, np.ndarray],
) -> None:
    paths = list(photo_paths.values())
    sha256 = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths}
    unchanged, reused = paths[0], paths[1]
    stored = np.full(EMBEDDING_DIM, 0.5, dtype=np.float32)
    asked: list[list[str]] = []

    def lookup(hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        asked.append(list(hashes))
        return {sha256[reused]: (stored, 7, 9)}

    results = {_path_of(r): r for r in embedder.embed_files(paths, {unchanged: sha256[unchanged]}, lookup)}

    assert asked == [[sha256[path] for path in paths[1:]]]  # one call; the unchanged file needs none
    assert isinstance(results[unchanged], Unchanged)
    assert results[reused] == Embedded(results[reused].facts, 7, 9, stored, reused=True)  # type: ignore[union-attr]
    for name, path in photo_paths.items():
        if path not in (unchanged, reused):
            result = results[path]
            assert isinstance(result, Embedded) and not result.reused
            np.testing.assert_allclose(result.vector, reference_vectors[name], atol=1e-5)


def test_a_long_list_of_files_is_looked_up_a_chunk_at_a_time(embedder: Embedder, photo_paths: dict[str, str]) -> None:
    paths = list(photo_paths.values()) * 8  # 40 files: more than one chunk
    stored = {hashlib.sha256(Path(path).read_bytes()).hexdigest(): (np.full(EMBEDDING_DIM, i, dtype=np.float32), 1, 1)
              for i, path in enumerate(photo_paths.values())}
    asked: list[int] = []

    def lookup(hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        asked.append(len(hashes))
        return stored

    results = list(embedder.embed_files(paths, reuse=lookup))

    assert asked == [REUSE_LOOKUP_FILES, len(paths) - REUSE_LOOKUP_FILES]
    assert [_path_of(r) for r in results] == paths  # every one reused, in order
    assert all(isinstance(r, Embedded) and r.reused and r.vector is stored[r.facts.sha256][0] for r in results)


def _path_of(result: Embedded | Unchanged | Failed | Missing) -> str:
    if isinstance(result, Embedded | Unchanged):
        return result.facts.path
    return result.path


def test_several_inference_streams_give_the_same_vectors_as_one(
    calibrated_model: EmbeddingModel, photo_paths: dict[str, str], reference_vectors: dict[str, np.ndarray]
) -> None:
    paths = list(photo_paths.values()) * 3  # 15 paths: several micro-batches per stream
    with Embedder(calibrated_model, batch_size=2, decode_threads=2, streams=3) as parallel:
        results = list(parallel.embed_files(paths))
    assert sorted(_path_of(r) for r in results) == sorted(paths)
    by_name = {path: name for name, path in photo_paths.items()}
    for result in results:
        assert isinstance(result, Embedded)
        np.testing.assert_allclose(result.vector, reference_vectors[by_name[result.facts.path]], atol=1e-5)


@pytest.mark.parametrize(
    ("count", "batch_size", "streams", "expected"),
    [(32, 8, 2, 8), (20, 16, 2, 10), (48, 16, 2, 12), (3, 8, 2, 2), (1, 8, 2, 1), (40, 16, 1, 14)],
)
def test_micro_batches_are_split_evenly_across_streams(
    random_model: EmbeddingModel, count: int, batch_size: int, streams: int, expected: int
) -> None:
    with Embedder(random_model, batch_size=batch_size, streams=streams) as embedder:
        assert embedder.micro_batch_size(count) == expected


def test_the_lookup_runs_in_the_pool_without_holding_up_the_caller_even_with_one_decode_thread(
    random_model: EmbeddingModel, photo_paths: dict[str, str],
) -> None:
    paths = list(photo_paths.values()) * 8  # two chunks
    threads: list[str] = []

    def lookup(hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        threads.append(threading.current_thread().name)
        return {}

    with Embedder(random_model, batch_size=4, decode_threads=1) as one_thread:
        results = list(one_thread.embed_files(paths, reuse=lookup))

    assert [_path_of(r) for r in results] == paths and all(isinstance(r, Embedded) for r in results)
    assert len(threads) == 2 and all(name.startswith("imgwatch-decode") for name in threads)
