"""The import structure of app/, read from the source with ``ast``: no import cycles, no import
from a lower layer to a higher one, vendor SDKs only under app/clients/.

Every import counts, module level or inside a function, except those under
``if TYPE_CHECKING:`` (they never run). ``from package import name`` depends on
``package.name`` when that is a module, else on the package itself; the implicit import of
a module's parent packages is not counted (Python runs a package's ``__init__`` first, but
a submodule does not depend on what that ``__init__`` imports).

The layers, lowest first; a module may import from its own group and from lower layers.
A new package or loose module in app/ must be placed in LAYERS, on purpose.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

LAYERS: list[list[tuple[str, ...]]] = [
    # The base: settings, rows, logging, the shared vocabulary, audio formats; one group whose
    # modules may import each other (cycles aside).
    [("app.config", "app.db", "app.models", "app.logging", "app.redaction", "app.localtime", "app.business_hours", "app.turn",
      "app.audio")],
    [("app.ops",), ("app.operators",)],  # just above the base, side by side: neither imports the other
    [("app.clients",)],  # the only importers of vendor SDKs
    [("app.knowledge",)],
    [("app.channels",)],
    [("app.assistant",)],
    # The pipeline of a WhatsApp turn (its realtime path included: app/pipeline/realtime.py).
    [("app.pipeline",)],
    [("app.inbox",)],
    [("app.services",)],  # builds the gateways, the knowledge base and the inbound writer once per process
    [("app.web",)],
    [("app",)],  # the factory
]
# Upward imports known today, each waiting for its fix; an entry that is fixed must leave the list.
KNOWN_UPWARD_IMPORTS = {
    # The CLI is an entry point registered by the factory: it reads the database through the
    # services (current_services().db); its place is above the services, not in app/operators/.
    "app.operators.cli -> app.services",
}
VENDOR_SDKS = ("twilio", "openai", "elevenlabs", "google")
SDK_HOME = "app.clients"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``root`` (a package directory)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for statement in node.body:
                skipped.update(id(n) for n in ast.walk(statement))
    return skipped


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) for every import that runs, resolved against ``modules``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule if submodule in modules else source, node.lineno))
    return found


def import_graph(root: Path = APP) -> dict[str, list[tuple[str, int]]]:
    """Module -> the modules of the same tree it imports (with the line of each import)."""
    modules = module_files(root)
    return {name: [(target, line) for target, line in imports_of(name, path, modules) if target in modules]
            for name, path in modules.items()}


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or any(t == node for t, _ in graph.get(node, [])):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def placement(module: str) -> tuple[int, int] | None:
    """(layer, group) of the most specific LAYERS prefix that is ``module`` or one of its packages."""
    best: tuple[int, int, int] | None = None
    for rank, layer in enumerate(LAYERS):
        for group, prefixes in enumerate(layer):
            for prefix in prefixes:
                if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[2]):
                    best = (rank, group, len(prefix))
    return None if best is None else best[:2]


def _name(place: tuple[int, int]) -> str:
    rank, group = place
    return "/".join(LAYERS[rank][group])


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Imports into a higher layer, or sideways into another group of the same layer."""
    found = []
    for module, targets in sorted(graph.items()):
        for target, line in targets:
            here, there = placement(module), placement(target)
            if there[0] > here[0] or (there[0] == here[0] and there[1] != here[1]):
                found.append(f"{module}:{line} imports {target} ({_name(here)} -> {_name(there)})")
    return found


def vendor_imports_outside(root: Path = APP, home: str = SDK_HOME) -> list[str]:
    modules = module_files(root)
    found = []
    for name, path in sorted(modules.items()):
        if name == home or name.startswith(home + "."):
            continue
        for target, line in imports_of(name, path, modules):
            if target.split(".")[0] in VENDOR_SDKS:
                found.append(f"{name}:{line} imports {target}")
    return found


# ---- the rules, on app/ ------------------------------------------------------------------------------


def test_every_module_of_app_has_a_layer():
    unplaced = [name for name in module_files(APP) if placement(name) is None]
    assert unplaced == [], f"place these in LAYERS: {unplaced}"


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_only_go_down_the_layers():
    violations = upward_imports(import_graph())
    pairs = {f"{v.split(':')[0]} -> {v.split(' imports ')[1].split(' ')[0]}": v for v in violations}
    new = [v for pair, v in pairs.items() if pair not in KNOWN_UPWARD_IMPORTS]
    assert new == [], "\n".join(new)
    fixed = KNOWN_UPWARD_IMPORTS - set(pairs)
    assert not fixed, f"fixed, so remove from KNOWN_UPWARD_IMPORTS: {sorted(fixed)}"


def test_vendor_sdks_are_imported_only_under_app_clients():
    violations = vendor_imports_outside()
    assert violations == [], "\n".join(violations)


# ---- the checker itself, on a small tree -------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    def write(files: dict[str, str]) -> Path:
        for relative, text in files.items():
            path = tmp_path / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return tmp_path / "app"

    return write


def test_the_checker_finds_cycles_through_function_level_imports_but_not_type_checking(tree):
    root = tree({
        "app/__init__.py": "",
        "app/a.py": "from app import b\n",
        "app/b.py": "def later():\n    from app.c import thing\n",
        "app/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.d import x\nimport app.a\n",
        "app/d.py": "from . import c\n",
    })
    graph = import_graph(root)
    assert graph["app.d"] == [("app.c", 1)]  # relative imports resolve
    assert cycles(graph) == [["app.a", "app.b", "app.c"]]  # d -> c is not part of a cycle (c -> d is typing only)


def test_the_checker_refuses_an_upward_import_and_a_vendor_sdk_outside_clients(tree, monkeypatch):
    root = tree({
        "app/__init__.py": "",
        "app/config.py": "import app.web.views\n",
        "app/web/__init__.py": "",
        "app/web/views.py": "from app.config import x\nimport openai\n",
        "app/clients/__init__.py": "",
        "app/clients/openai_client.py": "from openai import OpenAI\n",
    })
    graph = import_graph(root)
    assert upward_imports(graph) == ["app.config:1 imports app.web.views (app.config/app.db/app.models/"
                                     "app.logging/app.redaction/app.localtime/app.business_hours/app.turn/app.audio -> app.web)"]
    assert vendor_imports_outside(root) == ["app.web.views:2 imports openai"]
