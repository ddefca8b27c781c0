"""Publishing pre-serialized messages through rcl directly: the tracker bridge's 1 kHz pose publications.

:class:`DirectPublisher` wraps one rclpy publisher: :attr:`DirectPublisher.publish` takes the serialized CDR
bytes (as ``rclpy.publisher.Publisher.publish(bytes)`` does) and hands them to ``rcl_publish_serialized_message``
from C (``spine_nav/nodes/_rcl_publish.c``), skipping rclpy's Python wrapper: ~3.4 us of a tool tip's ~13 us from
``recv()`` to published, cold at 1 kHz (docs/performance.md, "The bridge's publish through rcl"). The bytes on the
wire are the same (tests/test_direct_publish.py: a real DDS subscription receives them). When the extension is not
built, ``SPINE_NAV_NATIVE=0`` is set or rcl's functions cannot be found, ``publish`` is rclpy's own, and
:attr:`DirectPublisher.how` says why.

Lifetime: the rclpy publisher's handle is held "in use" from construction to :meth:`DirectPublisher.close`, so rclpy
cannot finalize the rcl publisher while the C object holds its address (``destroy_publisher`` waits for the release).
Close it before the publisher is destroyed and after the last thread that publishes has stopped (the bridge node:
``at_cleanup``, which runs after deactivate closed the socket).
"""
from __future__ import annotations

from typing import Callable

from rclpy.publisher import Publisher

from spine_nav.native import load
from spine_nav.nodes.cdr import PoseStampedPacker

_native, WHY_RCLPY = load("_rcl_publish", "spine_nav.nodes")


class DirectPublisher:
    """``publish(data: bytes)`` of serialized messages on ``publisher``'s topic, through rcl from C when possible."""

    def __init__(self, publisher: Publisher) -> None:
        self.publish: Callable[[bytes], None] = publisher.publish
        self.how = f"rclpy ({WHY_RCLPY})" if _native is None else "rcl from C"
        self._c = self._handle = None
        if _native is None:
            return
        handle = publisher.handle
        handle.__enter__()  # in use: rclpy will not finalize the rcl publisher until close()
        try:
            self._c = _native.Publisher(handle.pointer, publisher.topic_name)
        except OSError as exc:  # rcl's functions not found in this process: keep rclpy's publish
            handle.__exit__(None, None, None)
            self.how = f"rclpy ({exc})"
            return
        self._handle = handle
        self.publish = self._c.publish

    @property
    def closed(self) -> bool:
        return self._c is not None and self._c.closed

    def close(self) -> None:
        """Stop publishing through C (later publishes raise RuntimeError) and release the rclpy handle."""
        if self._c is not None and not self._c.closed:
            self._c.close()
            self._handle.__exit__(None, None, None)


def serialized_outputs(publishers: dict[str, Publisher], frame_ids: dict[str, str],
                       at_cleanup: Callable[[Callable[[], None]], None]) -> tuple[dict[str, tuple], str]:
    """For a node that publishes pre-serialized PoseStamped bytes: per kind, (``publish(bytes)`` through rcl from C
    where possible, the kind's :class:`spine_nav.nodes.cdr.PoseStampedPacker` for ``frame_ids[kind]``), and how
    they publish (for the log). Each :class:`DirectPublisher` is closed by ``at_cleanup`` (a ManagedNode's, which
    runs after deactivate stopped the publishing threads and before the publishers are destroyed)."""
    outs, how = {}, ""
    for kind, publisher in publishers.items():
        direct = DirectPublisher(publisher)
        at_cleanup(direct.close)
        outs[kind], how = (direct.publish, PoseStampedPacker(frame_ids[kind])), direct.how
    return outs, how
