"""Imports of the heavy build-time libraries, with an error that says what to install."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

EXPORT_HINT = "install the export extra: pip install '.[export]'"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming the extra that provides it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"export needs {module!r}: {EXPORT_HINT}") from err
