"""The static detector table: every entry resolves, names agree, and nothing imports in a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from linewatch.detectors import table

DETECTORS_DIR = Path(table.__file__).parent
PACKAGE = "linewatch.detectors"


@pytest.mark.parametrize("name", table.names(None))
def test_every_entry_imports_and_its_class_carries_the_key_as_name(name: str) -> None:
    cls = table.get_detector(name)
    assert isinstance(cls, type)
    assert cls.name == name  # the key saved artifacts carry and ModelBundle looks up
    assert "name" in vars(cls), f"{cls.__qualname__} must declare name: ClassVar[str] = {name!r} itself"


def test_kinds_and_the_documented_order() -> None:
    assert {e.kind for e in table.DETECTORS.values()} == {"table", "image"}
    assert set(table.TABULAR_DETECTORS) <= set(table.names("table"))
    assert len(set(table.TABULAR_DETECTORS)) == len(table.TABULAR_DETECTORS)
    assert table.names("image") == ("patchcore",)
    assert table.input_kind("patchcore") == "image" and table.input_kind("ewma") == "table"


def test_registered_is_per_input_kind() -> None:
    tabular = table.registered()
    assert "patchcore" not in tabular and set(tabular) == set(table.names("table"))
    assert set(table.registered("image")) == {"patchcore"}
    assert set(table.registered(None)) == set(table.DETECTORS)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown detector 'nope'; known detectors: autoencoder, cusum"):
        table.get_detector("nope")
    # a name of the other kind is unknown to a caller that asked for one kind
    with pytest.raises(KeyError, match=r"unknown detector 'patchcore'"):
        table.get_detector("patchcore", kind="table")
    with pytest.raises(KeyError, match=r"unknown image detector 'ewma'; known image detectors: patchcore"):
        table.get_detector("ewma", kind="image")


def _detector_modules_loaded_by(statement: str) -> list[str]:
    """Detector modules a fresh interpreter holds after ``statement`` (so earlier tests cannot mask it)."""
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('{PACKAGE}.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


def test_base_and_table_import_no_detector() -> None:
    assert _detector_modules_loaded_by(f"import {PACKAGE}.base") == [f"{PACKAGE}.base"]
    assert _detector_modules_loaded_by(f"import {PACKAGE}.table") == [f"{PACKAGE}.table"]
    # looking one detector up loads that detector's module (and what it needs), not the others
    loaded = _detector_modules_loaded_by(f"from {PACKAGE}.table import get_detector; get_detector('ecod')")
    assert loaded == [f"{PACKAGE}.base", f"{PACKAGE}.ecod", f"{PACKAGE}.table"]


def _module_level_imports(path: Path) -> set[str]:
    """Detector modules ``path`` imports at module level (imports inside functions are lazy by design)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found |= {f"{PACKAGE}.{a.name}" for a in node.names}
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PACKAGE + ".")}
    return found


def test_no_import_cycle_among_detector_modules() -> None:
    graph = {f"{PACKAGE}.{p.stem}": _module_level_imports(p) for p in DETECTORS_DIR.glob("*.py")}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join([*path, module])
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
