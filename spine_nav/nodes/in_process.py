"""Direct links between nodes composed in one process (``spine-nav up``, :class:`ComposedStack`).

rclpy has no intra-process transport: a message between two nodes of one process still goes through
the DDS writer, the reader's wake-up of the executor thread and a conversion back to Python. On the
navigation path (tracker sample -> guard status) that hop was the largest single share of the
end-to-end latency in the demo (median ~0.3 ms, p99 ~1 ms on 2 shared cores). When the tracker
bridge and the trajectory guard share a process, the guard takes each tool tip straight from the
bridge's socket thread instead; the topic is still published for every other consumer (console,
recorder, a guard elsewhere). Opt out per guard with its parameter ``tool_in_process: false``.

The guard takes the bridge's tool health the same way (every ToolHealth the bridge publishes, on the
thread that publishes it): when the bridge's reference-jump latch trips, the guard knows the bump before
the bridge emits anything else, so the stop is attributed to the bump (docs/fault-attribution.md).
"""
from __future__ import annotations

from functools import partial

from rclpy.node import Node


def link_nodes(nodes: dict[str, Node]) -> list[str]:
    """Wire the in-process shortcuts between ``nodes`` (name -> node); returns what was linked (for logs)."""
    from spine_nav.nodes.tracker_bridge import TrackerBridgeNode
    from spine_nav.nodes.trajectory_guard import TrajectoryGuardNode

    links: list[str] = []
    bridges = [n for n in nodes.values() if isinstance(n, TrackerBridgeNode)]
    for guard in (n for n in nodes.values() if isinstance(n, TrajectoryGuardNode)):
        if not guard.tool_in_process:
            continue
        for bridge in bridges:
            if bridge.tool_tip_topic == guard.tool_topic:
                bridge.add_tool_tip_listener(partial(guard.on_tool_sample, None))
                guard.take_tool_samples_in_process()
                links.append(f"{bridge.get_name()} -> {guard.get_name()} ({guard.tool_topic}, in process)")
                if bridge.health_pub.topic_name == guard.health_topic:
                    bridge.add_health_listener(guard.on_health)
                    guard.take_health_in_process()
                    links.append(f"{bridge.get_name()} -> {guard.get_name()} ({guard.health_topic}, in process)")
                break
    return links
