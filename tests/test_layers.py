"""The package's layers: every import arrow points down, and no modules import each other in a circle.

The layers are those of docs/architecture.md. Imports read here are the ones
that run: type-only imports (under ``if TYPE_CHECKING:``) draw no arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dicomtrolley"

LAYERS: list[set[str]] = [
    {"_version", "exceptions", "_compat", "_values", "_paths"},
    {"core", "roles", "_concurrency"},
    {"_http", "_multipart", "_header", "_tree", "_associations", "_dimse", "_retrieve_receiver", "_http_downloader",
     "_http_searcher", "_annex_e", "_get_contexts", "_jsonstream", "_spooled", "_annex_e_table", "_annex_e_profile",
     "_part10", "_safe_attributes", "_free_text", "_pseudonyms", "_originals", "_processes", "_mapping", "tokens",
     "_accept", "_store_wire"},
    {"qido_rs", "wado_rs", "wado_uri", "auth", "dicom_qr", "dimse_retrieve", "mint", "rad69",
     "storage", "results", "progress", "caching", "deidentify", "metadata", "preview", "audit", "capped", "sending",
     "stow_rs", "dimse_store", "destination"},
    {"_planning", "_download", "_dataset_storage"},
    {"trolley"},
    {"_trolley_profile"},
    {"export", "profiles", "servers", "probe", "probe_dimse", "probe_cap", "probe_access"},
    {"cli", "_cli", "__init__", "demo"},
]
"""Bottom to top; a module may import from its own layer and the ones below."""

UPWARD_EXCEPTIONS = {("trolley", "export")}
"""Trolley.export hands over to the export subpackage, importing it on first use."""


def layer_of(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if module in layer:
            return index
    raise AssertionError(f"dicomtrolley.{module} has no layer: add it to LAYERS here and to docs/architecture.md")


def module_name(path: Path) -> str:
    """The top-level name of a module or subpackage of dicomtrolley (``export`` for export/runner.py)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def runtime_imports(path: Path) -> set[str]:
    """The dicomtrolley modules ``path`` imports when it runs, wherever the import statement sits."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "dicomtrolley":
                found.update([parts[1]] if len(parts) > 1 else [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add((node.module or "").split(".")[0] or module_name(path))
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dicomtrolley."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph.setdefault(module_name(path), set()).update(runtime_imports(path))
    return graph


def test_every_module_has_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def test_every_import_points_to_the_same_layer_or_below() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {imported} (layer {layer_of(imported)})"
        for module, imports in import_graph().items()
        for imported in imports
        if layer_of(imported) > layer_of(module) and (module, imported) not in UPWARD_EXCEPTIONS
    ]
    assert upward == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = {m: i - {t for (f, t) in UPWARD_EXCEPTIONS if f == m} for m, i in import_graph().items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_the_core_imports_nothing_of_the_package_but_the_exceptions_and_the_value_rules() -> None:
    assert import_graph()["core"] == {"exceptions", "_values"}


COMPATIBILITY_ALIASES = {"core": {"Searcher", "Downloader"}}
"""Names a module lends only for 4.x imports (``core.__getattr__``); the package imports them from where they live."""


def test_the_package_imports_nothing_through_a_compatibility_alias() -> None:
    through_alias = [
        f"{path.relative_to(PACKAGE)}: {name} from dicomtrolley.{node.module.split('.')[1]}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dicomtrolley.")
        for name in (alias.name for alias in node.names)
        if name in COMPATIBILITY_ALIASES.get(node.module.split(".")[1], set())
    ]
    assert through_alias == []
