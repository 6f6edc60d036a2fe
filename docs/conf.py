"""Sphinx configuration for the guide_core site (``nox -s docs``).

Build with warnings as errors::

    sphinx-build -W --keep-going -b html docs docs/_build

Besides the settings, this file defines two small local directives used by
``families/*.rst``: ``guide-family`` renders a family's table of Pyro classes and
registry names, and ``installed-guides`` lists every installed guide. Both
state, at build time, what the installed plugins provide, so the page never
claims a guide that is not there (and ``families/*.rst`` are re-read on every
build, so the status never comes from a stale cache).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import attrs
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parent.parent
# Import the checkout's package even where it is not installed.
sys.path.insert(0, str(ROOT))

import guide_core  # noqa: E402
from guide_core import registry  # noqa: E402

project = "guide_core"
author = "guide_core developers"
copyright = "guide_core developers"  # noqa: A001 - Sphinx's name for it
version = release = guide_core.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]

# NumPy-style docstrings only.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
# "Attributes" sections become field lists, not attribute entries, so they
# never clash with what autodoc documents for the same class.
napoleon_use_ivar = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}

nitpicky = False
exclude_patterns = ["_build"]
root_doc = "index"

html_theme = "alabaster"
html_title = f"guide_core {release}"
html_static_path: list[str] = []

_log = logging.getLogger(__name__)


def snake_case(class_name: str) -> str:
    """Return a class name's registry name: ``AutoIAFNormal`` is ``auto_iaf_normal``."""
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\b)|[A-Z]?[a-z0-9]+|[A-Z]+", class_name)
    return "_".join(w.lower() for w in words)


def _parse(directive: SphinxDirective, text: list[str]) -> list[nodes.Node]:
    container = nodes.container()
    source = directive.get_source_info()[0] or "conf.py"
    directive.state.nested_parse(StringList(text, source=source), 0, container)
    return container.children


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    text = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        text.append(f"   * - {row[0]}")
        text += [f"     - {cell}" for cell in row[1:]]
    return [*text, ""]


class GuideFamily(SphinxDirective):
    """``.. guide-family:: <family>`` with one ``ClassName registry_name`` per line.

    A line may end in ``base`` for an abstract base class that a family need
    not register by name.

    Renders the family's table with the installed status of each guide, adding
    any guide the installed plugins register in this family that the page does
    not list. Option ``:backends:`` (space-separated AutoGaussian back-end
    names) adds the back ends and their status.
    """

    required_arguments = 1
    has_content = True
    option_spec = {"backends": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        family = self.arguments[0]
        specs = {name: registry.info(name) for name in registry.names()}
        entries = []
        for line in self.content:
            if line.strip():
                class_name, name, *flags = line.split()
                entries.append((class_name, name, "base" in flags))
                if snake_case(class_name) != name:
                    _log.warning(
                        "guide-family %s: %s should be registered as %r, not %r",
                        family,
                        class_name,
                        snake_case(class_name),
                        name,
                        location=self.get_location(),
                    )
        listed = {name for _, name, _ in entries}
        family_installed = any(s.family == family for s in specs.values())
        rows = []
        for class_name, name, base in entries:
            spec = specs.get(name)
            if spec is None and base and family_installed:
                status = "base class, not registered by name"
            elif spec is None:
                status = "planned"
            elif spec.family != family:
                status = f"installed, in family ``{spec.family}``"
            else:
                status = f"installed (plugin ``{spec.plugin}``)"
            rows.append((f"``{class_name}``", f"``{name}``", status))
        for name, spec in sorted(specs.items()):
            if spec.family == family and name not in listed:
                status = f"installed (plugin ``{spec.plugin}``), not described here"
                rows.append((f"``{spec.class_name}``", f"``{name}``", status))
        planned = sum(row[2] == "planned" for row in rows)
        if planned == len(rows):
            head = "**Status: planned.** No installed plugin provides this family yet."
        elif planned:
            head = "**Status: partly installed.** The rows marked planned are not."
        else:
            head = "**Status: installed.**"
        text = [head, "", *_table(("Class", "Registry name", "Status"), rows)]
        if "backends" in self.options:
            have = registry.backends()
            names = self.options["backends"].split()
            names += [n for n in have if n not in names]
            text += ["Back ends (``backend=``):", ""]
            for backend in names:
                spec = have.get(backend)
                state = "planned" if spec is None else f"installed -- {spec.summary}"
                text.append(f"* ``{backend}``: {state}")
            text.append("")
        return _parse(self, text)


class InstalledGuides(SphinxDirective):
    """``.. installed-guides::``: every guide installed at build time, by family."""

    def run(self) -> list[nodes.Node]:
        rows = []
        for family, names in registry.families().items():
            for name in names:
                spec = registry.info(name)
                rows.append(
                    (family, f"``{name}``", f"``{spec.class_name}``", spec.plugin)
                )
        if not rows:
            text = ["No guide plugin was installed when this site was built."]
        else:
            text = _table(("Family", "Registry name", "Class", "Plugin"), rows)
        broken = registry.broken()
        if broken:
            text += [
                "",
                "Plugins that failed to load: " + ", ".join(sorted(broken)) + ".",
            ]
        return _parse(self, text)


_FUNCTION_REPR = re.compile(r"<function ([\w.<>]+?)(?: at 0x[0-9a-fA-F]+)?>")


def _plain_defaults(app, what, name, obj, options, signature, return_annotation):
    """Show a function default as its name (``fallback=init_to_feasible``).

    Its repr (``<function init_to_feasible>``) is not Python, so Sphinx could not
    parse the signature and would print the type hints raw.
    """
    if signature:
        signature = _FUNCTION_REPR.sub(r"\1", signature)
        # attrs shows a ``factory=`` default as NOTHING; show the call instead.
        if what == "class" and attrs.has(obj):
            for field in attrs.fields(obj):
                default = field.default
                if isinstance(default, attrs.Factory) and not default.takes_self:
                    made = getattr(default.factory, "__name__", "factory")
                    alias = field.alias or field.name
                    pattern = rf"(\b{alias}: [^,=]*= )NOTHING\b"
                    signature = re.sub(pattern, rf"\g<1>{made}()", signature)
    return signature, return_annotation


def _always_reread(app, env, added, changed, removed) -> list[str]:
    """The installed plugins may have changed since the last build."""
    return [doc for doc in env.found_docs if doc.startswith("families/")]


def setup(app) -> dict:
    app.connect("autodoc-process-signature", _plain_defaults)
    app.connect("env-get-outdated", _always_reread)
    app.add_directive("guide-family", GuideFamily)
    app.add_directive("installed-guides", InstalledGuides)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
