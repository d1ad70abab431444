"""What a person asks of imgwatch, one function each, called alike by the CLI and the web page:
search with a photo, an indexed photo's similar ones, the duplicate groups, forgetting folders.

The callers parse and print (the CLI) or speak HTTP (the web page). The resources are theirs and
passed in: the store, the query model, and a long-running process's decode budget and forward
thread. A search refuses what it can before the model loads (seconds of torch): nothing indexed
yet (StoreMissing), then weights that give another model than the store's, then it loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from imgwatch.cleanup import Cleanup, Destination, Manifest
from imgwatch.cleanup import manifest as manifests
from imgwatch.cleanup.mover import move_back, move_forward, one_cleanup_at_a_time
from imgwatch.cleanup.plan import Progress, plan_moves
from imgwatch.config import Config
from imgwatch.decisions import with_decisions
from imgwatch.duplicates import (
    DuplicateGroup,
    check_threshold,
    find_duplicates,
    find_exact_copies,
    stored_unit_vectors,
)
from imgwatch.embedding.identity import check_query_model, query_weights
from imgwatch.errors import (
    AlreadyRunning,
    CleanupRefused,
    ImageNotFound,
    ImgwatchError,
    QueueUnavailable,
    StoreMissing,
)
from imgwatch.files import canonical_path
from imgwatch.keeper import DEFAULT_RULE, KeeperRule
from imgwatch.ranking import Ranking, rank_others
from imgwatch.unwatched import Forgotten, forget_folders, watched_roots
from imgwatch.workqueue import FailureLedger, WorkQueue
from imgwatch.workqueue.worker_roots import WorkerRoots

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from imgwatch.embedding import EmbeddingEngine
    from imgwatch.photos.budget import DecodeBudget
    from imgwatch.store import GraphStore, Match

MANIFEST_NAME = re.compile(r"moves-[0-9T-]+\.json")
NOTHING_INDEXED = "nothing is indexed yet: there is nothing to compare with"


# -- search with a photo --------------------------------------------------------------------


def indexed_model(store: GraphStore) -> str:
    """The model the store's workers embed with; StoreMissing while nothing is indexed."""
    recorded = store.recorded_model()
    if recorded is None:
        raise StoreMissing(NOTHING_INDEXED)
    return recorded[0]


class QueryModel:
    """The workers' model for queries, loaded on first use and kept for the process: the configured
    model file, else the store's weights unless others are configured (embedding.identity.query_weights).
    ``where`` says how to query again with another model, e.g. "search again" or "start `imgwatch web` again"."""

    def __init__(self, config: Config, where: str) -> None:
        self.config = config
        self.where = where
        self._loaded: EmbeddingEngine | None = None
        self._lock = threading.Lock()  # one load at a time

    def for_store(self, store: GraphStore) -> EmbeddingEngine:
        """The model that embeds in ``store``'s space. Refused before anything loads: StoreMissing
        while nothing is indexed, ModelMismatchError for configured weights of another model,
        WeightsUnavailable when the store's weights file moved or changed."""
        recorded = indexed_model(store)
        with self._lock:
            if self._loaded is not None and self._loaded.identity != recorded:
                self._loaded = None  # the store switched model (`imgwatch reindex`): its new one loads
            if self._loaded is None:
                chosen = query_weights(self.config, recorded, store.recorded_weights_file(), self.where)
                from imgwatch.embedding import load_chosen_model  # torch takes seconds: only once the checks pass

                self._loaded = load_chosen_model(self.config, chosen)
            check_query_model(recorded, self._loaded.identity, self.where)  # the store's model may have changed
            return self._loaded

    def close(self) -> None:
        with self._lock:
            self._loaded = None


def search_with_photo(store: GraphStore, model: QueryModel, data: bytes, name: str, top: int, *,
                      indexed_as: str | None = None, budget: DecodeBudget | None = None,
                      forward: Executor | None = None) -> Ranking:
    """The ``top`` indexed images most like the photo ``data``, the photo itself left out (see
    ranking; ``indexed_as``: its indexed path, if it is one). It is decoded with the workers'
    limits: ``name`` tells a RAW by its extension and names the photo in errors. Refusals come
    before anything is decoded. A long-running process passes its decode ``budget`` and the one
    ``forward`` thread every forward pass runs on."""
    sha256 = hashlib.sha256(data).hexdigest()
    return _in_one_space(store, model, lambda engine: _ranked(store, engine, data, sha256, name, top, indexed_as,
                                                             budget, forward))


def search_with_file(store: GraphStore, model: QueryModel, path: str, top: int) -> Ranking:
    """:func:`search_with_photo` with the file at ``path`` (any file; it need not be indexed), read
    as a worker reads one, after the model's refusals; when it is indexed it is left out."""
    model.for_store(store)
    from imgwatch.embedding.decode import read_file  # torch: only once the checks pass

    absolute = os.path.abspath(path)
    facts, data = read_file(absolute)  # regular files only, up to MAX_FILE_BYTES; hashed as it is read
    return _in_one_space(store, model, lambda engine: _ranked(store, engine, data, facts.sha256, absolute, top,
                                                             canonical_path(path), None, None))


def _in_one_space(store: GraphStore, model: QueryModel, rank: Callable[[EmbeddingEngine], Ranking]) -> Ranking:
    """``rank(engine)`` with the store's model, once more should the store switch model meanwhile
    (`imgwatch reindex`): a query embedded by one model is never ranked among another's vectors."""
    engine = model.for_store(store)
    ranking = rank(engine)
    if indexed_model(store) != engine.identity:
        ranking = rank(model.for_store(store))
    return ranking


def _ranked(store: GraphStore, engine: EmbeddingEngine, data: bytes, sha256: str, name: str, top: int,
            indexed_as: str | None, budget: DecodeBudget | None, forward: Executor | None) -> Ranking:
    from imgwatch.embedding.decode import decode_for_model

    with budget.admit(data, name) if budget is not None else contextlib.nullcontext():
        tensor, _width, _height = decode_for_model(data, name, engine.preprocessing)
    batch = tensor.unsqueeze(0)
    vectors = engine.embed(batch) if forward is None else forward.submit(engine.embed, batch).result()
    return rank_others(store, vectors[0], top, sha256, indexed_as)


# -- similar, duplicates -----------------------------------------------------------------------


def similar(store: GraphStore, path: str, top: int | None = None, *, reasons_from: Config | None = None) -> list[Match]:
    """The SIMILAR_TO neighbours of the indexed ``path``, best first (no model needed); ImageNotFound
    when it is not indexed, or, given the config whose failed-file ledger to ask, why it failed."""
    try:
        return store.neighbours(path)[:top]
    except ImageNotFound:
        if reasons_from is not None:
            _raise_failure_reason(reasons_from, path)
        raise


def _raise_failure_reason(config: Config, path: str) -> None:
    """Raise the reason ``path`` could not be indexed, when the failed-file ledger has one."""
    from imgwatch.display import reason_beside

    try:
        failed = FailureLedger.for_queue(WorkQueue.from_config(config)).get(path)
    except QueueUnavailable:
        return  # the store's answer stands alone
    if failed is not None:
        raise ImgwatchError(f"{path} is not indexed: it failed: {reason_beside(failed.reason, path)} "
                            f"(once the file is fixed it is indexed again; or `imgwatch retry {path}`)")


def duplicate_groups(store: GraphStore, threshold: float, links_threshold: float,
                     rule: KeeperRule = DEFAULT_RULE) -> list[DuplicateGroup]:
    """The look-alike groups at ``threshold``, biggest first (see duplicates); ThresholdBelowLinks
    below ``links_threshold`` (links.threshold), where there are no links to group."""
    check_threshold(threshold, links_threshold)
    return find_duplicates(store, threshold, rule)


def exact_copies(store: GraphStore, rule: KeeperRule = DEFAULT_RULE) -> list[DuplicateGroup]:
    """The groups of images with the same content, biggest first (no model, no links)."""
    return find_exact_copies(store, rule)


def duplicates_to_show(store: GraphStore, *, exact: bool, threshold: float, links_threshold: float,
                       rule: KeeperRule = DEFAULT_RULE, show_decided: bool = False) -> tuple[list[DuplicateGroup], int]:
    """The exact-copy or look-alike groups with the decisions about them (see decisions), those a
    decision settles left out unless ``show_decided``; and how many were left out."""
    groups = exact_copies(store, rule) if exact else duplicate_groups(store, threshold, links_threshold, rule)
    return with_decisions(store, groups, show_decided=show_decided,
                          vectors=lambda images: stored_unit_vectors(store, images))


def keeper_rule(config: Config) -> KeeperRule:
    """The keeper rule the [duplicates] section sets."""
    return KeeperRule.from_settings(config.duplicates.prefer_formats, config.duplicates.prefer_folders)


# -- clearing duplicates: move, undo --------------------------------------------------------


def move_duplicates(config: Config, store: GraphStore, groups: Sequence[DuplicateGroup], destination: Destination,
                    *, dry_run: bool = False, progress: Progress | None = None) -> Cleanup:
    """Move every non-keeper of ``groups`` to ``destination`` (see cleanup): checks every file first,
    writes the manifest, moves, and keeps the store in step. A dry run only plans. ``progress``
    hears of the files checked, then moved."""
    roots = watched_now(config)
    if dry_run:
        moves, refused = plan_moves(groups, roots, destination, progress)
        return Cleanup(tuple(moves), tuple(refused), None, dry_run=True)
    folder = config.data_dir.cleanups
    with one_cleanup_at_a_time(folder):
        moves, refused = plan_moves(groups, roots, destination, progress)
        if not moves:
            return Cleanup((), tuple(refused), None)
        created = time.time()
        planned = Manifest(manifests.new_manifest_path(folder, created), destination.in_manifest, created, "moving",
                           tuple(moves))
        manifests.write(planned)  # before the first file moves
        done = move_forward(planned, store, roots, progress)
    return dataclasses.replace(done, refused=(*refused, *done.refused))


def undo_cleanup(config: Config, store: GraphStore, manifest: str | os.PathLike[str]) -> Cleanup:
    """Put back every file the clean-up of ``manifest`` moved (see cleanup.mover.move_back)."""
    with one_cleanup_at_a_time(config.data_dir.cleanups):
        found = manifests.read(manifest)
        if found.state == "undone":
            return Cleanup((), (), found.path)
        return move_back(found, store, watched_now(config))


def finish_unfinished(config: Config, store: GraphStore) -> list[Cleanup]:
    """Finish the clean-ups (or undos) a kill or crash stopped part-way, oldest first."""
    folder = config.data_dir.cleanups
    finished = []
    with one_cleanup_at_a_time(folder):
        stopped = manifests.unfinished(folder)
        roots = watched_now(config) if stopped else []  # asks the queue: only when there is something to finish
        for manifest in stopped:
            carry = move_forward if manifest.state == "moving" else move_back
            finished.append(carry(manifest, store, roots))
    return finished


def manifest_by_id(config: Config, manifest_id: str) -> Path:
    """The manifest the web page names by its file name (never a path from a client)."""
    path = config.data_dir.cleanups / manifest_id
    if not MANIFEST_NAME.fullmatch(manifest_id) or not path.is_file():
        raise CleanupRefused(f"no clean-up {manifest_id!r} in {config.data_dir.cleanups}")
    return path


def page_destination(config: Config) -> Destination:
    """Where the web page moves copies: [duplicates] move_to, or the trash when it is empty."""
    return Destination.folder(config.duplicates.move_to) if config.duplicates.move_to else Destination.trash()


def watched_now(config: Config) -> list[str]:
    """general.roots and the folders running workers announce (when the queue answers)."""
    configured = [str(path) for path in config.root_paths]
    try:
        announced = WorkerRoots.for_queue(WorkQueue.from_config(config)).current()
    except QueueUnavailable:
        announced = []
    return watched_roots(configured, announced)


# -- forget --------------------------------------------------------------------------------------


def forget(config: Config, folders: Sequence[str]) -> Iterator[tuple[str, Forgotten]]:
    """Remove the images below ``folders`` from the store (see unwatched.forget_folders), refusing
    a watched one; yields each folder's counts once done.

    Watched are general.roots and the folders the running workers announce, so the queue is asked.
    Out of reach: an external queue is refused (workers elsewhere may index any folder); the embedded
    one is not running when this can take the data dir's run lock, so nothing indexes but general.roots,
    and the failed-file records stay (Forgotten.failures is None); otherwise `imgwatch run` holds it.
    """
    configured = [str(p) for p in config.root_paths]
    try:
        work_queue = WorkQueue.from_config(config)
        announced = WorkerRoots.for_queue(work_queue).current()
    except QueueUnavailable as exc:
        if config.queue.redis_url:  # workers elsewhere may index folders this config does not name
            raise QueueUnavailable(f"{exc}; forget needs the queue to learn which folders running workers "
                                   "index: try again once it is reachable") from None
        try:  # embedded queue: nothing runs while this holds the data dir's run lock
            with config.data_dir.exclusive_run_lock():
                yield from _forget(config, folders, configured, None)
        except AlreadyRunning:
            raise QueueUnavailable(f"`imgwatch run` is using {config.data_dir.path} but its queue is out of reach "
                                   f"({exc}), so which folders it indexes is unknown: try again in a moment") from None
        return
    yield from _forget(config, folders, watched_roots(configured, announced), FailureLedger.for_queue(work_queue))


def _forget(config: Config, folders: Sequence[str], roots: list[str],
            failures: FailureLedger | None) -> Iterator[tuple[str, Forgotten]]:
    from imgwatch.store import open_store

    with open_store(config, create=False) as store:
        yield from forget_folders(store, folders, roots, failures)
