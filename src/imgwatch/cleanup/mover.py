"""Carrying out a manifest, forward (the clean-up) or back (its undo), and keeping the store in step.

One clean-up at a time per data dir (a lock beside the manifests). Each move is a
:func:`transfer`; one that is refused leaves its file in place, says why, and the others go on.
The store follows the files as the daemon would see them: a file moved within the watched
folders is renamed in the store (its vector and links kept, nothing embedded again); one moved
out of them leaves the store, like any removed file. Files an undo brings back into the watched
folders from outside them are indexed again by the daemon (the running one sees them arrive;
`imgwatch run` looks at its start).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from imgwatch.cleanup import manifest as manifests
from imgwatch.cleanup.manifest import Manifest, Move
from imgwatch.cleanup.plan import Progress, Refusal
from imgwatch.cleanup.transfer import transfer
from imgwatch.cleanup.trash import TrashSlot, claim_slot, original_in
from imgwatch.errors import CleanupRefused, ContentChanged, MoveRefused
from imgwatch.files import resolves_inside
from imgwatch.store import GraphStore

STORE_BATCH = 256  # moves told to the store at once


@dataclass(frozen=True)
class Cleanup:
    """What a clean-up (or its undo, or its dry run) did."""

    moves: tuple[Move, ...]  # done (a dry run: to be done)
    refused: tuple[Refusal, ...]  # left in place, each with why
    manifest: Path | None  # None: a dry run, or nothing to move
    dry_run: bool = False
    to_index_again: int = 0  # files an undo brought back into watched folders from outside them

    @property
    def bytes(self) -> int:
        return sum(move.size for move in self.moves)


@contextlib.contextmanager
def one_cleanup_at_a_time(folder: Path) -> Iterator[None]:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CleanupRefused("another clean-up of duplicates is moving files right now (from the command "
                                 "line or the web page); wait for it to finish, then run again") from None
        yield


def move_forward(manifest: Manifest, store: GraphStore, roots: Sequence[str],
                 progress: Progress | None = None) -> Cleanup:
    """Move every file of ``manifest`` (state "moving"); then it lists the moves done (and any refused
    one that left a copy at its target, so that an undo knows of it), state "moved"."""
    done, kept, refused = [], [], []
    follow = _StoreFollower(store, roots)
    for move in manifest.moves:
        if progress is not None:
            progress("moving", 1, len(manifest.moves))
        claimed = False
        try:
            if move.trash_info is not None:
                claimed = claim_slot(_slot(move), manifest.created)
                if not claimed:
                    raise MoveRefused(f"{move.trash_info} was taken by another file meanwhile; run again")
            transfer(move.source, move.target, move.sha256)
        except (MoveRefused, ContentChanged, OSError) as exc:
            refused.append(Refusal(move.source, _why(exc, f"cannot move it to {move.target}")))
            if os.path.lexists(move.target):
                kept.append(move)
            elif claimed and move.trash_info is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(move.trash_info)  # no file came: no entry left in the trash for it
            continue
        done.append(move)
        kept.append(move)
        follow.moved(move.source, move.target)
    follow.flush()
    finished = dataclasses.replace(manifest, state="moved", moves=tuple(kept))
    manifests.write(finished)
    return Cleanup(tuple(done), tuple(refused), finished.path)


def move_back(manifest: Manifest, store: GraphStore, roots: Sequence[str]) -> Cleanup:
    """Put every file of ``manifest`` back where it was (state "undoing", then "undone")."""
    manifests.write(manifest.with_state("undoing"))
    done, refused = [], []
    follow = _StoreFollower(store, roots)
    for move in reversed(manifest.moves):
        try:
            transfer(move.target, move.source, move.sha256)
        except (MoveRefused, ContentChanged, OSError) as exc:
            refused.append(Refusal(move.target, _why(exc, f"cannot move it back to {move.source}")))
            continue
        if move.trash_info is not None and original_in(move.trash_info) == move.trash_path:
            # Only our own entry: a move a kill stopped before its slot was claimed may find another
            # file's entry under the name it had chosen.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(move.trash_info)
        done.append(move)
        follow.moved(move.target, move.source)
    follow.flush()
    state = "undone" if not refused else "moved"  # a partial undo can be run again
    finished = manifest.with_state(state)
    manifests.write(finished)
    return Cleanup(tuple(done), tuple(refused), finished.path, to_index_again=follow.to_index_again)


def _why(refusal: MoveRefused | ContentChanged | OSError, doing: str) -> str:
    """One line on a file left in place: transfer's own words, or what the system said to ``doing``."""
    if isinstance(refusal, OSError):
        return f"{doing}: {refusal.strerror or refusal}; left in place"
    return str(refusal)


def _slot(move: Move) -> TrashSlot:
    assert move.trash_info is not None and move.trash_path is not None
    return TrashSlot(files=move.target, info=move.trash_info, original=move.trash_path)


class _StoreFollower:
    """Tells the store of moves in batches: renamed within the watched folders, removed when moved out."""

    def __init__(self, store: GraphStore, roots: Sequence[str]) -> None:
        self.store, self.roots = store, list(roots)
        self.renames: list[tuple[str, str]] = []
        self.removals: list[str] = []
        self.to_index_again = 0

    def moved(self, old: str, new: str) -> None:
        was_watched, is_watched = resolves_inside(old, self.roots), resolves_inside(new, self.roots)
        if is_watched and was_watched:
            self.renames.append((old, new))
        elif was_watched:
            self.removals.append(old)
        elif is_watched:
            self.to_index_again += 1
        if len(self.renames) + len(self.removals) >= STORE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.renames:
            self.store.rename_paths(self.renames)
        if self.removals:
            self.store.remove(self.removals)
        self.renames, self.removals = [], []
