"""Write serialized ROS 2 messages into a rosbag2-compatible MCAP file.

Why ``mcap`` (1.6.0) and not rosbags or rosbag2_py: rosbag2_py is not in the pip-installed Jazzy;
``mcap`` is the format's reference library (Foxglove), pure Python, maintained, and takes the CDR bytes
as they come off the wire (the recorder subscribes raw: no message is deserialised to be recorded).
``mcap-ros2-support`` (0.6.0) is its ROS 2 decoder, used by the reader and the tests; rosbags (0.11.9,
also maintained) would add a second CDR implementation for nothing we need.

Layout (what rosbag2's MCAP storage writes): profile ``ros2``; one schema per type (name
``pkg/msg/Name``, encoding ``ros2msg``, text from :mod:`.definitions`); one channel per topic
(``message_encoding`` ``cdr``); log_time = receive time, publish_time = the header stamp when the type
has one (else the receive time), ns. Chunks of ``chunk_size`` bytes (zstd); each finished chunk is
flushed to the file, so a recorder killed mid-case leaves a file readable up to its last complete
chunk (:func:`spine_nav.bag.reader.read_bag` reads it and says it is truncated).

Threading: :meth:`BagWriter.put` is called by subscription callbacks (cheap: append to a bounded
queue); one writer thread compresses and writes. A full queue drops the message and counts it in
``dropped`` (never silently).
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from pathlib import Path

from mcap.writer import CompressionType, Writer

from spine_nav.bag.definitions import schema_text

PROFILE = "ros2"
#: 256 KiB: at the demo's rates (~1 MB/min compressed) a chunk is a few seconds of the case; a crash
#: loses at most that much. rosbag2's default is 768 KiB.
DEFAULT_CHUNK_SIZE = 256 * 1024


class BagWriter:
    """Writes messages to ``path`` (refused if it exists unless ``force``); call :meth:`close` at the end."""

    def __init__(self, path: str | Path, force: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 max_queue: int = 100_000, flush_period_s: float = 0.5) -> None:
        self.path = Path(path)
        if self.path.exists() and not force:
            raise FileExistsError(f"{self.path}: exists (use --force to overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("wb")
        self._w = Writer(self._f, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._w.start(profile=PROFILE, library="spine_nav bag (mcap 1.6.0)")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._queue: deque = deque()
        self._max_queue = max_queue
        self._cv = threading.Condition()
        self._closed = False
        self.flush_period_s = flush_period_s
        self.counts: Counter[str] = Counter()
        self.dropped = 0
        self.write_errors = 0
        self.last_put_ns = 0
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    def add_topic(self, topic: str, type_name: str, qos_yaml: str = "") -> None:
        """Register ``topic`` of ``type_name`` (pkg/msg/Name) before its first message."""
        with self._cv:
            if type_name not in self._schemas:
                self._schemas[type_name] = self._w.register_schema(type_name, "ros2msg",
                                                                   schema_text(type_name).encode())
            if topic not in self._channels:
                self._channels[topic] = self._w.register_channel(
                    topic, "cdr", self._schemas[type_name], {"offered_qos_profiles": qos_yaml})

    def add_metadata(self, name: str, data: dict) -> None:
        """A metadata record (string values; others JSON-encoded)."""
        with self._cv:
            self._w.add_metadata(name, {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})

    def put(self, topic: str, data: bytes, log_time_ns: int | None = None, publish_time_ns: int | None = None) -> bool:
        """Queue one serialized message (any thread). False (and counted in ``dropped``) when the queue is full."""
        t = time.time_ns() if log_time_ns is None else log_time_ns
        self.last_put_ns = t
        q = self._queue
        if len(q) >= self._max_queue:
            self.dropped += 1
            return False
        q.append((topic, bytes(data), t, t if publish_time_ns is None else publish_time_ns))
        if len(q) == 1:
            with self._cv:
                self._cv.notify()
        return True

    def _drain(self) -> None:
        q = self._queue
        while q:
            topic, data, t, pt = q.popleft()
            ch = self._channels.get(topic)
            if ch is None:
                self.write_errors += 1
                continue
            with self._cv:
                self._w.add_message(ch, log_time=t, data=data, publish_time=pt, sequence=self.counts[topic])
            self.counts[topic] += 1

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            with self._cv:
                if not self._queue and not self._closed:
                    self._cv.wait(timeout=self.flush_period_s)
                closed = self._closed
            self._drain()
            now = time.monotonic()
            if now - last_flush >= self.flush_period_s:
                self._f.flush()  # finished chunks reach the file (the open chunk stays in memory)
                last_flush = now
            if closed and not self._queue:
                return

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, the summary and the footer."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout_s)
        self._drain()
        self._w.finish()
        self._f.close()
