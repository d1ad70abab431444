"""Copy a whole store into another backend without re-embedding (`imgwatch migrate`).

Two passes over the source, in pages: first every image (facts, embedding, linked
flag, pick bar, indexed_at) with the duplicate decisions about their contents, then every link,
each link once, from the page holding its smaller path. Both passes only upsert, so an
interrupted migration is resumed by running it again: images already copied unchanged are
skipped, links are merged, a decision copied again replaces itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imgwatch.errors import ReindexConflict
from imgwatch.store.base import Decision, ExportedImage, GraphStore, StoredImage
from imgwatch.store.batching import chunks

PAGE_SIZE = 500

# Called with ("images" | "links", how many more were processed).
Progress = Callable[[str, int], None]


@dataclass
class MigrationReport:
    images_copied: int = 0
    images_skipped: int = 0  # already in the target, unchanged (a resumed migration)
    links_copied: int = 0
    decisions_copied: int = 0


def migrate(source: GraphStore, target: GraphStore, *, page_size: int = PAGE_SIZE,
            progress: Progress | None = None) -> MigrationReport:
    """Copy every image and link of ``source`` into ``target``.

    The target must be empty or hold embeddings of the same model (ModelMismatchError
    otherwise). Images only in the target are left alone. A source changing model (a pending
    space: `imgwatch reindex`) is refused: only the active space would be copied.
    """
    pending = source.pending_space()
    if pending is not None:
        raise ReindexConflict(f"the store is changing model to {pending.model} ({pending.embedded}/{pending.total} "
                              "images embedded): let `imgwatch reindex` finish, or drop it with `imgwatch reindex "
                              "--abort`, then migrate")
    report = MigrationReport()
    stats = source.stats()
    if stats.model is None or stats.dim is None:
        return report  # nothing was ever indexed
    target.ensure_model(stats.model, stats.dim, source.recorded_weights_file())  # the weights file goes along

    after = ""
    copied: set[Decision] = set()
    while page := source.export_images(after, page_size):
        present = target.get_many(image.record.path for image in page)
        missing = [image for image in page if not _already_copied(present.get(image.record.path), image)]
        target.import_images(missing)
        report.images_copied += len(missing)
        report.images_skipped += len(page) - len(missing)
        for decision in source.decisions_about({image.record.sha256 for image in page}):
            if decision not in copied:  # a decision holding contents of several pages comes once
                copied.add(decision)
                others = sorted(decision.hashes - {decision.keep})
                target.record_decision(decision.kind, [decision.keep, *others] if decision.keep else others,
                                       decided_at=decision.decided_at)
        report.decisions_copied = len(copied)
        if progress:
            progress("images", len(page))
        after = page[-1].record.path

    for chunk in chunks((state.path for state in source.file_states()), page_size):
        owned = set(chunk)
        links = [link for link in source.export_links(chunk) if link.a in owned]
        report.links_copied += target.import_links(links)
        if progress:
            progress("links", len(links))
    return report


def _already_copied(stored: StoredImage | None, image: ExportedImage) -> bool:
    record = image.record
    return (
        stored is not None
        and (stored.sha256, stored.signature, stored.model, stored.linked, stored.indexed_at)
        == (record.sha256, record.signature, record.model, image.linked, image.indexed_at)
    )
