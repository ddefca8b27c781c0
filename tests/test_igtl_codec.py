"""OpenIGTLink codec: every message type both ways (ours and pyigtl's encoder), header v1/v2/v3, malformed input."""
from __future__ import annotations

import struct

import numpy as np
import pyigtl
import pytest

from spine_nav.geometry import random_transform, transform_to_quat
from spine_nav.tracking import codec
from spine_nav.tracking.codec import DecodeError, IgtlMessage, StreamDecoder, TDataElement


def _decode_all(data: bytes, chunk: int | None = None) -> list:
    dec = StreamDecoder()
    out = []
    if chunk is None:
        out.extend(dec.feed(data))
    else:
        for i in range(0, len(data), chunk):
            out.extend(dec.feed(data[i:i + chunk]))
    return out


def _one(data: bytes) -> IgtlMessage:
    out = _decode_all(data)
    assert len(out) == 1 and isinstance(out[0], IgtlMessage), out
    return out[0]


def _raw(mtype: str, device: str, body: bytes, version: int = 1) -> bytes:
    """A message with a valid header and CRC around an arbitrary body (to test body checks)."""
    return struct.pack(">H12s20sIIQQ", version, mtype.encode(), device.encode(), 1, 0, len(body),
                       codec.CRC64(body)) + body


@pytest.fixture
def T():
    return random_transform(np.random.default_rng(1), max_translation_mm=300.0)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_transform_round_trip_all_header_versions(T, version):
    md = {"TransformStatus": "OK"} if version > 1 else None
    m = _one(codec.encode_transform("StylusToTracker", T, 1234.5678, header_version=version, metadata=md))
    assert (m.type, m.device, m.header_version) == ("TRANSFORM", "StylusToTracker", version)
    assert m.timestamp_s == pytest.approx(1234.5678, abs=2e-9)
    np.testing.assert_allclose(m.poses[0][1], T, atol=1e-4)  # float32 on the wire
    assert m.metadata == (md or {})


def test_transform_from_pyigtl_encoder_and_to_pyigtl_decoder(T):
    theirs = pyigtl.TransformMessage(T, timestamp=99.25, device_name="ReferenceToTracker")
    theirs.header_version = 2
    theirs.metadata = {"k": "v"}
    m = _one(theirs.pack())
    np.testing.assert_allclose(m.poses[0][1], T, atol=1e-4)
    assert m.metadata == {"k": "v"} and m.timestamp_s == pytest.approx(99.25)
    # ours -> pyigtl's parser
    data = codec.encode_transform("X", T, 5.0)
    hdr = pyigtl.MessageBase.parse_header(data[:58])
    back = pyigtl.TransformMessage()
    back.unpack(hdr, data[58:])
    np.testing.assert_allclose(back.matrix, T, atol=1e-4)


def test_position_quaternion_order_xyzw(T):
    q, p = transform_to_quat(T, order="xyzw")
    data = codec.encode_position("StylusToTracker", p, q, 7.0)
    assert struct.unpack(">7f", data[58:]) == pytest.approx([*p, *q], abs=1e-4)  # OX OY OZ W on the wire
    m = _one(data)
    np.testing.assert_allclose(m.poses[0][1], T, atol=1e-4)


def test_tdata_several_tools_and_start_stop(T):
    els = [TDataElement(f"Tool{i}ToTracker", random_transform(np.random.default_rng(i))) for i in range(4)]
    m = _one(codec.encode_tdata("Tracker", els, 3.0, header_version=2))
    assert [d for d, _ in m.poses] == [e.name for e in els]
    for (_, got), e in zip(m.poses, els):
        np.testing.assert_allclose(got, e.matrix, atol=1e-4)
    stt = _one(codec.encode_stt_tdata(16, "Tracker"))
    assert stt.type == "STT_TDATA" and stt.resolution_ms == 16
    assert _one(codec.encode_stp_tdata()).type == "STP_TDATA"


def test_status_string_point_traj():
    s = _one(codec.encode_status("StylusToTracker", 16, 1.0, "not visible", error_name="MISSING"))
    assert (s.status_code, s.text, s.raw.error_name) == (16, "not visible", "MISSING")
    st = _one(codec.encode_string("GuardState", "ALIGNED L4_left", 2.0, header_version=2))
    assert st.text == "ALIGNED L4_left"
    pt = _one(codec.encode_point("Plan", ["L4_left_entry", "L4_left_target"], [[1, 2, 3], [4, 5, 6]], 3.0))
    assert pt.raw.names == ["L4_left_entry", "L4_left_target"]
    np.testing.assert_allclose(pt.raw.positions, [[1, 2, 3], [4, 5, 6]])
    tr = _one(codec.encode_traj("Plan", [{"name": "L4_left", "entry_mm": (1, 2, 3), "target_mm": (4, 5, 6)}], 4.0))
    assert tr.raw.trajectories[0]["name"] == "L4_left"
    np.testing.assert_allclose(tr.raw.trajectories[0]["target_mm"], (4, 5, 6))


def test_stream_framing_any_chunking(T):
    data = b"".join([codec.encode_transform("A", T, 1.0), codec.encode_status("A", 1, 1.0),
                     codec.encode_tdata("T", [TDataElement("B", T)], 2.0), codec.encode_string("S", "x", 3.0)])
    for chunk in (1, 7, 58, 1000):
        out = _decode_all(data, chunk)
        assert [m.type for m in out] == ["TRANSFORM", "STATUS", "TDATA", "STRING"]


def test_malformed_kinds_are_reported_and_stream_continues(T):
    good = codec.encode_transform("StylusToTracker", T, 1.0)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    absurd = bytearray(good)
    absurd[42:50] = struct.pack(">Q", 1 << 40)
    unknown = bytearray(codec.encode_string("S", "x", 1.0))
    unknown[2:14] = b"IMAGE\0\0\0\0\0\0\0"  # well-formed header of a type we do not decode
    wrong_size = _raw("POSITION", "P", b"12345")  # 5-byte POSITION body, correct CRC
    stream = bytes(bad_crc) + good + bytes(absurd) + good + bytes(unknown) + good + wrong_size + good
    out = _decode_all(stream)
    kinds = [o.kind for o in out if isinstance(o, DecodeError)]
    assert "bad CRC" in kinds and "absurd body size" in kinds
    assert "unknown type" in kinds and "wrong body size" in kinds
    assert sum(isinstance(o, IgtlMessage) for o in out) == 4  # every good message survived


def test_truncated_body_reported_at_close(T):
    dec = StreamDecoder()
    assert list(dec.feed(codec.encode_transform("A", T, 1.0)[:70])) == []
    err = dec.close()
    assert err is not None and err.kind == "truncated body"


def test_random_bytes_fuzz_memory_bounded_and_recovers(T):
    rng = np.random.default_rng(7)
    dec = StreamDecoder(max_body_bytes=4096)
    good = codec.encode_transform("StylusToTracker", T, 1.0)
    recovered = 0
    for i in range(200):
        junk = rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
        if i % 3 == 0:  # truncated real message inside the junk
            junk = good[: int(rng.integers(1, len(good)))] + junk
        list(dec.feed(junk))
        assert dec.buffered_bytes <= 58 + 4096
        # after junk, a run of good messages: framing resynchronises and at least the later ones decode
        out = list(dec.feed(good * 3))
        recovered += sum(isinstance(o, IgtlMessage) for o in out)
        assert dec.buffered_bytes <= 58 + 4096
    assert recovered >= 200  # >= one message per round made it through


def test_non_finite_position_rejected():
    data = codec.encode_position("P", [float("nan"), 0, 0], [0, 0, 0, 1], 1.0)
    out = _decode_all(data)
    assert isinstance(out[0], DecodeError) and out[0].kind == "non-finite pose"


@pytest.mark.parametrize("mtype,body", [("TRANSFORM", b"\0" * 47), ("TDATA", b"\0" * 71), ("STATUS", b"\0" * 10),
                                        ("STRING", b"\0\x03\0\x10ab")])
def test_wrong_body_sizes_are_errors_not_crashes(mtype, body):
    out = _decode_all(_raw(mtype, "D", body) + codec.encode_string("S", "still here", 1.0))
    assert isinstance(out[0], DecodeError)
    assert isinstance(out[-1], IgtlMessage) and out[-1].text == "still here"


def test_header_v2_with_bad_extended_header_rejected(T):
    body = struct.pack(">HHII", 12, 500, 500, 0) + b"\0" * 48
    out = _decode_all(_raw("TRANSFORM", "D", body, version=2))
    assert isinstance(out[0], DecodeError) and out[0].kind == "bad extended header"


def test_large_body_in_many_chunks_decodes_once_and_truncation_names_it(T):
    trajs = [{"name": f"S{i}", "group": "g", "entry_mm": (i, 0, 0), "target_mm": (i, 0, 40), "radius_mm": 2.0,
              "rgba": (0, 200, 0, 255)} for i in range(300)]
    big = codec.encode_traj("PlanTrajectories", trajs, 1.0)
    assert len(big) > 30_000
    dec = StreamDecoder()
    out = []
    for i in range(0, len(big), 1000):
        out.extend(dec.feed(big[i:i + 1000]))
        assert dec.buffered_bytes <= len(big)
    assert [m.type for m in out] == ["TRAJ"] and dec.buffered_bytes == 0
    list(dec.feed(big[:5000]))
    err = dec.close()
    assert err.kind == "truncated body" and "TRAJ 'PlanTrajectories'" in err.detail and "4942 of" in err.detail


def test_restamp_sets_every_header_time_and_keeps_messages_valid(T):
    frame = bytearray(codec.encode_transform("ReferenceToTracker", T, 1.0)
                      + codec.encode_status("StylusToTracker", 16, 1.0, "hidden")
                      + codec.encode_transform("StylusToTracker", T, 1.0, header_version=2,
                                               metadata={"TransformStatus": "OK"}))
    codec.restamp(frame, 1234.5678)
    out = _decode_all(bytes(frame))
    assert [m.type for m in out] == ["TRANSFORM", "STATUS", "TRANSFORM"]  # CRCs still hold
    assert all(abs(m.timestamp_s - 1234.5678) < 1e-6 for m in out)
    with pytest.raises(ValueError, match="not whole messages"):
        codec.restamp(frame + b"\0" * 10, 1.0)


def test_transform_hot_path_decodes_exactly_what_the_general_path_decodes(T):
    """A header-v1 TRANSFORM of a device seen before is decoded to plain-float rows (TransformRows, the
    bridge's 1 kHz path); it must read exactly like the general decode of the same bytes, in any chunking."""
    rng = np.random.default_rng(7)
    msgs = [codec.encode_transform("StylusToTracker" if k % 2 else "ReferenceToTracker",
                                   random_transform(rng, max_translation_mm=1500.0), 1000.0 + k * 1e-3)
            for k in range(12)]
    stream = b"".join(msgs)
    whole = _decode_all(stream)
    assert [type(m) for m in whole[:2]] == [IgtlMessage, IgtlMessage]  # first of each device: general path
    assert all(type(m) is codec.TransformRows for m in whole[2:])
    for data, m in zip(msgs, whole):
        ref = codec.decode_body(codec.parse_header(data), data[codec.HEADER_SIZE:])
        assert (m.type, m.device, m.timestamp_s, m.header_version, m.metadata) == \
            (ref.type, ref.device, ref.timestamp_s, 1, {})
        assert len(m.poses) == 1 and m.poses[0][0] == ref.poses[0][0]
        np.testing.assert_array_equal(m.poses[0][1], ref.poses[0][1])  # bit-identical float32 -> float64
    for chunk in (1, 7, codec.HEADER_SIZE, 106, 1000):
        again = _decode_all(stream, chunk)
        assert [(m.device, m.timestamp_s) for m in again] == [(m.device, m.timestamp_s) for m in whole]
        for a, b in zip(again, whole):
            np.testing.assert_array_equal(a.poses[0][1], b.poses[0][1])


def test_transform_hot_path_reports_bad_crc_and_goes_on():
    dec = StreamDecoder()
    first = codec.encode_transform("StylusToTracker", np.eye(4), 1.0)
    assert type(next(iter(dec.feed(first)))) is IgtlMessage
    bad = bytearray(codec.encode_transform("StylusToTracker", np.eye(4), 2.0))
    bad[-1] ^= 0xFF
    out = list(dec.feed(bytes(bad) + codec.encode_transform("StylusToTracker", np.eye(4), 3.0)))
    assert isinstance(out[0], DecodeError) and out[0].kind == "bad CRC" and "StylusToTracker" in out[0].detail
    assert type(out[1]) is codec.TransformRows and out[1].timestamp_s == 3.0
