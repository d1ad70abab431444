"""The shape of src/: no import cycles, and the one-way flow daemon → queue → workers → store ← CLI.
The shape of tests/: no test module imports another (shared code lives in helper modules).

Imports are read from the source (ast), lazy ones inside functions included: a cycle
through a deferred import is still a cycle. ``if TYPE_CHECKING:`` blocks are ignored.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import imgwatch

SRC = Path(imgwatch.__file__).parent
TESTS = Path(__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """imgwatch modules ``path`` imports (``from pkg import submodule`` counts as the submodule)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if _is_type_checking_block(node):
            continue
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("imgwatch"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("imgwatch"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found & known


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in SRC.rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}  # "active" while on the DFS stack, "done" after
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "active"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "active":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_src_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "imgwatch.cli" in graph and graph["imgwatch.cli"], "the graph reader found no imports"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("module", "must_not_reach"),
    [
        # Upstream parts never import downstream ones: the data flows one way.
        ("imgwatch.daemon", ("imgwatch.workers", "imgwatch.embedding", "imgwatch.cli", "imgwatch.supervisor")),
        ("imgwatch.workqueue", ("imgwatch.workers", "imgwatch.daemon", "imgwatch.store", "imgwatch.cli")),
        ("imgwatch.store", ("imgwatch.workers", "imgwatch.daemon", "imgwatch.workqueue", "imgwatch.embedding",
                            "imgwatch.cli", "imgwatch.supervisor")),
        ("imgwatch.embedding", ("imgwatch.store", "imgwatch.workqueue", "imgwatch.daemon", "imgwatch.cli")),
        ("imgwatch.errors", ("imgwatch.",)),
    ],
)
def test_dependencies_follow_the_flow(module: str, must_not_reach: tuple[str, ...]) -> None:
    graph = import_graph()
    offenders = sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        if source == module or source.startswith(module + ".")
        for target in targets
        if any(target == bad or target.startswith(bad if bad.endswith(".") else bad + ".") for bad in must_not_reach)
        and not (target == module or target.startswith(module + "."))
    )
    assert not offenders, offenders


# -- tests/: test modules are leaves --------------------------------------------------------

# A dotted module name in a string, e.g. the code a test runs in a child process with ``python -c``.
DOTTED_TESTS_MODULE = re.compile(r"\btests(?:\.\w+)+")


def imported_test_modules(source: str, package: str) -> set[str]:
    """The ``test_*`` modules ``source`` (a module of ``package``) imports, or names in a string as
    code to run: importing one runs its tests' module-level code and collects its tests twice."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            names = [base] if is_test_module(base) else [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = DOTTED_TESTS_MODULE.findall(node.value)
        else:
            continue
        found.update(name for name in names if is_test_module(name))
    return found


def is_test_module(dotted: str) -> bool:
    return any(part.startswith("test_") for part in dotted.split("."))


def test_the_test_import_finder_sees_every_way_to_import_a_test_module() -> None:
    contract, roots = "test_" + "contract", "test_" + "roots"  # split: this file's own strings name none
    assert imported_test_modules(f"from tests.store import {contract} as contract", "tests.store") == {
        f"tests.store.{contract}"}
    assert imported_test_modules(f"from .{contract} import linked_star", "tests.store") == {f"tests.store.{contract}"}
    assert imported_test_modules(f"from . import {contract}", "tests.store") == {f"tests.store.{contract}"}
    assert imported_test_modules(f"import tests.daemon.{roots}", "tests") == {f"tests.daemon.{roots}"}
    assert imported_test_modules(f"code = 'from tests.daemon.{roots} import scenario'", "tests") == {
        f"tests.daemon.{roots}"}
    assert imported_test_modules("from tests.store import contract_cases\nfrom tests.helpers import axis\n"
                                 "path = 'tests/store/test_neo4j_fake.py'", "tests.store") == set()


def package_of(path: Path) -> str:
    """The package a file under tests/ belongs to, e.g. ``tests.store``."""
    return ".".join(path.relative_to(TESTS.parent).parent.parts)


def test_no_module_under_tests_imports_a_test_module() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert TESTS / "store" / "conftest.py" in files, "the tests/ reader found no files"
    offenders = [
        f"{path.relative_to(TESTS.parent)} imports {module}"
        for path in files
        for module in sorted(imported_test_modules(path.read_text(), package_of(path)))
    ]
    assert not offenders, "move what they share into a helper module (tests/helpers.py, a conftest.py, ...): " + \
        "; ".join(offenders)
