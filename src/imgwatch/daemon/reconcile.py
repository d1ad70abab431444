"""Reconciling roots against the store: what changed while nobody was watching."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from imgwatch.files import PathFilter, Signature, root_of, signature_of, walk_images
from imgwatch.store import FileState


class StoredFileStates(Protocol):
    """All the daemon reads from the store (a GraphStore is one)."""

    def file_states(self, under: str | None = None) -> Iterator[FileState]: ...


@dataclass(frozen=True)
class KnownFailure:
    """A failed file's ledger record, as reconciliation weighs it."""

    size: int | None
    mtime_ns: int | None
    retry_unchanged: bool = False  # a transient failure with attempts left: retry even if the file is the same


@dataclass
class ReconcilePlan:
    """Paths to enqueue: new or changed files, and stored images whose files are gone."""

    changed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    unchanged: int = 0
    known_failures: int = 0  # failed before, unchanged, not retried
    retried_failures: int = 0  # failed before, unchanged, retried (transient, attempts left)

    @property
    def paths(self) -> list[str]:
        return self.changed + self.gone


def plan_reconcile(
    roots: Sequence[str],
    path_filter: PathFilter,
    stored: Iterable[FileState],
    failed: Mapping[str, KnownFailure | tuple[int, int]] | None = None,
) -> ReconcilePlan:
    """Compare the files below ``roots`` with ``stored`` (already limited to those roots).

    ``failed`` maps paths that failed before to their :class:`KnownFailure` (a bare
    (size, mtime_ns) is a failure not to retry unchanged): a changed file is retried,
    an unchanged one only if ``retry_unchanged``; a vanished one is enqueued so that
    the worker clears its record.
    """
    failed = {path: _known(value) for path, value in (failed or {}).items()}
    on_disk: dict[str, Signature] = {}
    for root in roots:
        for path, st in walk_images(root, path_filter, roots):
            on_disk[path] = signature_of(st)

    plan = ReconcilePlan()
    # A bad file deleted while nobody watched still has its failure record: clear it.
    plan.gone.extend(p for p in failed if p not in on_disk and root_of(p, roots) is not None)
    for state in stored:
        current = on_disk.pop(state.path, None)
        if current is None:
            plan.gone.append(state.path)
        elif current == state.signature:
            plan.unchanged += 1
        else:
            plan.changed.append(state.path)
    for path, signature in on_disk.items():
        known = failed.get(path)
        if known is not None and (known.size, known.mtime_ns) == signature[:2]:
            if not known.retry_unchanged:
                plan.known_failures += 1
                continue
            plan.retried_failures += 1
        plan.changed.append(path)
    plan.changed.sort()
    plan.gone.sort()
    return plan


def _known(value: KnownFailure | tuple[int, int]) -> KnownFailure:
    return value if isinstance(value, KnownFailure) else KnownFailure(*value)


def reconcile_roots(
    roots: Sequence[str],
    path_filter: PathFilter,
    stored: StoredFileStates,
    failed: Mapping[str, KnownFailure | tuple[int, int]] | None = None,
) -> ReconcilePlan:
    """:func:`plan_reconcile` against what ``stored`` holds below ``roots``."""
    states = (state for root in roots for state in stored.file_states(under=root))
    return plan_reconcile(roots, path_filter, states, failed)
