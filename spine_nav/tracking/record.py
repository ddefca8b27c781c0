"""Record / replay OpenIGTLink streams as ``case.jsonl`` (one JSON object per line).

Line fields: ``type`` (TRANSFORM, POSITION, TDATA, STATUS, STRING), ``device``, ``timestamp_s`` (the
sender's header time), ``received_s`` (wall-clock time of receipt, s since the epoch), and for poses
``matrix`` (4x4 rows, mm). A TDATA message becomes one line per tool entry (``device`` = the tool
name, plus ``message_device``); consecutive TDATA lines with the same ``timestamp_s`` and
``message_device`` are re-packed into one TDATA message on replay. STATUS lines carry ``code`` and
``text``; STRING lines ``text``. POSITION is kept as POSITION (replayed as its quaternion).

Every pose passes the bridge's own check (:func:`spine_nav.tracking.tools.validate_rows`: finite, rigid
within :data:`spine_nav.geometry.ORTHONORMAL_TOL`) before it is written as a sample. A pose that fails
it, and a message the decoder dropped (bad CRC, bad body), becomes a ``REJECTED`` line instead:
``type`` = ``REJECTED``, ``reason`` (the bridge's kind: ``non-finite pose``, ``non-rigid pose``,
``bad CRC``, ...), ``detail``, ``message_type`` and ``device`` when known; never a ``matrix``. Lines
are strict JSON (``allow_nan=False``): no ``NaN`` ever reaches the file. :func:`read_case` skips
REJECTED lines (``keep_rejected=True`` returns them too).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from spine_nav.geometry import transform_to_quat
from spine_nav.tracking import codec
from spine_nav.tracking.codec import IgtlMessage, MalformedMessage, TDataElement
from spine_nav.tracking.tools import validate_rows

RECORDED_TYPES = ("TRANSFORM", "POSITION", "TDATA", "STATUS", "STRING")
REJECTED = "REJECTED"
POSE_TYPES = ("TRANSFORM", "POSITION", "TDATA")


def rejected_record(reason: str, detail: str, received_s: float, message_type: str | None = None,
                    device: str | None = None, timestamp_s: float | None = None) -> dict:
    """A ``REJECTED`` line: what was dropped and why (no pose values; strict JSON)."""
    r: dict = {"type": REJECTED, "reason": reason, "detail": detail, "received_s": received_s}
    if message_type is not None:
        r["message_type"] = message_type
    if device is not None:
        r["device"] = device
    if timestamp_s is not None and np.isfinite(timestamp_s):
        r["timestamp_s"] = timestamp_s
    return r


def _pose_record(base: dict, dev: str, m: object, extra: dict | None = None) -> dict:
    """A sample line if ``m`` passes the bridge's validation, else a REJECTED line naming why."""
    try:
        rows = validate_rows(np.asarray(m, dtype=float), dev)
    except MalformedMessage as exc:
        return rejected_record(exc.kind, exc.detail, base["received_s"], base["type"], dev, base["timestamp_s"])
    return {**base, "device": dev, **(extra or {}), "matrix": [*rows, [0.0, 0.0, 0.0, 1.0]]}


def message_to_records(msg: IgtlMessage, received_s: float) -> list[dict]:
    """One decoded message -> its case.jsonl lines (TDATA: one per tool; malformed poses: REJECTED)."""
    base = {"type": msg.type, "timestamp_s": msg.timestamp_s, "received_s": received_s}
    if msg.type in ("TRANSFORM", "POSITION"):
        (dev, m), = msg.poses
        return [_pose_record(base, dev, m)]
    if msg.type == "TDATA":
        return [_pose_record(base, dev, m, {"message_device": msg.device}) for dev, m in msg.poses]
    if msg.type == "STATUS":
        return [{**base, "device": msg.device, "code": msg.status_code, "text": msg.text}]
    if msg.type == "STRING":
        return [{**base, "device": msg.device, "text": msg.text}]
    return []


class CaseWriter:
    """Appends records to a new ``case.jsonl`` (refuses an existing file unless ``force``)."""

    def __init__(self, path: str | Path, force: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not force:
            raise FileExistsError(f"{self.path}: exists (use --force to overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("w")
        self.lines = 0
        self.rejected = 0

    def _put(self, recs: list[dict]) -> None:
        for r in recs:
            self._f.write(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n")
            self.rejected += r["type"] == REJECTED
        self.lines += len(recs)

    def write(self, msg: IgtlMessage, received_s: float | None = None) -> int:
        """Write a decoded message's lines; returns how many are samples (REJECTED lines not counted)."""
        recs = message_to_records(msg, time.time() if received_s is None else received_s)
        self._put(recs)
        return sum(r["type"] != REJECTED for r in recs)

    def reject(self, reason: str, detail: str, received_s: float | None = None) -> None:
        """A message the decoder dropped (e.g. ``bad CRC``): one REJECTED line."""
        self._put([rejected_record(reason, detail, time.time() if received_s is None else received_s)])

    def close(self) -> None:
        self._f.close()


class CaseFormatError(ValueError):
    pass


def _no_constant(name: str) -> None:
    """``NaN`` / ``Infinity`` are not JSON: a line holding them is a format error."""
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def read_case(path: str | Path, keep_rejected: bool = False) -> list[dict]:
    """Read and check every line; errors name the file and line. REJECTED lines are skipped unless
    ``keep_rejected``; a sample whose matrix fails the bridge's validation is an error (file:line)."""
    p = Path(path)
    out = []
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError:
        raise CaseFormatError(f"{p}: not found") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise CaseFormatError(f"{p}:{i}: not JSON ({exc.msg})") from None
        if isinstance(r, dict) and r.get("type") == REJECTED:
            if keep_rejected:
                out.append(r)
            continue
        if not isinstance(r, dict) or r.get("type") not in RECORDED_TYPES:
            raise CaseFormatError(f"{p}:{i}: 'type' must be one of {', '.join(RECORDED_TYPES)}")
        for key in ("device", "timestamp_s", "received_s"):
            if key not in r:
                raise CaseFormatError(f"{p}:{i}: missing '{key}'")
        if r["type"] in ("TRANSFORM", "POSITION", "TDATA"):
            m = np.asarray(r.get("matrix"), dtype=float) if r.get("matrix") is not None else None
            if m is None or m.shape != (4, 4):
                raise CaseFormatError(f"{p}:{i}: 'matrix' must be 4x4 rows (mm)")
            try:
                validate_rows(m, r["device"])
            except MalformedMessage as exc:
                raise CaseFormatError(f"{p}:{i}: 'matrix' {exc}") from None
        out.append(r)
    return out


@dataclass
class ReplayItem:
    """One message to send: the original receive time (for pacing) and its packed bytes."""

    received_s: float
    data: bytes


def records_to_messages(records: Iterable[dict]) -> Iterator[ReplayItem]:
    """Pack records back into OpenIGTLink messages (TDATA lines regrouped)."""
    group: list[dict] = []
    group_rx: list[float] = []

    def flush() -> ReplayItem | None:
        if not group:
            return None
        els = [TDataElement(r["device"], np.asarray(r["matrix"])) for r in group]
        item = ReplayItem(group_rx[0], codec.encode_tdata(group[0].get("message_device", "Tracker"), els,
                                                          group[0]["timestamp_s"]))
        group.clear()
        return item

    for r in records:
        if r["type"] == "TDATA":
            if group and (group[0]["timestamp_s"] != r["timestamp_s"]
                          or group[0].get("message_device") != r.get("message_device")):
                yield flush()
            if not group:
                group_rx[:] = [r["received_s"]]
            group.append(r)
            continue
        item = flush()
        if item is not None:
            yield item
        t, dev = r["timestamp_s"], r["device"]
        if r["type"] == "TRANSFORM":
            data = codec.encode_transform(dev, np.asarray(r["matrix"]), t)
        elif r["type"] == "POSITION":
            q, p = transform_to_quat(np.asarray(r["matrix"]), order="xyzw")
            data = codec.encode_position(dev, p, q, t)
        elif r["type"] == "STATUS":
            data = codec.encode_status(dev, int(r.get("code", codec.STATUS_OK)), t, r.get("text", ""))
        else:
            data = codec.encode_string(dev, r.get("text", ""), t)
        yield ReplayItem(r["received_s"], data)
    item = flush()
    if item is not None:
        yield item
