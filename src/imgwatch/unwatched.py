"""Images below no watched folder: reported by `imgwatch doctor`, removed by `imgwatch forget`.

A folder taken out of general.roots keeps its images in the store: they stay searchable, and
those whose files are deleted afterwards are never removed (nobody watches them). imgwatch
does not drop them by itself: a store may be shared by daemons that watch other folders, and
a share that is gone for now must not empty the index. So dropping them is the user's call.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from imgwatch.errors import StillWatched
from imgwatch.files import root_of
from imgwatch.store import GraphStore
from imgwatch.workqueue import FailureLedger
from imgwatch.workqueue.failures import select_failed

REMOVE_BATCH = 1000  # paths per store.remove call: one short write transaction each
FOLDERS_SHOWN = 5


@dataclass(frozen=True)
class Unwatched:
    """How many stored images lie below no watched root, and the folders holding most of them."""

    images: int
    folders: dict[str, int] = field(default_factory=dict)  # parent folder → images, most first
    remedy: str = "`imgwatch forget FOLDER` removes them from the store (the files are not touched)"


@dataclass(frozen=True)
class Forgotten:
    images: int
    failures: int | None  # failed-file records cleared; None when the queue could not be reached


def find_unwatched(store: GraphStore, roots: Sequence[str]) -> Unwatched:
    """The stored images outside ``roots`` (one pass over the store's paths)."""
    parents: Counter[str] = Counter()
    for state in store.file_states():
        if root_of(state.path, roots) is None:
            parents[os.path.dirname(state.path)] += 1
    return Unwatched(sum(parents.values()), dict(parents.most_common(FOLDERS_SHOWN)))


def check_not_watched(folder: str, roots: Iterable[str]) -> None:
    """StillWatched when ``folder`` is a watched root, lies inside one or holds one."""
    for root in roots:
        if root_of(folder, [root]) is not None:
            where = "it is a watched folder" if folder == root else f"it is inside the watched folder {root}"
            advice = ("take it out of the watched folders (general.roots, or the folders given to `imgwatch run`) "
                      "and restart imgwatch first, or delete or move the files")
        elif root_of(root, [folder]) is not None:
            where = f"it holds the watched folder {root}"
            advice = "forget the unwatched folders inside it one by one"
        else:
            continue
        raise StillWatched(f"cannot forget {folder}: {where}, whose files would be indexed again; {advice}")


def watched_roots(configured: Sequence[str], announced: Sequence[str]) -> list[str]:
    """The folders watched as far as this process can know: general.roots and those the running
    workers announce (a run's ROOT arguments reach its workers, not the config)."""
    return sorted({*configured, *announced})


def forget_folders(store: GraphStore, folders: Sequence[str], roots: Sequence[str],
                   failures: FailureLedger | None) -> Iterator[tuple[str, Forgotten]]:
    """Remove every stored image below each of ``folders`` (their links go with them) and, given
    the ledger, the failure records of files below them; yields each folder's count once done.
    Every folder is checked against ``roots`` before anything is removed. The files are not touched."""
    for folder in folders:
        check_not_watched(folder, roots)
    for folder in folders:
        yield folder, _forget_folder(store, folder, failures)


def _forget_folder(store: GraphStore, folder: str, failures: FailureLedger | None) -> Forgotten:
    removed = 0
    batch: list[str] = []
    for state in store.file_states(under=folder):
        batch.append(state.path)
        if len(batch) == REMOVE_BATCH:
            removed += store.remove(batch)
            batch = []
    removed += store.remove(batch)
    if failures is None:
        return Forgotten(removed, None)
    failed = [f.path for f in select_failed(failures.failed_files(), [folder])]
    failures.clear(failed)
    return Forgotten(removed, len(failed))
