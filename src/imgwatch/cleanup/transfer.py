"""Moving one file so that, whatever happens, its content is whole in one place at least.

Within one file system a move is a rename that never replaces a file already at the target
(``renameat2(RENAME_NOREPLACE)``). Across file systems the content is copied to a hidden
partial file beside the target, flushed to disk, read back and checked against the content hash,
renamed into place, and only then is the source removed. A kill at any instant leaves the
source, or the target, or both (two whole copies); :func:`transfer` run again on the same pair
finishes the job from any of those states, so a re-run and an undo are the same call.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil

from imgwatch.disk import flush_folder
from imgwatch.errors import ContentChanged, MoveRefused

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
PARTIAL_SUFFIX = ".imgwatch-partial"
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def sha256_of(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def rename_no_replace(source: str, target: str) -> None:
    """Rename ``source`` to ``target``; FileExistsError if something is there already, OSError(EXDEV)
    across file systems. Where the kernel or file system lacks RENAME_NOREPLACE, a hard link then
    an unlink does the same (a link never replaces), and a plain rename after a check is the last
    resort (file systems without hard links: the check and the rename are a moment apart)."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), source, None, target)
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from None
        os.rename(source, target)
        return
    os.unlink(source)


def partial_path(target: str) -> str:
    """Where a copy to ``target`` is written until it is whole: hidden, beside it."""
    folder, name = os.path.split(target)
    return os.path.join(folder, f".{name}{PARTIAL_SUFFIX}")


def transfer(source: str, target: str, sha256: str) -> None:
    """Bring the file with content ``sha256`` from ``source`` to ``target`` (see the module).

    Refuses (MoveRefused) a target holding other content, and (ContentChanged) a source whose
    content is not ``sha256``: nothing is removed then. Done already: nothing to do."""
    # A copy killed part-way, in either direction (a move, or its undo), left a partial: never the only
    # copy (it is renamed in before its source goes), and its name is ours alone.
    _remove_partial(partial_path(source))
    _remove_partial(partial_path(target))
    source_there, target_there = os.path.lexists(source), os.path.lexists(target)
    if target_there:
        if not _holds(target, sha256):
            raise MoveRefused(f"{target} already exists with other content: left {source} in place")
        if source_there:
            if _one_entry(source, target):
                raise MoveRefused(f"{source} and {target} are one file (the same name, or reached through a "
                                  "link): nothing to move; it is left in place")
            # A link-then-unlink or a copy that was whole before a kill: the target holds the content,
            # so the source may go, unless it changed since (then both stay).
            if not (os.path.samefile(source, target) or _holds(source, sha256)):
                raise ContentChanged(f"{source} changed since it was indexed; {target} holds the indexed "
                                     "content: both are left in place")
            os.unlink(source)
            _flush_folder(os.path.dirname(source))
        return
    if not source_there:
        raise MoveRefused(f"{source} is gone (and {target} is not there): nothing to move")
    if not _holds(source, sha256):
        raise ContentChanged(f"{source} changed since it was indexed: left in place; let it be indexed again "
                             "(the running daemon does so) and look at its group again")
    _make_folders(os.path.dirname(target))
    try:
        rename_no_replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_whole(source, target, sha256)  # flushes the target's folder before the source goes
        os.unlink(source)
    else:
        _flush_folder(os.path.dirname(target))
    _flush_folder(os.path.dirname(source))


def _copy_whole(source: str, target: str, sha256: str) -> None:
    """Copy across file systems: a partial file, flushed, read back and checked, then renamed in."""
    partial = partial_path(target)
    try:
        with open(source, "rb") as reader, open(partial, "xb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            shutil.copystat(source, partial)  # mode and times (ns): the photo's date stays; before the fsync,
            os.fsync(writer.fileno())  # so that the date outlives a power cut as the bytes do
        whole = _holds(partial, sha256)
    except BaseException:
        _remove_partial(partial)  # a full disk: give its space back now, not at some later run
        raise
    if not whole:
        _remove_partial(partial)
        raise MoveRefused(f"the copy of {source} at {target} did not read back whole (its content hash "
                          f"differs): {source} is left in place; check the disk")
    rename_no_replace(partial, target)
    _flush_folder(os.path.dirname(target))


def _one_entry(first: str, second: str) -> bool:
    """Whether two paths name one directory entry (not two hard links of one file, which a kill between
    a link and an unlink leaves): unlinking one would remove the photo."""
    if not os.path.samefile(first, second):
        return False
    if os.stat(first).st_nlink == 1:  # one name only (a link in a folder above, a case-insensitive file system)
        return True
    return (os.path.basename(first) == os.path.basename(second)
            and os.path.realpath(os.path.dirname(first)) == os.path.realpath(os.path.dirname(second)))


def _remove_partial(partial: str) -> None:
    try:
        os.unlink(partial)
    except FileNotFoundError:
        pass


def _holds(path: str, sha256: str) -> bool:
    try:
        return sha256_of(path) == sha256
    except OSError:
        return False


def _make_folders(folder: str) -> None:
    """Create ``folder`` and any missing folder above it, each flushed into its parent, so that a
    power cut cannot lose a target's folder after its source is gone."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(new)
        _flush_folder(os.path.dirname(new))


def _flush_folder(folder: str) -> None:
    """Flush a folder of a move; a file system that cannot (some network and FUSE ones) does not stop it."""
    with contextlib.suppress(OSError):
        flush_folder(folder or ".")
