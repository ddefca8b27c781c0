"""The tracker bridge's per-frame arithmetic in C (``spine_nav/tracking/_frames.c``), when it is built.

``frames`` is the extension module, or None: then the pure-Python twins run (``BridgeCore._decode_chunk_py``,
:func:`spine_nav.tracking.tools.compose_rows_inv_a_b_c`), which define the results the C functions are tested
to give bit for bit (tests/test_native_frames.py). ``WHY_PYTHON`` says why the Python twins run ("" when C does).
The set-up builds the extension (setup.py ``ext_modules``; ``make`` needs gcc and the Python headers); the
environment variable ``SPINE_NAV_NATIVE=0`` turns it off, e.g. to measure the Python path (docs/performance.md).
"""
from __future__ import annotations

from spine_nav.native import load


frames, WHY_PYTHON = load("_frames", "spine_nav.tracking")


def describe() -> str:
    """Which per-frame arithmetic runs, for logs: "C" or "Python (why)"."""
    return "C" if frames is not None else f"Python ({WHY_PYTHON})"
