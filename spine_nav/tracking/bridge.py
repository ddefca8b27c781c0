"""The bridge's hot path without ROS: decoded message -> validate -> watchdog -> compose -> outputs.

:class:`BridgeCore` is fed by a transport callback (any thread) and calls ``on_output`` for every
pose it can publish (tool tip in Reference, reference, arm marker) and for every stale tool sample;
the ROS node only converts and publishes. With a :class:`ReferenceJumpDetector`, every reference
sample is checked for a jump (bumped array); a jump latches the ``reference`` tool TRACKING_LOST in
the watchdog until :meth:`BridgeCore.reset_reference`. Thread-safe (one lock): the watchdog is judged from a
timer thread while samples arrive on socket threads.

Fault attribution (docs/fault-attribution.md): a reference sample is checked for a jump BEFORE it enters
the composer, so no tool tip can be composed with an unchecked reference; once the latch has tripped,
every tool tip is withheld (counted in ``withheld``, never given to ``on_output``) until
:meth:`BridgeCore.reset_reference`, and ``on_latch(reason)`` is called on the socket thread before any
output of that message is emitted, so a consumer learns of the bump before it could see a tool tip
composed with the bumped reference.
"""
from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections import Counter
from typing import Callable

import numpy as np

from spine_nav.geometry import ORTHONORMAL_TOL
from spine_nav.tracking.codec import (CRC64, HEADER_SIZE, STATUS_OK, TRANSFORM_TYPE_FIELD, IgtlMessage,
                                      MalformedMessage, TransformRows, timestamp_from_parts)
from spine_nav.tracking.native import frames as _frames
from spine_nav.tracking.reference_jump import ReferenceJumpDetector, reference_step_py
from spine_nav.tracking.tools import ComposedPose, PoseComposer, compose_rows_inv_a_b_c, new_pose, validate_rows
from spine_nav.tracking.watchdog import ToolHealthState, Watchdog

log = logging.getLogger("spine_nav.tracking")

OutputCallback = Callable[[ComposedPose, int], None]  # (pose, socket receive time perf_counter_ns)
LatchCallback = Callable[[str], None]  # (reason): the reference latch has just tripped

#: a header-v1 TRANSFORM on the wire: the 58-byte header and its 48-byte body (12 big-endian float32, OpenIGTLink order
#: R11 R21 R31 R12 R22 R32 R13 R23 R33 TX TY TZ), :meth:`BridgeCore.take_chunk`'s unit
_TRANSFORM_V1 = struct.Struct(">H12s20sIIQQ12f")
_TRANSFORM_V1_SIZE = _TRANSFORM_V1.size
_FAST_MAX_MESSAGES = 16  # a larger chunk (a backlog) takes the general path

#: PLUS (OpenIGTLink v3) puts the transform status in the header metadata.
STATUS_METADATA_KEYS = ("TransformStatus", "Status")


def steady_tip_py(taken: list, reference_device: str, tips: dict, pending: dict, prev: tuple | None,
                  latched: object, limits: tuple) -> tuple | None:
    """The bridge's steady-frame check and composition (the definition of ``_frames.steady_tip``; tests/
    test_native_frames.py: the same result bit for bit). ``taken``: :meth:`BridgeCore._decode_chunk_py`'s list;
    ``tips``, ``pending``: :attr:`PoseComposer.steady_tips` and :attr:`PoseComposer.pending`; ``prev``, ``latched``,
    ``limits``: :attr:`ReferenceJumpDetector.prev`, ``latched`` and ``step_limits``. When ``taken`` is a reference
    sample of ``reference_device`` then a sample of a tool in ``tips`` at the same tracker time, nothing pending,
    a previous reference, no latch and the step within the limits: (tool, squared step mm^2, cosine of the rotation
    step, T_reference_tooltip rows = inv(T_tracker_reference) @ T_tracker_tool @ T_tool_tooltip, mm). Else None."""
    if len(taken) != 2 or prev is None or latched is not None or any(pending.values()):
        return None
    ((ref_device, _), t_ref, ref_rows), ((tool_device, _), t_tool, tool_rows) = taken
    if ref_device != reference_device or t_ref != t_tool:
        return None
    tip = tips.get(tool_device)
    if tip is None:
        return None
    sq_mm, cos_step, jump = reference_step_py(prev[0], ref_rows, t_ref - prev[1], limits)
    if jump:
        return None
    return tip[0], sq_mm, cos_step, compose_rows_inv_a_b_c(ref_rows, tool_rows, tip[1])


#: the C twin when built (the same result), else the Python definition above
_steady_tip = _frames.steady_tip if _frames is not None else steady_tip_py


class BridgeCore:
    """See the module doc. ``defer_kinds``: output kinds held back until :meth:`flush` (called by the
    transport when a ``recv()`` chunk has been handled), so the guard-critical ``tool_tip`` of a tracker
    frame is published before the frame's ``reference`` / ``arm_marker`` poses that arrived ahead of it;
    the deferred poses wait at most for the rest of their chunk. Measured in `spine-nav bench bridge`
    (tool tip p50 0.15 ms deferred vs 0.19 ms in arrival order; the reference then follows ~50 us
    later, well inside the arm command's budget in the demo report). ``on_output`` may be called with the core's
    lock held (the steady-frame path publishes the tool tip before its bookkeeping): it must not call back into
    the core (the node's publishes do not)."""

    def __init__(self, composer: PoseComposer, watchdog: Watchdog | None = None,
                 on_output: OutputCallback | None = None, clock: Callable[[], float] = time.monotonic,
                 jump_detector: ReferenceJumpDetector | None = None,
                 defer_kinds: frozenset[str] = frozenset(), on_latch: LatchCallback | None = None) -> None:
        self.composer = composer
        self.on_latch = on_latch
        self.jump_detector = jump_detector  # None = no bump detection
        self.watch_name: dict[str, str] = {composer.reference_device: "reference",
                                           composer.arm_marker_device: "arm_marker"}
        for t in composer.tools:
            self.watch_name[t.device] = t.name
            if t.tip_device:
                self.watch_name[t.tip_device] = t.name
        if watchdog is None:
            watchdog = Watchdog({"reference": composer.reference_device, "arm_marker": composer.arm_marker_device,
                                 **{t.name: t.device for t in composer.tools}})
        self.watchdog = watchdog
        self.on_output = on_output
        self.clock = clock
        self.rejected: Counter[str] = Counter()
        self.ignored_devices: Counter[str] = Counter()
        self.messages = Counter()
        #: tool tips not given to ``on_output`` because the reference was latched (bumped) when they were composed
        self.withheld = 0
        #: frames :meth:`take_chunk` took on its steady-frame path (tool tip composed and published before the
        #: bookkeeping); the others went through the per-message steps (diagnostics, tests)
        self.steady_frames = 0
        self.last_text: dict[str, str] = {}
        self._logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.defer_kinds = frozenset(defer_kinds)
        self._deferred = threading.local()  # per socket thread: [(pose, receive_ns), ...]
        #: take_chunk's devices: the raw 20-byte header field (name NUL-padded, as the codec decodes it back to the
        #: name) -> (device, watched name); names that would not survive that round trip are left to the general path
        self._fast_devices: dict[bytes, tuple[str, str]] = {}
        for device, name in self.watch_name.items():
            raw = device.encode("utf-8")
            if 0 < len(raw) <= 20 and "\0" not in device and device.isprintable():
                self._fast_devices[raw.ljust(20, b"\0")] = (device, name)

    def _log_once(self, kind: str, peer: str, detail: str) -> None:
        if (kind, peer) not in self._logged:
            self._logged.add((kind, peer))
            log.warning("tracker bridge: from %s dropped %s (%s); further ones counted only", peer, kind, detail)

    def handle(self, msg: IgtlMessage, receive_ns: int, peer: str = "") -> None:
        """Process one decoded message (transport callback signature minus the connection)."""
        if msg.__class__ is TransformRows:  # the codec's hot path: one pose as plain floats, header v1 (no metadata)
            self._take_pose(msg.device, None, msg.rows, msg.timestamp_s, receive_ns, peer, "TRANSFORM")
            return
        with self._lock:
            self.messages[msg.type] += 1
            if msg.type == "STATUS":
                name = self.watch_name.get(msg.device)
                if name is not None:
                    self.watchdog.set_visible(name, msg.status_code == STATUS_OK,
                                              f"tracker reports tool missing (STATUS {msg.status_code}: {msg.text})")
                return
            if msg.type == "STRING":
                self.last_text[msg.device] = msg.text
                return
            if not msg.poses:
                return
            status, visible = "OK", True
            if msg.metadata:
                status = next((msg.metadata[k] for k in STATUS_METADATA_KEYS if k in msg.metadata), "OK")
                visible = status.upper() == "OK"
            poses = msg.poses
            if len(poses) > 1:  # reference first: a bumped reference latches before any tool tip is composed with it
                poses = sorted(poses, key=lambda p: p[0] != self.composer.reference_device)
            taken: list[tuple[str, str, object]] = []
            for device, matrix in poses:
                name = self.watch_name.get(device)
                if name is None:
                    self.ignored_devices[device] += 1
                    self._log_once("unknown device", peer, device)
                elif not visible:
                    self.watchdog.set_visible(name, False, f"tracker reports tool missing ({status})")
                else:
                    taken.append((device, name, matrix))
        for device, name, matrix in taken:
            self._take_pose(device, name, np.asarray(matrix, dtype=float), msg.timestamp_s, receive_ns, peer)

    def _take_pose(self, device: str, name: str | None, matrix, t_s: float, receive_ns: int, peer: str,
                   count: str | None = None) -> None:
        """One pose of ``device`` (watched as ``name``; None: looked up here, an unknown device is counted and
        dropped), every path's steps in this order: rigid check (``validate_rows``; a rejected pose is counted),
        then :meth:`_take_valid_locked` (watchdog, jump check of a reference BEFORE it enters the composer,
        compose, withhold tool tips while latched), then :meth:`_emit` outside the lock (``on_latch`` before any
        output, outputs of ``defer_kinds`` held until :meth:`flush`). ``count``: the message type to count (the
        decoder's TransformRows; the general path counts its message itself). :meth:`take_chunk` runs the same
        steps on the frames it decodes itself."""
        with self._lock:
            if count is not None:
                self.messages[count] += 1
            if name is None:
                name = self.watch_name.get(device)
                if name is None:
                    self.ignored_devices[device] += 1
                    self._log_once("unknown device", peer, device)
                    return
            try:
                rows = validate_rows(matrix, device)
            except MalformedMessage as exc:
                self.rejected[exc.kind] += 1
                self.watchdog.reject(name)
                self._log_once(exc.kind, peer, exc.detail)
                return
            outputs, latched_now = self._take_valid_locked(device, name, rows, t_s)
        self._emit(outputs, latched_now, receive_ns)

    def _take_valid_locked(self, device: str, name: str, rows: list, t_s: float) -> tuple[list[ComposedPose], str]:
        """The steps after the rigid check, under the lock: watchdog, jump check (reference), compose, withhold
        tool tips while latched. Returns (outputs, the latch reason if this sample tripped it, else "")."""
        latched_now = ""
        self.watchdog.sample(name, self.clock(), t_s, True)
        jump_detector = self.jump_detector
        if name == "reference" and jump_detector is not None:
            jump = jump_detector.update_rows(rows, t_s)
            if jump is not None:
                self.watchdog.latch_lost("reference", jump.reason)
                latched_now = jump.reason
                log.error("tracker bridge: %s (latched until reset)", jump.reason)
        outputs = self.composer.add(device, None, t_s, rows)
        if outputs and jump_detector is not None and jump_detector.latched is not None:
            kept = [o for o in outputs if o.kind != "tool_tip"]
            self.withheld += len(outputs) - len(kept)
            outputs = kept
        return outputs, latched_now

    def _emit(self, outputs: list[ComposedPose], latched_now: str, receive_ns: int) -> None:
        if latched_now and self.on_latch is not None:
            self.on_latch(latched_now)  # before any output: the cause is known first
        on_output = self.on_output
        if on_output is not None:
            for out in outputs:
                if out.kind in self.defer_kinds:
                    self._defer(out, receive_ns)
                else:
                    on_output(out, receive_ns)

    def _defer(self, out: ComposedPose, receive_ns: int) -> None:
        """Hold ``out`` until this thread's :meth:`flush` (``defer_kinds``)."""
        held = getattr(self._deferred, "items", None)
        if held is None:
            held = self._deferred.items = []
        held.append((out, receive_ns))

    def take_chunk(self, data: bytes, receive_ns: int, _source: object = None) -> int:
        """Fast path for one ``recv()`` chunk (the transport's ``on_chunk``; the 1 kHz tracker frame): when the
        chunk is exactly whole header-v1 TRANSFORM messages (48-byte body) of watched devices, each with a good
        CRC and a finite rigid pose, decode them here in one C call (``_frames.decode_transforms``, when built;
        else its Python definition :meth:`_decode_chunk_py`: one ``struct`` unpack per message, rigid and NaN check
        in scalar arithmetic) and run the general path's per-pose steps on them (:meth:`_take_valid_locked`,
        :meth:`_emit`), in order. Returns the number of messages handled; **0 when anything differs** (another
        type or version, an unknown device or a device name not in canonical NUL-padded form, a bad CRC, a
        non-finite or non-rigid pose, a partial message): then nothing was changed and the caller decodes the
        chunk the general way, which counts, logs and rejects exactly as before. Accepting only what the general
        path accepts, and computing the same floats (the same float32 values, timestamp conversion, checks and
        tolerance as :func:`spine_nav.geometry.rigid_rows`), it gives the same outputs, counters and health
        (tests/test_tracking_core.py: the fast-path equivalence tests). ``_source`` (the connection or peer) is not
        used: the transport's ``on_chunk`` signature, so it can call this method without a wrapper."""
        if _frames is not None:  # the C twin of _decode_chunk_py (tests/test_native_frames.py: the same result)
            taken = _frames.decode_transforms(data, self._fast_devices, ORTHONORMAL_TOL, _FAST_MAX_MESSAGES)
        else:
            taken = self._decode_chunk_py(data)
        if not taken:
            return 0
        if len(taken) == 2 and self._take_steady_frame(taken, receive_ns):
            return 2
        for (device, name), t_s, rows in taken:
            with self._lock:
                self.messages["TRANSFORM"] += 1
                outputs, latched_now = self._take_valid_locked(device, name, rows, t_s)
            self._emit(outputs, latched_now, receive_ns)
        return len(taken)

    def _take_steady_frame(self, taken: list, receive_ns: int) -> bool:
        """The 1 kHz steady state: a reference and then a composed tool's sample of the same tracker time, nothing
        pending, the reference step within the jump limits, no latch; all checked, and the tool tip composed, in one
        C call (``_frames.steady_tip``, else its definition :func:`steady_tip_py`). Publishes the tool tip first and
        then does the general path's bookkeeping of both samples (watchdog, jump detector, composer, counters; all
        under the lock, so nobody sees the state in between; also when ``on_output`` raises), and defers the
        reference output as :meth:`_emit` would: the same outputs, state and counters as :meth:`_take_valid_locked` +
        :meth:`_emit` per message (tests/test_bridge_fast_chunk.py); counted in :attr:`steady_frames`. False, with
        nothing changed, when the frame is anything else. Cold at 1 kHz (``bench bridge --profile``, paced): recv ->
        tool tip published ~1.55x the floor's work, was ~1.9x with the checks and the composition as three Python
        calls (docs/performance.md, "The bridge in C")."""
        composer, detector, on_output = self.composer, self.jump_detector, self.on_output
        if detector is None or on_output is None or "reference" not in self.defer_kinds or "tool_tip" in self.defer_kinds:
            return False
        with self._lock:
            hit = _steady_tip(taken, composer.reference_device, composer.steady_tips, composer.pending, detector.prev,
                              detector.latched, detector.step_limits)
            if hit is None:
                return False
            tool, sq_mm, cos_step, rows = hit
            ((_, ref_name), t_s, ref_rows), ((_, tool_name), _, _) = taken
            try:
                on_output(new_pose(ComposedPose, ("tool_tip", tool.name, tool.device, t_s, rows, 0.0, "")), receive_ns)
            finally:  # the bookkeeping _take_valid_locked does for the two samples, in its order
                self.messages["TRANSFORM"] += 2
                self.steady_frames += 1
                self.watchdog.sample(ref_name, self.clock(), t_s, True)
                detector.accept_steady(ref_rows, t_s, (sq_mm, cos_step))
                self._defer(composer.keep_reference(t_s, ref_rows), receive_ns)
                self.watchdog.sample(tool_name, self.clock(), t_s, True)
        return True

    def _decode_chunk_py(self, data: bytes) -> list | None:
        """:meth:`take_chunk`'s decode in Python (the definition of ``_frames.decode_transforms``, used when the
        extension is not built): [((device, name), timestamp_s, rows), ...] for a chunk of 1-16 whole header-v1
        TRANSFORMs of watched devices with good CRCs and finite rigid poses, else None."""
        size = len(data)
        if not size or size % _TRANSFORM_V1_SIZE or size > _FAST_MAX_MESSAGES * _TRANSFORM_V1_SIZE:
            return None
        devices, unpack, tol = self._fast_devices, _TRANSFORM_V1.unpack_from, ORTHONORMAL_TOL
        taken: list = []
        for off in range(0, size, _TRANSFORM_V1_SIZE):
            (version, mtype, dev, sec, frac, body_size, crc,
             a00, a10, a20, a01, a11, a21, a02, a12, a22, t0, t1, t2) = unpack(data, off)
            known = devices.get(dev)
            if (known is None or version != 1 or body_size != 48 or mtype != TRANSFORM_TYPE_FIELD
                    or CRC64(data[off + HEADER_SIZE:off + _TRANSFORM_V1_SIZE]) != crc):
                return None
            # geometry.rigid_rows on these rows (bottom row 0 0 0 1 implied by the format): finite, orthonormal
            # within ORTHONORMAL_TOL, det > 0 - the same expressions, so the same verdict on the same floats
            if not math.isfinite(a00 + a01 + a02 + t0 + a10 + a11 + a12 + t1 + a20 + a21 + a22 + t2):
                return None
            if max(abs(a00 * a00 + a10 * a10 + a20 * a20 - 1.0), abs(a01 * a01 + a11 * a11 + a21 * a21 - 1.0),
                   abs(a02 * a02 + a12 * a12 + a22 * a22 - 1.0), abs(a00 * a01 + a10 * a11 + a20 * a21),
                   abs(a00 * a02 + a10 * a12 + a20 * a22), abs(a01 * a02 + a11 * a12 + a21 * a22)) > tol:
                return None
            if a00 * (a11 * a22 - a21 * a12) - a10 * (a01 * a22 - a21 * a02) + a20 * (a01 * a12 - a11 * a02) <= 0.0:
                return None
            taken.append((known, timestamp_from_parts(sec, frac),
                          [[a00, a01, a02, t0], [a10, a11, a12, t1], [a20, a21, a22, t2]]))
        return taken

    def flush(self, _conn=None) -> None:
        """Emit the outputs this thread held back (``defer_kinds``), in arrival order."""
        held = getattr(self._deferred, "items", None)
        if held and self.on_output is not None:
            self._deferred.items = []
            for out, receive_ns in held:
                self.on_output(out, receive_ns)

    def reset_reference(self) -> str:
        """Release a bumped-reference latch (after re-registration); returns what was cleared ("" = none)."""
        with self._lock:
            reason = self.watchdog.latched_reason("reference")
            self.watchdog.clear_latch("reference")
            if self.jump_detector is not None:
                self.jump_detector.reset()
            return reason

    def check(self) -> list[ToolHealthState]:
        with self._lock:
            return self.watchdog.check(self.clock())
