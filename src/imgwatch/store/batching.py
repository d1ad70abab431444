"""Cutting work into bounded pieces, shared by the backends and migrations."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

# Rows per page when streaming file states or copying a store.
PAGE_SIZE = 2000


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items (any iterable, read lazily)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def keyset_pages(read_page: Callable[[str, int], Sequence[T]], key: Callable[[T], str],
                 page_size: int = PAGE_SIZE) -> Iterator[T]:
    """Every row of a path-ordered listing, one ``read_page(after, limit)`` call per page.

    Each page is its own short read, so no transaction stays open while the caller
    works on a page; rows written meanwhile may or may not appear.
    """
    after = ""
    while True:
        page = read_page(after, page_size)
        yield from page
        if len(page) < page_size:
            return
        after = key(page[-1])
