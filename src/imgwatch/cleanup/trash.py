"""The freedesktop.org trash (the Trash specification 1.0), as desktops' file managers keep it, so
that a photo moved there can be restored from the desktop's trash as well as by `--undo`.

A file goes to the trash of its own volume, so that putting it there is a rename: the home trash
(``$XDG_DATA_HOME/Trash``) for files on the home's file system, else ``$topdir/.Trash/$uid`` when
the administrator made one (a sticky folder, not a link), else ``$topdir/.Trash-$uid``. Each
trashed file has ``info/NAME.trashinfo`` saying where it came from and when, created before the
file is moved to ``files/NAME``. (send2trash does the same but does not say which name it chose,
which an undo needs.)
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

INFO_SUFFIX = ".trashinfo"


@dataclass(frozen=True)
class TrashSlot:
    """Where one file goes in a trash: ``files`` (the file) and ``info`` (its .trashinfo)."""

    files: str
    info: str
    original: str  # the Path= value: absolute for the home trash, relative to the volume's top otherwise


def home_trash() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):  # unset, empty, or relative: the XDG spec says to ignore it
        data_home = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "Trash"


def _device_of(path: Path) -> int:
    """The device of ``path``, or of its nearest existing folder above."""
    while True:
        try:
            return path.stat().st_dev
        except FileNotFoundError:
            if path.parent == path:
                raise
            path = path.parent


def volume_top(path: str) -> Path:
    """The mount point of the file system holding ``path`` (a folder, or a file's folder)."""
    current = _real_folder(path)
    device = current.stat().st_dev
    while current.parent != current and current.parent.stat().st_dev == device:
        current = current.parent
    return current


def _real_folder(path: str) -> Path:
    """The folder of ``path`` with every link resolved: a watched folder may be a link onto another volume."""
    return Path(os.path.realpath(os.path.dirname(path)))


def trash_for(path: str) -> tuple[Path, Path | None]:
    """The trash folder for ``path`` and, for a volume's own trash, the volume's top (Path= is relative to it)."""
    home = home_trash()
    if _device_of(home) == os.stat(os.path.dirname(path) or ".").st_dev:
        return home, None
    top = volume_top(path)
    shared = top / ".Trash"
    try:
        st = os.lstat(shared)
        own = shared / str(os.getuid())
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and not _made_by_another(own):
            return own, top
    except FileNotFoundError:
        pass
    return top / f".Trash-{os.getuid()}", top


def _made_by_another(folder: Path) -> bool:
    """Whether ``folder`` is there but is not a folder of this user's own (a link, another's folder): in a
    place others can write to (a sticky .Trash, a volume's top) it could be made to receive our photos."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return False
    return not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()


def choose_slot(path: str, taken: set[str]) -> TrashSlot:
    """A free name for ``path`` in its volume's trash ("name", then "name.2", ... before the extension),
    not in ``taken`` (names chosen for other files of the same clean-up). Creates nothing."""
    trash, top = trash_for(path)
    original = os.path.relpath(_real_folder(path) / os.path.basename(path), top) if top is not None else path
    stem, extension = os.path.splitext(os.path.basename(path))
    for number in range(1, 100_000):
        name = f"{stem}{extension}" if number == 1 else f"{stem}.{number}{extension}"
        files, info = str(trash / "files" / name), str(trash / "info" / (name + INFO_SUFFIX))
        if files not in taken and not os.path.lexists(files) and not os.path.lexists(info):
            taken.add(files)
            return TrashSlot(files=files, info=info, original=original)
    raise FileExistsError(f"no free name in {trash} for {path}")


def trash_info_text(original: str, when: float) -> str:
    deleted = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when))
    return f"[Trash Info]\nPath={quote(os.fsencode(original), safe='/')}\nDeletionDate={deleted}\n"


def original_in(info: str) -> str | None:
    """The Path= of a .trashinfo file (decoded), or None if unreadable."""
    try:
        with open(info, "rb") as handle:
            for line in handle.read().decode("utf-8", "replace").splitlines():
                if line.startswith("Path="):
                    return os.fsdecode(unquote_to_bytes(line[5:]))
    except OSError:
        return None
    return None


def claim_slot(slot: TrashSlot, when: float) -> bool:
    """Write ``slot``'s .trashinfo (never over another's), making the trash folders (0700) as needed.
    True when the slot is ours: written now, or written for the same file by an earlier, killed run."""
    trash = Path(slot.info).parent.parent
    trash.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not os.path.isabs(slot.original) and _made_by_another(trash):  # a volume's trash (Path= relative)
        raise PermissionError(errno.EACCES, "this trash is not a folder of yours (a link, or another user's): "
                              "remove it or choose a folder with --move-to", str(trash))
    for folder in (trash / "info", trash / "files"):
        folder.mkdir(mode=0o700, exist_ok=True)
    try:
        descriptor = os.open(slot.info, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return original_in(slot.info) == slot.original
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(trash_info_text(slot.original, when))
        handle.flush()
        os.fsync(handle.fileno())
    return True
