"""The folders show the layers, and the code keeps to them.

* the core (ops, layers, network, presets, spec, gradcheck) imports nothing above it;
* training and rules import only the core (and each other where the contract says so);
* no module outside a layer's own file branches on a layer's kind name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from handprop.core.layers import layer_types

PACKAGE = Path(__file__).resolve().parents[1] / "handprop"
ABOVE_CORE = ("studies", "pictures", "cli", "integrations", "training", "rules")
# What each layer may not import (relative to handprop).
FORBIDDEN = {
    "core": ABOVE_CORE,
    "rules": ("studies", "pictures", "cli", "integrations", "training"),
    "training": ("studies", "pictures", "cli", "integrations"),
    "pictures": ("studies", "cli", "integrations"),
    "studies": ("cli",),
}


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """Absolute module names ``path`` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + [node.module] if node.module else base) \
                if node.level else node.module
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(layer: str) -> None:
    bad = [f"{path.relative_to(PACKAGE)} imports {name}"
           for path in _modules(layer) for name in _imports(path)
           if any(name == f"handprop.{up}" or name.startswith(f"handprop.{up}.")
                  for up in FORBIDDEN[layer])]
    assert not bad, "\n".join(bad)


def test_the_import_check_sees_relative_imports() -> None:
    names = _imports(PACKAGE / "training" / "loop.py")
    assert "handprop.core.network" in names and "handprop.rules.base" in names


def _kind_branches(path: Path, kinds: set[str]) -> list[str]:
    """Comparisons of a ``kind`` attribute with strings, or with a registered kind name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = (node.left, *node.comparators)
        strings = any(isinstance(side, ast.Constant) and isinstance(side.value, str) or
                      isinstance(side, ast.Tuple | ast.List | ast.Set) and any(
                          isinstance(e, ast.Constant) and isinstance(e.value, str)
                          for e in side.elts) for side in sides)
        for side in sides:
            attribute = isinstance(side, ast.Attribute) and side.attr == "kind" and strings
            literal = isinstance(side, ast.Constant) and side.value in kinds
            names = isinstance(side, ast.Tuple | ast.List | ast.Set) and any(
                isinstance(e, ast.Constant) and e.value in kinds for e in side.elts)
            if attribute or literal or names:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
                break
    return found


def test_no_module_branches_on_a_layer_kind_outside_its_own_file() -> None:
    kinds = set(layer_types())
    own_files = {PACKAGE / "core" / "layers.py", *(PACKAGE / "core" / "ops").glob("*.py")}
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path not in own_files
             for hit in _kind_branches(path, kinds)]
    assert not found, "\n".join(found)


def test_the_kind_check_catches_a_branch(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(layer):\n    return layer.kind == 'conv2d' or 'dense' in ()\n")
    assert len(_kind_branches(sample, set(layer_types()))) == 2
