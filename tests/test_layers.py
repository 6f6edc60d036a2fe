"""The layers of guide_core import one way only: cli -> workflow -> core, registry.

Every import counts, those inside functions too (``TYPE_CHECKING`` blocks aside),
and no module of ``guide_core`` or ``guide_plugins`` may sit in an import cycle.
The plugin API, ``guide_core.plugin``, re-exports the core and the registry and
nothing above them; plugins (the built-in families and the example third-party
plugin) import ``guide_core`` only through it and the package's ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "guide_core": ROOT / "guide_core",
    "guide_plugins": ROOT / "plugins" / "guide_plugins",
}
EXAMPLE_PLUGIN = ROOT / "plugins" / "examples" / "guide-core-example"
# layer -> the layers it must not import
FORBIDDEN = {
    "core": {"registry", "workflow", "cli"},
    "registry": {"workflow", "cli"},
    "plugin": {"workflow", "cli"},
    "workflow": {"cli"},
    "testing": {"cli"},  # the contract suite: uses the public API, never the CLI
}
# The modules of guide_core a plugin may import, or reach through attributes.
PLUGIN_API = ("guide_core", "guide_core.plugin", "guide_core.registry")


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
    assert sorted(top) == ["__init__.py", "__main__.py", "plugin.py"]
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


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """The module's statements, less its ``if TYPE_CHECKING:`` blocks."""
    return [
        node
        for node in tree.body
        if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
    ]


def _public(module: str) -> set[str]:
    return set(importlib.import_module(module).__all__)


def _api_violations(path: Path, name: str) -> list[str]:
    """Where the plugin module ``name`` (at ``path``) uses ``guide_core`` other
    than through ``from guide_core[.plugin] import <public name>``: one
    ``"module:line: what"`` each. Imports anywhere count, as in
    :func:`_imports`; so do attributes of an imported ``guide_core`` module."""
    bad: list[str] = []
    bound: dict[str, str] = {}  # local name -> the guide_core module it holds

    def check(line: int, module: str, names: list[str]) -> None:
        if module not in ("guide_core", "guide_core.plugin"):
            bad.append(f"{name}:{line}: imports from {module}, not the plugin API")
            return
        for alias in names:
            if alias not in _public(module) and f"{module}.{alias}" not in PLUGIN_API:
                bad.append(f"{name}:{line}: {module}.{alias} is not in its __all__")

    nodes = [
        sub
        for node in _top_level(ast.parse(path.read_text()))
        for sub in ast.walk(node)
    ]
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            if module.partition(".")[0] == "guide_core":
                check(node.lineno, module, [alias.name for alias in node.names])
                for alias in node.names:  # ``from guide_core import registry``
                    if f"{module}.{alias.name}" in PLUGIN_API:
                        bound[alias.asname or alias.name] = f"{module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] != "guide_core":
                    continue
                if alias.name not in PLUGIN_API:
                    bad.append(f"{name}:{node.lineno}: imports {alias.name}")
                elif alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound["guide_core"] = "guide_core"
    for node in nodes:  # ``registry.make``, ``guide_core.plugin.constrain``, ...
        if not isinstance(node, ast.Attribute) or isinstance(node.ctx, ast.Store):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if not (isinstance(base, ast.Name) and base.id in bound):
            continue
        module = bound[base.id]
        while chain and f"{module}.{chain[0]}" in PLUGIN_API:
            module = f"{module}.{chain.pop(0)}"
        lazy = module == "guide_core" and chain and chain[0].startswith("Auto")
        if chain and chain[0] not in _public(module) and not lazy:
            bad.append(f"{name}:{node.lineno}: {module}.{chain[0]} is not public")
    return sorted(set(bad), key=lambda line: (int(line.split(":")[1]), line))


def _plugin_modules() -> dict[str, Path]:
    found = {n: p for n, p in MODULES.items() if n.partition(".")[0] == "guide_plugins"}
    for path in sorted(EXAMPLE_PLUGIN.rglob("*.py")):
        parts = list(path.relative_to(EXAMPLE_PLUGIN).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_plugins_import_only_the_plugin_api():
    modules = _plugin_modules()
    assert "guide_core_example" in modules and "guide_plugins.normal" in modules
    bad = [v for name, path in modules.items() for v in _api_violations(path, name)]
    assert not bad, (
        "plugins must import guide_core only as `from guide_core import <name in "
        "guide_core.__all__>` or `from guide_core.plugin import <name in "
        "guide_core.plugin.__all__>`:\n" + "\n".join(bad)
    )


def test_the_plugin_api_names_exist_and_are_documented():
    import guide_core.plugin as api

    assert len(api.__all__) == len(set(api.__all__))
    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing, f"guide_core.plugin.__all__ names missing objects: {missing}"
    bare = [n for n in api.__all__ if not (getattr(api, n).__doc__ or "").strip()]
    assert not bare, f"names of the plugin API without a docstring: {bare}"
    assert (api.__doc__ or "").strip()


def test_the_plugin_api_checker_sees_bad_imports(tmp_path):
    fake = tmp_path / "mod.py"
    fake.write_text(
        "from typing import TYPE_CHECKING\n"
        "import guide_core\n"
        "from guide_core import GuideSpec, registry\n"
        "from guide_core.plugin import constrain\n"
        "if TYPE_CHECKING:\n"
        "    from guide_core.core.guide import AutoGuide\n"
        "def f():\n"
        "    from guide_core.core.latent import get_nested\n"
        "    from guide_core.plugin import not_a_name\n"
        "    import guide_core.workflow.fitting\n"
        "    registry.make('auto_normal', None)\n"
        "    return guide_core.workflow, guide_core.AutoNormal, registry._default\n"
    )
    assert _api_violations(fake, "fake") == [
        "fake:8: imports from guide_core.core.latent, not the plugin API",
        "fake:9: guide_core.plugin.not_a_name is not in its __all__",
        "fake:10: imports guide_core.workflow.fitting",
        "fake:12: guide_core.registry._default is not public",
        "fake:12: guide_core.workflow is not public",
    ]
