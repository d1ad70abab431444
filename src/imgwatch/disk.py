"""Making a write outlive a power cut: a file's bytes are flushed by fsync on the file, but a
rename, a new name or an unlink lives in its folder, which must be flushed as well."""

from __future__ import annotations

import os


def flush_folder(folder: str | os.PathLike[str]) -> None:
    """fsync ``folder`` so that the renames, new names and unlinks in it are on disk (OSError if not)."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
