"""PLUS sequence metafiles (``.seq.mha`` / ``.igs.mha``) for tracking recordings.

The format (PlusLib ``vtkPlusMetaImageSequenceIO``; read by PLUS, fCal and 3D Slicer's Sequences
extension) is a MetaImage text header followed by the image data. A tracking-only sequence has no
pixels (``DimSize = 0 0 N``, N = number of frames) and puts everything in per-frame header fields::

    ObjectType = Image
    NDims = 3
    ...
    DimSize = 0 0 2
    ElementType = MET_UCHAR
    Seq_Frame0000_FrameNumber = 0
    Seq_Frame0000_StylusToTrackerTransform = 1 0 0 10 0 1 0 20 0 0 1 30 0 0 0 1
    Seq_Frame0000_StylusToTrackerTransformStatus = OK
    Seq_Frame0000_Timestamp = 12.345
    Seq_Frame0000_ImageStatus = INVALID
    ...
    ElementDataFile = LOCAL

A transform field holds the 16 elements of ``T_<frame>_<tool>`` (PLUS name ``<Tool>To<Frame>``) row by
row, translation in mm; the status is ``OK`` or a PLUS "not tracked" status (``MISSING``, ``INVALID``,
``OUT_OF_VIEW``, ``OUT_OF_VOLUME``, ``REQ_TIMEOUT``, ...). The frame index is written with 4 digits
(``Seq_Frame0000``) as PLUS does; more digits are read too.

Mapping to OpenIGTLink: PLUS's OpenIGTLink server sends a ``StylusToTracker`` transform as a TRANSFORM
message whose device name is ``StylusToTracker``; so a frame is the set of pose messages with the same
sender timestamp, and field name = device name + ``Transform``. A tool not in a frame is written as
``MISSING`` (identity matrix), as PLUS writes untracked tools; on replay only ``OK`` transforms are sent.

Bad input: a missing header / ``ElementDataFile`` is an error naming the file; a frame with a missing
``Timestamp``, a malformed matrix (not 16 numbers), or an ``OK`` matrix that fails the bridge's rigid
check (:func:`spine_nav.tracking.tools.validate_rows`) is a bad frame: :func:`read_sequence` returns it in
``bad_frames`` with a message naming file, frame and field, and it is never replayed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spine_nav.tracking.codec import IgtlMessage, MalformedMessage
from spine_nav.tracking.tools import validate_rows

SEQUENCE_SUFFIXES = (".seq.mha", ".igs.mha")
STATUS_OK = "OK"
STATUS_MISSING = "MISSING"
_FIELD = re.compile(r"^Seq_Frame(\d+)_(.+)$")
_HEADER_FIXED = (
    ("ObjectType", "Image"), ("NDims", "3"), ("AnatomicalOrientation", "RAI"), ("BinaryData", "True"),
    ("BinaryDataByteOrderMSB", "False"), ("CenterOfRotation", "0 0 0"), ("CompressedData", "False"),
)
_HEADER_AFTER_DIMS = (
    ("ElementNumberOfChannels", "1"), ("ElementSpacing", "1 1 1"), ("ElementType", "MET_UCHAR"),
    ("Offset", "0 0 0"), ("TransformMatrix", "1 0 0 0 1 0 0 0 1"), ("UltrasoundImageOrientation", "??"),
    ("UltrasoundImageType", "N/A"),
)


class SequenceFormatError(ValueError):
    """A file that is not a readable sequence metafile (message names the file and what is wrong)."""


def is_sequence_path(path: str | Path) -> bool:
    return str(path).lower().endswith(SEQUENCE_SUFFIXES)


@dataclass
class SequenceFrame:
    """One frame: ``timestamp_s`` (tracker time, s) and ``transforms`` {PLUS name (e.g. ``StylusToTracker``):
    (4x4 matrix in mm, status)}."""

    timestamp_s: float
    transforms: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)


@dataclass
class Sequence:
    """What :func:`read_sequence` found: good frames, bad ones (index, message), and the header."""

    frames: list[SequenceFrame]
    bad_frames: list[tuple[int, str]]
    header: dict[str, str]


def _fmt(x: float) -> str:
    return repr(float(x)) if x != int(x) else str(int(x))


class SequenceWriter:
    """Collects frames and writes a tracking-only sequence metafile on :meth:`close`.

    Frames are kept in memory until ``close`` (the header's ``DimSize`` names the frame count, as PLUS
    writes it); ``max_frames`` bounds that memory: frames beyond it are counted in ``dropped``, never
    silently lost. Refuses an existing file unless ``force``."""

    def __init__(self, path: str | Path, force: bool = False, max_frames: int = 2_000_000) -> None:
        self.path = Path(path)
        if not is_sequence_path(self.path):
            raise ValueError(f"{self.path}: a PLUS sequence file must end in {' or '.join(SEQUENCE_SUFFIXES)}")
        if self.path.exists() and not force:
            raise FileExistsError(f"{self.path}: exists (use --force to overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames: list[SequenceFrame] = []
        self.max_frames = max_frames
        self.dropped = 0
        self.rejected = 0
        self.skipped = 0  # STATUS / STRING messages: not representable in a tracking sequence

    @property
    def lines(self) -> int:  # the recorder's progress line counts frames
        return len(self.frames)

    def add_pose(self, timestamp_s: float, name: str, matrix: object) -> bool:
        """Add a validated pose to the frame at ``timestamp_s`` (a new frame when the time changes)."""
        try:
            rows = validate_rows(np.asarray(matrix, dtype=float), name)
        except MalformedMessage:
            self.rejected += 1
            return False
        if not self.frames or self.frames[-1].timestamp_s != timestamp_s:
            if len(self.frames) >= self.max_frames:
                self.dropped += 1
                return False
            self.frames.append(SequenceFrame(float(timestamp_s)))
        self.frames[-1].transforms[name] = (np.array([*rows, [0.0, 0.0, 0.0, 1.0]]), STATUS_OK)
        return True

    def write(self, msg: IgtlMessage, received_s: float | None = None) -> int:
        """Add every pose of a decoded OpenIGTLink message; returns how many were kept."""
        if msg.type not in ("TRANSFORM", "POSITION", "TDATA"):
            self.skipped += 1
            return 0
        return sum(self.add_pose(msg.timestamp_s, dev, m) for dev, m in msg.poses)

    def reject(self, reason: str, detail: str, received_s: float | None = None) -> None:
        self.rejected += 1

    def close(self) -> None:
        write_sequence(self.path, self.frames, force=True)


def write_sequence(path: str | Path, frames: list[SequenceFrame], force: bool = False) -> None:
    """Write ``frames`` as a tracking-only sequence metafile (every tool in every frame; absent: MISSING)."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path}: exists (use --force to overwrite)")
    names: list[str] = []
    for f in frames:
        names += [n for n in f.transforms if n not in names]
    out = [f"{k} = {v}" for k, v in _HEADER_FIXED]
    out.append(f"DimSize = 0 0 {len(frames)}")
    out += [f"{k} = {v}" for k, v in _HEADER_AFTER_DIMS]
    eye = " ".join(_fmt(x) for x in np.eye(4).ravel())
    for i, f in enumerate(frames):
        pre = f"Seq_Frame{i:04d}_"
        out.append(f"{pre}FrameNumber = {i}")
        for n in names:
            if n in f.transforms:
                m, status = f.transforms[n]
                out.append(f"{pre}{n}Transform = " + " ".join(_fmt(x) for x in np.asarray(m, dtype=float).ravel()))
            else:
                out.append(f"{pre}{n}Transform = {eye}")
                status = STATUS_MISSING
            out.append(f"{pre}{n}TransformStatus = {status}")
        out.append(f"{pre}Timestamp = {f.timestamp_s!r}")
        out.append(f"{pre}UnfilteredTimestamp = {f.timestamp_s!r}")
        out.append(f"{pre}ImageStatus = INVALID")
    out.append("ElementDataFile = LOCAL")
    path.write_text("\n".join(out) + "\n")


def read_sequence(path: str | Path) -> Sequence:
    """Read a sequence metafile's tracking data (image pixels, if any, are ignored).

    Raises :class:`SequenceFormatError` for a file that is not one; bad frames are listed, not raised."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SequenceFormatError(f"{p}: not found") from None
    end = raw.find(b"ElementDataFile")
    if end < 0:
        raise SequenceFormatError(f"{p}: no 'ElementDataFile' line (not a MetaImage header)")
    text = raw[:end].decode("latin-1")
    header: dict[str, str] = {}
    fields: dict[int, dict[str, str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SequenceFormatError(f"{p}:{lineno}: expected 'Key = Value', got {line.strip()[:60]!r}")
        key, value = key.strip(), value.strip()
        m = _FIELD.match(key)
        if m:
            fields.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            header[key] = value
    if header.get("ObjectType", "Image") != "Image" or "DimSize" not in header:
        raise SequenceFormatError(f"{p}: not a MetaImage sequence (ObjectType Image and DimSize required)")
    frames: list[SequenceFrame] = []
    bad: list[tuple[int, str]] = []
    for idx in sorted(fields):
        fr = fields[idx]
        where = f"{p}: frame {idx}"
        ts = fr.get("Timestamp")
        try:
            t = float(ts) if ts is not None else math.nan
        except ValueError:
            t = math.nan
        if not math.isfinite(t):
            bad.append((idx, f"{where}: field Seq_Frame{idx:04d}_Timestamp "
                             + ("missing" if ts is None else f"not a number ({ts!r})")))
            continue
        frame = SequenceFrame(t)
        problem = None
        for key, value in fr.items():
            if not key.endswith("Transform"):
                continue
            name = key[: -len("Transform")]
            status = fr.get(f"{key}Status", STATUS_OK)
            try:
                m = np.array([float(x) for x in value.split()], dtype=float)
            except ValueError:
                m = np.zeros(0)
            if m.size != 16:
                problem = f"{where}: field Seq_Frame{idx:04d}_{key}: expected 16 numbers, got {value[:60]!r}"
                break
            m = m.reshape(4, 4)
            if status == STATUS_OK:
                try:
                    validate_rows(m, name)
                except MalformedMessage as exc:
                    problem = f"{where}: field Seq_Frame{idx:04d}_{key}: {exc.kind} ({exc.detail})"
                    break
            frame.transforms[name] = (m, status)
        if problem is not None:
            bad.append((idx, problem))
        else:
            frames.append(frame)
    return Sequence(frames, bad, header)


def sequence_to_items(seq: Sequence) -> list:
    """The OpenIGTLink messages of a sequence: one TRANSFORM per ``OK`` transform (device = PLUS name),
    stamped and paced by the frame's timestamp; MISSING/INVALID transforms and bad frames are not sent."""
    from spine_nav.tracking import codec
    from spine_nav.tracking.record import ReplayItem

    items = []
    for f in seq.frames:
        for name, (m, status) in f.transforms.items():
            if status == STATUS_OK:
                items.append(ReplayItem(f.timestamp_s, codec.encode_transform(name, m, f.timestamp_s)))
    return items
