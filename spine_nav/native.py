"""Loading the compiled twins of the 1 kHz paths' arithmetic (C extensions built by setup.py ``ext_modules``).

Each extension function has a pure-Python twin that defines its result (tests compare them bit for bit); when
an extension is not built, or ``SPINE_NAV_NATIVE=0`` is set (e.g. to measure the Python path, docs/performance.md),
the twins run. A root module (below every layer, docs/architecture.md) so that every core package can use it:
``spine_nav.tracking.native`` (``_frames``) and ``spine_nav.guard.native`` (``_judge``).
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
