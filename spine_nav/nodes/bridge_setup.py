"""tracker_bridge's parameters -> its core objects and its OpenIGTLink link (kept out of the node module,
which stays plumbing: tests/test_node_size.py). No ROS entity is created here.

:func:`bridge_core` is the node's configure step (tool, composer, watchdog, reference-jump detector ->
:class:`spine_nav.tracking.bridge.BridgeCore`); :func:`open_link` its activate step (server: listen on the
port reserved at configure; client: connect, with reconnects).
"""
from __future__ import annotations

import socket
from typing import Callable

from spine_nav.nodes.parameters import config_from
from spine_nav.tracking import codec
from spine_nav.tracking.bridge import BridgeCore
from spine_nav.tracking.reference_jump import ReferenceJumpConfig, ReferenceJumpDetector
from spine_nav.tracking.tools import PoseComposer, ToolDefinition
from spine_nav.tracking.transport import IgtlClient, IgtlServer
from spine_nav.tracking.watchdog import Watchdog


def bridge_core(p: dict, on_output: Callable, on_latch: Callable[[str], None]) -> tuple[BridgeCore, ToolDefinition]:
    """The bridge's core from its declared parameters ``p`` (names as in config/nodes.yaml); ValueError
    naming the parameter when one is unusable."""
    if p["mode"] not in ("client", "server"):
        raise ValueError(f"parameter mode must be 'client' or 'server', got {p['mode']!r}")
    shaft = tuple(float(x) for x in p["shaft_direction"])
    tool = ToolDefinition(name=p["tool_name"], device=p["tool_device"], tip_device=p["tool_tip_device"],
                          tip_offset_mm=tuple(float(x) for x in p["tip_offset_mm"]),
                          shaft_direction=shaft if any(shaft) else None)
    composer = PoseComposer(tools=(tool,), reference_device=p["reference_device"],
                            arm_marker_device=p["arm_marker_device"], max_skew_ms=p["max_skew_ms"])
    watchdog = Watchdog({"reference": p["reference_device"], "arm_marker": p["arm_marker_device"],
                         tool.name: tool.device}, timeout_ms=p["timeout_ms"], timeout_periods=p["timeout_periods"])
    jump = (ReferenceJumpDetector(config_from(ReferenceJumpConfig, p, "tracker_bridge"))
            if p["reference_jump_check"] else None)
    core = BridgeCore(composer, watchdog, on_output=on_output, jump_detector=jump,
                      defer_kinds=frozenset({"reference", "arm_marker"}), on_latch=on_latch)
    return core, tool


def open_link(p: dict, core: BridgeCore, on_chunk_end: Callable,
              reserved: socket.socket | None) -> IgtlClient | IgtlServer:
    """Start the OpenIGTLink link: server mode listens on the port of ``reserved`` (closed here, handing the
    port over), client mode connects to ``host:port`` (sending STT_TDATA first when ``tdata``)."""
    on_msg = lambda msg, t_ns, conn: core.handle(msg, t_ns, conn.peer)  # noqa: E731
    # the 1 kHz frame's fast path (BridgeCore.take_chunk: whole header-v1 TRANSFORMs, 48-byte bodies); declines
    # anything else, which the decoder then frames as before (not offered if the limit refuses such a body)
    on_chunk = core.take_chunk if p["max_body_bytes"] >= 48 else None  # (data, t_ns, connection): no wrapper call
    if p["mode"] == "client":
        on_connect = None
        if p["tdata"]:
            stt = codec.encode_stt_tdata(p["tdata_resolution_ms"])
            on_connect = lambda conn: conn.send(stt)  # noqa: E731
        return IgtlClient(p["host"], p["port"], on_msg, on_connect=on_connect, max_body_bytes=p["max_body_bytes"],
                          on_chunk_end=on_chunk_end, on_chunk=on_chunk).start()
    port = reserved.getsockname()[1]
    reserved.close()
    return IgtlServer(port, on_message=on_msg, host=p["host"], max_body_bytes=p["max_body_bytes"],
                      on_chunk_end=on_chunk_end, allowed_peers=p["allowed_peers"], on_chunk=on_chunk).start()
