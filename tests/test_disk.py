"""Flushing a folder: a real one is flushed, a missing one or a file is an OSError (its callers decide)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.disk import flush_folder


def test_a_folder_is_flushed_and_anything_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "renamed.jpg").write_bytes(b"x")
    flush_folder(tmp_path)
    with pytest.raises(FileNotFoundError):
        flush_folder(tmp_path / "gone")
    with pytest.raises(NotADirectoryError):
        flush_folder(tmp_path / "renamed.jpg")
