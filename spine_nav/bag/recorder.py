"""The bag recorder and player as ROS participants (thin: the bag logic is in :mod:`spine_nav.bag`).

:class:`BagRecorder` subscribes to each topic *raw* (rclpy hands over the serialized CDR bytes: no
message is built or deserialised to be recorded) and queues the bytes to a
:class:`spine_nav.bag.writer.BagWriter` with the receive time. Reader histories are deep (1000) so a
scheduling hiccup of the recorder does not drop best-effort samples; messages lost before they reach
the recorder show up as a count difference with the publisher's own count (the demo reports both).

:class:`BagPlayer` publishes recorded bytes back (serialized publish, same QoS classes).
"""
from __future__ import annotations

import copy
import importlib
import time

from rclpy.node import Node
from rclpy.qos import QoSProfile

from spine_nav.bag.topics import TopicSpec
from spine_nav.bag.writer import BagWriter
from spine_nav.nodes.qos import PLAN_QOS, SENSOR_QOS, STATUS_QOS

RECORDER_DEPTH = 1000


def msg_class(type_name: str):
    """``pkg/msg/Name`` -> the rclpy message class (ImportError/AttributeError naming it)."""
    pkg, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def qos_for(kind: str, depth: int = RECORDER_DEPTH) -> QoSProfile:
    base = {"sensor": SENSOR_QOS, "reliable": STATUS_QOS, "latched": PLAN_QOS}[kind]
    q = copy.copy(base)
    if kind != "latched":
        q.depth = depth
    return q


QOS_YAML = {  # rosbag2's offered_qos_profiles metadata, per kind (what the stack's publishers offer)
    "sensor": "- history: 1\n  depth: 5\n  reliability: 2\n  durability: 2\n",
    "reliable": "- history: 1\n  depth: 1000\n  reliability: 1\n  durability: 2\n",
    "latched": "- history: 1\n  depth: 1\n  reliability: 1\n  durability: 1\n",
}


class BagRecorder(Node):
    def __init__(self, writer: BagWriter, topics: tuple[TopicSpec, ...], **kwargs) -> None:
        super().__init__("bag_recorder", **kwargs)
        self.writer = writer
        self.topics: dict[str, TopicSpec] = {}
        for spec in topics:
            name = self.resolve_topic_name(spec.topic)
            writer.add_topic(name, spec.type_name, QOS_YAML[spec.qos])
            put = writer.put
            self.create_subscription(msg_class(spec.type_name), name,
                                     lambda data, _n=name, _put=put: _put(_n, data, time.time_ns()),
                                     qos_for(spec.qos), raw=True)
            self.topics[name] = spec


class BagPlayer(Node):
    def __init__(self, topics: dict[str, TopicSpec], **kwargs) -> None:
        super().__init__("bag_player", **kwargs)
        self.pubs = {name: self.create_publisher(msg_class(spec.type_name), name, qos_for(spec.qos, depth=1000))
                     for name, spec in topics.items()}

    def publish(self, topic: str, data: bytes) -> None:
        self.pubs[topic].publish(data)  # rclpy publishes bytes as an already serialized message
