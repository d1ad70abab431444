"""Which files a clean-up moves where, and which it leaves in place and why: decided before
anything moves, the same for a dry run and for the real one.

Every image of a group but its keeper moves, to a folder (mirroring its path below its root:
``DIR/<root's name>/<path below the root>``) or to the trash of its volume. A group whose keeper
is missing or changed moves nothing; a file that changed since it was indexed (its content hash),
a symbolic link, a file with other names (links), or one whose target is taken stays in place,
each with one line saying why; so does every image of a group decided "not duplicates" (shown
again because a copy joined it: the person said these stay).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from imgwatch.cleanup.manifest import TRASH, Move
from imgwatch.cleanup.transfer import sha256_of
from imgwatch.cleanup.trash import choose_slot
from imgwatch.duplicates import DuplicateGroup
from imgwatch.errors import CleanupRefused
from imgwatch.files import root_of

# Called with the phase ("checking", "moving"), how many more files it went through, and its total.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Destination:
    """Where the copies go: a folder (``path``), or the trash (``path`` None)."""

    path: str | None
    into_watched: bool = False  # a folder inside a watched one: its photos are indexed there again

    @classmethod
    def folder(cls, path: str, *, into_watched: bool = False) -> Destination:
        return cls(os.path.realpath(os.path.expanduser(path)), into_watched)

    @classmethod
    def trash(cls) -> Destination:
        return cls(None)

    @property
    def in_manifest(self) -> str:
        return self.path if self.path is not None else TRASH

    def describe(self) -> str:
        return self.path if self.path is not None else "the trash"


@dataclass(frozen=True)
class Refusal:
    path: str
    reason: str  # one line: why it stays in place


def check_destination(destination: Destination, roots: Sequence[str]) -> None:
    """CleanupRefused when the folder is inside a watched one (unless asked) or cannot be written."""
    if destination.path is None:
        return
    inside = root_of(destination.path, roots)
    if inside is not None and not destination.into_watched:
        raise CleanupRefused(
            f"{destination.path} is inside the watched folder {inside}: the photos moved there would be indexed "
            "again and stay duplicates; choose a folder outside the watched ones (the web page: [duplicates] "
            "move_to), or allow it with --into-watched")
    existing = destination.path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise CleanupRefused(f"cannot create files in {existing}: choose a folder you can write to")


def target_in_folder(folder: str, source: str, roots: Sequence[str]) -> str:
    """``source``'s place below ``folder``: below its root's name, mirroring its path below the root."""
    root = root_of(source, roots)
    if root is None:
        return os.path.join(folder, source.lstrip(os.sep))
    return os.path.join(folder, os.path.basename(root.rstrip(os.sep)), os.path.relpath(source, root))


def plan_moves(groups: Sequence[DuplicateGroup], roots: Sequence[str], destination: Destination,
               progress: Progress | None = None) -> tuple[list[Move], list[Refusal]]:
    """The moves of every non-keeper of ``groups`` and the files left in place (see the module).
    Reads every file involved (content hashes); writes nothing. ``progress`` hears of each group checked."""
    check_destination(destination, roots)
    moves: list[Move] = []
    refused: list[Refusal] = []
    taken: set[str] = set()
    total = sum(len(group.images) for group in groups)
    for group in groups:
        if progress is not None:
            progress("checking", len(group.images), total)
        keeper = group.images[0]
        if group.decision is not None and group.decision.kind == "not_duplicates":
            refused += [Refusal(image.path, "its group was decided 'not duplicates': left in place")
                        for image in group.others]
            continue
        why_not = _why_keeper_unusable(keeper.path, keeper.sha256)
        if why_not is not None:
            refused += [Refusal(image.path, why_not) for image in group.others]
            continue
        for image in group.others:
            why_not = _why_unmovable(image.path, image.sha256, bool(group.same_file.get(image.path)))
            if why_not is not None:
                refused.append(Refusal(image.path, why_not))
                continue
            if destination.path is None:
                slot = choose_slot(image.path, taken)
                moves.append(Move(image.path, slot.files, image.size, image.sha256, keeper.path,
                                  trash_info=slot.info, trash_path=slot.original))
                continue
            target = target_in_folder(destination.path, image.path, roots)
            if target in taken or os.path.lexists(target):
                refused.append(Refusal(image.path, f"{target} already exists: left in place (move or rename "
                                                   "that file, then run again)"))
                continue
            inside = root_of(target, roots)
            if inside is not None and not destination.into_watched:
                refused.append(Refusal(image.path, f"{target} would be inside the watched folder {inside}: left "
                                                   "in place (pass --into-watched to allow it)"))
                continue
            taken.add(target)
            moves.append(Move(image.path, target, image.size, image.sha256, keeper.path))
    return moves, refused


def _why_keeper_unusable(path: str, sha256: str) -> str | None:
    try:
        same = sha256_of(path) == sha256
    except OSError as exc:
        return f"its keeper {path} is missing or unreadable ({exc.strerror}): the group is left as it is"
    if not same:
        return (f"its keeper {path} changed since it was indexed: the group is left as it is until it is "
                "indexed again")
    return None


def _why_unmovable(path: str, sha256: str, has_other_names: bool) -> str | None:
    if os.path.islink(path):
        return "a symbolic link: moving it would free nothing; left in place"
    if has_other_names:
        return ("the file has other names (links): moving one name frees nothing, or leaves a link dangling; "
                "left in place")
    try:
        same = sha256_of(path) == sha256
    except OSError as exc:
        return f"missing or unreadable ({exc.strerror}): nothing to move"
    if not same:
        return "changed since it was indexed: left in place until it is indexed again"
    return None
