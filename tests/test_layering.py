"""The folders show the layers, and the code keeps to them.

* each layer (a folder of handprop) imports only from the layers before it in
  :data:`LAYERS` -- the order of the README's table, which a test compares;
* every folder of handprop is a layer (a new folder must take its place in the table);
* no import cycle among handprop's modules, and no module imports another's private
  name (``_x``);
* no module outside a layer's own file branches on a layer's kind name.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from handprop.core.ops import layer_types

PACKAGE = Path(__file__).resolve().parents[1] / "handprop"
README = PACKAGE.parent / "README.md"
# The layers, lowest first: each may import only those before it (and itself). The root
# package (handprop/__init__.py: the version and a few re-exports of the core) counts as
# core; the entry point handprop/__main__.py sits above them all.
LAYERS = ("core", "rules", "training", "pictures", "studies", "integrations", "explore",
          "cli")
ENTRY_POINTS = ("__main__.py",)
FORBIDDEN = {layer: LAYERS[i + 1:] for i, layer in enumerate(LAYERS)}


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


@pytest.mark.parametrize("layer", LAYERS)
def test_lower_layers_do_not_import_higher_ones(layer: str) -> None:
    bad = [f"{path.relative_to(PACKAGE)} imports {name}"
           for path in _modules(layer) for name in _imports(path)
           if any(name == f"handprop.{up}" or name.startswith(f"handprop.{up}.")
                  for up in FORBIDDEN[layer])]
    assert not bad, "\n".join(bad)


def test_the_root_package_imports_only_the_core() -> None:
    names = [n for n in _imports(PACKAGE / "__init__.py") if n.startswith("handprop.")]
    assert names and all(n.startswith("handprop.core.") for n in names), names


def test_every_folder_is_a_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    files = {p.name for p in PACKAGE.glob("*.py")}
    assert folders == set(LAYERS)
    assert files == {"__init__.py", *ENTRY_POINTS}


def test_the_readme_table_lists_the_layers_in_import_order() -> None:
    """The README's "Where things are" table: one row per layer, lowest first."""
    rows = re.findall(r"^\| [^|]+ \| `handprop/(\w+)/` \|", README.read_text(), re.M)
    assert tuple(rows) == LAYERS


# -- the module graph ------------------------------------------------------------------

def _module_files() -> dict[str, Path]:
    """{dotted module name: file} of every module of handprop (a package by its name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in (``handprop.a.b.f`` -> ``handprop.a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the handprop modules it imports at run time, anywhere in its body
    (a function-level import is still an edge: it runs whenever the function does)."""
    modules = _module_files()
    return {module: {owner for name in _imports(path) if name.startswith("handprop")
                     if (owner := _owner(name, modules)) not in (None, module)}
            for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_modules() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def private_names(module: str, imported: list[str]) -> list[str]:
    """The names among ``imported`` (dotted, as :func:`_imports` gives them) that are a
    private name (``_x``) of another handprop module. Dunder names (``__version__``) are
    public; a package may use its own private submodules."""
    found = []
    for name in imported:
        owner, _, last = name.rpartition(".")
        if (name.startswith("handprop.") and last.startswith("_") and not last.startswith("__")
                and not module.startswith(owner + ".")):
            found.append(name)
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    found = [f"{path.relative_to(PACKAGE)} imports {name}"
             for module, path in _module_files().items()
             for name in private_names(module, _imports(path))]
    assert not found, "\n".join(found)


def test_the_private_check_catches_one() -> None:
    imported = ["handprop.training.data", "handprop.training.data._select_classes",
                "handprop.training.data.load_digits", "handprop.__version__"]
    assert private_names("handprop.studies.x", imported) == [
        "handprop.training.data._select_classes"]


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
