"""Service plumbing shared by the nodes: a handler returns its message or raises; the response says so."""
from __future__ import annotations

import functools
from typing import Callable


def answers(refused: tuple[type[Exception], ...] = (KeyError, ValueError), prefix: str = "") -> Callable:
    """Decorate ``handler(self, request) -> message`` as a ROS service callback ``(request, response)``:
    ``success`` true and ``message`` = the return value, or ``success`` false and ``message`` = ``prefix`` + the
    refusal's reason when the handler raises one of ``refused`` (KeyError: its first argument, unquoted)."""
    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def callback(self, request, response):
            try:
                response.message, response.success = handler(self, request), True
            except refused as exc:
                reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
                response.message, response.success = f"{prefix}{reason}", False
            return response
        return callback
    return decorate
