"""The manifest of one clean-up: every move it makes (from, to, size, content hash), written and
flushed to disk before the first file moves, and where the clean-up stands.

A manifest is JSON in the data dir's ``moves/`` folder, named by when it was made. Its ``state``
is "moving" until every move is done ("moved"), "undoing" while `--undo` puts files back, then
"undone". Only the state changes once written (each time the whole file is replaced in one
rename), so a kill leaves the old or the new manifest, never half of one. Whether one move is done
is read from the file system (see transfer), not from the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from imgwatch.disk import flush_folder
from imgwatch.errors import CleanupRefused

FORMAT = 1
UNFINISHED = ("moving", "undoing")
TRASH = "trash"


@dataclass(frozen=True)
class Move:
    """One file of a clean-up: ``source`` (kept as the store names it) to ``target``."""

    source: str
    target: str
    size: int
    sha256: str
    keeper: str  # the copy kept in its group: the reason this one moves
    trash_info: str | None = None  # the .trashinfo written for it, when the destination is the trash
    trash_path: str | None = None  # that .trashinfo's Path= (see trash.TrashSlot.original)


@dataclass(frozen=True)
class Manifest:
    path: Path
    destination: str  # a folder, or "trash"
    created: float
    state: str
    moves: tuple[Move, ...]

    @property
    def id(self) -> str:
        """The manifest's file name: how the web page names it (never a path from a client)."""
        return self.path.name

    @property
    def bytes(self) -> int:
        return sum(move.size for move in self.moves)

    def with_state(self, state: str) -> Manifest:
        return dataclasses.replace(self, state=state)


def new_manifest_path(folder: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:].replace(".", "-")
    return folder / f"moves-{stamp}.json"


def write(manifest: Manifest) -> None:
    """Write the manifest whole, then replace the old one in one rename (flushed both times)."""
    manifest.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"format": FORMAT, "destination": manifest.destination, "created": manifest.created,
            "state": manifest.state, "moves": [dataclasses.asdict(move) for move in manifest.moves]}
    partial = manifest.path.with_name(manifest.path.name + ".partial")
    with open(partial, "w", encoding="ascii") as handle:
        json.dump(data, handle, indent=1)  # ASCII: names that are not UTF-8 travel as \udcXX escapes
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, manifest.path)
    flush_folder(manifest.path.parent)


def read(path: str | Path) -> Manifest:
    """The manifest at ``path``; CleanupRefused in one line if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="ascii"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        moves = tuple(Move(**move) for move in data["moves"])
        return Manifest(path=path, destination=str(data["destination"]), created=float(data["created"]),
                        state=str(data["state"]), moves=moves)
    except OSError as exc:
        raise CleanupRefused(f"cannot read the manifest {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CleanupRefused(f"{path} is not an imgwatch clean-up manifest ({exc}); pass the file "
                             "`imgwatch duplicates --move-to/--trash` named") from None


def unfinished(folder: Path) -> list[Manifest]:
    """The manifests in ``folder`` of clean-ups a kill or crash stopped part-way, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("moves-*.json")):
        manifest = read(path)
        if manifest.state in UNFINISHED:
            found.append(manifest)
    return found
