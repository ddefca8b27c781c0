"""The tracker bridge's per-frame arithmetic in C (``spine_nav/tracking/_frames.c``), when it is built.

``frames`` is the extension module, or None: then the pure-Python twins run (``BridgeCore._decode_chunk_py``,
:func:`spine_nav.tracking.tools.compose_rows_inv_a_b_c`), which define the results the C functions are tested
to give bit for bit (tests/test_native_frames.py). ``WHY_PYTHON`` says why the Python twins run ("" when C does).
The set-up builds the extension (setup.py ``ext_modules``; ``make`` needs gcc and the Python headers); the
environment variable ``SPINE_NAV_NATIVE=0`` turns it off, e.g. to measure the Python path (docs/performance.md).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(module: str, package: str) -> tuple[ModuleType | None, str]:
    """Import the compiled ``package.module`` -> (module, "") or (None, why not)."""
    if os.environ.get("SPINE_NAV_NATIVE", "1") == "0":
        return None, "SPINE_NAV_NATIVE=0"
    try:
        return importlib.import_module(f"{package}.{module}"), ""
    except ImportError as exc:
        return None, f"{package}.{module} not built ({exc}); run the set-up (make) to build it"


frames, WHY_PYTHON = load("_frames", "spine_nav.tracking")


def describe() -> str:
    """Which per-frame arithmetic runs, for logs: "C" or "Python (why)"."""
    return "C" if frames is not None else f"Python ({WHY_PYTHON})"
