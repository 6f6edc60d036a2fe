"""The command-line layer: ``guide-core list | fit | compare``.

Its input readers (models from ``MODULE:FUNCTION`` or a file, data from
.npz/.pt/.csv) and built-in examples (eight schools). It may import every layer
below it: the workflow, the registry and the core.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
