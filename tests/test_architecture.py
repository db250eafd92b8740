"""The import order of fcam's units, checked on the source (no module is imported).

Every module under ``fcam/`` is parsed with :mod:`ast`; every import in it, at module level or
inside a function, counts: ``import fcam.x``, ``from fcam.x import y``, relative imports and
``importlib.import_module("fcam.x")`` string literals. Each import becomes an edge between
the *units* (top-level subpackages or modules) of the importing and the imported module, and
the edges must

(a) form no cycle between units,
(b) never point upward in :data:`LAYERS` (see docs/concepts/architecture.md), and
(c) never reach :mod:`fcam.demo` from outside it, except from the CLI's demo command and the
    app command's no-options default (:func:`fcam.commands.app._demo_models`).

Imports inside one unit are not checked. A unit listed in :data:`LAYERS` that does not exist
yet is simply absent; a unit that exists but is not listed fails :func:`test_every_unit_is_placed`.
"""

from __future__ import annotations

import ast
import fnmatch
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "fcam"
ROOT = "fcam"

#: Floors of units, bottom first. A unit may import units on its own floor or below, never
#: above; units on one floor may import each other one way only (no cycle).
LAYERS: tuple[tuple[str, ...], ...] = (
    # The package root (fcam/__init__.py): only __version__ at import time; its lazy
    # __getattr__ re-exports (FCAM, the subpackages) are allowed, see LAZY_REEXPORTS.
    ("fcam",),
    # Shared plumbing: model state, layers + probe, hooks, targets, validation, atomic io,
    # constants, box rescaling. Imports no other fcam unit.
    ("fcam.core",),
    # Building blocks, independent of each other in practice: CAM extractors, F-CAM losses,
    # decoders, datasets.
    ("fcam.cams", "fcam.losses", "fcam.upscalers", "fcam.data"),
    # WSOL and faithfulness metrics; may read datasets (fcam.data).
    ("fcam.metrics",),
    # The FCAM explainer (config, trainer, checkpoints).
    ("fcam.explainer",),
    # Evaluation of any map function; model I/O (classifier specs, save/load); WSOL training
    # methods and baselines.
    ("fcam.evaluation", "fcam.models", "fcam.wsol"),
    # Overlays and comparison grids.
    ("fcam.viz",),
    # Applications: the demo pipeline, the web page, the command line and its commands.
    ("fcam.demo", "fcam.app", "fcam.cli", "fcam.commands"),
)

FLOOR: dict[str, int] = {unit: floor for floor, units in enumerate(LAYERS) for unit in units}

#: Modules that belong to a unit other than the one their name gives.
UNIT_ALIASES = {"fcam.__main__": "fcam.cli"}  # `python -m fcam` is the CLI entry point



def _lazy_reexports() -> dict[str, str]:
    """Public names (in ``fcam.__all__``) that fcam/__init__.py's ``__getattr__`` imports, with
    their module: ``{"FCAM": "fcam.explainer"}``. ``from fcam import FCAM`` resolves to that
    module, and the root's own import of it inside ``__getattr__`` is allowed."""
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8"))
    public: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            public = set(ast.literal_eval(node.value))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                    for alias in inner.names:
                        if alias.name in public:
                            found[alias.name] = inner.module
    return found


LAZY_REEXPORTS = _lazy_reexports()

#: Where fcam.demo may be imported from outside fcam/demo: the CLI's demo command, and the one
#: function of the app command that opens the page on the demo's cached models when no
#: classifier is given, as module or ``module:function`` patterns.
DEMO_IMPORTERS = ("fcam.commands.demo", "fcam.commands.demo.*", "fcam.cli:*demo*",
                  "fcam.commands.app:_demo_models")


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` (module) imports ``target`` (module) at ``path:line``."""

    source: str
    target: str
    path: str
    line: int
    function: str | None  # the enclosing function, None at module level

    @property
    def source_unit(self) -> str:
        return unit_of(self.source)

    @property
    def target_unit(self) -> str:
        return unit_of(self.target)

    @property
    def lazy(self) -> bool:
        return self.function is not None

    def __str__(self) -> str:
        where = f" in {self.function}()" if self.function else ""
        return (f"{self.path}:{self.line}{where}: {self.source_unit} -> {self.target_unit} "
                f"(imports {self.target})")


def unit_of(module: str) -> str:
    """``fcam.data.synthetic`` -> ``fcam.data``; ``fcam`` -> ``fcam``."""
    if module in UNIT_ALIASES:
        return UNIT_ALIASES[module]
    parts = module.split(".")
    return ".".join(parts[:2])


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _import_module_literal(node: ast.Call) -> str | None:
    """The module of ``importlib.import_module("fcam.x")`` / ``import_module(...)`` /
    ``__import__(...)`` called with a string literal."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def _targets(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """The fcam modules one AST node imports (``from fcam import X`` resolves ``X``)."""
    found: list[str] = []
    if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _resolve_from(module, is_package, node)
        if base == ROOT:
            # `from fcam import data` is fcam.data; `from fcam import FCAM` is the explainer.
            for alias in node.names:
                if alias.name in LAZY_REEXPORTS and base == ROOT:
                    found.append(LAZY_REEXPORTS[alias.name])
                elif (PACKAGE_DIR / alias.name).is_dir() or (
                    PACKAGE_DIR / f"{alias.name}.py"
                ).is_file():
                    found.append(f"{ROOT}.{alias.name}")
                else:
                    found.append(ROOT)
        elif base:
            found = [base]
    elif isinstance(node, ast.Call):
        literal = _import_module_literal(node)
        if literal:
            found = [literal]
    return [name for name in found if name == ROOT or name.startswith(ROOT + ".")]


def scan_source(source: str, module: str, path: str, is_package: bool = False) -> list[Edge]:
    """Every fcam import in ``source`` (the module ``module``), with its enclosing function."""
    tree = ast.parse(source, filename=path)
    edges: list[Edge] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for target in _targets(module, is_package, node):
            edges.append(Edge(module, target, path, getattr(node, "lineno", 0), function))
        inner = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        for child in ast.iter_child_nodes(node):
            visit(child, inner or function)

    visit(tree, None)
    return edges


def _scan_package() -> tuple[list[Edge], set[str]]:
    edges: list[Edge] = []
    units: set[str] = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        module = module_name(path)
        units.add(unit_of(module))
        rel = str(path.relative_to(PACKAGE_DIR.parent))
        edges += scan_source(path.read_text(encoding="utf-8"), module, rel, _is_package(path))
    return edges, units


EDGES, UNITS = _scan_package()


def _allowed_lazy_reexport(edge: Edge) -> bool:
    return (edge.source == ROOT and edge.function == "__getattr__"
            and edge.target in set(LAZY_REEXPORTS.values()))


def _graph_edges() -> list[Edge]:
    """Edges between different units, less the root's lazy re-exports of public names."""
    return [e for e in EDGES
            if e.source_unit != e.target_unit and not _allowed_lazy_reexport(e)]


def _report(title: str, edges: list[Edge]) -> str:
    lines = [title, *(f"  {edge}" for edge in edges)]
    text = "\n".join(lines)
    print(text)
    return text


def test_scanner_sees_every_import_form() -> None:
    source = '''
import fcam.cams
import numpy as np
from fcam.data import synthetic
from fcam import FCAM, viz, __version__
from . import sibling
from ..metrics import boxes

def lazy():
    from fcam.demo.config import DemoConfig
    importlib.import_module("fcam.evaluation.maps")
    return importlib.import_module(f"fcam.{name}")  # not a literal: not seen
'''
    edges = scan_source(source, "fcam.upscalers.unet", "fcam/upscalers/unet.py")
    found = {(e.target, e.function) for e in edges}
    assert found == {
        ("fcam.cams", None),
        ("fcam.data", None),
        ("fcam.explainer", None),
        ("fcam.viz", None),
        ("fcam", None),
        ("fcam.upscalers", None),
        ("fcam.metrics", None),
        ("fcam.demo.config", "lazy"),
        ("fcam.evaluation.maps", "lazy"),
    }


def test_scanner_found_the_package() -> None:
    assert {"fcam", "fcam.core", "fcam.cams", "fcam.data", "fcam.metrics"} <= UNITS
    assert any(e.target_unit == "fcam.core" for e in EDGES)


def test_every_unit_is_placed() -> None:
    unplaced = sorted(UNITS - set(FLOOR))
    assert not unplaced, (
        f"units missing from LAYERS in tests/test_architecture.py (and from "
        f"docs/concepts/architecture.md): {unplaced}"
    )


def unit_cycles(edges: list[Edge]) -> list[set[str]]:
    """The sets of units that import each other in a cycle (Tarjan's strongly connected
    components of more than one unit)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        if edge.source_unit != edge.target_unit:
            graph[edge.source_unit].add(edge.target_unit)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.add(item)
                if item == node:
                    break
            components.append(component)

    for node in sorted(set(graph) | {t for succs in graph.values() for t in succs}):
        if node not in index:
            strongconnect(node)
    return [c for c in components if len(c) > 1]


def test_cycle_finder_sees_a_two_unit_cycle() -> None:
    edges = [Edge("fcam.data.a", "fcam.metrics.b", "x.py", 1, None),
             Edge("fcam.metrics.b", "fcam.data.c", "y.py", 2, "f"),
             Edge("fcam.metrics.b", "fcam.core.io", "y.py", 3, None)]
    assert unit_cycles(edges) == [{"fcam.data", "fcam.metrics"}]
    assert unit_cycles(edges[1:]) == []


def test_no_cycles_between_units() -> None:
    edges = _graph_edges()
    cycles = unit_cycles(edges)
    offending = [e for e in edges
                 if any(e.source_unit in c and e.target_unit in c for c in cycles)]
    assert not cycles, _report(
        f"import cycles between units {[sorted(c) for c in cycles]}; edges:", offending
    )


def test_no_upward_imports() -> None:
    upward = [e for e in _graph_edges()
              if e.source_unit in FLOOR and e.target_unit in FLOOR
              and FLOOR[e.target_unit] > FLOOR[e.source_unit]]
    assert not upward, _report("imports against LAYERS (lower unit -> higher unit):", upward)


def _demo_importer(edge: Edge) -> bool:
    places = [edge.source] + ([f"{edge.source}:{edge.function}"] if edge.function else [])
    return any(fnmatch.fnmatchcase(p, pattern) for p in places for pattern in DEMO_IMPORTERS)


def test_demo_is_only_imported_by_its_command() -> None:
    bad = [e for e in EDGES
           if e.target_unit == "fcam.demo" and e.source_unit != "fcam.demo"
           and not _demo_importer(e)]
    assert not bad, _report(
        "fcam.demo imported outside fcam/demo and the CLI's demo command:", bad
    )


def test_core_imports_no_other_unit() -> None:
    out = [e for e in EDGES if e.source_unit == "fcam.core" and e.target_unit != "fcam.core"]
    assert not out, _report("fcam.core must not import other fcam units:", out)
