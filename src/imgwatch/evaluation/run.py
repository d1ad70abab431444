"""`imgwatch eval` from start to end: draw the photos, make the edited copies in a temporary folder,
embed them with each model, search each copy among the library, and sum up (report).

The store is only read: its images are drawn from, and searched for the store's own model.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from imgwatch.config import Config
from imgwatch.errors import ImgwatchError, StoreError, StoreMissing
from imgwatch.evaluation.bursts import Shot, burst_pairs, read_shot
from imgwatch.evaluation.edits import EDITS, Edit
from imgwatch.evaluation.metrics import (
    DEPTH,
    counts_at,
    different_photo_scores,
    rank_of,
    share_at_least,
    suggest_duplicates,
    suggest_links,
    summarise_edit,
)
from imgwatch.evaluation.models import EvalModel, load_eval_model
from imgwatch.evaluation.report import BurstPair, EvalReport, Miss, ModelReport
from imgwatch.evaluation.sample import Sample, sample_folder, sample_store
from imgwatch.evaluation.search import EmbeddedLibrary, Library, StoreLibrary
from imgwatch.files import PathFilter
from imgwatch.progress import TerminalProgress
from imgwatch.use_cases import indexed_model

if TYPE_CHECKING:
    from imgwatch.store import GraphStore

# Copies are made from the photo decoded at this short side or more: a quarter of it is still
# above the model's 256, and a 12 MP photo is not edited at full size for a 224-pixel input.
WORKING_SHORT_SIDE = 1024
SHEET_MISSES = 8  # per model
CURVE_STEP = 0.01  # the JSON's precision/recall rows


@dataclass(frozen=True)
class Copy:
    original: int  # index into the originals
    edit: Edit
    path: str


@dataclass(frozen=True)
class EvalOptions:
    sample: int = 200
    seed: int = 0
    folder: str | None = None
    models: Sequence[str] = ()  # --model settings; none: the store's model
    distractors: int = 1000
    sheet: str | None = None
    edits: Sequence[Edit] = EDITS


def evaluate(config: Config, options: EvalOptions, progress: TextIO | None = None) -> EvalReport:
    """Run the whole evaluation; ``progress``: where a terminal shows the progress bars (stderr)."""
    started = time.monotonic()
    stream = progress or sys.stderr
    with contextlib.ExitStack() as stack:
        store = _store(config, options, stack)
        recorded = None
        if store is not None and (model := store.recorded_model()) is not None:
            recorded = (model[0], store.recorded_weights_file())
        models = [load_eval_model(config, setting, recorded) for setting in options.models or [None]]
        on_store = store is not None and options.folder is None
        wanted_distractors = options.distractors if not (on_store and all(m.in_store_space for m in models)) else 0
        if on_store:
            assert store is not None
            sample = sample_store(store, options.sample, options.seed, wanted_distractors)
        else:
            path_filter = PathFilter.create(config.watch.extensions, config.watch.exclude)
            sample = sample_folder(os.path.abspath(options.folder or ""), path_filter, options.sample, options.seed,
                                   wanted_distractors)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imgwatch-eval-")))
        originals, copies, unreadable = make_copies(sample.originals, options.edits, folder, stream)
        if len(originals) < 2:
            raise ImgwatchError(f"only {len(originals)} of the {len(sample.originals)} drawn photos could be read: "
                                "eval needs at least 2")
        reports = []
        for model in models:
            library_store = store if on_store and model.in_store_space else None
            reports.append(_evaluate_model(model, sample, originals, copies, unreadable, library_store,
                                           options.edits, stream, on_store))
        if options.sheet:
            from imgwatch.evaluation.misses import write_misses_sheet

            write_misses_sheet(reports, options.sheet)
    return EvalReport(sample.source, sample.library, len(originals), options.seed,
                      round(time.monotonic() - started, 1), reports)


def _store(config: Config, options: EvalOptions, stack: contextlib.ExitStack) -> GraphStore | None:
    """The store, read-only: StoreMissing while nothing is indexed. With a folder, the store only
    says which model is the default; without one, the configured weights are."""
    from imgwatch.store import open_store

    if options.folder is None:
        try:
            store = stack.enter_context(open_store(config, create=False))
            indexed_model(store)
        except StoreMissing as exc:
            raise StoreMissing(f"{str(exc).rstrip('.')}: index your photos first (`imgwatch run FOLDER`), or "
                               "evaluate a folder of photos with `imgwatch eval --folder DIR`") from None
        return store
    try:
        return stack.enter_context(open_store(config, create=False))
    except StoreError:
        return None


def make_copies(paths: list[str], edits: Sequence[Edit], folder: Path, stream: TextIO
                 ) -> tuple[list[str], list[Copy], list[str]]:
    """Every edit of every photo, written into ``folder``; the photos that could be read, their
    copies, and the photos that could not."""
    from imgwatch.embedding.decode import read_file, to_rgb
    from imgwatch.photos.reader import open_photo

    def copies_of(index: int) -> list[Copy] | None:
        path = paths[index]
        try:
            _facts, data = read_file(path)
            photo = to_rgb(open_photo(data, path, min_short_side=WORKING_SHORT_SIDE).image)
        except (OSError, ImgwatchError):
            return None
        return [Copy(index, edit, str(edit.write(photo, folder / f"{index:05d}-{edit.name}.jpg"))) for edit in edits]

    made: list[list[Copy] | None] = []
    with ThreadPoolExecutor(max_workers=max(2, len(os.sched_getaffinity(0)))) as pool:
        _note(stream, f"making {len(edits)} edited copies of {len(paths)} photos")
        bar = TerminalProgress(stream)
        bar.show(len(paths))  # the start: the rate counts from here
        for done, result in enumerate(pool.map(copies_of, range(len(paths))), start=1):
            made.append(result)
            bar.show(len(paths) - done)
        bar.close()
    readable = [index for index, result in enumerate(made) if result is not None]
    renumber = {old: new for new, old in enumerate(readable)}
    copies = [Copy(renumber[c.original], c.edit, c.path) for result in made if result is not None for c in result]
    return [paths[i] for i in readable], copies, [p for p, r in zip(paths, made, strict=True) if r is None]


def _note(stream: TextIO, line: str) -> None:
    if stream.isatty():
        stream.write(line + "\n")
        stream.flush()


def _embed(model: EvalModel, paths: list[str], stream: TextIO) -> dict[str, tuple[np.ndarray, str]]:
    """Each readable file's (vector, SHA-256), embedded as a worker embeds it."""
    from imgwatch.embedding import Embedded, Embedder

    _note(stream, f"embedding {len(paths)} photos with {model.identity} on {model.engine.engine}")
    found: dict[str, tuple[np.ndarray, str]] = {}
    bar = TerminalProgress(stream)
    bar.show(len(paths))
    plan = model.plan
    with Embedder(model.engine, plan.batch_size, plan.decode_threads, plan.streams) as embedder:
        for done, result in enumerate(embedder.embed_files(paths), start=1):
            if isinstance(result, Embedded):
                found[result.facts.path] = (result.vector, result.facts.sha256)
            bar.show(len(paths) - done)
    bar.close()
    return found


def _evaluate_model(model: EvalModel, sample: Sample, originals: list[str], copies: list[Copy],
                    unreadable: list[str], store: GraphStore | None, edits: Sequence[Edit],
                    stream: TextIO, on_store: bool) -> ModelReport:
    distractors = [] if store is not None else sample.distractors
    embedded = _embed(model, [*originals, *distractors, *(c.path for c in copies)], stream)
    kept = [i for i, path in enumerate(originals) if path in embedded]  # the model's engine may refuse one
    unreadable = unreadable + [path for path in originals if path not in embedded]
    copies = [c for c in copies if c.original in kept and c.path in embedded]
    if store is not None:
        library: Library = StoreLibrary(store)
        searched = f"the store's {sample.library} indexed photos (its index)"
    else:
        in_library = [p for p in [*(originals[i] for i in kept), *distractors] if p in embedded]
        library = EmbeddedLibrary(in_library, [embedded[p][1] for p in in_library],
                                  np.stack([embedded[p][0] for p in in_library]))
        others = len(in_library) - len(kept)
        searched = (f"the {len(kept)} sampled photos" + (f" and {others} other photos of the library" if others else "")
                    + ", embedded for eval" + (" (the store holds no vectors of this model)" if on_store else ""))

    ranks: dict[str, list[int | None]] = {edit.name: [] for edit in edits}
    scores: dict[str, list[float]] = {edit.name: [] for edit in edits}
    misses = []
    for copy in copies:
        original = originals[copy.original]
        vector, content = embedded[original]
        copy_vector = embedded[copy.path][0]
        score = float(copy_vector @ vector)  # both sides from this engine
        hits = library.search(copy_vector, DEPTH + 1)
        found = [hit.score for hit in hits if hit.content == content]
        others = [hit for hit in hits if hit.content != content]
        rank = rank_of(found[0], [hit.score for hit in others]) if found else None
        ranks[copy.edit.name].append(rank)
        scores[copy.edit.name].append(score)
        if rank != 1 and others:
            misses.append(Miss(copy.edit.name, original, copy.path, rank, score, others[0].path, others[0].score))
    summaries = [summarise_edit(edit.name, ranks[edit.name], scores[edit.name]) for edit in edits]

    positives = np.array([s for edit in edits for s in scores[edit.name]], dtype=np.float32)
    rows = [embedded[originals[i]][0] for i in kept] + [embedded[c.path][0] for c in copies]
    photo_of = list(kept) + [c.original for c in copies]
    negatives = different_photo_scores(np.stack(rows), photo_of)
    duplicates = suggest_duplicates(positives, negatives)
    survived = {s.edit for s in summaries if s.survived}
    links = suggest_links(np.array([s for name in survived for s in scores[name]], dtype=np.float32),
                          None if duplicates is None else duplicates.threshold)
    grid = np.round(np.arange(0, round(1 / CURVE_STEP) + 1) * CURVE_STEP, 6)
    misses.sort(key=lambda m: (m.rank is not None, -(m.rank or 0), m.score))
    return ModelReport(
        model.setting, model.identity, model.engine.engine, searched, summaries, len(positives), len(negatives),
        counts_at(positives, negatives, grid), duplicates, links,
        share_at_least(negatives, links) if links is not None else 0.0,
        _bursts(library, [(originals[i], *embedded[originals[i]]) for i in kept]), misses, unreadable)


def _bursts(library: Library, originals: list[tuple[str, np.ndarray, str]]) -> list[BurstPair]:
    """Pairs of burst shots among the sampled photos and their nearest photos in the library."""
    shots: dict[str, Shot | None] = {}

    def shot(path: str) -> Shot | None:  # each file's EXIF read once
        if path not in shots:
            shots[path] = read_shot(path)
        return shots[path]

    scored = {}
    candidates = []
    for path, vector, content in originals:
        mine = shot(path)
        if mine is None:
            continue
        for hit in library.search(vector, DEPTH + 1):
            other = shot(hit.path) if hit.content != content else None
            if other is not None:
                candidates.append((mine, other))
                scored[frozenset((path, hit.path))] = hit.score
    return [BurstPair(one.path, other.path, round(scored[frozenset((one.path, other.path))], 6))
            for one, other in burst_pairs(candidates)]
