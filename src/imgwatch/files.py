"""Which files are images imgwatch indexes, and walking roots for them."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# (size, mtime_ns, ctime_ns, inode), as backup tools compare files: size and mtime alone miss a
# file overwritten with the same size and its mtime set back; the kernel sets ctime on every
# change (utime included), and a file replaced by another has another inode.
Signature = tuple[int, int, int, int]
FileSignature = Signature | None  # None when the file is missing


def signature_of(st: os.stat_result) -> Signature:
    # Inodes are unsigned 64-bit; the stores keep signed 64-bit integers.
    inode = st.st_ino - 2**64 if st.st_ino >= 2**63 else st.st_ino
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, inode)


def file_signature(path: str) -> FileSignature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return signature_of(st)


def resolves_inside(path: str, roots: Iterable[str]) -> bool:
    """The link rule: a path counts as below a root only if it still is with every symbolic
    link in it followed (a linked file or folder whose target is elsewhere is outside).

    ``roots`` are resolved folders, as the daemon and the CLI resolve them.
    """
    return root_of(os.path.realpath(path), roots) is not None


def canonical_path(path: str) -> str:
    """Absolute, with symlinked folders resolved as the daemon resolves its roots.

    The last component is kept as given, so a symlinked file is named by its link.
    """
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def folder_argument(path: str) -> str:
    """A path given on the command line as the store names it: a folder resolved like the roots
    are (symlinks too), anything else (a file, a link, a folder gone) by canonical_path."""
    return os.path.realpath(path) if os.path.isdir(path) else canonical_path(path)


def outermost(roots: Iterable[str]) -> list[str]:
    """Drop roots inside other roots: each file must belong to exactly one root."""
    unique = sorted(set(roots))
    return [r for r in unique if not any(r != o and root_of(r, [o]) for o in unique)]


@dataclass(frozen=True)
class PathFilter:
    """Image files by extension (case-insensitive), minus excluded names.

    Exclude globs match any single path component below a root (a file or a
    folder name), so ".*" skips hidden files and everything in hidden folders.
    """

    extensions: frozenset[str]
    exclude: tuple[str, ...]

    @classmethod
    def create(cls, extensions: Iterable[str], exclude: Iterable[str]) -> PathFilter:
        return cls(frozenset(e.lower().lstrip(".") for e in extensions), tuple(exclude))

    def is_excluded_name(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)

    def has_image_extension(self, path: str) -> bool:
        _, ext = os.path.splitext(path)
        return ext[1:].lower() in self.extensions

    def accepts(self, path: str, root: str | None = None) -> bool:
        """True if ``path`` is an image to index (below ``root`` if given)."""
        if not self.has_image_extension(path):
            return False
        relative = os.path.relpath(path, root) if root else path
        return not any(self.is_excluded_name(part) for part in relative.split(os.sep) if part)


def root_of(path: str, roots: Iterable[str]) -> str | None:
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return root
    return None


def walk_images(
    directory: str, path_filter: PathFilter, roots: Iterable[str],
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (path, stat) for every accepted image below ``directory``; unreadable folders are skipped.

    Linked folders are not entered; a linked file is yielded only if its target is below one
    of ``roots`` (resolves_inside).
    """
    roots = list(roots)
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if path_filter.is_excluded_name(entry.name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file() and path_filter.has_image_extension(entry.name):
                    if entry.is_symlink() and not resolves_inside(entry.path, roots):
                        continue
                    yield entry.path, entry.stat()
            except OSError:
                continue  # vanished or unreadable between scandir and stat
