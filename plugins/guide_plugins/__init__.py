"""First-party guide families for guide_core.

Each module here is a plugin, registered through an entry point in
guide_core's own ``pyproject.toml`` and discovered at run time exactly as a
third party's plugin would be. Nothing in ``guide_core`` imports this package.
"""
