"""geometry_msgs/PoseStamped <-> serialized CDR bytes, for the 1 kHz pose topics (ROS boundary only).

Why not rclpy's own path: ``publisher.publish(msg)`` converts the Python message to its C struct and
serialises it (17 us per PoseStamped here) after the caller has filled six nested Python objects
(8 us); a subscription builds those six objects again on every take. rclpy publishes ``bytes`` as an
already serialized message (4 us), and ``create_subscription(..., raw=True)`` hands the bytes over.
Packing and unpacking the fixed layout below with one :class:`struct.Struct` costs ~1 us each way
(measured in ``tests/test_cdr.py`` against rclpy.serialization and in ``spine-nav bench bridge``).

Layout (OMG CDR as the ROS 2 RMWs serialise it, XCDR1 little-endian encapsulation ``00 01 00 00``;
alignment counted from the end of the 4-byte encapsulation header)::

    int32 sec, uint32 nanosec, uint32 len(frame_id)+1, frame_id bytes, NUL, pad to 8,
    float64 position x y z (m), float64 orientation x y z w

Anything else on the wire (big-endian encapsulation, other lengths) is decoded with
``rclpy.serialization.deserialize_message``, so the fast path never guesses.
"""
from __future__ import annotations

import struct
from functools import lru_cache

NS_PER_S = 1_000_000_000
_CDR_LE = b"\x00\x01\x00\x00"
_PREFIX = struct.Struct("<4siII")  # encapsulation, sec, nanosec, string length


class PoseStampedPacker:
    """Packs PoseStamped fields into CDR bytes for one fixed ``frame_id`` (one per publisher)."""

    def __init__(self, frame_id: str) -> None:
        name = frame_id.encode("utf-8")
        n = len(name) + 1
        pad = (-(12 + n)) % 8
        self.frame_id = frame_id
        self._struct = struct.Struct(f"<4siII{n}s{pad}x7d")
        self._name, self._n = name, n
        self.name_utf8 = name  # frame_id as UTF-8 bytes, no NUL (the C twin of pack_values takes it)

    def pack(self, stamp_s: float, position_m: tuple[float, float, float],
             quat_xyzw: tuple[float, float, float, float]) -> bytes:
        """``stamp_s``: seconds (float); ``position_m`` in metres; quaternion order x y z w."""
        ns = int(round(stamp_s * NS_PER_S))
        return self._struct.pack(_CDR_LE, ns // NS_PER_S, ns % NS_PER_S, self._n, self._name,
                                 *position_m, *quat_xyzw)

    def pack_values(self, stamp_s: float, px: float, py: float, pz: float,
                    qx: float, qy: float, qz: float, qw: float) -> bytes:
        """:meth:`pack` with the seven floats as arguments (no tuples built: the bridge's per-pose path)."""
        ns = int(round(stamp_s * NS_PER_S))
        return self._struct.pack(_CDR_LE, ns // NS_PER_S, ns % NS_PER_S, self._n, self._name, px, py, pz, qx, qy, qz, qw)


@lru_cache(maxsize=64)
def _tail_struct(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}s{(-(12 + n)) % 8}x7d")


def unpack_pose_stamped(data: bytes) -> tuple[int, int, str, tuple[float, float, float],
                                              tuple[float, float, float, float]]:
    """Serialized PoseStamped -> (stamp sec, stamp nanosec, frame_id, position m (x, y, z), quaternion (x, y, z, w)).

    Values are returned as sent (not validated: NaN stays NaN for the consumer's own check).
    Raises ``ValueError`` naming the problem when the bytes are not a PoseStamped.
    """
    if len(data) >= 16 and data[:4] == _CDR_LE:
        _, sec, nanosec, n = _PREFIX.unpack_from(data)
        tail = _tail_struct(n) if 0 < n <= 4096 else None
        if tail is not None and len(data) == 16 + tail.size:
            name, px, py, pz, qx, qy, qz, qw = tail.unpack_from(data, 16)
            return sec, nanosec, name[:-1].decode("utf-8", "replace"), (px, py, pz), (qx, qy, qz, qw)
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import deserialize_message

    try:
        msg = deserialize_message(data, PoseStamped)
    except Exception as exc:  # noqa: BLE001 - the rmw's own error types
        raise ValueError(f"not a serialized geometry_msgs/PoseStamped ({len(data)} bytes): {exc}") from None
    p, o, st = msg.pose.position, msg.pose.orientation, msg.header.stamp
    return st.sec, st.nanosec, msg.header.frame_id, (p.x, p.y, p.z), (o.x, o.y, o.z, o.w)


class PrePackedStamped:
    """A message serialized once, with one builtin_interfaces/Time field patched per publication.

    For the benchmarks' bare relays (``spine_nav.nodes.floor_relay``): they publish a constant message
    whose only varying field is the stamp of the sample it answers, without building or serialising a
    Python message per sample. The field's byte offset is found by serialising the template with a
    sentinel stamp (so no layout is hand-coded); ``time_field`` is a dotted attribute path, e.g.
    ``"tool_sample_stamp"`` or ``"header.stamp"``.
    """

    _SENTINEL = (0x5A3C7E11, 0x3E1A5C77)
    _TIME = struct.Struct("<iI")

    def __init__(self, msg, time_field: str) -> None:
        from rclpy.serialization import serialize_message

        obj = msg
        *parents, leaf = time_field.split(".")
        for name in parents:
            obj = getattr(obj, name)
        t = getattr(obj, leaf)
        t.sec, t.nanosec = self._SENTINEL
        data = serialize_message(msg)
        marker = self._TIME.pack(*self._SENTINEL)
        self.offset = data.find(marker)
        if self.offset < 0 or data.find(marker, self.offset + 1) >= 0:
            raise ValueError(f"{type(msg).__name__}.{time_field}: stamp not found exactly once in the CDR bytes")
        self._buf = bytearray(data)

    def with_stamp(self, sec: int, nanosec: int) -> bytes:
        """The serialized message with ``time_field`` = (sec, nanosec)."""
        self._TIME.pack_into(self._buf, self.offset, sec, nanosec)
        return bytes(self._buf)


def stamp_of_pose_stamped(data: bytes) -> tuple[int, int]:
    """(sec, nanosec) of a serialized little-endian PoseStamped's header.stamp (the first 8 bytes after the
    encapsulation), without decoding the rest."""
    _, sec, nanosec, _ = _PREFIX.unpack_from(data)
    return sec, nanosec


@lru_cache(maxsize=1024)
def _status_struct(head: str, n_id: int, n_name: int, n_reason: int, frame_end: int) -> struct.Struct:
    """The whole GuardStatus layout: the header's format ``head`` (ends with its frame_id, which ends at CDR
    offset ``frame_end``), then the fields after it for string sizes ``n_*`` (bytes with the NUL). Offsets
    count from the end of the encapsulation. One struct: the message is packed in one call."""
    o = frame_end
    pad1 = (-o) % 4
    o += pad1 + 8 + 4 + n_id + 1  # tool_sample_stamp, active_screw_id, state (uint8)
    pad2 = (-o) % 4
    o += pad2 + 4 + n_name  # state_name
    pad3 = (-o) % 4
    o += pad3 + 4 + n_reason  # reason
    pad4 = (-o) % 8
    return struct.Struct(f"{head}{pad1}xiII{n_id}sB{pad2}xI{n_name}s{pad3}xI{n_reason}s{pad4}x7d?")


def _cdr_string(s: str) -> bytes:
    """A ROS string field's bytes as rclpy serialises them: UTF-8, cut at the first NUL (C strings)."""
    b = s.encode("utf-8")
    cut = b.find(b"\0")
    return b if cut < 0 else b[:cut]


class GuardStatusPacker:
    """Packs spine_nav_interfaces/GuardStatus fields into CDR bytes for one fixed header ``frame_id``, for the
    guard's per-sample status (``publisher.publish(bytes)``): no Python message object is built or converted.

    Layout (OMG CDR, XCDR1 little-endian as rclpy/Fast DDS serialise it; alignment counted from the end of
    the 4-byte encapsulation header; strings: uint32 length with the NUL, UTF-8 bytes, NUL)::

        header: int32 sec, uint32 nanosec, string frame_id
        tool_sample_stamp: (pad to 4) int32 sec, uint32 nanosec
        string active_screw_id, uint8 state, (pad to 4) string state_name, (pad to 4) string reason,
        (pad to 8) float64 lateral_error_mm entry_offset_mm angular_error_deg depth_mm remaining_mm
        predicted_tip_error_mm sample_age_ms, bool repeat

    Tested field by field against ``rclpy.serialization`` on the same values, NaN, empty, non-ASCII and
    NUL-carrying strings and every string length modulo 8 (``tests/test_guard_status_cdr.py``); padding
    bytes are zero (rclpy leaves them unset). ~2 us instead of ~7 us for building the GuardStatus plus
    ~8 us for its conversion in ``publish()`` (``spine-nav bench guard --profile``).
    """

    def __init__(self, frame_id: str) -> None:
        name = _cdr_string(frame_id)
        self.frame_id = frame_id
        self._head = f"<4siII{len(name) + 1}s"
        self._name, self._n, self._frame_end = name, len(name) + 1, 12 + len(name) + 1
        #: (screw_id, state_name, reason) -> (the message's Struct, then each string's CDR length and bytes): the
        #: strings of a verdict repeat sample after sample (ALIGNED's reason is constant), so they are encoded
        #: and laid out once; bounded (emptied when full: reasons with numbers in them change per sample)
        self._strings: dict[tuple[str, str, str], tuple] = {}

    def _layout(self, screw_id: str, state_name: str, reason: str) -> tuple:
        sid, sname, rsn = _cdr_string(screw_id), _cdr_string(state_name), _cdr_string(reason)
        n_id, n_name, n_reason = len(sid) + 1, len(sname) + 1, len(rsn) + 1
        layout = (_status_struct(self._head, n_id, n_name, n_reason, self._frame_end),
                  n_id, sid, n_name, sname, n_reason, rsn)
        if len(self._strings) >= 256:
            self._strings.clear()
        self._strings[(screw_id, state_name, reason)] = layout
        return layout

    def pack(self, stamp: tuple[int, int], sample_stamp: tuple[int, int], screw_id: str, state: int,
             state_name: str, reason: str, values: tuple[float, ...], repeat: bool = False) -> bytes:
        """``stamp`` / ``sample_stamp``: (sec, nanosec) of header.stamp / tool_sample_stamp; ``values``: the 7
        float64 fields in message order. ValueError naming the field when a value does not fit its type."""
        if not 0 <= state <= 255:
            raise ValueError(f"GuardStatus.state: {state!r} is not a uint8")
        if len(values) != 7:
            raise ValueError(f"GuardStatus: expected 7 float64 values (lateral_error_mm ... sample_age_ms), "
                             f"got {len(values)}")
        layout = self._strings.get((screw_id, state_name, reason)) or self._layout(screw_id, state_name, reason)
        st, n_id, sid, n_name, sname, n_reason, rsn = layout
        try:
            return st.pack(_CDR_LE, stamp[0], stamp[1], self._n, self._name, sample_stamp[0], sample_stamp[1], n_id,
                           sid, state, n_name, sname, n_reason, rsn, *values, bool(repeat))
        except struct.error as exc:
            raise ValueError(f"GuardStatus: stamp {stamp!r} / tool_sample_stamp {sample_stamp!r} or a float64 "
                             f"value out of range: {exc}") from None
