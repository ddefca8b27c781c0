"""A node's own record of its sample latency, kept in memory and written to a JSON file on shutdown.

The trajectory guard records, per tool sample, the time from the sample's tracker stamp to its status
publish() returning; the arm guide the same to the publish() of the command that answers a reference
sample. Both use this machine's system clock, so the figure is end to end when the tracker stamps with
it (the simulator, a PLUS server on the same host). The demo reads the files for its report; a node
with an empty ``latency_record_path`` parameter writes nothing.
"""
from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path


class LatencyRecord:
    """``add(stamp)``: the sample's builtin_interfaces/Time; the latency is now (system clock) - stamp."""

    def __init__(self, node: str, measures: str, maxlen: int = 1_000_000) -> None:
        self.node, self.measures = node, measures
        self.samples: deque[tuple[int, int]] = deque(maxlen=maxlen)  # (sample stamp ns, latency ns)

    def add(self, stamp) -> None:
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        self.samples.append((stamp_ns, time.time_ns() - stamp_ns))

    def recent_p99_ms(self, n: int = 1000) -> str:
        """p99 of the last ``n`` latencies in ms as text ("" when empty), for /diagnostics."""
        recent = sorted(age for _, age in list(self.samples)[-n:])
        return f"{recent[int(0.99 * (len(recent) - 1))] * 1e-6:.3f}" if recent else ""

    def write(self, path: str | Path) -> Path:
        """Write ``{"node", "measures", "sample_stamp_ns": [...], "latency_ns": [...]}`` to ``path``."""
        pairs = list(self.samples)
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"node": self.node, "measures": self.measures,
                                 "sample_stamp_ns": [s for s, _ in pairs], "latency_ns": [a for _, a in pairs]}))
        return p


def read_latency_record(path: str | Path) -> list[float]:
    """Latencies (s) from a file written by :meth:`LatencyRecord.write`; ValueError naming the file if unusable."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        return [ns * 1e-9 for ns in data["latency_ns"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{p}: not a latency record ({exc})") from None
