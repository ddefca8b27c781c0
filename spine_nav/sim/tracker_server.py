"""The simulated tracker as an OpenIGTLink server (what a PLUS server in front of a camera does).

Every connected client gets, per tracker sample, one TRANSFORM per visible device (header v1, or
v2 with ``TransformStatus`` metadata when ``header_version=2``) and a STATUS (code 16, not present)
for each occluded device. A client that sends STT_TDATA switches to one TDATA message per sample
with all visible tools (STP_TDATA switches back). Sample times are the model's tracker times.

Usable in-process (demo, tests, benchmark)::

    server = SimTrackerServer(TrackerModel(cfg), port=0).start()
    server.model.set_tool_pose_mm(T_reference_tooltip)
    ...
    server.close()
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

from spine_nav.sim.tracker import TrackerFrame, TrackerModel
from spine_nav.tracking import codec
from spine_nav.tracking.codec import IgtlMessage, TDataElement
from spine_nav.tracking.transport import DEFAULT_PORT, IgtlConnection, IgtlServer

log = logging.getLogger("spine_nav.sim.tracker")


def encode_frame(frame: TrackerFrame, tdata: bool, header_version: int = 1) -> bytes:
    """Pack one tracker frame as TRANSFORMs (+STATUS for occluded devices) or one TDATA (+STATUS)."""
    out = []
    visible = {d: T for d, T in frame.poses.items() if T is not None}
    for dev, T in frame.poses.items():
        if T is None:
            out.append(codec.encode_status(dev, codec.STATUS_NOT_PRESENT, frame.timestamp_s, "tool not visible",
                                           error_name="MISSING"))
    if tdata:
        if visible:
            out.append(codec.encode_tdata("Tracker", [TDataElement(d, T) for d, T in visible.items()],
                                          frame.timestamp_s, header_version=header_version))
    else:
        for dev, T in visible.items():
            md = {"TransformStatus": "OK"} if header_version > 1 else None
            out.append(codec.encode_transform(dev, T, frame.timestamp_s, header_version=header_version, metadata=md))
    return b"".join(out)


class SimTrackerServer:
    def __init__(self, model: TrackerModel, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                 header_version: int = 1, stamp_at_send: bool = False, t0_s: float | None = None,
                 allowed_peers: "str | None" = None) -> None:
        """``t0_s``: wall time (time.time()) of sample 0; None = when the server starts. A restarted
        simulator given the first one's ``t0_s`` continues its timeline (breathing phase, sample index).
        ``stamp_at_send``: header time = the moment the frame is handed to the sockets, instead of the
        model's sample time (they differ by this process's wake-up delay: under load in the demo's
        simulator process up to ~2 ms, which is the simulator's own lateness, not the stack's)."""
        self.model = model
        self.header_version = header_version
        self.stamp_at_send = stamp_at_send
        self.t0_s = t0_s
        self.server = IgtlServer(port, on_message=self._on_message, host=host, allowed_peers=allowed_peers)
        self.port = self.server.port
        self.samples_sent = 0
        self.late_samples = 0
        #: per sample sent: when the last peer's send() returned minus the frame's scheduled time (s, both on
        #: the monotonic clock): the simulator's own lateness (wake-up, GIL, socket write)
        self.send_delay_s: deque[float] = deque(maxlen=1_000_000)
        self._tdata_peers: set[IgtlConnection] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-tracker", daemon=True)

    def _on_message(self, msg: IgtlMessage, _t_ns: int, conn: IgtlConnection) -> None:
        with self._lock:
            if msg.type == "STT_TDATA":
                self._tdata_peers.add(conn)
                log.info("sim tracker: %s started TDATA (resolution %s ms)", conn.peer, msg.resolution_ms)
            elif msg.type == "STP_TDATA":
                self._tdata_peers.discard(conn)

    def start(self) -> "SimTrackerServer":
        self.server.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        period = self.model.period_s
        k = 0
        t_start = time.monotonic()
        self.model.t0_s = time.time()
        if self.t0_s is not None:  # continue a timeline: the next sample index after now
            self.model.t0_s = self.t0_s
            k = max(0, int((time.time() - self.t0_s) / period) + 1)
            t_start -= time.time() - self.t0_s
        while not self._stop.is_set():
            # The frame is computed and encoded ahead of its deadline and sent at it: the marker fits and
            # the packing take ~0.5 ms here, and a simulated tracker's own CPU time should not count as the
            # stack's latency from the sample time. The tool pose in frame k is the one set up to one
            # period before it.
            frame = self.model.sample(k)
            with self._lock:
                tdata_peers = set(self._tdata_peers)
            peers = list(self.server.connections)
            packed = {use_tdata: bytearray(encode_frame(frame, use_tdata, self.header_version))
                      for use_tdata in {conn in tdata_peers for conn in peers}}
            deadline = t_start + k * period
            delay = deadline - time.monotonic()
            if delay > 0:
                if self._stop.wait(delay):
                    break  # closing: the frame is not due yet
            elif delay < -period:
                self.late_samples += 1
            k += 1
            if not peers:
                continue
            if self.stamp_at_send:
                t_send = time.time()
                for buf in packed.values():
                    codec.restamp(buf, t_send)
            for conn in peers:
                conn.send(packed[conn in tdata_peers])
            self.send_delay_s.append(time.monotonic() - deadline)
            self.samples_sent += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.server.close()
