"""The package's import rules: nothing outside ``cli/`` imports ``cli/``, and no two modules import each other,
directly or through others (every ``import`` counts, also those inside functions)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import captum_gradeclip

PACKAGE = Path(captum_gradeclip.__file__).parent
NAME = "captum_gradeclip"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name imported from a package counts as its submodule when
    there is one)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, path.name == "__init__.py", node)
                names = [f"{source}.{alias.name}" for alias in node.names]
                names = [n if n in modules else source for n in names]
            else:
                continue
            for name in names:
                while name and name not in modules:  # `import a.b.c` names module a.b.c (or the closest package)
                    name = name.rpartition(".")[0]
                if name.startswith(NAME) and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

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
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _is_package_init_edge(source: str, target: str) -> bool:
    """A package's ``__init__`` re-exporting its own submodules, or a submodule importing its siblings through it,
    is how a package is built, not a circle between layers."""
    return target.startswith(source + ".") or source.startswith(target + ".")


def test_nothing_outside_cli_imports_cli():
    outside = {
        module: sorted(t for t in targets if t == f"{NAME}.cli" or t.startswith(f"{NAME}.cli."))
        for module, targets in import_graph().items()
        if not (module == f"{NAME}.cli" or module.startswith(f"{NAME}.cli.") or module == f"{NAME}.__main__")
    }
    assert not {m: t for m, t in outside.items() if t}, "library modules that import the command line"


def test_the_package_has_no_import_cycles():
    graph = {m: {t for t in ts if not _is_package_init_edge(m, t)} for m, ts in import_graph().items()}
    assert _cycles(graph) == []


def test_the_checks_see_a_planted_cycle_and_a_planted_cli_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert f"{NAME}.cli.commands" in import_graph()[f"{NAME}.cli.main"], "the graph sees the CLI's own imports"


#: The layers, bottom first: a module may import its own layer and those below, never one above. A module not
#: named here (a new top-level module) fails the test below until it is placed.
LAYERS: list[tuple[str, ...]] = [
    ("ops", "_compat", "vocabulary"),  # vocabulary: token pieces -> words, plain text maths the adapters use
    ("adapters",),
    ("wrappers",),
    ("attr", "baselines"),
    ("methods",),
    ("metrics",),
    ("results", "images", "runs", "finetune", "analysis", "viz", "zoo", "loading", "specs"),
    ("cli", "__main__"),
]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the package's __init__: the public names, imported lazily
    return next((i for i, names in enumerate(LAYERS) if parts[1] in names), None)


def _upward_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if target != NAME and (_layer(target) or 0) > (_layer(source) or 0)
    )


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if _layer(m) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    assert _upward_arrows(import_graph()) == []


def test_the_layer_check_sees_a_planted_upward_import():
    graph = {f"{NAME}.ops": {f"{NAME}.wrappers"}, f"{NAME}.cli.main": {f"{NAME}.ops"}}
    assert _upward_arrows(graph) == [(f"{NAME}.ops", f"{NAME}.wrappers")]


def test_no_method_module_imports_the_registry():
    graph = import_graph()
    methods = [m for m in graph if m.startswith((f"{NAME}.attr", f"{NAME}.baselines"))]
    assert len(methods) > 8
    assert {m: sorted(graph[m]) for m in methods if f"{NAME}.methods" in graph[m]} == {}


def test_importing_the_method_modules_does_not_import_the_registry():
    # at run time too (an import inside a function would hide from the graph until called)
    code = (
        "import importlib, pkgutil, sys\n"
        "for package in ('captum_gradeclip.attr', 'captum_gradeclip.baselines'):\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.iter_modules(root.__path__):\n"
        "        importlib.import_module(f'{package}.{info.name}')\n"
        "print('captum_gradeclip.methods' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
