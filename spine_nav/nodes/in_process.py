"""Direct links between nodes composed in one process (``spine-nav up``, :class:`ComposedStack`), keyed by topic.

rclpy has no intra-process transport: a message between two nodes of one process still goes through
the DDS writer, the reader's wake-up of the executor thread and a conversion back to Python. On the
navigation path (tracker sample -> guard status) that hop was the largest single share of the
end-to-end latency in the demo (median ~0.3 ms, p99 ~1 ms on 2 shared cores). When a producer and a
consumer of one topic share a process, the consumer takes each message straight from the producer's
thread instead; the topic is still published for every other consumer (console, recorder, a node elsewhere).

A node offers topics with ``in_process_outputs() -> {resolved topic: add_listener(fn)}`` (the tracker bridge:
tool tips as ``fn(stamp_s, frame_id, quat_xyzw, t_mm)``, every ToolHealth as ``fn(msg)``) and takes them
with ``in_process_inputs() -> {resolved topic: InProcessInput}`` (the guard, the Slicer output). The link
knows neither class: it matches topic names. The guard takes the bridge's tool health the same way: when
the bridge's reference-jump latch trips, the guard knows the bump before the bridge emits anything else
(docs/fault-attribution.md).
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable

from builtin_interfaces.msg import Time
from rclpy.node import Node

from spine_nav.nodes.conversions import pose_cdr_fields_mm


@dataclass(frozen=True)
class InProcessInput:
    """``callback`` gets the producer's messages; ``linked()`` is called once it is wired (the consumer then
    drops its own DDS subscription of the topic, so nothing is handled twice)."""

    callback: Callable
    linked: Callable[[], None]


def pose_fields(node: Node, topic: str, fn: Callable) -> Callable[[bytes], None]:
    """The DDS side of a pose input (a subscription with ``raw=True``): serialized PoseStamped ->
    ``fn(sec, nanosec, stamp_s, frame_id, quat_xyzw, t_mm)``, the stamp as ints (no message object built per
    sample: :func:`spine_nav.nodes.conversions.pose_cdr_fields_mm`); an undecodable message is logged
    (throttled, naming ``topic``) and skipped."""
    def on_data(data: bytes) -> None:
        try:
            sec, nanosec, frame_id, q, t_mm = pose_cdr_fields_mm(data)
        except ValueError as exc:
            node.get_logger().error(f"{topic}: {exc}", throttle_duration_sec=1.0)
            return
        fn(sec, nanosec, sec + nanosec * 1e-9, frame_id, q, t_mm)
    return on_data


def pose_samples(node: Node, topic: str, fn: Callable) -> Callable[[bytes], None]:
    """:func:`pose_fields` handing the stamp over as builtin_interfaces/Time:
    ``fn(stamp, stamp_s, frame_id, quat_xyzw, t_mm)`` (the in-process side calls ``fn(None, stamp_s, ...)``)."""
    return pose_fields(node, topic, lambda sec, nanosec, *rest: fn(Time(sec=sec, nanosec=nanosec), *rest))


def drops(node: Node, attr: str) -> Callable[[], None]:
    """An :attr:`InProcessInput.linked` that destroys the subscription ``node.<attr>`` (and sets it None)."""
    def linked() -> None:
        node.destroy_subscription(getattr(node, attr))
        setattr(node, attr, None)
    return linked


class Listeners:
    """In-process consumers of one output; a consumer's exception is logged once and counted, never raised
    into the producer's thread (a consumer's bug must not stop the tracker stream)."""

    def __init__(self, node: Node, what: str) -> None:
        self._node, self._what = node, what
        self.fns: list[Callable] = []
        self.failures: list[int] = []

    def add(self, fn: Callable) -> None:
        self.fns.append(fn)
        self.failures.append(0)

    def __bool__(self) -> bool:
        return bool(self.fns)

    def __call__(self, *args) -> None:
        for i, fn in enumerate(self.fns):
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - see the class doc
                self.failures[i] += 1
                if self.failures[i] == 1:
                    self._node.get_logger().error(f"in-process {self._what} listener {fn!r} failed (it keeps getting "
                                                  f"messages; further failures only counted):\n{traceback.format_exc()}")


def link_nodes(nodes: dict[str, Node]) -> list[str]:
    """Wire every in-process input of ``nodes`` (name -> node) to a producer of the same topic; returns what
    was linked (for logs)."""
    outputs = {topic: (node, add) for node in nodes.values()
               for topic, add in getattr(node, "in_process_outputs", dict)().items()}
    links: list[str] = []
    for consumer in nodes.values():
        for topic, inp in getattr(consumer, "in_process_inputs", dict)().items():
            producer = outputs.get(topic)
            if producer is None or producer[0] is consumer:
                continue
            producer[1](inp.callback)
            inp.linked()
            links.append(f"{producer[0].get_name()} -> {consumer.get_name()} ({topic}, in process)")
    return links
