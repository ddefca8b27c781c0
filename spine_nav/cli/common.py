"""Helpers shared by CLI subcommands: errors, progress output, JSON printing."""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")


def fail(message: str, code: int = 2) -> int:
    """Print a one-line error to stderr and return ``code`` (2 = bad input)."""
    sys.stderr.write(f"spine-nav: error: {message}\n")
    return code


def info(message: str) -> None:
    """Progress/info line on stderr (stdout stays clean for JSON)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def progress(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` while printing ``label [i/n] elapsed`` lines on stderr."""
    seq = list(items)
    n = total if total is not None else len(seq)
    t0 = time.perf_counter()
    for i, item in enumerate(seq, 1):
        info(f"{label} [{i}/{n}] {item}  ({time.perf_counter() - t0:.1f} s)")
        yield item


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
