"""Which paths belong to one move: rules on path names alone (no disk, no queue).

The watcher sees a move as it happens and the daemon turns it into a move job; a move nobody
saw (the daemon was down, events were lost) is found by a scan as a new file and a gone one.
These rules pair the two up, and drop the moves that a folder's move covers already.
"""

from __future__ import annotations

import os


def moved_along(old: str, new: str, folder_old: str, folder_new: str) -> bool:
    """Whether moving ``folder_old`` to ``folder_new`` moved ``old`` to ``new`` (a path inside it)."""
    prefix = folder_old.rstrip(os.sep) + os.sep
    return old.startswith(prefix) and new == folder_new.rstrip(os.sep) + os.sep + old[len(prefix):]


def missed_moves_together(changed: list[str], gone: list[str]) -> list[str]:
    """``changed + gone``, each gone path right after a changed one with the same file name.

    A move nobody saw (the daemon was down, events were lost) looks like a new file and
    a gone one. Enqueued side by side they share a job (batch sizes are even), and the
    worker embeds before it removes: the new path reuses the old one's stored embedding
    by content hash before the old node goes. Names only pair them up; the content hash
    decides whether anything is reused.
    """
    gone_by_name: dict[str, list[str]] = {}
    for path in reversed(gone):
        gone_by_name.setdefault(os.path.basename(path), []).append(path)
    paired: list[str] = []
    alone: list[str] = []
    for path in changed:
        partners = gone_by_name.get(os.path.basename(path))
        if partners:
            paired += [path, partners.pop()]
        else:
            alone.append(path)
    left = {path for partners in gone_by_name.values() for path in partners}
    return paired + alone + [path for path in gone if path in left]


def moves_not_covered(moves: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``moves`` without those of files that a folder move in the same list moves along anyway
    (the polling observer reports every file of a moved folder, then the folder)."""
    folders: dict[str, str] = {}
    for old, new in moves:
        folders.setdefault(old, new)
    kept = []
    for old, new in moves:
        parent, covered = os.path.dirname(old), False
        while not covered and parent not in ("", os.sep) and parent != os.path.dirname(parent):
            folder_new = folders.get(parent)
            covered = folder_new is not None and moved_along(old, new, parent, folder_new)
            parent = os.path.dirname(parent)
        if not covered:
            kept.append((old, new))
    return kept


def at_or_below(path: str, folders: set[str]) -> bool:
    """Whether ``path`` or one of its parent folders is in ``folders``."""
    while path not in folders:
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return True
