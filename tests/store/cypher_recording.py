"""Recording what the stand-in Neo4j server is sent: each statement with its parameters' names.

test_cypher_front_end.py runs the stand-in server tests with ``RECORD_ENV`` naming a file;
the stand-in then appends one JSON line per statement it answers, so the front end checks
each statement with the parameters its call sites really pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

RECORD_ENV = "IMGWATCH_TEST_RECORD_CYPHER"


def record(statement: str, parameters: Iterable[str]) -> None:
    """Append ``statement`` and its parameters' names to the file ``RECORD_ENV`` names, if set."""
    target = os.environ.get(RECORD_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"statement": statement, "parameters": sorted(parameters)}) + "\n")


def recorded(path: Path) -> Mapping[str, frozenset[str]]:
    """Each statement recorded in ``path`` with every parameter name it was ever sent with."""
    sent: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        sent.setdefault(entry["statement"], set()).update(entry["parameters"])
    return {statement: frozenset(names) for statement, names in sent.items()}
