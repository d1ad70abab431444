"""How file names and failure reasons are shown to a person: the web page, contact sheets, `status`.

Display only: what is stored, logged and printed as JSON stays whole.
"""

from __future__ import annotations

import os
import unicodedata

from imgwatch.errors import printable

# A name's last characters are what tell its variants apart ("…_123456_edit.jpg", "… (2).jpeg",
# "…-1024x768.png"): they are shown whole, and a name too long for its space is shortened before them.
KEPT_END = 14
ELLIPSIS = "…"


def file_name(path: str) -> str:
    """The file name of ``path``, fit to show (see printable: a line break cannot fake a line)."""
    return printable(os.path.basename(path) or path)


def name_ends(name: str) -> tuple[str, str]:
    """``name`` as (start, end): the end, its last KEPT_END characters, is always shown whole; a
    name too long for its space loses characters from the end of its start, replaced by "…"
    (IMG_20240101_123456_edit.jpg as "IMG_2024…23456_edit.jpg"), so names that begin alike stay
    told apart."""
    cut = max(0, len(name) - KEPT_END)
    while 0 < cut and unicodedata.category(name[cut]).startswith("M"):  # an accent stays with its letter
        cut -= 1
    return name[:cut], name[cut:]


def reason_beside(reason: str, path: str) -> str:
    """A failed file's reason shown beside its path: the path the reason repeats is left out
    ("cannot decode /a/b.jpg: truncated" beside /a/b.jpg reads "cannot decode: truncated").

    The stored reason stays whole: the ledger, the log and `status --json` show it on its own.
    """
    for written in (path, repr(path)):  # repr: a name that is not UTF-8 is quoted so
        reason = reason.replace(f" {written}:", ":").replace(written, "it")
    return reason


def human_size(size: int) -> str:
    """Bytes in decimal units, as file managers show them: 950 B, 120.4 kB, 5.1 MB."""
    if size < 1000:
        return f"{size} B"
    value, units = size / 1000, ["kB", "MB", "GB", "TB"]
    while value >= 1000 and len(units) > 1:
        value, units = value / 1000, units[1:]
    return f"{value:.1f} {units[0]}"
