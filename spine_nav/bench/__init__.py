"""Benchmarks: `spine-nav bench NAME --json` prints
``{"bench": NAME, "metrics": {...}, "baselines": {NAME: {...}}, "env": {...}}``.

Each benchmark module exposes ``run(args) -> BenchResult`` and ``add_arguments(parser)``
(optional); register it in :data:`BENCHES`. Baselines are measured in the same run.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

#: bench name -> module
BENCHES: dict[str, str] = {
    "arm": "spine_nav.bench.arm",
    "registration": "spine_nav.bench.registration",
    "bridge": "spine_nav.bench.bridge",
    "console": "spine_nav.bench.console",
    "guard": "spine_nav.bench.guard",
    "rod": "spine_nav.bench.rod",
    "recording": "spine_nav.bench.recording",
}


@dataclass
class BenchResult:
    bench: str
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"bench": self.bench, "metrics": self.metrics, "baselines": self.baselines,
               "env": {**env_info(), **self.env}}
        if self.details:
            out["details"] = self.details
        return out


def env_info() -> dict[str, Any]:
    """Machine facts every benchmark reports."""
    import numpy

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "argv": sys.argv[1:],
    }
