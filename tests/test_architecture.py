"""The layering of ARCHITECTURE.md, checked on the imports themselves: no arrow climbs back
up the data flow (config -> space -> costs -> strategy -> objective -> search and store ->
report -> commands), every module of ``nas`` has its place, and the moved modules still
import under their old names."""
from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Bottom to top: a module may import its own layer and those below it, never above.
#: Each layer lists module prefixes; the longest prefix that matches a module places it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("nas", "nas.errors", "nas.paths", "nas.cli", "nas.lifecycle", "nas.stats", "nas.fidelity", "nas.progress")),
    ("space", ("models", "nas.space", "nas.spaces", "nas.trial")),
    ("costs", ("nas.costs",)),
    ("strategy", ("nas.surrogate", "nas.acquisition", "nas.strategies")),
    ("objective", ("nas.objectives", "nas.train")),
    ("search", ("nas.executors", "nas.search", "nas.store")),
    ("report", ("nas.report",)),
    ("commands", ("nas.run", "nas.benchmark", "nas.bench", "nas.export", "nas.api", "nas.precompute", "nas.worker", "nas.status", "nas.async_benchmark", "nas.cost_table", "nas.latency_table")),
]
COMMANDS = len(LAYERS) - 1


def _prefix_layer(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return best[0] if best else None


def _is_command(tree: ast.Module) -> bool:
    """A module with a ``__main__`` block is run with ``python -m``: the commands' layer."""
    return any(isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) for node in tree.body)


def _imports(tree: ast.Module) -> list[tuple[str, int]]:
    """Absolute imports, except those only for type checking (``if TYPE_CHECKING:``)."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _modules() -> dict[str, tuple[Path, ast.Module, int | None]]:
    modules = {}
    for package in ("nas", "models"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            tree = ast.parse(path.read_text())
            layer = COMMANDS if name.startswith("nas.") and _is_command(tree) else _prefix_layer(name)
            modules[name] = (path, tree, layer)
    return modules


def _layer_of(target: str, modules: dict[str, tuple[Path, ast.Module, int | None]]) -> int | None:
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return modules[".".join(parts[:end])][2]
    return _prefix_layer(target)


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name, (_, _, layer) in _modules().items() if layer is None]
    assert not unplaced, f"place these in a layer of ARCHITECTURE.md and of LAYERS: {unplaced}"


def test_no_import_climbs_back_up_the_layers() -> None:
    modules = _modules()
    climbing = []
    for name, (path, tree, layer) in modules.items():
        for target, line in _imports(tree):
            above = _layer_of(target, modules)
            if layer is not None and above is not None and above > layer:
                climbing.append(f"{path.relative_to(ROOT)}:{line}: {LAYERS[layer][0]} imports {target} ({LAYERS[above][0]})")
    assert not climbing, "\n".join(climbing)


def test_the_check_sees_an_import_that_climbs(tmp_path: Path) -> None:
    tree = ast.parse("from nas.search import run_search\nif TYPE_CHECKING:\n    from nas.report import EvaluationRecord\n")
    assert _imports(tree) == [("nas.search", 1)]
    modules = _modules()
    assert _layer_of("nas.search", modules) > _prefix_layer("nas.strategies.bo")  # what a strategy may not import


@pytest.mark.parametrize("old", sorted(importlib.import_module("nas").MOVED_MODULES))
def test_moved_modules_import_under_their_old_names_with_a_warning(old: str) -> None:
    import sys

    new = importlib.import_module("nas").MOVED_MODULES[old]
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
    public = [name for name in vars(importlib.import_module(new)) if not name.startswith("_")]
    assert public and all(getattr(module, name) is getattr(importlib.import_module(new), name) for name in public)


def test_no_module_is_over_500_lines_without_a_stated_reason() -> None:
    long = []
    for path in sorted((ROOT / "nas").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 500 and "Over 500 lines:" not in text:
            long.append(str(path.relative_to(ROOT)))
    assert not long, f"split these, or say in their docstring why they stay whole ('Over 500 lines: ...'): {long}"
