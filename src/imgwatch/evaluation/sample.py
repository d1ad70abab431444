"""Which photos `imgwatch eval` edits: N photos drawn at random (repeatably, by seed) from the
store's images or from a folder, each content once; and, for a model whose vectors the store does
not hold, up to K other photos of the same library to search among (distractors)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from imgwatch.errors import ImgwatchError
from imgwatch.files import PathFilter, walk_images
from imgwatch.store import GraphStore

MIN_PHOTOS = 2  # a copy must have another photo to be told apart from
_LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class Sample:
    originals: list[str]  # the photos eval makes copies of
    distractors: list[str]  # other photos of the library, none with an original's content
    library: int  # how many photos the library has
    source: str  # where they came from: "the store" or a folder


def sample_store(store: GraphStore, size: int, seed: int, distractors: int) -> Sample:
    """``size`` of the store's images and ``distractors`` others; read-only."""
    paths = sorted(state.path for state in store.file_states())

    def contents(chosen: list[str]) -> dict[str, str]:
        return {path: image.sha256 for path, image in store.get_many(chosen).items()}

    return _sample(paths, contents, size, seed, distractors, "the store")


def sample_folder(folder: str, path_filter: PathFilter, size: int, seed: int, distractors: int) -> Sample:
    """``size`` of the photos below ``folder`` (those with watch.extensions) and ``distractors`` others."""
    if not os.path.isdir(folder):
        raise ImgwatchError(f"cannot evaluate on {folder}: it is not a folder (check the path)")
    paths = sorted(path for path, _stat in walk_images(folder, path_filter, [folder]))
    if not paths:
        raise ImgwatchError(f"no photos below {folder} (none with the extensions in watch.extensions): "
                            "pass a folder of photos")
    return _sample(paths, _hashed, size, seed, distractors, folder)


def _hashed(paths: list[str]) -> dict[str, str]:
    found = {}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                found[path] = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError:
            continue  # gone or unreadable: not drawn
    return found


def _sample(paths: list[str], contents: Callable[[list[str]], dict[str, str]], size: int, seed: int,
            distractors: int, source: str) -> Sample:
    if size < MIN_PHOTOS:
        raise ImgwatchError(f"cannot evaluate on {size} photo(s): eval needs at least {MIN_PHOTOS} (--sample)")
    shuffled = list(paths)
    random.Random(seed).shuffle(shuffled)
    drawn = list(islice(_distinct(shuffled, contents), size + distractors))
    if len(drawn) < MIN_PHOTOS:
        raise ImgwatchError(f"{source} has {len(drawn)} distinct photo(s) that can be read: eval needs at least "
                            f"{MIN_PHOTOS} to tell a copy's original from another photo")
    return Sample(drawn[:size], drawn[size:], len(paths), source)


def _distinct(paths: list[str], contents: Callable[[list[str]], dict[str, str]]) -> Iterator[str]:
    """``paths`` in order, each content once (a copy of a drawn photo would be a second original)."""
    seen: set[str] = set()
    for chunk in _chunks(paths, _LOOKUP_CHUNK):
        found = contents(chunk)
        for path in chunk:
            sha256 = found.get(path)
            if sha256 is not None and sha256 not in seen:
                seen.add(sha256)
                yield path


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
