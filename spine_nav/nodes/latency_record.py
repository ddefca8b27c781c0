"""A node's own record of its sample latency, kept in memory and written to a JSON file on shutdown.

The trajectory guard records, per tool sample, the time from the sample's tracker stamp to its status
publish() returning; the arm guide the same to the publish() of the command that answers a reference
sample. Both use this machine's system clock, so the figure is end to end when the tracker stamps with
it (the simulator, a PLUS server on the same host). The demo reads the files for its report; a node
with an empty ``latency_record_path`` parameter writes nothing.

When it is written: as soon as the hosting process is asked to stop (`spine-nav up` on SIGINT / SIGTERM
or at the end of ``--duration``, :func:`flush_latency_records`), *before* the executor and the nodes are
torn down, and again when the node is destroyed (then with the samples that came in meanwhile). Under
load the teardown can outlast the supervisor's stop grace (10 s in the demo), and a record written only
at the end was lost with the SIGKILL (issue 17). Every write is atomic (a temporary file renamed over the
record), so a process killed while writing leaves the previous record, never a truncated one.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path


class LatencyRecord:
    """``add(stamp)``: the sample's builtin_interfaces/Time; the latency is now (system clock) - stamp.
    ``path``: where :meth:`flush` writes it ("" = nowhere: the node's ``latency_record_path`` parameter)."""

    def __init__(self, node: str, measures: str, maxlen: int = 1_000_000, path: str | Path = "") -> None:
        self.node, self.measures = node, measures
        self.path = str(path)
        self.samples: deque[tuple[int, int]] = deque(maxlen=maxlen)  # (sample stamp ns, latency ns)

    def add(self, stamp) -> None:
        """:meth:`add_ns` for a builtin_interfaces/Time ``stamp``."""
        self.add_ns(stamp.sec, stamp.nanosec)

    def add_ns(self, sec: int, nanosec: int) -> None:
        """One sample: its stamp (sec, nanosec) and its latency now (system clock - stamp), ns."""
        stamp_ns = sec * 1_000_000_000 + nanosec
        self.samples.append((stamp_ns, time.time_ns() - stamp_ns))

    def recent_p99_ms(self, n: int = 1000) -> str:
        """p99 of the last ``n`` latencies in ms as text ("" when empty), for /diagnostics."""
        recent = sorted(age for _, age in list(self.samples)[-n:])
        return f"{recent[int(0.99 * (len(recent) - 1))] * 1e-6:.3f}" if recent else ""

    def write(self, path: str | Path) -> Path:
        """Write ``{"node", "measures", "sample_stamp_ns": [...], "latency_ns": [...]}`` to ``path``, atomically
        (``path``.tmp then renamed: a reader or a kill mid-write never sees a truncated record)."""
        pairs = self.samples.copy()  # one C call: atomic with respect to the threads appending
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"node": self.node, "measures": self.measures,
                                   "sample_stamp_ns": [s for s, _ in pairs], "latency_ns": [a for _, a in pairs]}))
        os.replace(tmp, p)
        return p

    def flush(self) -> Path | None:
        """Write to :attr:`path` now (None when it is ""); the record keeps collecting afterwards."""
        return self.write(self.path) if self.path else None


def flush_latency_records(nodes) -> list[Path]:
    """Write the latency record of every node in ``nodes`` that keeps one with a path (its ``latency``
    attribute, a :class:`LatencyRecord`); returns the files written. Called by `spine-nav up` when it is
    asked to stop, before the slow teardown."""
    written = []
    for node in nodes:
        record = getattr(node, "latency", None)
        if isinstance(record, LatencyRecord) and record.path:
            written.append(record.flush())
    return written


def read_latency_record(path: str | Path) -> list[float]:
    """Latencies (s) from a file written by :meth:`LatencyRecord.write`; ValueError naming the file if unusable."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        return [ns * 1e-9 for ns in data["latency_ns"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{p}: not a latency record ({exc})") from None
