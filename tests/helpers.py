"""Small helpers for tests (import as `from tests.helpers import ...`)."""
from __future__ import annotations

import time
from typing import Callable

from spine_nav.tracking.transport import free_tcp_port  # noqa: F401 - re-exported for the tests


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, period_s: float = 0.01,
               spin: Callable[[], None] | None = None) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes (bounded loop). Returns the final value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if spin is not None:
            spin()
        if predicate():
            return True
        time.sleep(period_s)
    return bool(predicate())
