"""Recorder validation (NaN / non-rigid / bad-CRC input never becomes a sample; lines stay strict JSON)
and PLUS sequence files (hand-built file per PlusLib's format description; write -> replay -> record)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from spine_nav.cli.main import main as cli
from spine_nav.geometry import random_transform
from spine_nav.tracking import codec
from spine_nav.tracking.codec import TDataElement
from spine_nav.tracking.plus_sequence import (SequenceFormatError, SequenceFrame, read_sequence,
                                              write_sequence)
from spine_nav.tracking.record import read_case
from spine_nav.tracking.transport import IgtlServer
from tests.helpers import free_tcp_port, wait_until


def _run_cli_in_thread(argv, result):
    result["rc"] = cli(argv)


def _record_stream(tmp_path, messages: list[bytes], out_name: str, extra=()) -> tuple[int, object]:
    """Record ``messages`` broadcast by a server. ``--duration`` counts from the recorder's start, before it has
    connected: 6 s, so that a slow connection on a loaded machine still leaves time for the whole stream."""
    port = free_tcp_port()
    src = IgtlServer(port, host="127.0.0.1").start()
    out = tmp_path / out_name
    res: dict = {}
    th = threading.Thread(target=_run_cli_in_thread, args=(["record", "--connect", f"127.0.0.1:{port}", "--out",
                                                            str(out), "--duration", "6", *extra], res))
    th.start()
    try:
        assert wait_until(lambda: src.client_count == 1, timeout_s=10)
        for data in messages:
            src.broadcast(data)
        th.join(60)
    finally:
        src.close()
    assert not th.is_alive()
    return res["rc"], out


def _bad_crc(data: bytes) -> bytes:
    b = bytearray(data)
    b[-1] ^= 0xFF  # last body byte: the header's CRC no longer matches
    return bytes(b)


def test_recorder_never_keeps_a_malformed_pose_as_a_sample(tmp_path):
    rng = np.random.default_rng(3)
    good = random_transform(rng)
    nan = good.copy()
    nan[0, 3] = np.nan
    sheared = good.copy()
    sheared[0, 1] += 0.2
    msgs = [codec.encode_transform("StylusToTracker", good, 10.0),
            codec.encode_transform("StylusToTracker", nan, 10.01),
            codec.encode_transform("StylusToTracker", sheared, 10.02),
            _bad_crc(codec.encode_transform("StylusToTracker", good, 10.03)),
            codec.encode_tdata("Tracker", [TDataElement("ReferenceToTracker", good),
                                           TDataElement("StylusToTracker", sheared)], 10.04),
            codec.encode_transform("StylusToTracker", good, 10.05)]
    rc, out = _record_stream(tmp_path, msgs, "case.jsonl")
    assert rc == 0
    lines = out.read_text().splitlines()
    # strict JSON: no NaN / Infinity constants anywhere
    parsed = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in a JSON line")) for line in lines]
    samples = [r for r in parsed if r["type"] != "REJECTED"]
    rejected = [r for r in parsed if r["type"] == "REJECTED"]
    assert [r["timestamp_s"] for r in samples] == pytest.approx([10.0, 10.04, 10.05])
    assert [r["device"] for r in samples] == ["StylusToTracker", "ReferenceToTracker", "StylusToTracker"]
    assert sorted(r["reason"] for r in rejected) == ["bad CRC", "non-finite pose", "non-rigid pose", "non-rigid pose"]
    assert all("matrix" not in r and r["detail"] for r in rejected)
    # readers see only the samples (REJECTED lines on request)
    assert len(read_case(out)) == 3
    assert len(read_case(out, keep_rejected=True)) == 7


def test_case_reader_rejects_nan_and_non_rigid_lines(tmp_path):
    bad = tmp_path / "nan.jsonl"
    bad.write_text('{"type":"TRANSFORM","device":"X","timestamp_s":1,"received_s":1,'
                   '"matrix":[[NaN,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}\n')
    assert cli(["replay", str(bad), "--serve", "0"]) == 2
    shear = tmp_path / "shear.jsonl"
    shear.write_text(json.dumps({"type": "TRANSFORM", "device": "X", "timestamp_s": 1, "received_s": 1,
                                 "matrix": [[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}) + "\n")
    with pytest.raises(ValueError, match=r"shear.jsonl:1: 'matrix'.*non-rigid"):
        read_case(shear)


# ------------------------------------------------------------------ PLUS sequence files
# Written by hand from PlusLib's description of the sequence metafile (vtkPlusMetaImageSequenceIO):
# MetaImage header, per-frame Seq_FrameNNNN_ fields, ElementDataFile = LOCAL last. Tracking only (DimSize 0 0 N).
PLUS_FILE = """ObjectType = Image
NDims = 3
AnatomicalOrientation = RAI
BinaryData = True
BinaryDataByteOrderMSB = False
CenterOfRotation = 0 0 0
CompressedData = False
DimSize = 0 0 3
ElementNumberOfChannels = 1
ElementSpacing = 1 1 1
ElementType = MET_UCHAR
Offset = 0 0 0
TransformMatrix = 1 0 0 0 1 0 0 0 1
UltrasoundImageOrientation = MF
UltrasoundImageType = BRIGHTNESS
Seq_Frame0000_FrameNumber = 0
Seq_Frame0000_StylusToTrackerTransform = 0 -1 0 10.5 1 0 0 -20 0 0 1 300.25 0 0 0 1
Seq_Frame0000_StylusToTrackerTransformStatus = OK
Seq_Frame0000_ReferenceToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1
Seq_Frame0000_ReferenceToTrackerTransformStatus = MISSING
Seq_Frame0000_Timestamp = 1234.5
Seq_Frame0000_UnfilteredTimestamp = 1234.5
Seq_Frame0000_ImageStatus = INVALID
Seq_Frame0001_FrameNumber = 1
Seq_Frame0001_StylusToTrackerTransform = 1 0 0 11 0 1 0 -20 0 0 1 300 0 0 0 1
Seq_Frame0001_StylusToTrackerTransformStatus = OK
Seq_Frame0001_ReferenceToTrackerTransform = 1 0 0 5 0 1 0 6 0 0 1 7 0 0 0 1
Seq_Frame0001_ReferenceToTrackerTransformStatus = OK
Seq_Frame0001_Timestamp = 1234.55
Seq_Frame0001_ImageStatus = INVALID
Seq_Frame0002_FrameNumber = 2
Seq_Frame0002_StylusToTrackerTransform = 1 0 0 12 0 1 0 -20 0 0 1 300 0 0 0 1
Seq_Frame0002_StylusToTrackerTransformStatus = OK
Seq_Frame0002_ReferenceToTrackerTransform = 1 0 0 5 0 1 0 6 0 0 1 7 0 0 0 1
Seq_Frame0002_ReferenceToTrackerTransformStatus = OK
Seq_Frame0002_Timestamp = 1234.6
Seq_Frame0002_ImageStatus = INVALID
ElementDataFile = LOCAL
"""


def test_reads_a_sequence_file_written_as_plus_writes_it(tmp_path):
    p = tmp_path / "plus.igs.mha"
    p.write_text(PLUS_FILE)
    seq = read_sequence(p)
    assert seq.bad_frames == []
    assert [f.timestamp_s for f in seq.frames] == [1234.5, 1234.55, 1234.6]
    m, status = seq.frames[0].transforms["StylusToTracker"]
    assert status == "OK"
    np.testing.assert_allclose(m[:3, 3], [10.5, -20, 300.25])
    np.testing.assert_allclose(m[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert seq.frames[0].transforms["ReferenceToTracker"][1] == "MISSING"


def test_bad_sequence_frames_are_named_and_skipped(tmp_path):
    text = PLUS_FILE.replace("Seq_Frame0001_Timestamp = 1234.55\n", "")
    text = text.replace("Seq_Frame0002_StylusToTrackerTransform = 1 0 0 12",
                        "Seq_Frame0002_StylusToTrackerTransform = 2 0 0 12")  # scaled: not rigid
    p = tmp_path / "bad.seq.mha"
    p.write_text(text)
    seq = read_sequence(p)
    assert [f.timestamp_s for f in seq.frames] == [1234.5]
    (i1, why1), (i2, why2) = seq.bad_frames
    assert i1 == 1 and str(p) in why1 and "Seq_Frame0001_Timestamp missing" in why1
    assert i2 == 2 and "Seq_Frame0002_StylusToTrackerTransform" in why2 and "non-rigid" in why2
    nohdr = tmp_path / "nohdr.seq.mha"
    nohdr.write_text("Seq_Frame0000_Timestamp = 1\n")
    with pytest.raises(SequenceFormatError, match="nohdr.seq.mha: no 'ElementDataFile'"):
        read_sequence(nohdr)
    # replay skips the bad frames and sends the rest (here: no client waits, so it only has to load)
    assert cli(["replay", str(nohdr), "--serve", "0"]) == 2


def test_sequence_write_replay_record_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    frames = []
    for k in range(30):
        f = SequenceFrame(500.0 + 0.02 * k)
        f.transforms["StylusToTracker"] = (random_transform(rng, max_translation_mm=400), "OK")
        if k % 7:  # the reference is out of view in some frames
            f.transforms["ReferenceToTracker"] = (random_transform(rng, max_translation_mm=400), "OK")
        frames.append(f)
    src = tmp_path / "src.seq.mha"
    write_sequence(src, frames)
    port = free_tcp_port()
    res_rep: dict = {}
    rep = threading.Thread(target=_run_cli_in_thread,
                           args=(["replay", str(src), "--serve", str(port), "--speed", "4", "--host", "127.0.0.1"],
                                 res_rep))
    rep.start()
    out = tmp_path / "out.igs.mha"
    res_rec: dict = {}
    rec = threading.Thread(target=_run_cli_in_thread,
                           args=(["record", "--connect", f"127.0.0.1:{port}", "--out", str(out), "--format", "plus",
                                  "--duration", "8"], res_rec))
    rec.start()
    rep.join(60)
    rec.join(60)
    assert not rep.is_alive() and not rec.is_alive() and res_rep["rc"] == 0 and res_rec["rc"] == 0
    a, b = read_sequence(src), read_sequence(out)
    assert b.bad_frames == [] and len(b.frames) == len(a.frames) == 30
    for fa, fb in zip(a.frames, b.frames):
        assert fb.timestamp_s == pytest.approx(fa.timestamp_s, abs=1e-9)
        assert set(fb.transforms) == set(fa.transforms)
        for name, (ma, sa) in fa.transforms.items():
            mb, sb = fb.transforms[name]
            assert sb == sa
            if sa == "OK":
                np.testing.assert_allclose(mb, ma, atol=1e-4)  # float32 on the wire
    # the output is refused as an output again
    assert cli(["record", "--listen", "0", "--out", str(out), "--format", "plus", "--duration", "0.1"]) == 2
