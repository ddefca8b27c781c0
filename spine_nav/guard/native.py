"""The guard's per-sample geometry in C (``spine_nav/guard/_judge.c``), when it is built.

``judge`` is the extension module, or None: then the pure-Python twins run
(:func:`spine_nav.guard.metrics.tip_and_axis_from_quat_py`, :func:`spine_nav.guard.metrics.compute_metrics_py`),
which define the results the C functions are tested to give bit for bit (tests/test_native_guard.py). The callers
read ``native.judge`` at call time (a test sets it to None to run the twins). ``WHY_PYTHON`` says why the Python
twins run ("" when C does). The set-up builds the extension (setup.py ``ext_modules``); ``SPINE_NAV_NATIVE=0``
turns it off (:func:`spine_nav.native.load`). :func:`configure` hands the C module its constants from their Python
definitions, once, when this module is imported (by :mod:`spine_nav.guard.metrics`, which defines them).
"""
from __future__ import annotations

from types import ModuleType

from spine_nav.native import load

judge, WHY_PYTHON = load("_judge", "spine_nav.guard")


def configure(module: ModuleType | None, quat_norm_tol: float, parallel_eps: float, metrics_type: type) -> None:
    """``module.configure(...)`` (nothing when ``module`` is None): the C functions decline until it ran."""
    if module is not None:
        module.configure(quat_norm_tol, parallel_eps, metrics_type)


def describe() -> str:
    """Which per-sample geometry runs, for logs: "C" or "Python (why)"."""
    return "C" if judge is not None else f"Python ({WHY_PYTHON})"
