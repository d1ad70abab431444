"""How much a long-running process decodes at once: a budget of pixels and of decodes, so that
parallel requests add up to about one photo at the limit, and their memory goes back after.

Each decode first reserves the pixels its header declares (nothing is decoded yet) and one of
``decodes`` slots, both at once, waiting while either is short. Small photos pass beside a big
one as long as they fit; a photo bigger than the whole budget waits until it can run alone. A
decode costs about 4 bytes per declared pixel (Pillow keeps RGB as RGBX), so the pixel budget
is about 0.9 GB; JPEGs decode reduced (reader.py) and cost less than they reserve. Decoding more
photos at once than there are cores only makes each slower, but there are at least two slots so
a small photo never waits for a big one to finish. When a decode ends, however it ends, the
memory it freed is handed back to the system (imgwatch.memory).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from imgwatch.errors import DecodeError
from imgwatch.memory import give_back_freed_memory
from imgwatch.photos.limits import MAX_PIXELS
from imgwatch.photos.reader import read_header

# One photo at the limit and a few phone photos (12 MP) beside it; never two near the limit.
DECODE_BUDGET_PIXELS = MAX_PIXELS * 5 // 4


class DecodeBudget:
    """At most ``pixels`` declared pixels (one decode alone may take more) in at most ``decodes`` decodes."""

    def __init__(self, pixels: int = DECODE_BUDGET_PIXELS, decodes: int | None = None) -> None:
        self.pixels = pixels
        self.decodes = decodes if decodes is not None else max(2, os.cpu_count() or 1)
        self._pixels_in_use = 0
        self._running = 0
        self._changed = threading.Condition()

    @property
    def in_use(self) -> tuple[int, int]:
        """(pixels, decodes) held now."""
        with self._changed:
            return self._pixels_in_use, self._running

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` and a decode slot for the block, waiting until both are free; given back
        however the block ends, and the memory it freed returned to the system."""
        with self._changed:
            self._changed.wait_for(lambda: self._fits(pixels))
            self._pixels_in_use += pixels
            self._running += 1
        try:
            yield
        finally:
            try:
                give_back_freed_memory()  # before the next decode may start
            finally:
                with self._changed:
                    self._pixels_in_use -= pixels
                    self._running -= 1
                    self._changed.notify_all()

    def admit(self, data: bytes, path: str) -> contextlib.AbstractContextManager[None]:
        """:meth:`reserve` what decoding ``data`` (the file at ``path``) declares it will take."""
        return self.reserve(declared_pixels(data, path))

    def _fits(self, pixels: int) -> bool:
        return self._running < self.decodes and (
            self._pixels_in_use == 0 or self._pixels_in_use + pixels <= self.pixels)


def declared_pixels(data: bytes, path: str) -> int:
    """The pixels a photo's header declares (a RAW's developed size), as the reader opens it; 0 when
    the header does not open: the decode then refuses the file before decoding any pixel."""
    try:
        width, height = read_header(data, path).size
    except DecodeError:
        return 0
    return width * height
