"""OpenIGTLink message codec (no sockets): bytes <-> :class:`IgtlMessage`, with framing for a byte stream.

What comes from pyigtl and what is ours (and why):

* pyigtl (0.3.4) gives the header layout, header v2/v3 extended header + metadata handling
  (``MessageBase.pack``/``unpack``), the CRC-64 (crcmod C extension) and the 32.32 fixed-point
  timestamp, plus the TRANSFORM, STRING and POINT bodies. We reuse those.
* pyigtl has no TDATA, STT_TDATA/STP_TDATA or STATUS, and its ``PositionMessage`` is not the
  OpenIGTLink POSITION body (it packs a 136+16-byte POINT-like record; the reference C++
  library and Slicer use 12/24/28 bytes: X Y Z [OX OY OZ [W]]). Those bodies are written here as
  ``pyigtl.MessageBase`` subclasses so the header/metadata/CRC path stays pyigtl's.

Matrices are 4x4 float64 in mm (``T_tracker_device`` for ``DeviceToTracker``); poses are not
validated here (see :func:`spine_nav.tracking.tools.validate_rows`) so the codec round-trips any input.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Iterator

import numpy as np
import pyigtl
from pyigtl.messages import CRC64, MessageBase, _igtl_frac_to_nanosec, _igtl_nanosec_to_frac

HEADER_SIZE = 58
_HEADER = struct.Struct(">H12s20sIIQQ")
_F12 = struct.Struct(">12f")
TRANSFORM_TYPE_FIELD = b"TRANSFORM".ljust(12, b"\0")  # the raw 12-byte type field of a TRANSFORM header
#: Message types this bridge decodes; other (well-formed) types are skipped and counted.
KNOWN_TYPES = frozenset({"TRANSFORM", "POSITION", "TDATA", "STT_TDATA", "STP_TDATA", "STATUS",
                         "STRING", "POINT", "TRAJ"})
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any pose message, bounds the receive buffer

STATUS_OK = 1
STATUS_NOT_PRESENT = 16

TDATA_TYPE_TRACKER, TDATA_TYPE_6D, TDATA_TYPE_3D, TDATA_TYPE_5D = 1, 2, 3, 4


class MalformedMessage(ValueError):
    """A message that cannot be used; ``kind`` is a short category for counters and logging."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# --------------------------------------------------------------------------- matrices
def _matrix_to_12(matrix: np.ndarray) -> tuple[float, ...]:
    """4x4 -> OpenIGTLink order R11 R21 R31 R12 R22 R32 R13 R23 R33 TX TY TZ (column-major rotation)."""
    m = np.asarray(matrix, dtype=float)
    return (*m[:3, 0], *m[:3, 1], *m[:3, 2], *m[:3, 3])


def _matrix_from_12(v) -> np.ndarray:
    # from one flat tuple: 2.3 us here, against 3.3 us for the nested-list form (per pose, at 1 kHz)
    return np.array((v[0], v[3], v[6], v[9], v[1], v[4], v[7], v[10], v[2], v[5], v[8], v[11],
                     0.0, 0.0, 0.0, 1.0)).reshape(4, 4)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").rstrip()


# --------------------------------------------------------------------------- bodies we own
class PositionMessage(MessageBase):
    """POSITION: X Y Z (mm) then quaternion OX OY OZ W (float32), 28 bytes; 24/12-byte variants decoded."""

    def __init__(self, position_mm=(0.0, 0.0, 0.0), quaternion_xyzw=(0.0, 0.0, 0.0, 1.0), timestamp=None,
                 device_name=None):
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "POSITION"
        self.position_mm = tuple(float(x) for x in position_mm)
        self.quaternion_xyzw = tuple(float(x) for x in quaternion_xyzw)
        self._valid_message = True

    def _pack_content(self):
        return struct.pack(">7f", *self.position_mm, *self.quaternion_xyzw)

    def _unpack_content(self, content):
        n = len(content)
        if n == 28:
            v = struct.unpack(">7f", content)
            self.position_mm, self.quaternion_xyzw = v[:3], v[3:]
        elif n == 24:  # OX OY OZ only; W recovered as the positive root
            v = struct.unpack(">6f", content)
            w2 = 1.0 - sum(x * x for x in v[3:])
            self.position_mm, self.quaternion_xyzw = v[:3], (*v[3:], math.sqrt(max(w2, 0.0)))
        elif n == 12:
            self.position_mm, self.quaternion_xyzw = struct.unpack(">3f", content), (0.0, 0.0, 0.0, 1.0)
        else:
            raise MalformedMessage("wrong body size", f"POSITION body {n} bytes (expected 12, 24 or 28)")


@dataclass
class TDataElement:
    name: str
    matrix: np.ndarray
    type: int = TDATA_TYPE_6D


_TDATA_EL = struct.Struct(">20sBB12f")


class TDataMessage(MessageBase):
    """TDATA: several tools per message, 70 bytes each (name[20], type, reserved, 12 float32)."""

    def __init__(self, elements: list[TDataElement] | None = None, timestamp=None, device_name=None):
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "TDATA"
        self.elements = list(elements or [])
        self._valid_message = True

    def _pack_content(self):
        return b"".join(_TDATA_EL.pack(e.name.encode()[:20], e.type, 0, *_matrix_to_12(e.matrix))
                        for e in self.elements)

    def _unpack_content(self, content):
        if len(content) % _TDATA_EL.size:
            raise MalformedMessage("wrong body size", f"TDATA body {len(content)} bytes is not a multiple of 70")
        self.elements = []
        for off in range(0, len(content), _TDATA_EL.size):
            v = _TDATA_EL.unpack_from(content, off)
            self.elements.append(TDataElement(_cstr(v[0]), _matrix_from_12(v[3:]), v[1]))


class StartTDataMessage(MessageBase):
    """STT_TDATA: resolution (ms between samples, uint32) + coordinate system name[32]."""

    def __init__(self, resolution_ms: int = 0, coordinate_name: str = "", timestamp=None, device_name=None):
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "STT_TDATA"
        self.resolution_ms = int(resolution_ms)
        self.coordinate_name = coordinate_name
        self._valid_message = True

    def _pack_content(self):
        return struct.pack(">I32s", self.resolution_ms, self.coordinate_name.encode()[:32])

    def _unpack_content(self, content):
        if len(content) not in (0, 36):  # some senders send an empty STT_TDATA
            raise MalformedMessage("wrong body size", f"STT_TDATA body {len(content)} bytes (expected 36)")
        if content:
            res, name = struct.unpack(">I32s", content)
            self.resolution_ms, self.coordinate_name = res, _cstr(name)


class StopTDataMessage(MessageBase):
    def __init__(self, timestamp=None, device_name=None):
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "STP_TDATA"
        self._valid_message = True


class StatusMessage(MessageBase):
    """STATUS: code uint16 (1 = OK), subcode int64, error name[20], NUL-terminated status string."""

    def __init__(self, code: int = STATUS_OK, subcode: int = 0, error_name: str = "", status_string: str = "",
                 timestamp=None, device_name=None):
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "STATUS"
        self.code, self.subcode, self.error_name, self.status_string = int(code), int(subcode), error_name, status_string
        self._valid_message = True

    def _pack_content(self):
        return struct.pack(">Hq20s", self.code, self.subcode, self.error_name.encode()[:20]) + \
            self.status_string.encode() + b"\0"

    def _unpack_content(self, content):
        if len(content) < 30:
            raise MalformedMessage("truncated body", f"STATUS body {len(content)} bytes (< 30)")
        self.code, self.subcode, name = struct.unpack_from(">Hq20s", content)
        self.error_name = _cstr(name)
        self.status_string = _cstr(content[30:])


_TRAJ_EL = struct.Struct(">64s32sbx4B7f20s")


class TrajMessage(MessageBase):
    """TRAJ: per trajectory name[64], group[32], type (3 = entry+target), rgba, entry, target (mm), radius, owner."""

    def __init__(self, trajectories: list[dict] | None = None, timestamp=None, device_name=None):
        super().__init__(timestamp=timestamp, device_name=device_name)
        self._message_type = "TRAJ"
        self.trajectories = list(trajectories or [])
        self._valid_message = True

    def _pack_content(self):
        out = []
        for t in self.trajectories:
            out.append(_TRAJ_EL.pack(t["name"].encode()[:64], t.get("group", "Trajectory").encode()[:32], 3,
                                     *t.get("rgba", (255, 255, 0, 255)), *t["entry_mm"], *t["target_mm"],
                                     float(t.get("radius_mm", 0.0)), t.get("owner", "").encode()[:20]))
        return b"".join(out)

    def _unpack_content(self, content):
        if len(content) % _TRAJ_EL.size:
            raise MalformedMessage("wrong body size", f"TRAJ body {len(content)} bytes is not a multiple of 150")
        self.trajectories = []
        for off in range(0, len(content), _TRAJ_EL.size):
            v = _TRAJ_EL.unpack_from(content, off)
            self.trajectories.append({"name": _cstr(v[0]), "group": _cstr(v[1]), "rgba": v[3:7],
                                      "entry_mm": v[7:10], "target_mm": v[10:13], "radius_mm": v[13],
                                      "owner": _cstr(v[14])})


class StrictStringMessage(pyigtl.StringMessage):
    """pyigtl's STRING, but a declared length longer than the body is an error (pyigtl truncates silently)."""

    def _unpack_content(self, content):
        if len(content) < 4 or struct.unpack_from(">H", content, 2)[0] > len(content) - 4:
            raise MalformedMessage("truncated body", f"STRING body {len(content)} bytes shorter than declared")
        super()._unpack_content(content)


_CLASSES: dict[str, type] = {
    "TRANSFORM": pyigtl.TransformMessage,
    "STRING": StrictStringMessage,
    "POINT": pyigtl.PointMessage,
    "POSITION": PositionMessage,
    "TDATA": TDataMessage,
    "STT_TDATA": StartTDataMessage,
    "STP_TDATA": StopTDataMessage,
    "STATUS": StatusMessage,
    "TRAJ": TrajMessage,
}


# --------------------------------------------------------------------------- decoded form
@dataclass
class IgtlMessage:
    """One decoded message. ``timestamp_s``: the sender's 32.32 header time in seconds (its epoch).

    ``poses``: (device name, 4x4 matrix mm, visible) for TRANSFORM/POSITION/TDATA (one per tool);
    ``text``: STRING content or STATUS string; ``status_code`` for STATUS; ``metadata`` from v2/v3.
    """

    type: str
    device: str
    timestamp_s: float
    header_version: int = 1
    metadata: dict[str, str] = field(default_factory=dict)
    poses: list[tuple[str, np.ndarray]] = field(default_factory=list)
    text: str = ""
    status_code: int | None = None
    resolution_ms: int | None = None
    raw: Any = None  # the codec object (pyigtl message or one of ours)


_BOTTOM_ROW = (0.0, 0.0, 0.0, 1.0)


class TransformRows(IgtlMessage):
    """A header-v1 TRANSFORM as the hot path decodes it (:meth:`StreamDecoder.feed`, 1 kHz): the pose as
    plain floats, ``rows`` = its four rows (``T_tracker_device``, mm; the bottom row is the constant
    ``0 0 0 1`` the wire format implies), no numpy array and no pyigtl object built per sample.

    Everything else reads it like any :class:`IgtlMessage`: ``poses`` builds the 4x4 ndarray on first
    use (and keeps it); ``raw`` is None. Equal to the message :func:`decode_body` builds from the same
    bytes (tests/test_igtl_codec.py)."""

    # header_version 1, text "", status_code / resolution_ms / raw None: the dataclass's class-level defaults
    type = "TRANSFORM"
    metadata = MappingProxyType({})  # header v1 has none (read-only, shared)
    _poses = None

    def __init__(self, device: str, timestamp_s: float, rows: tuple) -> None:  # noqa: D107 - no dataclass init
        self.device, self.timestamp_s, self.rows = device, timestamp_s, rows

    @property
    def poses(self) -> list[tuple[str, np.ndarray]]:  # type: ignore[override]
        if self._poses is None:
            self._poses = [(self.device, np.array(self.rows, dtype=float))]
        return self._poses

    @poses.setter
    def poses(self, value) -> None:
        self._poses = value


def rows_from_12(v) -> tuple:
    """OpenIGTLink's 12 floats (R11 R21 R31 R12 R22 R32 R13 R23 R33 TX TY TZ, column-major rotation) ->
    the four rows of the 4x4 (plain floats; bottom row 0 0 0 1)."""
    return ((v[0], v[3], v[6], v[9]), (v[1], v[4], v[7], v[10]), (v[2], v[5], v[8], v[11]), _BOTTOM_ROW)


# igtl_frac_to_nanosec (reference C library, ported in pyigtl) adds a fixed amount per set bit, so four
# 256-entry byte tables give the identical result without pyigtl's 32-step Python loop on the hot path.
_BIT_NS = [_igtl_frac_to_nanosec(1 << i) for i in range(32)]
_FRAC_NS = [[sum(_BIT_NS[8 * k + j] for j in range(8) if b >> j & 1) for b in range(256)] for k in range(4)]


def frac_to_nanosec(frac: int) -> int:
    return (_FRAC_NS[0][frac & 255] + _FRAC_NS[1][frac >> 8 & 255] + _FRAC_NS[2][frac >> 16 & 255]
            + _FRAC_NS[3][frac >> 24 & 255])


def timestamp_from_parts(sec: int, frac: int) -> float:
    """32.32 fixed point -> s, exactly as the reference implementation converts it."""
    return sec + frac_to_nanosec(frac) * 1e-9


def timestamp_to_parts(t_s: float) -> tuple[int, int]:
    sec = int(math.floor(t_s))
    return sec, _igtl_nanosec_to_frac(int(round((t_s - sec) * 1e9)) % 1_000_000_000)


@dataclass
class Header:
    version: int
    type: str
    device: str
    timestamp_s: float
    body_size: int
    crc: int


@lru_cache(maxsize=1024)  # bounded: garbage that happens to parse cannot grow it
def _header_names(mtype: bytes, dev: bytes) -> tuple[str, str]:
    """Raw type and device fields -> names. Cached: a tracker repeats the same few devices at up to
    1 kHz, and decoding + checking the two fields every time was a quarter of the header's cost."""
    try:
        t = mtype.split(b"\0", 1)[0].decode("ascii")
        d = dev.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("bad header", "type or device name is not text") from None
    if not t or not t.isprintable() or not d.isprintable():
        raise MalformedMessage("bad header", f"type {t!r} / device {d!r} not printable")
    return t, d


def parse_header(buf: bytes | memoryview, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Header:
    """Parse the 58-byte header; raises :class:`MalformedMessage` when it cannot be one."""
    return parse_header_from(buf, 0, max_body_bytes)


def parse_header_from(buf: bytes | memoryview, offset: int, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Header:
    """:func:`parse_header` of the 58 bytes at ``offset``."""
    version, mtype, dev, sec, frac, size, crc = _HEADER.unpack_from(buf, offset)
    if version not in (1, 2, 3):
        raise MalformedMessage("bad header", f"header version {version}")
    t, d = _header_names(mtype, dev)
    if size > max_body_bytes:
        raise MalformedMessage("absurd body size", f"{t} body_size {size} > {max_body_bytes}")
    return Header(version, t, d, timestamp_from_parts(sec, frac), size, crc)


def decode_body(header: Header, body: bytes) -> IgtlMessage:
    """Check the CRC and decode the body of a known type. Raises :class:`MalformedMessage`."""
    if CRC64(body) != header.crc:
        raise MalformedMessage("bad CRC", f"{header.type} {header.device!r}")
    if header.type == "TRANSFORM" and header.version == 1 and len(body) == 48:
        # hot path (1 kHz): the same 12-float body pyigtl.TransformMessage unpacks, without building its object
        return IgtlMessage(type="TRANSFORM", device=header.device, timestamp_s=header.timestamp_s,
                           poses=[(header.device, _matrix_from_12(_F12.unpack(body)))])
    cls = _CLASSES.get(header.type)
    if cls is None:
        raise MalformedMessage("unknown type", header.type)
    obj = cls()
    fields = {"header_version": header.version, "message_type": header.type, "device_name": header.device,
              "timestamp": header.timestamp_s}
    try:
        if header.version > 1:
            if len(body) < 12:
                raise MalformedMessage("truncated body", f"{header.type} v{header.version} body < 12 bytes")
            ext, mh, mb, _ = struct.unpack_from(">HHII", body)
            if ext != 12 or ext + mh + mb > len(body):
                raise MalformedMessage("bad extended header", f"{header.type}: sizes {ext}/{mh}/{mb} vs {len(body)}")
        obj.unpack(fields, body)
    except MalformedMessage:
        raise
    except Exception as exc:  # struct.error, UnicodeDecodeError, ... from pyigtl's unpack
        raise MalformedMessage("bad body", f"{header.type} {header.device!r}: {exc}") from None
    msg = IgtlMessage(type=header.type, device=header.device, timestamp_s=header.timestamp_s,
                      header_version=header.version, metadata=dict(obj.metadata), raw=obj)
    if header.type == "TRANSFORM":
        msg.poses = [(header.device, np.asarray(obj.matrix, dtype=float))]
    elif header.type == "POSITION":
        from spine_nav.geometry import transform_from_quat

        q = np.asarray(obj.quaternion_xyzw, dtype=float)
        if not np.all(np.isfinite(q)) or not np.all(np.isfinite(obj.position_mm)):
            raise MalformedMessage("non-finite pose", f"POSITION {header.device!r}")
        try:
            msg.poses = [(header.device, transform_from_quat(q / np.linalg.norm(q), obj.position_mm, order="xyzw"))]
        except (ValueError, ZeroDivisionError) as exc:
            raise MalformedMessage("non-rigid pose", f"POSITION {header.device!r}: {exc}") from None
    elif header.type == "TDATA":
        msg.poses = [(e.name, e.matrix) for e in obj.elements]
    elif header.type == "STRING":
        msg.text = obj.string
    elif header.type == "STATUS":
        msg.status_code, msg.text = obj.code, obj.status_string
    elif header.type == "STT_TDATA":
        msg.resolution_ms = obj.resolution_ms
    return msg


# --------------------------------------------------------------------------- encoding
def _finish(obj: MessageBase, header_version: int, metadata: dict[str, str] | None) -> bytes:
    obj.header_version = header_version
    if metadata:
        obj.metadata = dict(metadata)
    return obj.pack()


def encode_transform(device: str, matrix_mm: np.ndarray, timestamp_s: float, header_version: int = 1,
                     metadata: dict[str, str] | None = None) -> bytes:
    return _finish(pyigtl.TransformMessage(np.asarray(matrix_mm), timestamp=timestamp_s, device_name=device),
                   header_version, metadata)


def encode_position(device: str, position_mm, quaternion_xyzw, timestamp_s: float, header_version: int = 1,
                    metadata: dict[str, str] | None = None) -> bytes:
    return _finish(PositionMessage(position_mm, quaternion_xyzw, timestamp=timestamp_s, device_name=device),
                   header_version, metadata)


def encode_tdata(device: str, elements: list[TDataElement], timestamp_s: float, header_version: int = 1,
                 metadata: dict[str, str] | None = None) -> bytes:
    return _finish(TDataMessage(elements, timestamp=timestamp_s, device_name=device), header_version, metadata)


def encode_status(device: str, code: int, timestamp_s: float, status_string: str = "", error_name: str = "",
                  subcode: int = 0, header_version: int = 1, metadata: dict[str, str] | None = None) -> bytes:
    return _finish(StatusMessage(code, subcode, error_name, status_string, timestamp=timestamp_s,
                                 device_name=device), header_version, metadata)


def encode_string(device: str, text: str, timestamp_s: float, header_version: int = 1,
                  metadata: dict[str, str] | None = None) -> bytes:
    return _finish(pyigtl.StringMessage(text, timestamp=timestamp_s, device_name=device), header_version, metadata)


def encode_point(device: str, names: list[str], positions_mm, timestamp_s: float, group: str = "Plan",
                 header_version: int = 1) -> bytes:
    msg = pyigtl.PointMessage(positions=np.asarray(positions_mm, dtype=float).reshape(-1, 3).tolist(),
                              names=list(names), groups=group, timestamp=timestamp_s, device_name=device)
    return _finish(msg, header_version, None)


def encode_traj(device: str, trajectories: list[dict], timestamp_s: float, header_version: int = 1) -> bytes:
    return _finish(TrajMessage(trajectories, timestamp=timestamp_s, device_name=device), header_version, None)


def encode_stt_tdata(resolution_ms: int = 0, coordinate_name: str = "", device: str = "",
                     timestamp_s: float | None = None) -> bytes:
    return _finish(StartTDataMessage(resolution_ms, coordinate_name, timestamp=timestamp_s, device_name=device), 1,
                   None)


def encode_stp_tdata(device: str = "", timestamp_s: float | None = None) -> bytes:
    return _finish(StopTDataMessage(timestamp=timestamp_s, device_name=device), 1, None)


_STAMP = struct.Struct(">II")
_STAMP_OFFSET = struct.calcsize(">H12s20s")    # in _HEADER: version, type, device, then sec, frac
_SIZE_OFFSET = struct.calcsize(">H12s20sII")   # ... then body size
_SIZE = struct.Struct(">Q")


def restamp(packed: bytearray, timestamp_s: float) -> bytearray:
    """Set the header timestamp of every message in ``packed`` (whole encoded messages back to back)
    to ``timestamp_s``, in place. The CRC covers the body only, so the messages stay valid; a sender
    uses this to stamp a pre-encoded frame at the moment it transmits it."""
    sec, frac = timestamp_to_parts(timestamp_s)
    off = 0
    while off + HEADER_SIZE <= len(packed):
        _STAMP.pack_into(packed, off + _STAMP_OFFSET, sec, frac)
        off += HEADER_SIZE + _SIZE.unpack_from(packed, off + _SIZE_OFFSET)[0]
    if off != len(packed):
        raise ValueError(f"restamp: {len(packed)} bytes are not whole messages (stopped at {off})")
    return packed


# --------------------------------------------------------------------------- stream framing
@dataclass
class DecodeError:
    kind: str
    detail: str


class StreamDecoder:
    """Frames a TCP byte stream into messages. Never raises on bad input; memory stays bounded.

    ``feed(data)`` yields :class:`IgtlMessage` or :class:`DecodeError`. A bad CRC / bad body skips that
    message (its size is known). A header that cannot be one (garbage, absurd size) makes the decoder
    scan forward byte by byte for the next plausible header (resynchronisation), so random bytes cost
    only themselves. The buffer never holds more than one header + ``max_body_bytes``.
    """

    def __init__(self, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.max_body_bytes = int(max_body_bytes)
        self._buf = bytearray()
        self._resyncing = False
        #: raw 20-byte device field -> name, for TRANSFORM devices the general path has validated (fast path)
        self._names: dict[bytes, str] = {}

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    @property
    def at_message_boundary(self) -> bool:
        """No partial message buffered and not resynchronising: the next byte fed starts a message (a chunk
        may then be framed by someone else, e.g. :meth:`spine_nav.tracking.bridge.BridgeCore.take_chunk`)."""
        return not self._buf and not self._resyncing

    def feed(self, data: bytes) -> Iterator[IgtlMessage | DecodeError]:
        """Yield every message (or error) that ``data`` completes, in stream order; keep the rest.

        Hot path (one tracker frame per ``recv()`` at 1 kHz): messages are read straight out of
        ``data`` with ``unpack_from`` at offsets, so a whole chunk is never copied; only a partial
        message at the end waits in the buffer (then the next chunk is appended to it)."""
        max_body = self.max_body_bytes
        if self._buf:
            self._buf += data
            if len(self._buf) >= HEADER_SIZE and not self._resyncing:  # a large body still arriving: no copy yet
                try:
                    if len(self._buf) < HEADER_SIZE + parse_header_from(self._buf, 0, max_body).body_size:
                        return
                except MalformedMessage:
                    pass
            data = bytes(self._buf)
            self._buf.clear()
        end = len(data)
        pos = 0
        unpack_header, names = _HEADER.unpack_from, self._names
        try:
            while end - pos >= HEADER_SIZE:
                # hot path (1 kHz): a header-v1 TRANSFORM of 48 bytes from a device seen before, decoded
                # to plain floats in place; anything else (and any doubt) takes the general path below
                version, mtype, dev, sec, frac, size, crc = unpack_header(data, pos)
                if (version == 1 and size == 48 and mtype == TRANSFORM_TYPE_FIELD and not self._resyncing
                        and end - pos >= HEADER_SIZE + 48 and max_body >= 48):
                    device = names.get(dev)
                    if device is not None:
                        start = pos + HEADER_SIZE
                        pos = start + 48
                        body = data[start:pos]
                        if CRC64(body) != crc:
                            yield DecodeError("bad CRC", f"TRANSFORM {device!r}")
                            continue
                        yield TransformRows(device, timestamp_from_parts(sec, frac), rows_from_12(_F12.unpack(body)))
                        continue
                try:
                    h = parse_header_from(data, pos, max_body)
                except MalformedMessage as exc:
                    if not self._resyncing:
                        self._resyncing = True
                        yield DecodeError(exc.kind, exc.detail)
                    pos += 1
                    continue
                self._resyncing = False
                if h.type == "TRANSFORM" and len(names) < 256:  # the fast path above knows this device now
                    names[dev] = h.device
                start = pos + HEADER_SIZE
                if end - start < h.body_size:
                    break
                pos = start + h.body_size
                try:
                    yield decode_body(h, data[start:pos])
                except MalformedMessage as exc:
                    yield DecodeError(exc.kind, exc.detail)
        finally:
            if pos < end:
                self._buf += data[pos:]

    def close(self) -> DecodeError | None:
        """End of stream: a partial message left in the buffer is reported as a truncated body."""
        if not self._buf:
            return None
        detail = f"{len(self._buf)} bytes of a header"
        if len(self._buf) >= HEADER_SIZE:
            try:
                h = parse_header_from(bytes(self._buf), 0, self.max_body_bytes)
                detail = f"{h.type} {h.device!r}: {len(self._buf) - HEADER_SIZE} of {h.body_size} bytes"
            except MalformedMessage:
                pass
        self._buf.clear()
        return DecodeError("truncated body", detail)
