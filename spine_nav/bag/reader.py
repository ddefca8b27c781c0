"""Read a case bag (MCAP, rosbag2 layout) with the ``mcap`` library: complete or cut off by a crash.

:func:`read_bag` streams the file record by record (no index needed), so a bag whose recorder was
killed (no summary, no footer, a partial last chunk) is read up to its last complete chunk; the
result says ``truncated`` and why. Messages are decoded with ``mcap-ros2-support`` from the schema
text embedded in the bag (no ROS package needed); a topic whose schema is missing or not ``ros2msg``
is an error naming the file and the topic (:class:`BagError`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mcap.exceptions import McapError
from mcap.records import Channel, Footer, Header, Message, Metadata, Schema
from mcap.stream_reader import StreamReader
from mcap_ros2.decoder import DecoderFactory


class BagError(ValueError):
    """A bag that cannot be used (message names the file and the problem)."""


@dataclass
class BagMessage:
    topic: str
    type_name: str
    log_time_ns: int
    publish_time_ns: int
    data: bytes
    _decode: Callable[[bytes], Any] | None = None

    def decode(self) -> Any:
        """The message as an object with the ROS field names (mcap-ros2-support's dynamic type)."""
        if self._decode is None:
            raise BagError(f"{self.topic}: no ros2msg definition in the bag for {self.type_name!r}")
        return self._decode(self.data)


@dataclass
class BagContents:
    path: Path
    profile: str = ""
    library: str = ""
    topics: dict[str, str] = field(default_factory=dict)     # topic -> type name
    counts: Counter = field(default_factory=Counter)          # topic -> messages read
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    truncated: bool = False
    truncated_reason: str = ""
    start_ns: int | None = None
    end_ns: int | None = None

    def summary(self) -> dict:
        return {"path": str(self.path), "profile": self.profile, "library": self.library,
                "complete": not self.truncated, "truncated_reason": self.truncated_reason,
                "duration_s": ((self.end_ns - self.start_ns) * 1e-9) if self.start_ns is not None else 0.0,
                "messages": sum(self.counts.values()),
                "topics": {t: {"type": ty, "count": self.counts.get(t, 0)} for t, ty in sorted(self.topics.items())},
                "metadata": self.metadata}


def iter_bag(path: str | Path, topics: Iterable[str] | None = None,
             contents: BagContents | None = None) -> Iterator[BagMessage]:
    """Messages in file order (the recorder's receive order), optionally only ``topics``.

    ``contents`` (if given) is filled as the file is read: topics, counts, metadata, truncation."""
    p = Path(path)
    info = contents if contents is not None else BagContents(p)
    wanted = None if topics is None else {"/" + t.lstrip("/") for t in topics} | {t.lstrip("/") for t in topics}
    factory = DecoderFactory()
    schemas: dict[int, Schema] = {}
    channels: dict[int, tuple[Channel, Callable | None]] = {}
    try:
        f = p.open("rb")
    except OSError as exc:
        raise BagError(f"{p}: cannot open ({exc.strerror})") from None
    with f:
        reader = StreamReader(f, skip_magic=False, validate_crcs=True)
        it = reader.records
        while True:
            try:
                rec = next(it)
            except StopIteration:
                break
            except (McapError, EOFError, ValueError, OSError, Exception) as exc:  # noqa: BLE001 - a cut file
                if isinstance(exc, BagError):
                    raise
                if info.profile == "" and not info.topics:
                    raise BagError(f"{p}: not an MCAP file ({type(exc).__name__}: {exc})") from None
                info.truncated = True
                info.truncated_reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                break
            if isinstance(rec, Header):
                info.profile, info.library = rec.profile, rec.library
            elif isinstance(rec, Schema):
                schemas[rec.id] = rec
            elif isinstance(rec, Channel):
                schema = schemas.get(rec.schema_id)
                type_name = schema.name if schema is not None else ""
                decode = None
                if schema is not None and schema.encoding == "ros2msg" and rec.message_encoding == "cdr":
                    try:
                        decode = factory.decoder_for(rec.message_encoding, schema)
                    except Exception as exc:  # noqa: BLE001 - the schema text itself is bad
                        raise BagError(f"{p}: topic {rec.topic}: schema {schema.name!r} unreadable ({exc})") from None
                channels[rec.id] = (rec, decode)
                info.topics[rec.topic] = type_name
            elif isinstance(rec, Metadata):
                info.metadata[rec.name] = dict(rec.metadata)
            elif isinstance(rec, Message):
                ch = channels.get(rec.channel_id)
                if ch is None:
                    raise BagError(f"{p}: message on unknown channel {rec.channel_id}")
                channel, decode = ch
                info.counts[channel.topic] += 1
                if info.start_ns is None:
                    info.start_ns = rec.log_time
                info.end_ns = rec.log_time
                if wanted is not None and channel.topic not in wanted:
                    continue
                yield BagMessage(channel.topic, info.topics[channel.topic], rec.log_time, rec.publish_time,
                                 rec.data, decode)
            elif isinstance(rec, Footer):
                break
    if not info.truncated and info.profile == "":
        raise BagError(f"{p}: no MCAP header")


def read_bag(path: str | Path, topics: Iterable[str] | None = None,
             require_definitions: bool = True) -> tuple[BagContents, list[BagMessage]]:
    """All messages (of ``topics``) and what was found. ``require_definitions``: a topic without a
    ros2msg schema is a :class:`BagError` naming file and topic."""
    info = BagContents(Path(path))
    msgs = list(iter_bag(path, topics, info))
    if require_definitions:
        missing = [t for t, ty in info.topics.items() if not ty]
        if missing:
            raise BagError(f"{path}: no message definition (schema) for topic(s) {', '.join(sorted(missing))}")
    return info, msgs


def bag_counts(path: str | Path) -> BagContents:
    """Counts only (no messages kept)."""
    info = BagContents(Path(path))
    for _ in iter_bag(path, (), info):
        pass
    return info
