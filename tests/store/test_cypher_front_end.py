"""Every Cypher statement imgwatch sends or prints, through Neo4j's own front end.

No Neo4j server runs here, but Neo4j's Cypher parser and semantic analysis are published
on npm as @neo4j-cypher/language-support (pinned in neo4j_front_end/package.json; `.ci/run`
installs it with npm ci). neo4j_front_end/check.mjs lints statements with it under
Cypher 5 and Cypher 25, against imgwatch's labels, relationship type and property keys and
the procedures and functions of the server dump the package ships. Its parser and analysis
are Neo4j 2026.09's (CHANGELOG); Cypher 5 is the language 5.26 LTS speaks, frozen since 2025.06.
The dump comes from a server of 2025.06 or newer (it lists Cypher 25's too; no 5.26 dump
ships); the procedures and functions the store calls are all in 5.26 (see
imgwatch.store.neo4j.cypher). Checked:

- every statement in imgwatch.store.neo4j.cypher, with the parameters its call sites really
  pass (recorded from the stand-in server tests, test_neo4j_fake.py and test_spaces.py, run
  as a subprocess),
  and any other statement those tests see the store send;
- the commands imgwatch's hints print (CREATE DATABASE, DROP INDEX, the reset);
- the ```cypher blocks in README.md and docs/.

The package swallows exceptions from its semantic analysis and then reports nothing, so
statements that must fail are checked first. The hint tests at the top need no Node.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any

import pytest

from imgwatch.store.neo4j import cypher
from imgwatch.store.neo4j.driver import database_not_found_message
from imgwatch.store.neo4j.schema import MAX_VECTOR_DIMENSIONS, blocking_index_message, reset_hint
from tests.store.cypher_recording import RECORD_ENV, recorded

REPO = Path(__file__).resolve().parents[2]
FRONT_END = Path(__file__).resolve().parent / "neo4j_front_end"
PACKAGE = FRONT_END / "node_modules" / "@neo4j-cypher" / "language-support" / "package.json"
PINNED = json.loads((FRONT_END / "package.json").read_text())["dependencies"]["@neo4j-cypher/language-support"]
VERSIONS = ("CYPHER 5", "CYPHER 25")
OLDEST_NODE = 20  # the package asks for Node 24 but runs on Debian's Node 20
URI = "neo4j://db.example:7687"
LOCATION = f"{URI} database neo4j"
# The tests whose stand-in server records what it is sent.
STAND_IN_TESTS = ("tests/store/test_neo4j_fake.py", "tests/store/test_spaces.py")

# What imgwatch stores (see imgwatch.store.neo4j.schema): a label, type or key not listed
# here is a misspelling the front end warns about.
SCHEMA = {
    "labels": ["Image", "ImgwatchStore", "DuplicateDecision"],
    "relationshipTypes": ["SIMILAR_TO"],
    "propertyKeys": [
        "path", "sha256", "size", "mtime_ns", "ctime_ns", "inode", "width", "height", "model", "linked",
        "pick_bar", "indexed_at", "embedding", "embedding_digest",  # Image
        "embedding_next", "embedding_next_sha256", "embedding_next_digest",  # Image, while a re-index is pending
        "key", "schema_version", "dim", "weights_file", "weights_sha256", "write_seq",  # ImgwatchStore
        "pending_model", "pending_dim", "pending_weights_file", "pending_weights_sha256",  # ImgwatchStore
        "score",  # SIMILAR_TO
        "kind", "hashes", "keep", "decided_at",  # DuplicateDecision
    ],
}

# Database and index names a user may have: a dash must be quoted, a backtick doubled.
AWKWARD_NAMES = ("images-2024", "odd`name")


@dataclass(frozen=True)
class Statement:
    name: str  # where it comes from, for the failure report
    text: str
    parameters: frozenset[str] = frozenset()
    console_commands: bool = False  # Neo4j Browser's :auto and friends


# -- the hints name their commands in a form Cypher reads (no Node needed) -----------------


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_the_missing_database_hint_quotes_the_name_it_creates(name: str) -> None:
    message = database_not_found_message(URI, name)
    assert cypher.create_database(name) in message
    assert "CREATE DATABASE `" + name.replace("`", "``") + "`" in message


def test_the_blocking_index_hint_drops_each_index_by_its_quoted_name() -> None:
    message = blocking_index_message([{"name": name} for name in AWKWARD_NAMES], LOCATION)
    assert "DROP INDEX `images-2024`; DROP INDEX `odd``name`" in message


def hint_commands() -> list[tuple[str, str, Statement]]:
    """(label, the hint as printed, the command in it): the command must appear in the hint."""
    hints = []
    for name in AWKWARD_NAMES:
        hints.append((f"database_not_found_message({name!r})", database_not_found_message(URI, name),
                      Statement(f"hint: {cypher.create_database(name)}", cypher.create_database(name))))
    blocked = blocking_index_message([{"name": name} for name in AWKWARD_NAMES], LOCATION)
    for name in AWKWARD_NAMES:
        hints.append((f"blocking_index_message({name!r})", blocked,
                      Statement(f"hint: {cypher.drop_index(name)}", cypher.drop_index(name))))
    browser = f":auto {cypher.DELETE_IMAGES}"
    hints.append(("reset_hint", reset_hint("neo4j"), Statement(f"hint: {browser}", browser, console_commands=True)))
    return hints


# -- the front end -----------------------------------------------------------------------------


def front_end_missing() -> str | None:
    """Why the front end cannot run here, or None."""
    node = shutil.which("node")
    if node is None:
        return "needs Node.js for Neo4j's Cypher front end (.ci/run installs it; or apt-get install nodejs npm)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major = re.match(r"v(\d+)", version)
    if major is None or int(major[1]) < OLDEST_NODE:
        return f"needs Node {OLDEST_NODE} or newer for @neo4j-cypher/language-support, found {version or 'none'}"
    if not PACKAGE.exists():
        return (f"needs @neo4j-cypher/language-support {PINNED}: run `npm ci` in "
                f"{FRONT_END.relative_to(REPO)} (.ci/run does)")
    return None


def lint(statements: list[Statement]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each statement's diagnostics under each Cypher version, keyed by (name, version)."""
    request = {
        "schema": SCHEMA,
        "versions": list(VERSIONS),
        "statements": [{"name": s.name, "text": s.text, "parameters": sorted(s.parameters),
                        "consoleCommands": s.console_commands} for s in statements],
    }
    done = subprocess.run(["node", str(FRONT_END / "check.mjs")], input=json.dumps(request), capture_output=True,
                          text=True, timeout=300, cwd=FRONT_END)
    assert done.returncode == 0, f"check.mjs failed:\n{done.stderr}"
    answer = json.loads(done.stdout)
    assert answer["package"] == PINNED, f"node_modules holds {answer['package']}, not {PINNED}: run npm ci"
    for version in VERSIONS:  # the server dump is there, else no procedure could be checked
        assert answer["procedures"][version] > 100 and answer["functions"][version] > 100
    return {(r["name"], r["version"]): r["diagnostics"] for r in answer["results"]}


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, frozenset[str]]:
    """Every statement the stand-in server tests see the store send, with its parameters' names."""
    if (why := front_end_missing()) is not None:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("recorded")
    record = folder / "statements.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={folder / 'tmp'}",
         *STAND_IN_TESTS],
        cwd=REPO, env={**os.environ, RECORD_ENV: str(record)}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"{STAND_IN_TESTS} failed:\n{done.stdout[-4000:]}"
    return recorded(record)


# cypher.py's str.format templates (a Cypher map's braces look like fields to str.format, so
# they are named here): checked as the store sends them. One missing here fails to parse.
TEMPLATES = ("CREATE_VECTOR_INDEX", "CREATE_NEXT_VECTOR_INDEX")


def template_pattern(text: str) -> re.Pattern[str]:
    """The statements a str.format template makes, as a regex."""
    parts = Formatter().parse(text)
    return re.compile("".join(re.escape(literal) + ("(.+?)" if field is not None else "")
                              for literal, field, _, _ in parts))


def store_statements(sent: Mapping[str, frozenset[str]]) -> tuple[list[Statement], list[str]]:
    """The statements to check from cypher.py and from what was sent; the templates never sent."""
    statements, covered, unsent = [], set(), []
    for name, text in vars(cypher).items():
        if not name.isupper() or name.startswith("_") or not isinstance(text, str) or text.isidentifier():
            continue  # not a statement: an index or constraint name, a number, a fragment of statements
        if name not in TEMPLATES:
            statements.append(Statement(f"cypher.{name}", text, sent.get(text, frozenset())))
            covered.add(text)
            continue
        pattern = template_pattern(text)
        filled = [s for s in sent if pattern.fullmatch(s)]
        unsent += [] if filled else [name]
        statements += [Statement(f"cypher.{name} as sent", s, sent[s]) for s in filled]
        covered.update(filled)
    # Anything else the store sends (a statement put together at a call site) is checked too.
    statements += [Statement("sent by the store", s, sent[s]) for s in sent if s not in covered]
    return statements, unsent


def dimension_ends() -> list[Statement]:
    return [Statement(f"{name} with dim={dim}", getattr(cypher, name).format(dim=dim))
            for name in TEMPLATES for dim in (1, MAX_VECTOR_DIMENSIONS)]


def documented() -> list[Statement]:
    """The ```cypher blocks of README.md and docs/, each as one script."""
    blocks = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for found in re.finditer(r"^```cypher\n(.*?)^```", text, re.M | re.S):
            line = text.count("\n", 0, found.start()) + 1
            blocks.append(Statement(f"{path.relative_to(REPO)}:{line}", found[1]))
    return blocks


# Statements that must fail, with what the front end must say: proof that the parser,
# the procedure check and the semantic analysis (whose exceptions the package swallows) ran.
MUST_FAIL = {
    Statement("must fail: syntax", "MATCH (n:Image RETURN n"): "Invalid input 'RETURN'",
    Statement("must fail: unknown procedure",
              "CALL db.index.vector.queryNode('i', 1, [1.0]) YIELD node RETURN node"):
        "Procedure db.index.vector.queryNode is not present in the database",
    Statement("must fail: unknown function", "RETURN vector.similarity.cosin([1.0], [1.0]) AS s"):
        "Function vector.similarity.cosin is not present in the database",
    Statement("must fail: undefined variable", "MATCH (n:Image) RETURN m.path"): "Variable `m` not defined",
    Statement("must fail: undefined parameter", "MATCH (n:Image {path: $path}) RETURN n"):
        "Parameter $path is not defined",
    Statement("must fail: unquoted dash", "CREATE DATABASE images-2024"): "Invalid input '-'",
    Statement("must fail: undoubled backtick", "DROP INDEX `odd`name`"): "Invalid input 'name'",
}


def is_row_key_taken_for_a_property(text: str, diagnostic: Mapping[str, Any]) -> bool:
    """A false warning of 2.0.0-next.38: in ``UNWIND $moves AS move MATCH (n:Image {path: move.old})``
    it reports ``old`` as a property of ``n`` missing from the database (the same read in a
    WHERE clause passes). Only such a key of an UNWIND row is let through."""
    if diagnostic["severity"] == 1 or not diagnostic["message"].endswith(_NOT_PRESENT):
        return False
    line = text.split("\n")[diagnostic["line"] - 1]
    read_from = re.search(r"(\w+)\.$", line[: diagnostic["column"] - 1])
    return read_from is not None and read_from[1] in re.findall(r"\bUNWIND\s.+?\sAS\s+(\w+)", text, re.S)


_NOT_PRESENT = ("is not present in the database. Make sure you didn't misspell it or that it is available "
                "when you run this statement in your application")


@dataclass
class Checked:
    groups: dict[str, list[Statement]]  # "store", "hints", "dimension ends", "docs", "must fail"
    diagnostics: dict[tuple[str, str], list[dict[str, Any]]]
    unsent_templates: list[str]

    def problems(self, chosen: list[Statement]) -> Iterator[str]:
        """Errors and warnings, one line each (a warning names a misspelt label, type or key)."""
        for statement in chosen:
            for version in VERSIONS:
                for d in self.diagnostics[(statement.name, version)]:
                    if is_row_key_taken_for_a_property(statement.text, d):
                        continue
                    kind = "error" if d["severity"] == 1 else "warning"
                    yield f"{statement.name} ({version}) {kind} at {d['line']}:{d['column']}: {d['message']}"


@pytest.fixture(scope="module")
def checked(sent: Mapping[str, frozenset[str]]) -> Checked:
    """Everything linted in one run of check.mjs (Node takes seconds to load the parser)."""
    store, unsent = store_statements(sent)
    groups = {"must fail": list(MUST_FAIL), "store": store, "hints": [command for _, _, command in hint_commands()],
              "dimension ends": dimension_ends(), "docs": documented()}
    return Checked(groups, lint([s for group in groups.values() for s in group]), unsent)


def assert_passes(problems: Iterator[str]) -> None:
    found = list(problems)
    assert not found, "Neo4j's front end reports:\n" + "\n".join(found)


def test_the_front_end_reports_what_must_fail(checked: Checked) -> None:
    for statement, expected in MUST_FAIL.items():
        for version in VERSIONS:
            messages = [d["message"] for d in checked.diagnostics[(statement.name, version)] if d["severity"] == 1]
            assert any(expected in message for message in messages), (statement.name, version, messages)


def test_every_statement_the_store_sends_passes_with_the_parameters_it_is_sent(
        checked: Checked, sent: Mapping[str, frozenset[str]]) -> None:
    store = checked.groups["store"]
    assert sent, "the stand-in tests recorded nothing: does FakeServer.Tx.run still call cypher_recording.record?"
    assert not checked.unsent_templates, f"no stand-in test sends {checked.unsent_templates}: add one"
    assert_passes(checked.problems(store))
    # A parameter passed but never used is a renamed one left behind at a call site.
    unused = {s.name: sorted(s.parameters - set(re.findall(r"\$(\w+)", s.text))) for s in store}
    assert {name: names for name, names in unused.items() if names} == {}


def test_the_commands_in_hints_appear_as_printed_and_pass(checked: Checked) -> None:
    for label, message, command in hint_commands():
        assert command.text in message, (label, message)
    assert_passes(checked.problems(checked.groups["hints"]))


def test_the_cypher_in_the_docs_passes(checked: Checked) -> None:
    docs = checked.groups["docs"]
    assert docs, "README.md and docs/ hold no ```cypher block: the exploring examples moved or lost their fence"
    assert_passes(checked.problems(docs))


def test_the_vector_index_statement_passes_at_both_ends_of_the_dimension_range(checked: Checked) -> None:
    assert_passes(checked.problems(checked.groups["dimension ends"]))
