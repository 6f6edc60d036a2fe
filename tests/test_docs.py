"""The documentation covers the code: every hook, every public name, every guide.

The Sphinx build itself (warnings as errors, as in ``nox -s docs``) runs in the
default test run, so CI builds the docs (Sphinx is in the ``test`` extra).
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import guide_core
from guide_core.registry import Registry, hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _hookspecs() -> dict[str, object]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


def _plain_signature(name: str, fn: object) -> str:
    """``name(params)`` as Python writes it, without annotations."""
    sig = inspect.signature(fn)
    params = [p.replace(annotation=p.empty) for p in sig.parameters.values()]
    plain = sig.replace(parameters=params, return_annotation=sig.empty)
    return f"{name}{plain}"


def test_there_are_hookspecs():
    assert _hookspecs(), "found no function marked as a guide_core hookspec"


@pytest.mark.parametrize("name", sorted(_hookspecs()))
def test_hook_documented_with_exact_signature(name):
    fn = _hookspecs()[name]
    expected = _plain_signature(name, fn)
    text = (DOCS / "plugins.rst").read_text(encoding="utf-8")
    assert f".. function:: {expected}\n" in text, (
        f"docs/plugins.rst does not document the hook {name!r} with its exact "
        f"signature; add a '.. function:: {expected}' entry under 'Hooks'"
    )
    assert (inspect.getdoc(fn) or "").strip(), f"hookspec {name!r} has no docstring"


@pytest.mark.parametrize("name", sorted(guide_core.__all__))
def test_public_name_in_api_reference(name):
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    assert re.search(rf"\b{re.escape(name)}\b", text), (
        f"guide_core.{name} is public (in __all__) but docs/api.rst never mentions it"
    )


def _plugin_api() -> list[str]:
    import guide_core.plugin

    return sorted(guide_core.plugin.__all__)


@pytest.mark.parametrize("name", _plugin_api())
def test_plugin_api_name_in_plugin_docs(name):
    text = (DOCS / "plugins.rst").read_text(encoding="utf-8")
    section = text.partition("The plugin API\n---")[2].partition("\n---")[0]
    assert re.search(rf"``{re.escape(name)}``", section), (
        f"guide_core.plugin.{name} is in the plugin API but the section 'The "
        "plugin API' of docs/plugins.rst does not list it"
    )


def test_every_installed_guide_is_documented():
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.rst")))
    reg = Registry(autoload=True)
    missing = [
        f"{name} ({reg.info(name).class_name}, family {reg.info(name).family!r})"
        for name in reg.names()
        if not re.search(rf"\b{re.escape(name)}\b", text)
    ]
    assert not missing, (
        "installed guides missing from the docs (add them to a guide-family "
        f"table in docs/families/<family>.rst): {', '.join(missing)}"
    )


def test_sphinx_build_has_no_warnings(tmp_path):
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, (
        f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    )
    assert (tmp_path / "html" / "plugins.html").exists()


def test_every_hook_has_a_test():
    tests = "".join(p.read_text() for p in Path(__file__).parent.rglob("test_*.py"))
    for name in _hookspecs():
        assert f"def {name}(" in tests, f"no test implements the hook {name}"


def _code_block_after(text: str, heading: str) -> str:
    """Return the first ``code-block`` after ``heading``, dedented."""
    lines = text[text.index(heading) :].splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith(".. code-block::"))
    code = []
    for line in lines[first + 1 :]:
        if line.strip() and not line.startswith("   "):
            break
        code.append(line[3:])
    return "\n".join(code).strip()


def test_the_ten_line_plugin_in_the_docs_runs():
    import pyro
    import pyro.distributions as dist

    from guide_core.registry import Registry

    code = _code_block_after((DOCS / "plugins.rst").read_text(), "A plugin in ten")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 12
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the documented example itself
    reg = Registry(autoload=False)
    hook = staticmethod(namespace["register_guides"])
    reg.register(type("TenLinePlugin", (), {"register_guides": hook}))

    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    assert set(reg.make("auto_frozen", model)()) == {"x"}


def test_the_migration_example_in_the_docs_runs(capsys):
    text = (DOCS / "migrating.rst").read_text()
    code = _code_block_after(text, "Everything else stays")
    exec(code, {})  # noqa: S102 - the documented example itself
    printed = capsys.readouterr().out
    assert "AutoNormal.locs.loc" in printed


FAMILY_PAGES = sorted((DOCS / "families").glob("*.rst"))


@pytest.mark.parametrize(
    "page", [p for p in FAMILY_PAGES if p.stem != "index"], ids=lambda p: p.stem
)
def test_every_family_page_has_an_example_that_runs(page, capsys):
    import pyro

    family = page.stem
    if family not in Registry(autoload=True).families():
        pytest.skip(f"family {family!r} is not installed")
    pyro.clear_param_store()
    code = _code_block_after(page.read_text(), "\nExample\n")
    exec(code, {})  # noqa: S102 - the documented example itself
    assert capsys.readouterr().out.strip(), "the example prints what it shows"
