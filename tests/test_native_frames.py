"""The compiled per-frame arithmetic (spine_nav/tracking/_frames.c, spine_nav/nodes/_pose_cdr.c) against its
pure-Python twins, which define the results: the same bits on the same input, bad input first.

- ``_frames.decode_transforms``  == ``BridgeCore._decode_chunk_py`` (decline = None on anything unusual)
- ``_frames.compose_inv_a_b_c``  == ``tools.compose_rows_inv_a_b_c``
- ``_frames.reference_step``     == ``reference_jump.reference_step_py`` (with ``limit_mm``)
- ``_frames.steady_tip``         == ``bridge.steady_tip_py`` (decline = None; the tool tip's rows bit for bit)
- ``_pose_cdr.pose_cdr``         == ``conversions.validated_rows_mm_to_pose_cdr_py`` (a stamp the packer refuses:
  the C function declines and the Python twin raises, as before)

Floats are compared by their bits (``float.hex``), so -0.0 vs 0.0 or a last-bit difference would fail.
"""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from spine_nav.geometry import make_transform, random_transform
from spine_nav.geometry.transforms import ORTHONORMAL_TOL
from spine_nav.nodes import conversions
from spine_nav.native import load as load_native
from spine_nav.nodes.cdr import PoseStampedPacker
from spine_nav.tracking import codec, native
from spine_nav.tracking.bridge import _FAST_MAX_MESSAGES, BridgeCore, steady_tip_py
from spine_nav.tracking.reference_jump import reference_step_py
from spine_nav.tracking.tools import PoseComposer, ToolDefinition, compose_rows_inv_a_b_c

frames = native.frames
pose_cdr_c, _ = load_native("_pose_cdr", "spine_nav.nodes")
REF, STY = "ReferenceToTracker", "StylusToTracker"


def test_the_extensions_are_built_by_the_set_up():
    """`make` builds them (setup.py ext_modules); a missing build step must show, not fall back in silence."""
    if os.environ.get("SPINE_NAV_NATIVE") == "0":
        pytest.skip("SPINE_NAV_NATIVE=0 asks for the Python twins")
    assert frames is not None, native.WHY_PYTHON
    assert pose_cdr_c is not None
    assert conversions.validated_rows_mm_to_pose_cdr is not conversions.validated_rows_mm_to_pose_cdr_py


needs_c = pytest.mark.skipif(frames is None or pose_cdr_c is None,
                             reason=f"no C to compare: {native.WHY_PYTHON or 'spine_nav.nodes._pose_cdr not built'} "
                                    "(test_the_extensions_are_built_by_the_set_up fails unless SPINE_NAV_NATIVE=0)")


def bits(x):
    """Every float replaced by its exact hex form, recursively (tuples and lists kept apart)."""
    if isinstance(x, float):
        return x.hex()
    if isinstance(x, (list, tuple)):
        return type(x)(bits(v) for v in x)
    return x


def _core():
    return BridgeCore(PoseComposer(tools=(ToolDefinition(),)))


def _both(core, data):
    py = core._decode_chunk_py(data)
    c = frames.decode_transforms(data, core._fast_devices, ORTHONORMAL_TOL, _FAST_MAX_MESSAGES)
    return bits(py), bits(c)


RNG = np.random.default_rng(1717)


def _msg(device=STY, T=None, t=1234.5678):
    return codec.encode_transform(device, random_transform(RNG, max_translation_mm=2000) if T is None else T, t)


def _patch(data: bytes, offset: int, raw: bytes, fix_crc: bool = True) -> bytes:
    b = bytearray(data)
    b[offset:offset + len(raw)] = raw
    if fix_crc and offset >= codec.HEADER_SIZE:
        b[50:58] = struct.pack(">Q", codec.CRC64(bytes(b[58:106])))
    return bytes(b)


def _body_floats(data: bytes, values) -> bytes:
    """A TRANSFORM whose 12 body floats are ``values`` (OpenIGTLink order), CRC recomputed."""
    return _patch(data, codec.HEADER_SIZE, struct.pack(">12f", *values))


GOOD = _msg()
BAD_CHUNKS = {
    "empty": b"",
    "partial message": GOOD[:-1],
    "a message and a half": GOOD + GOOD[:50],
    "too many messages": GOOD * (_FAST_MAX_MESSAGES + 1),
    "header version 2": _patch(GOOD, 0, b"\x00\x02"),
    "other type": _patch(GOOD, 2, b"POSITION".ljust(12, b"\0")),
    "type without NUL padding": _patch(GOOD, 2, b"TRANSFORMXXX"),
    "unknown device": _msg("Tool9ToTracker"),
    "device name with trailing junk": _patch(GOOD, 14 + len(STY) + 1, b"x"),
    "body size 47": _patch(GOOD, 42, struct.pack(">Q", 47)),
    "bad CRC": _patch(GOOD, 50, b"\xff" * 8),
    "one body bit flipped (CRC kept)": _patch(GOOD, 70, bytes([GOOD[70] ^ 1]), fix_crc=False),
    "NaN": _body_floats(GOOD, [float("nan")] + [0.0] * 11),
    "NaN in translation": _body_floats(GOOD, [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, float("nan"), 0]),
    "inf": _body_floats(GOOD, [1, 0, 0, 0, 1, 0, 0, 0, 1, float("inf"), 0, 0]),
    "-inf": _body_floats(GOOD, [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, float("-inf")]),
    "scaled": _body_floats(GOOD, [2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0]),
    "reflection": _body_floats(GOOD, [-1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]),
    "all zero": _body_floats(GOOD, [0.0] * 12),
    "sheared": _body_floats(GOOD, [1, 0, 0, 0.01, 1, 0, 0, 0, 1, 0, 0, 0]),
    "good then bad": GOOD + _body_floats(GOOD, [2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0]),
    "bad then good": _patch(GOOD, 50, b"\xff" * 8) + GOOD,
}


@needs_c
@pytest.mark.parametrize("name", list(BAD_CHUNKS))
def test_decode_declines_what_the_python_twin_declines(name):
    py, c = _both(_core(), BAD_CHUNKS[name])
    assert py is None and c is None


@needs_c
def test_decode_rejects_what_is_not_bytes():
    with pytest.raises(TypeError):
        frames.decode_transforms("text", {}, ORTHONORMAL_TOL, 16)
    with pytest.raises(TypeError):
        frames.decode_transforms(GOOD, [], ORTHONORMAL_TOL, 16)


@needs_c
@pytest.mark.parametrize("eps_scale", [0.5, 0.999, 1.001, 2.0])
def test_decode_tolerance_edge_gives_the_same_verdict(eps_scale):
    """Columns scaled so |c.c - 1| sits just inside / outside ORTHONORMAL_TOL (as float32 allows)."""
    s = float(np.float32(np.sqrt(1.0 + eps_scale * ORTHONORMAL_TOL)))
    data = _body_floats(GOOD, [s, 0, 0, 0, 1, 0, 0, 0, 1, 10, 20, 30])
    py, c = _both(_core(), data)
    assert py == c
    assert (py is None) == (abs(s * s - 1.0) > ORTHONORMAL_TOL)


@needs_c
def test_decode_gives_the_same_bits_on_random_frames():
    core = _core()
    for k in range(400):
        n = int(RNG.integers(1, _FAST_MAX_MESSAGES + 1))
        devices = RNG.choice([REF, STY, "ArmMarkerToTracker", "StylusTipToReference"], size=n)
        t = float(RNG.uniform(0, 4.0e9))  # the whole uint32 range of OpenIGTLink seconds
        chunk = b"".join(_msg(str(d), t=t) for d in devices)
        py, c = _both(core, chunk)
        assert py is not None and py == c, k


@needs_c
def test_decode_gives_the_same_timestamp_for_every_fraction_bit():
    core = _core()
    T = make_transform(np.eye(3), [1.0, 2.0, 3.0])
    for frac in [0, 1, 0xFFFFFFFF, 0x80000000, *(1 << b for b in range(32)), *RNG.integers(0, 2**32, 200).tolist()]:
        data = bytearray(codec.encode_transform(REF, T, 0.0))
        data[34:42] = struct.pack(">II", int(RNG.integers(0, 2**32)), frac)
        py, c = _both(core, bytes(data))
        assert py is not None and py == c, frac


def _random_rows(rng, scale=1.0):
    return (rng.normal(size=(3, 4)) * scale).tolist()


@needs_c
def test_compose_gives_the_same_bits():
    for k in range(2000):
        if k % 2:
            A, B, C = (random_transform(RNG, max_translation_mm=2000)[:3].tolist() for _ in range(3))
        else:  # any floats: the expressions, not rigidity, are what must agree
            A, B, C = (_random_rows(RNG, 10.0 ** RNG.integers(-6, 6)) for _ in range(3))
        assert bits(frames.compose_inv_a_b_c(A, B, C)) == bits(compose_rows_inv_a_b_c(A, B, C)), k


@needs_c
def test_compose_rejects_bad_rows_with_a_message():
    good = np.eye(4)[:3].tolist()
    for bad in (None, [[1.0, 2.0]] * 3, [[0.0] * 4] * 2, [["a", 0.0, 0.0, 0.0]] * 3):
        with pytest.raises((TypeError, ValueError)):
            frames.compose_inv_a_b_c(bad, good, good)


def _quat_branch_rotations():
    """Rotations hitting each branch of Shepperd's method, and near-180 degree turns."""
    out = [np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    for axis in np.eye(3):
        for ang in (np.pi - 1e-9, np.pi - 1e-3, 2.5, -2.5):
            out.append(make_transform(_axis_angle(axis, ang), [0, 0, 0])[:3, :3])
    return out


def _axis_angle(axis, angle):
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(np.asarray(axis) * angle).as_matrix()


PACKERS = [PoseStampedPacker(f) for f in ("", "R", "Reference", "Tracker", "x" * 7, "y" * 12, "Référence")]


@needs_c
def test_pose_cdr_gives_the_same_bytes():
    stamps = [0.0, -0.0, 1.5, -1.25, 1e-9, 2.5e-9, 1733486400.123456789, 2**31 - 1.0, -(2**31) + 0.0,
              0.5e-9, 1.5e-9, -0.5e-9, *RNG.uniform(-2e9, 2e9, 50).tolist()]
    rotations = _quat_branch_rotations() + [random_transform(RNG)[:3, :3] for _ in range(200)]
    for k, R in enumerate(rotations):
        rows = make_transform(R, RNG.uniform(-2000, 2000, 3))[:3].tolist()
        packer = PACKERS[k % len(PACKERS)]
        stamp = stamps[k % len(stamps)]
        assert (pose_cdr_c.pose_cdr(rows, stamp, packer.name_utf8)
                == conversions.validated_rows_mm_to_pose_cdr_py(rows, stamp, packer)), (k, stamp, packer.frame_id)


@needs_c
@pytest.mark.parametrize("stamp", [2.0**31, -(2.0**31) - 1.0, 1e300, float("inf"), float("nan")])
def test_pose_cdr_declines_a_stamp_the_packer_refuses_and_the_node_path_raises_as_before(stamp):
    rows = np.eye(4)[:3].tolist()
    packer = PoseStampedPacker("Reference")
    assert pose_cdr_c.pose_cdr(rows, stamp, packer.name_utf8) is None
    with pytest.raises((struct.error, ValueError, OverflowError)) as py_err:
        conversions.validated_rows_mm_to_pose_cdr_py(rows, stamp, packer)
    with pytest.raises(py_err.type):
        conversions.validated_rows_mm_to_pose_cdr(rows, stamp, packer)


@needs_c
def test_pose_cdr_rejects_bad_rows_with_a_message():
    for bad in (None, [[1.0] * 4] * 2, [[1.0, 2.0]] * 3, [["a"] * 4] * 3):
        with pytest.raises((TypeError, ValueError)):
            pose_cdr_c.pose_cdr(bad, 0.0, b"Reference")


def _rotvec_rows(rotvec_deg, t_mm):
    from scipy.spatial.transform import Rotation
    R = Rotation.from_rotvec(np.radians(rotvec_deg)).as_matrix()
    return make_transform(R, t_mm)[:3].tolist()


@needs_c
def test_reference_step_gives_the_same_bits_and_verdict():
    from spine_nav.tracking.reference_jump import ReferenceJumpConfig, ReferenceJumpDetector

    configs = [ReferenceJumpConfig(), ReferenceJumpConfig(min_jump_mm=0.3, max_rotation_deg=0.2, noise_mm=0.0),
               ReferenceJumpConfig(max_speed_mm_s=0.0, max_drift_mm=0.0), ReferenceJumpConfig(noise_deg=2.0)]
    verdicts = set()
    for k in range(3000):
        d = configs[k % len(configs)]
        jd = ReferenceJumpDetector(d)
        P = random_transform(RNG, max_translation_mm=1500)[:3].tolist()
        step_mm = RNG.normal(size=3) * 10.0 ** RNG.uniform(-3, 1)
        step_deg = RNG.normal(size=3) * 10.0 ** RNG.uniform(-3, 1)
        R = np.array(_rotvec_rows(step_deg, step_mm) + [[0, 0, 0, 1]]) if k % 3 else np.eye(4)
        R = (np.array(P + [[0, 0, 0, 1]]) @ R)[:3].tolist()
        dt = float(RNG.choice([0.001, 0.0, -0.001, 0.5, 30.0, float(RNG.uniform(-1, 10))]))
        c_out = frames.reference_step(P, R, dt, *jd.step_limits)
        py_out = reference_step_py(P, R, dt, jd.step_limits)
        assert bits(c_out) == bits(py_out), k
        # the twin's limit is ReferenceJumpConfig.limit_mm (the detector's definition), written out
        limit_mm = jd.config.limit_mm(dt)
        assert py_out[2] == (not (py_out[0] <= limit_mm * limit_mm) or py_out[1] < jd.step_limits[4]), k
        verdicts.add(py_out[2])
    assert verdicts == {True, False}  # both verdicts were exercised


@needs_c
def test_reference_step_on_non_finite_rows_is_a_jump_on_both():
    from spine_nav.tracking.reference_jump import ReferenceJumpDetector

    jd = ReferenceJumpDetector()
    P = np.eye(4)[:3].tolist()
    for bad in (float("nan"), float("inf")):
        R = [[bad, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, bad], [0.0, 0.0, 1.0, 0.0]]
        c_out = frames.reference_step(P, R, 0.001, *jd.step_limits)
        assert bits(c_out) == bits(reference_step_py(P, R, 0.001, jd.step_limits)) and c_out[2] is True


# ------------------------------------------------------------------------------------------------ steady_tip
REF_DEV, STY_DEV = "ReferenceToTracker", "StylusToTracker"


def _steady_args(composer=None, detector=None, prev=None, latched=None):
    from spine_nav.tracking.reference_jump import ReferenceJumpDetector

    composer = composer or PoseComposer(tools=(ToolDefinition(tip_offset_mm=(1.0, -2.0, 160.0)),))
    detector = detector or ReferenceJumpDetector()
    return [composer.reference_device, composer.steady_tips, composer.pending, prev, latched, detector.step_limits]


def _taken(ref_rows, tool_rows, t_ref=100.0, t_tool=100.0, ref_dev=REF_DEV, tool_dev=STY_DEV):
    return [((ref_dev, "reference"), t_ref, ref_rows), ((tool_dev, "stylus"), t_tool, tool_rows)]


@needs_c
def test_steady_tip_declines_the_same_frames():
    """Every frame the steady path must leave to the general path: None from both, nothing raised."""
    from collections import deque

    P = random_transform(RNG, max_translation_mm=1500)[:3].tolist()
    T = random_transform(RNG, max_translation_mm=1500)[:3].tolist()
    prev = (P, 99.999)
    good = _taken(P, T)
    cases = {
        "one message": [good[0]],
        "three messages": good + [good[1]],
        "no previous reference": None,
        "latched": "latched",
        "a tool sample pending": "pending",
        "first is not the reference": _taken(P, T, ref_dev=STY_DEV, tool_dev=REF_DEV),
        "different tracker times": _taken(P, T, t_tool=100.0 + 2.0 ** -40),
        "tool not composed (arm marker)": _taken(P, T, tool_dev="ArmMarkerToTracker"),
        "unknown tool": _taken(P, T, tool_dev="Tool4ToTracker"),
        "a bumped reference": _taken((np.array(P + [[0, 0, 0, 1]]) @ make_transform(np.eye(3), [5.0, 0, 0]))[:3].tolist(), T),
        "a non-finite reference step": _taken([[float("nan")] * 4] * 3, T),
    }
    for why, taken in cases.items():
        args = _steady_args(prev=prev)
        if taken is None:
            taken, args[3] = good, None
        elif taken == "latched":
            taken, args[4] = good, object()
        elif taken == "pending":
            taken = good
            args[2] = {"stylus": deque([(99.9, T)])}
        assert frames.steady_tip(taken, *args) is None, why
        assert steady_tip_py(taken, *args) is None, why
    # and the good frame is taken by both
    assert frames.steady_tip(good, *_steady_args(prev=prev)) is not None
    assert steady_tip_py(good, *_steady_args(prev=prev)) is not None


@needs_c
def test_steady_tip_rejects_a_malformed_call_with_a_message():
    P = np.eye(4)[:3].tolist()
    args = _steady_args(prev=(P, 0.0))
    with pytest.raises(TypeError, match="taken"):
        frames.steady_tip([1, 2], *args)
    with pytest.raises(TypeError):
        frames.steady_tip((1, 2), *args)  # not a list
    with pytest.raises(ValueError, match="rows"):
        frames.steady_tip(_taken([[1.0, 2.0]] * 3, P), *args)
    with pytest.raises(TypeError, match="2-tuples"):
        frames.steady_tip(_taken(P, P), *_steady_args(prev=[P, 0.0]))


@needs_c
def test_steady_tip_gives_the_same_bits_on_random_frames():
    from spine_nav.tracking.reference_jump import ReferenceJumpConfig, ReferenceJumpDetector

    taken_count = 0
    for k in range(2000):
        tool = ToolDefinition(tip_offset_mm=tuple(RNG.normal(size=3) * 10.0 ** RNG.uniform(-1, 2.5)))
        composer = PoseComposer(tools=(tool,))
        detector = ReferenceJumpDetector(ReferenceJumpConfig() if k % 2 else ReferenceJumpConfig(noise_mm=0.0))
        P = random_transform(RNG, max_translation_mm=float(10.0 ** RNG.uniform(0, 4)))[:3].tolist()
        step = np.array(_rotvec_rows(RNG.normal(size=3) * 10.0 ** RNG.uniform(-4, 0),
                                     RNG.normal(size=3) * 10.0 ** RNG.uniform(-4, 0.5)) + [[0, 0, 0, 1]])
        R = (np.array(P + [[0, 0, 0, 1]]) @ step)[:3].tolist()
        T = random_transform(RNG, max_translation_mm=float(10.0 ** RNG.uniform(0, 4)))[:3].tolist()
        t = float(RNG.uniform(0, 2.0 ** 32))
        dt = float(RNG.choice([0.001, 0.0, -0.001, 0.05, float(RNG.uniform(-1, 10))]))
        args = _steady_args(composer, detector, prev=(P, t - dt))
        c_out = frames.steady_tip(_taken(R, T, t, t), *args)
        py_out = steady_tip_py(_taken(R, T, t, t), *args)
        assert (c_out is None) == (py_out is None), k
        if c_out is not None:
            taken_count += 1
            assert c_out[0] is tool and py_out[0] is tool
            assert bits(c_out[1:]) == bits(py_out[1:]), k
            # what it returns is what the general path computes: the jump detector's step and the composer's tip
            assert bits(c_out[1:3]) == bits(reference_step_py(P, R, t - (t - dt), detector.step_limits)[:2])
            assert bits(c_out[3]) == bits(compose_rows_inv_a_b_c(R, T, tool.T_tool_tooltip[:3].tolist()))
    assert 200 < taken_count < 2000  # both outcomes were exercised
