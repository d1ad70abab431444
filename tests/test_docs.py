"""The docs stay beside the code: the layout map names every module, and every relative link lands."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
SRC = CHECKOUT / "src" / "imgwatch"
ARCHITECTURE = CHECKOUT / "docs" / "architecture.md"
PAGES = [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]
MAP_TOP = "src/imgwatch/"
# a map entry: indented by two spaces a level, a module (name.py) or a folder (name/), then what it is
ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.]+(?:/|\.py))(?:\s+(?P<what>\S.*))?$")
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def outside_code(text: str) -> list[str]:
    """The lines of a Markdown text that are not inside a fenced code block."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def layout_map(text: str) -> dict[str, str]:
    """The map's entries (paths below src/imgwatch/, folders ending in "/") -> what each is.

    The map is the fenced block that opens with ``src/imgwatch/``. A line that continues the
    description above it is indented past where a deeper entry could start.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == MAP_TOP and i > 0
                  and FENCE.match(lines[i - 1])), None)
    assert start is not None, f"{ARCHITECTURE}: no fenced block opening with {MAP_TOP}"
    entries: dict[str, str] = {}
    folders: list[tuple[int, str]] = [(0, "")]  # (indent, path) of the folders enclosing the next line
    last_indent = 0
    for line in lines[start + 1:]:
        if FENCE.match(line):
            break
        match = ENTRY.match(line)
        indent = len(line) - len(line.lstrip())
        if not match or indent > last_indent + 2 or indent % 2:
            continue  # the description of the entry above, continued
        while folders[-1][0] >= indent:
            folders.pop()
        path = folders[-1][1] + match["name"]
        entries[path] = match["what"] or ""
        if path.endswith("/"):
            folders.append((indent, path))
        last_indent = indent
    return entries


def modules() -> set[str]:
    """Every module below src/imgwatch/: packages as "name/", other files as "name.py"."""
    found = set()
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        found.add(f"{relative.parent.as_posix()}/" if path.name == "__init__.py" else relative.as_posix())
    return found - {"./"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives ``page``'s headings (a repeated heading gets -1, -2, ...)."""
    found: set[str] = set()
    for line in outside_code(page.read_text()):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading[1])
            name, repeat = base, 0
            while name in found:
                repeat += 1
                name = f"{base}-{repeat}"
            found.add(name)
    return found


def test_the_layout_map_names_every_module_and_nothing_else() -> None:
    mapped = layout_map(ARCHITECTURE.read_text())
    missing = sorted(modules() - set(mapped))
    assert not missing, (f"{ARCHITECTURE.relative_to(CHECKOUT)}'s layout map lacks {', '.join(missing)}: "
                         f"add a line for each, saying what it is")
    gone = sorted(path for path in mapped if not (SRC / path).exists())
    assert not gone, f"{ARCHITECTURE.relative_to(CHECKOUT)}'s layout map names {', '.join(gone)}, not in {MAP_TOP}"
    unexplained = sorted(path for path, what in mapped.items() if not what)
    assert not unexplained, f"{ARCHITECTURE.relative_to(CHECKOUT)}: say what {', '.join(unexplained)} is"


def test_the_map_reader_sees_nesting_and_continued_descriptions() -> None:
    text = "\n".join(["```", MAP_TOP,
                      "  cli.py            the command",
                      "  store/            the store",
                      "    base.py         the contract,",
                      "                    store/ and base.py mentioned again",
                      "    neo4j/          the server backend",
                      "      cypher.py     statements",
                      "  web/              the page",
                      "```"])
    assert layout_map(text) == {"cli.py": "the command", "store/": "the store", "store/base.py": "the contract,",
                                "store/neo4j/": "the server backend", "store/neo4j/cypher.py": "statements",
                                "web/": "the page"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(CHECKOUT)))
def test_every_relative_link_lands_on_a_file_and_heading(page: Path) -> None:
    broken = []
    for line in outside_code(page.read_text()):
        for link in LINK.finditer(re.sub(r"`[^`]*`", "", line)):  # a link inside `code` is not one
            target = link["target"]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{target} (no file {os.path.relpath(file, CHECKOUT)})")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
                broken.append(f"{target} (no heading with that anchor in {file.relative_to(CHECKOUT)})")
    assert not broken, f"{page.relative_to(CHECKOUT)}: broken links: {'; '.join(broken)}"


def test_slugs_are_githubs() -> None:
    assert slug("Nothing missed: rescans, lost events, outages") == "nothing-missed-rescans-lost-events-outages"
    assert slug("GPU: H200 (the final code)") == "gpu-h200-the-final-code"
    assert slug("The JSON API") == "the-json-api"
    assert slug("Store search (`bench/store_search.py`)") == "store-search-benchstore_searchpy"
