"""The machine's own floor, measured in the same run as the stack (issue 17).

Every latency benchmark runs a bare version of its path (``floor``: the same transport, process layout,
executor, priority and load, with the stack's own work taken out) and the real stack, interleaved
``floor, stack, floor, stack, ...`` for ``--rounds`` rounds, so a change of load on the shared machine
hits both. It reports per round the two values and their ratio (stack / floor), and as the headline
the **median ratio over the rounds** (``*_vs_floor``); ``baselines.floor`` holds the floor's own figures
(median over the rounds) and ``details.rounds`` the per-round values and their spread (min, max).

``--busy-core`` keeps one extra core busy for the whole run with a plain Python busy loop (a child
process at normal priority), the issue's load test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

BUSY_LOOP = "import time\nwhile True:\n    pass\n"


def add_floor_arguments(p: argparse.ArgumentParser, default_rounds: int = 3) -> None:
    """``--rounds`` and ``--busy-core``, the same for every benchmark that measures its floor."""
    p.add_argument("--rounds", type=int, default=default_rounds,
                   help=f"interleaved floor/stack rounds (default {default_rounds})")
    p.add_argument("--busy-core", action="store_true",
                   help="keep one extra core busy (Python busy loop) for the whole run: the load test")


@contextmanager
def busy_core(enabled: bool) -> Iterator[int | None]:
    """A child process spinning a Python busy loop while the block runs (``enabled``); yields its pid."""
    if not enabled:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def interleave(rounds: int, floor: Callable[[int], dict], stack: Callable[[int], dict],
               log: Callable[[str], None] = lambda s: None) -> list[tuple[dict, dict]]:
    """Run ``floor(i)`` then ``stack(i)`` for ``i`` in range(rounds); returns the (floor, stack) pairs."""
    if rounds < 1:
        raise ValueError(f"--rounds: must be >= 1, got {rounds}")
    pairs = []
    for i in range(rounds):
        log(f"round {i + 1}/{rounds}: floor (load {os.getloadavg()[0]:.2f})")
        f = floor(i)
        log(f"round {i + 1}/{rounds}: stack (load {os.getloadavg()[0]:.2f})")
        s = stack(i)
        pairs.append((f, s))
    return pairs


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(float(v), nd)


def ratio_rounds(pairs: list[tuple[dict, dict]], floor_key: str, stack_key: str | None = None) -> dict[str, Any]:
    """Per-round ``stack[stack_key] / floor[floor_key]`` and their median and spread.

    A round where either value is missing (or the floor is 0) gives no ratio; ``median_ratio`` is None
    when no round gave one.
    """
    stack_key = stack_key or floor_key
    fv = [p[0].get(floor_key) for p in pairs]
    sv = [p[1].get(stack_key) for p in pairs]
    ratios = [s / f for f, s in zip(fv, sv) if f and s is not None]
    return {"rounds": len(pairs), "floor": [_r(v) for v in fv], "stack": [_r(v) for v in sv],
            "ratios": [_r(v) for v in ratios],
            "median_ratio": _r(statistics.median(ratios)) if ratios else None,
            "spread": {"min": _r(min(ratios)), "max": _r(max(ratios))} if ratios else None}


def median_of(results: list[dict], keys: list[str]) -> dict[str, float | None]:
    """Median over rounds of each key (rounds without the key are left out)."""
    out = {}
    for k in keys:
        vals = [r[k] for r in results if r.get(k) is not None]
        out[k] = _r(statistics.median(vals), 4) if vals else None
    return out


def load_env(args: argparse.Namespace, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What the JSON says about the load the run saw."""
    return {"rounds": int(getattr(args, "rounds", 1)), "busy_core": bool(getattr(args, "busy_core", False)),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "cpu_count": os.cpu_count(), "interleaved": "floor, stack, floor, stack, ...",
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
