"""The layers of guide_core import one way only: cli -> workflow -> core, registry.

Every import counts, those inside functions too (``TYPE_CHECKING`` blocks aside),
and no module of ``guide_core`` or ``guide_plugins`` may sit in an import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "guide_core": ROOT / "guide_core",
    "guide_plugins": ROOT / "plugins" / "guide_plugins",
}
# layer -> the layers it must not import
FORBIDDEN = {
    "core": {"registry", "workflow", "cli"},
    "registry": {"workflow", "cli"},
    "workflow": {"cli"},
    "testing": {"cli"},  # the contract suite: uses the public API, never the CLI
}


def _modules() -> dict[str, Path]:
    out = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The modules of ``MODULES`` that module ``name`` imports, anywhere in it."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found |= {alias.name for alias in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    up = package.split(".")[: len(package.split(".")) - sub.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in sub.names}
    return {m for m in found if m in MODULES and m != name}


def _graph() -> dict[str, set[str]]:
    """Import edges, less those between a package's ``__init__`` and its own
    modules (re-exports down, the package's name up)."""
    graph = {}
    for name in MODULES:
        graph[name] = {
            dep
            for dep in _imports(name)
            if not dep.startswith(name + ".") and not name.startswith(dep + ".")
        }
    return graph


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "guide_core" and len(parts) > 1 else None


def test_the_layers_are_subpackages():
    top = [p.name for p in PACKAGES["guide_core"].glob("*.py")]
    assert sorted(top) == ["__init__.py", "__main__.py"]
    for layer in ("core", "registry", "workflow", "cli"):
        assert (PACKAGES["guide_core"] / layer / "__init__.py").exists()


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_no_layer_above_it(layer):
    # ``guide_core`` itself imports the workflow, so the lower layers may not
    # reach it either.
    above = FORBIDDEN[layer] | ({None} if "workflow" in FORBIDDEN[layer] else set())
    bad = [
        f"{name} imports {dep}"
        for name in MODULES
        if _layer(name) == layer
        for dep in sorted(_imports(name))
        if dep.startswith("guide_core") and _layer(dep) in above
    ]
    assert not bad, f"the {layer} layer reaches up: " + "; ".join(bad)


def test_nothing_imports_the_contract_suite():
    """guide_core.testing imports pytest: no module of the package or the
    plugins may import it, so ``import guide_core`` never pulls pytest in."""
    bad = [
        f"{name} imports {dep}"
        for name in MODULES
        if _layer(name) != "testing"
        for dep in sorted(_imports(name))
        if _layer(dep) == "testing"
    ]
    assert not bad, "; ".join(bad)


def test_no_import_cycle():
    graph, index, low, stack, on, cycles = _graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(" <-> ".join(sorted(component)))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_checker_sees_imports_inside_functions(tmp_path, monkeypatch):
    """A deferred import is still an edge (the cycles the layout removed were)."""
    assert "guide_core.registry.manager" in _imports("guide_core.registry")
    manager = _imports("guide_core.registry.manager")
    assert "guide_core.registry.warm_start" in manager
    fake = tmp_path / "mod.py"
    fake.write_text("def f():\n    from guide_core.cli import main\n")
    monkeypatch.setitem(MODULES, "guide_core.core.fake", fake)
    assert _imports("guide_core.core.fake") == {"guide_core.cli", "guide_core.cli.main"}
