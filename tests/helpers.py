"""Small helpers for tests (import as `from tests.helpers import ...`)."""
from __future__ import annotations

import socket
import time
from typing import Callable


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
