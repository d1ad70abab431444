"""What the clean-up tests share: a small tmpfs of its own (another file system than the temp
folder's, as a photo moved to a USB disk or another partition meets), and a count of whole copies."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imgwatch.cleanup.transfer import PARTIAL_SUFFIX


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount_tmpfs(size): a fresh tmpfs of ``size`` (e.g. "8m") under tmp_path, unmounted after the test.
    Skips the test where no file system can be mounted (not root, or no mount allowed in this container)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("needs root to mount a tmpfs (a second file system, for moves across file systems)")
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs at {point}: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=False, capture_output=True)


@pytest.fixture
def tmpfs(mount_tmpfs: Callable[[str], Path]) -> Path:
    """An 8 MiB tmpfs: another file system than tmp_path's."""
    return mount_tmpfs("8m")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def whole_copies(content: bytes, *paths: Path) -> list[Path]:
    """Those of ``paths`` that hold ``content`` exactly."""
    return [path for path in paths if path.is_file() and path.read_bytes() == content]


def partials_in(*folders: Path) -> list[Path]:
    """Leftover partial copies in ``folders``."""
    return sorted(path for folder in folders if folder.is_dir() for path in folder.iterdir()
                  if path.name.endswith(PARTIAL_SUFFIX))
