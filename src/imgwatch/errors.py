"""Every failure imgwatch expects, in one family.

An :class:`ImgwatchError`'s message is what the user reads: what went wrong, which
file or server, and what to do. The CLI catches the base class and prints the
message on one line; anything else is a bug and keeps its traceback.

This module imports nothing from imgwatch, so any module may raise these. For the same
reason :func:`printable`, how every text from outside (a file name, a server's answer) is
shown to a person, lives here: the error handler needs it, and so does every printer. The
process exit codes live here too, beside the errors.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

# -- exit codes ----------------------------------------------------------------------------

EXIT_PARTLY = 1  # a clean-up of duplicates did what it could; the files left in place are each said with why
EXIT_ERROR = 2  # an expected failure (an ImgwatchError), said in one line; click's usage errors exit 2 too
# The queue or the store is out of reach for now (EX_TEMPFAIL): `imgwatch run` restarts a worker
# that exits with it, and counts that exit as no sign of a crash loop.
EXIT_UNAVAILABLE = 75
EXIT_INTERRUPTED = 130  # how a shell reports a command that Ctrl-C (SIGINT) stopped: 128 + 2


class ImgwatchError(Exception):
    """An expected failure; ``str(error)`` is the message for the user."""


# Characters a terminal acts on instead of showing (C0 controls, DEL, C1 controls: U+009B is an
# 8-bit CSI), Unicode's line breaks, and the bidirectional marks, overrides and isolates that
# make a name read as another: a file name holding one could recolour, retitle or clear the
# terminal, or fake a line of output.
_CONTROL_CODES = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029,
                  0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SHORT_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES = {code: _SHORT_ESCAPES.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
            for code in _CONTROL_CODES}


def printable(text: str) -> str:
    """``text`` as one line that is safe to show on a terminal or write to any UTF-8 stream.

    Control characters become visible escapes (``\\x1b``, ``\\n``, ``\\x9b``, ``\\u202e``); a
    file name that is not valid UTF-8 arrives with lone surrogates (Python's surrogateescape),
    its odd bytes shown as ``\\xe9``. Everything else (accents, CJK, emoji) is kept as it is.
    """
    try:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that do not stand for a byte
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return shown.translate(_ESCAPES)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn an expected failure into one line on stderr and exit code 2, no traceback."""
    try:
        yield
    except ImgwatchError as exc:
        print(f"imgwatch: error: {printable(str(exc))}", file=sys.stderr, flush=True)
        sys.exit(EXIT_ERROR)


# -- configuration and the data dir ---------------------------------------------------


class ConfigError(ImgwatchError):
    """A configuration value is invalid; the message names the key and its source."""


class DataDirUnusable(ImgwatchError):
    """The data dir cannot be created or written."""


class AlreadyRunning(ImgwatchError):
    """Another `imgwatch run` owns this data dir."""


# -- the queue --------------------------------------------------------------------------


class StillWatched(ImgwatchError):
    """A folder to forget is, holds or lies inside a watched folder: its files would be indexed again."""


class QueueUnavailable(ImgwatchError):
    """The Redis server cannot be reached; the message says what to do."""


class JobRefused(ImgwatchError):
    """A job on the queue is not one imgwatch runs; it is failed, never executed."""


# -- the daemon ---------------------------------------------------------------------------


class WatchError(ImgwatchError):
    """A folder cannot be watched."""


# -- embedding ------------------------------------------------------------------------------


class WeightsUnavailable(ImgwatchError):
    """The configured ResNet50 weights cannot be loaded."""


class ModelFileUnavailable(ImgwatchError):
    """The model file in embedding.model cannot be read or loaded, or is not what its settings declare."""


class DeviceUnavailable(ImgwatchError):
    """The configured inference device does not exist on this machine."""


class EngineUnavailable(ImgwatchError):
    """The inference engine named in embedding.engine cannot be used on this machine."""


class DecodeError(ImgwatchError):
    """A file could not be decoded as an image; ``reason`` is the line recorded for it."""

    def __init__(self, path: str, reason: str, advice: str) -> None:
        self.path = path
        self.reason = reason
        self.advice = advice
        super().__init__(f"cannot decode {path}: {reason} ({advice})")

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str, str]]:
        # Keeps the error picklable (job queues ship exceptions between processes).
        return (type(self), (self.path, self.reason, self.advice))


class ContentChanged(ImgwatchError):
    """A file's content is no longer what was indexed (it changed, or a link now leads elsewhere)."""


# -- the store --------------------------------------------------------------------------------


class StoreError(ImgwatchError):
    """A store operation failed; the message says what and what to do."""


class StoreUnavailable(StoreError):
    """The store's server could not be reached (even after retrying); the work can be retried later."""


class StoreMissing(StoreError):
    """Nothing has been indexed in this store yet (or it is the wrong one)."""


class ImageNotFound(StoreError):
    def __init__(self, path: str) -> None:
        super().__init__(f"{path} is not indexed (yet); check the path or run `imgwatch status`")
        self.path = path


class ModelMismatchError(StoreError):
    """The store holds embeddings of another model; mixing them would make scores meaningless."""


class VectorIndexNotReady(StoreError):
    """Neo4j's vector index is not ready for the store's model: being built, or for another dimension while a
    switch of model re-creates it."""


class ReindexConflict(StoreError):
    """A new vector space cannot be opened: another one is pending, or the store already uses that model."""


class ReindexIncomplete(StoreError):
    """The pending vector space cannot become the active one: some images have no vector in it yet."""


# -- answers: duplicates, contact sheets, the web page ------------------------------------------


class ThresholdBelowLinks(ImgwatchError):
    """Duplicates were asked for below the score that links are made at."""


class CleanupRefused(ImgwatchError):
    """A clean-up of duplicates cannot start: its destination (inside a watched folder, not writable) or
    its manifest (unreadable, another clean-up's) is refused. Nothing was moved."""


class MoveRefused(ImgwatchError):
    """One file of a clean-up stays where it is (its target is taken, it is gone, its copy did not read back)."""


class SheetError(ImgwatchError):
    """The contact sheet cannot be written (bad name, unwritable folder)."""


class WebUnavailable(ImgwatchError):
    """The web page cannot listen where it is configured to."""
