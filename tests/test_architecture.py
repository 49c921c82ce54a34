"""The layers point one way: read from the AST of every module, so a stray import fails the suite.

- ``detectors/`` and ``schemas/`` are pure: no Kafka, no Faust, no database, no ``streams`` or
  ``storage`` (the live agent, replay, backtests and benchmarks must be able to call them anywhere);
- only the composition roots (the CLI, the demo, the benchmarks, replay, the inspection API) import
  ``linewatch.streams``;
- no import cycle anywhere inside ``linewatch/``, counting imports inside functions too (a lazy
  import that closes a cycle still couples the two modules), but not ``TYPE_CHECKING`` blocks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "linewatch"
PURE_PACKAGES = ("linewatch.detectors", "linewatch.schemas", "linewatch.fusion")
FORBIDDEN_IN_PURE = ("faust", "aiokafka", "confluent_kafka", "psycopg", "linewatch.streams", "linewatch.storage")
#: Composition roots: what runs the agents' pipelines (replay runs them on history, as the worker does live).
STREAMS_IMPORTERS = ("linewatch.cli", "linewatch.demo", "linewatch.benchmarks", "linewatch.replay", "linewatch.serve",
                     "linewatch.streams")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> set[str]:
    """Every module an ``import`` names (``from a.b import c`` is ``a.b.c`` when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            node.body = []  # ast.walk has not descended yet: drop what only type checkers read
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


IMPORTS: dict[str, set[str]] = {name: _imports(ast.parse(path.read_text())) for name, path in MODULES.items()}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_rules_see_the_whole_package() -> None:
    assert "linewatch.detectors.bundle" in MODULES and "linewatch.streams.runtime" in MODULES
    assert "linewatch.detectors.base" in IMPORTS["linewatch.detectors.bundle"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if any(_within(m, p) for p in PURE_PACKAGES)))
def test_detectors_and_schemas_stay_pure(module: str) -> None:
    bad = sorted(i for i in IMPORTS[module] if any(_within(i, f) for f in FORBIDDEN_IN_PURE))
    assert not bad, f"{module} imports {bad}; detectors and schemas must run without Kafka or a database"


def test_only_the_composition_roots_import_streams() -> None:
    offenders = {
        m: sorted(i for i in imports if _within(i, "linewatch.streams"))
        for m, imports in IMPORTS.items()
        if not any(_within(m, root) for root in STREAMS_IMPORTERS)
    }
    offenders = {m: i for m, i in offenders.items() if i}
    assert not offenders, ("only the CLI, the demo, the benchmarks, replay and serve may import linewatch.streams: "
                           f"{offenders}")


def test_no_import_cycle_inside_linewatch() -> None:
    graph = {m: sorted(i for i in imports if i in MODULES and i != m) for m, imports in IMPORTS.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                return [*path[path.index(n):], n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))
