"""BridgeCore.take_chunk (the 1 kHz frame's fast path) against the general path (StreamDecoder + handle).

Bad input first: every chunk the fast path must decline (returns 0) leaves the core untouched, and the
general path then counts, logs and rejects it as before. Then mixed streams: the same bytes fed through
take_chunk-with-fallback (what the transport does) and through the decoder alone give the same outputs,
counters, latch, withheld tool tips, jump-detector state and health. Every test runs twice: with the compiled
per-frame arithmetic (spine_nav/tracking/_frames.c) and with its pure-Python twins.
"""
from __future__ import annotations

import copy
import struct

import numpy as np
import pytest

from spine_nav.geometry import compose, invert, make_transform, random_transform
from spine_nav.geometry.transforms import ORTHONORMAL_TOL
from spine_nav.tracking import bridge as bridge_module
from spine_nav.tracking import codec
from spine_nav.tracking import reference_jump as jump_module
from spine_nav.tracking import tools as tools_module
from spine_nav.tracking.bridge import BridgeCore
from spine_nav.tracking.codec import DecodeError, StreamDecoder
from spine_nav.tracking.reference_jump import ReferenceJumpDetector
from spine_nav.tracking.tools import PoseComposer, ToolDefinition



@pytest.fixture(autouse=True, params=["native", "python"])
def per_frame_arithmetic(request, monkeypatch):
    """The C twins (when built; tests/test_native_frames.py checks they are) or the pure-Python definitions."""
    if request.param == "python":
        monkeypatch.setattr(bridge_module, "_frames", None)
        monkeypatch.setattr(tools_module, "compose_tip_rows", tools_module.compose_rows_inv_a_b_c)
        monkeypatch.setattr(bridge_module, "_steady_tip", bridge_module.steady_tip_py)
        monkeypatch.setattr(jump_module, "_frames", None)
    return request.param


RNG = np.random.default_rng(17)
T_TR = random_transform(RNG, max_translation_mm=1500)  # T_tracker_reference
T_REF_TIP = random_transform(RNG, max_translation_mm=100)
TOOL = ToolDefinition(tip_offset_mm=(1.0, -2.0, 160.0))
T_TT = compose(T_TR, T_REF_TIP, invert(TOOL.T_tool_tooltip))  # T_tracker_tool
REF, STY = "ReferenceToTracker", "StylusToTracker"


class Clock:
    """Deterministic receive clock: both paths call it once per accepted sample."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 1e-3
        return self.t


def _core():
    outs, latches = [], []
    core = BridgeCore(PoseComposer(tools=(TOOL,)), on_output=lambda o, t: outs.append((o, t)), clock=Clock(),
                      jump_detector=ReferenceJumpDetector(), defer_kinds=frozenset({"reference", "arm_marker"}),
                      on_latch=latches.append)
    return core, outs, latches


def _general(core, decoder, data, t_ns=5):
    errors = []
    for item in decoder.feed(data):
        if isinstance(item, DecodeError):
            errors.append(item.kind)
        else:
            core.handle(item, t_ns, "p")
    core.flush()
    return errors


def _fast(core, decoder, data, t_ns=5):
    """What IgtlConnection does with an on_chunk fast path: offer the chunk, else decode it."""
    if decoder.at_message_boundary and core.take_chunk(data, t_ns, "p"):
        core.flush()
        return []
    return _general(core, decoder, data, t_ns)


def _state(core, outs, latches):
    jd = core.jump_detector
    return ([(o.kind, o.name, o.device, o.timestamp_s, o.rows, o.skew_ms, o.detail, t) for o, t in outs], list(latches),
            dict(core.rejected), dict(core.ignored_devices), dict(core.messages), core.withheld, core.composer.stale_count,
            [(h.tool, h.state, h.reason, h.visible, h.samples_received, h.samples_rejected, h.last_sample_stamp_s,
              h.last_receive_s, h.rate_hz) for h in core.check()],
            None if jd.latched is None else jd.latched.reason, jd.prev, jd._max_sq_mm, jd._min_cos)


def _frame(t, T_ref=T_TR, T_tool=T_TT, ref=REF, tool=STY):
    return codec.encode_transform(ref, T_ref, t) + codec.encode_transform(tool, T_tool, t)


def _with_nan():
    m = T_TT.copy()
    m[1, 3] = np.nan
    return m


def _bad_crc(t):
    data = bytearray(_frame(t))
    data[-1] ^= 0xFF  # last byte of the tool's body
    return bytes(data)


def _device_with_garbage_after_nul(t):
    data = bytearray(_frame(t))
    off = codec.HEADER_SIZE + 48 + 14  # the tool message's device field
    data[off + len(STY) + 1] = ord("x")  # "StylusToTracker\0x\0...": the codec still names it StylusToTracker
    return bytes(data)


BAD_CHUNKS = {
    "NaN in the tool pose": lambda t: _frame(t, T_tool=_with_nan()),
    "inf in the reference pose": lambda t: _frame(t, T_ref=np.where(np.eye(4) == 1, np.inf, T_TR)),
    "scaled (non-rigid) tool": lambda t: _frame(t, T_tool=T_TT @ np.diag([1.0, 1.002, 1.0, 1.0])),
    "reflection": lambda t: _frame(t, T_tool=T_TT @ np.diag([-1.0, 1.0, 1.0, 1.0])),
    "orthonormality error 3x the tolerance": lambda t: _frame(
        t, T_tool=T_TT + np.pad(np.array([[0.0, 3 * ORTHONORMAL_TOL, 0.0]]), ((0, 3), (0, 1)))),
    "bad CRC": _bad_crc,
    "unknown device": lambda t: _frame(t, tool="Tool9ToTracker"),
    "device field with bytes after its NUL": _device_with_garbage_after_nul,
    "header v2 TRANSFORM": lambda t: codec.encode_transform(REF, T_TR, t, header_version=2)
    + codec.encode_transform(STY, T_TT, t, header_version=2),
    "STATUS before the frame": lambda t: codec.encode_status(STY, codec.STATUS_NOT_PRESENT, t) + _frame(t),
    "partial message at the end": lambda t: _frame(t) + codec.encode_transform(REF, T_TR, t + 1e-3)[:70],
    "body size field lies": lambda t: _frame(t)[:42] + struct.pack(">Q", 40) + _frame(t)[50:],
}


@pytest.mark.parametrize("name", sorted(BAD_CHUNKS))
def test_take_chunk_declines_bad_input_and_changes_nothing(name):
    core, outs, latches = _core()
    _fast(core, StreamDecoder(), _frame(1.0))  # a good frame first: state to preserve
    before = copy.deepcopy(_state(core, outs, latches))
    assert core.take_chunk(BAD_CHUNKS[name](1.001), 5, "p") == 0
    assert _state(core, outs, latches) == before


@pytest.mark.parametrize("name", sorted(BAD_CHUNKS))
def test_bad_input_gives_the_same_errors_and_state_through_the_fast_path_and_the_general_path(name):
    runs = []
    for feed in (_general, _fast):
        core, outs, latches = _core()
        dec = StreamDecoder()
        errors = [feed(core, dec, _frame(1.0)), feed(core, dec, BAD_CHUNKS[name](1.001)),
                  feed(core, dec, _frame(1.002)), feed(core, dec, _frame(1.003))]
        runs.append((errors, _state(core, outs, latches)))
    assert runs[0] == runs[1]


def test_bad_inputs_are_rejected_as_before():
    """The declined chunks really are the cases the general path rejects (the comparison above is not vacuous)."""
    core, outs, latches = _core()
    dec = StreamDecoder()
    errors = []
    for name in ("NaN in the tool pose", "scaled (non-rigid) tool", "reflection", "bad CRC", "unknown device"):
        errors += _fast(core, dec, BAD_CHUNKS[name](1.0))
    assert core.rejected == {"non-finite pose": 1, "non-rigid pose": 2}
    assert errors == ["bad CRC"] and core.ignored_devices == {"Tool9ToTracker": 1}


def _stream():
    """Frames as the bench sends them, with a tool moving, a stylus sample before its reference, a stale one,
    an arm marker, a direct tip device, bad frames in between and a bumped reference at k = 30."""
    rng = np.random.default_rng(5)
    chunks = []
    for k in range(45):
        t = 10.0 + k * 1e-3
        T_ref = T_TR if k < 30 else compose(T_TR, make_transform(np.eye(3), [3.0, 0.0, 0.0]))
        T_tool = compose(T_TT, random_transform(rng, max_translation_mm=1.0, max_angle_deg=1.0))
        if k == 5:  # tool first, its reference in the next chunk
            chunks += [codec.encode_transform(STY, T_tool, t), codec.encode_transform(REF, T_ref, t)]
        elif k == 9:  # a tool sample whose reference is long gone (stale)
            chunks.append(_frame(t, T_ref, T_tool) + codec.encode_transform(STY, T_tool, t - 0.5))
        elif k == 12:
            chunks.append(_frame(t, T_ref, T_tool) + codec.encode_transform("ArmMarkerToTracker", T_TR, t))
        elif k == 14:
            chunks.append(codec.encode_transform("StylusTipToReference", T_REF_TIP, t))
        elif k in (17, 33):
            chunks.append(BAD_CHUNKS["NaN in the tool pose"](t))
        elif k == 21:  # two frames in one chunk (a small backlog)
            chunks.append(_frame(t, T_ref, T_tool) + _frame(t + 0.0005, T_ref, T_tool))
        elif k == 25:  # one frame split over two chunks
            data = _frame(t, T_ref, T_tool)
            chunks += [data[:100], data[100:]]
        else:
            chunks.append(_frame(t, T_ref, T_tool))
    return chunks


def test_mixed_stream_gives_the_same_outputs_counters_latch_and_health_on_both_paths():
    runs, taken = [], []
    for feed in (_general, _fast):
        core, outs, latches = _core()
        dec = StreamDecoder()
        errors = []
        for i, chunk in enumerate(_stream()):
            n = core.take_chunk(chunk, i, "p") if feed is _fast and dec.at_message_boundary else 0
            if feed is _fast:
                taken.append(n)
            if n:
                core.flush()
            else:
                errors += _general(core, dec, chunk, i)
        runs.append((errors, _state(core, outs, latches)))
    assert runs[0] == runs[1]
    (_, state) = runs[0]
    kinds = [o[0] for o in state[0]]
    assert {"tool_tip", "reference", "arm_marker", "stale"} <= set(kinds)  # every branch was exercised
    assert state[1] and state[5] > 0  # the bump latched and tool tips were withheld after it
    assert state[2] == {"non-finite pose": 2}
    assert sum(1 for n in taken if n) > 30 and 0 in taken  # mostly fast, some chunks declined


def test_steady_frames_take_the_steady_path_and_everything_else_declines_it():
    """take_chunk's steady-frame path (tool tip published before the bookkeeping; ``steady_frames`` counts it) is
    taken for a reference + tool pair of the same tracker time once the jump detector has a previous sample; a first
    frame, a bump, a skewed pair, a pending tool sample, a tool-tip device or a latched reference decline it with
    nothing changed (the mixed-stream test above checks the outputs and state against the general path). ``[]``: the
    chunk was not a pair of TRANSFORMs the fast decode takes."""
    core, outs, latches = _core()
    dec = StreamDecoder()

    def feed(data):
        """[True] steady path, [False] a pair taken by the fast decode but not steady, [] anything else."""
        before = core.steady_frames
        n = core.take_chunk(data, 5, "p") if dec.at_message_boundary else 0
        if n:
            core.flush()
        else:
            _general(core, dec, data, 5)
        if core.steady_frames != before:
            return [True]
        return [False] if n == 2 else []

    assert feed(_frame(1.000)) == [False]  # no previous reference sample yet
    assert feed(_frame(1.001)) == [True]
    assert feed(_frame(1.002)) == [True]
    skewed = codec.encode_transform(REF, T_TR, 1.003) + codec.encode_transform(STY, T_TT, 1.0031)
    assert feed(skewed) == [False]
    assert feed(codec.encode_transform(STY, T_TT, 1.006)) == []  # a lone tool sample 3 ms after the last reference
    assert core.composer.pending["stylus"]  # it waits for its reference
    assert feed(_frame(1.0065)) == [False]  # something pending: the general path composes it
    assert feed(_frame(1.007)) == [True]
    tip_device = codec.encode_transform(REF, T_TR, 1.008) + codec.encode_transform(TOOL.tip_device, T_REF_TIP, 1.008)
    assert feed(tip_device) == [False]
    bumped = compose(T_TR, make_transform(np.eye(3), [5.0, 0.0, 0.0]))
    assert feed(_frame(1.009, T_ref=bumped)) == [False] and latches  # the general path latches
    assert feed(_frame(1.010, T_ref=bumped)) == [False]  # latched: tool tips withheld by the general path
    assert core.withheld == 2
    core.reset_reference()
    assert feed(_frame(1.011, T_ref=bumped)) == [False]  # reset forgot the previous sample
    assert feed(_frame(1.012, T_ref=bumped)) == [True]


def test_a_consumer_that_raises_leaves_the_same_state_on_both_paths():
    """on_output raising on a tool tip (a consumer bug; the transport logs it and keeps serving): the steady-frame
    path, which publishes before its bookkeeping, still leaves the general path's state and deferred reference."""
    runs = []
    for feed in (_general, _fast):
        core, outs, latches = _core()

        def on_output(o, t, outs=outs):
            outs.append((o, t))
            if o.kind == "tool_tip" and o.timestamp_s > 1.0015:
                raise RuntimeError("consumer bug")

        core.on_output = on_output
        dec = StreamDecoder()
        for t in (1.000, 1.001, 1.002, 1.003):
            try:
                feed(core, dec, _frame(t))
            except RuntimeError:
                core.flush()
        runs.append(_state(core, outs, latches))
    assert runs[0] == runs[1]
    assert [o[0] for o in runs[0][0]].count("reference") == 4  # every reference still published at the chunk's end


def test_reset_after_a_bump_resumes_on_the_fast_path():
    core, outs, latches = _core()
    dec = StreamDecoder()
    _fast(core, dec, _frame(1.0))
    bumped = compose(T_TR, make_transform(np.eye(3), [5.0, 0.0, 0.0]))
    assert core.take_chunk(_frame(1.001, T_ref=bumped), 5, "p") == 2  # the jump is found by the shared steps
    core.flush()
    assert latches and "reference array moved 5.0 mm" in latches[0]
    assert core.withheld == 1
    assert core.reset_reference().startswith("reference array moved")
    n_tips = sum(1 for o, _ in outs if o.kind == "tool_tip")
    assert core.take_chunk(_frame(1.002, T_ref=bumped), 5, "p") == 2
    assert sum(1 for o, _ in outs if o.kind == "tool_tip") == n_tips + 1


def test_fast_path_tool_tip_is_the_composed_pose():
    core, outs, _ = _core()
    assert core.take_chunk(_frame(2.0), 42, "p") == 2
    (tip, t_ns), = [(o, t) for o, t in outs if o.kind == "tool_tip"]
    assert t_ns == 42 and tip.timestamp_s == pytest.approx(2.0, abs=1e-9)
    np.testing.assert_allclose(tip.matrix, T_REF_TIP, atol=1e-3)  # float32 wire values
    core.flush()
    assert [o.kind for o, _ in outs] == ["tool_tip", "reference"]  # reference deferred to the chunk's end


def test_transport_offers_the_chunk_first_and_falls_back_to_the_decoder():
    """IgtlConnection: on_chunk sees whole chunks; a declined chunk (0) reaches on_message; a handler that raises
    is logged and the connection keeps serving; on_chunk_end follows every chunk."""
    import threading
    import time

    from spine_nav.tracking.transport import IgtlClient, IgtlServer

    seen = {"chunks": 0, "messages": 0, "ends": 0}
    lock = threading.Lock()

    def on_chunk(data, t_ns, conn):
        with lock:
            seen["chunks"] += 1
            k = seen["chunks"]
        if k == 2:
            raise RuntimeError("consumer bug")
        return 0 if k % 2 else 2

    def bump(key):
        with lock:
            seen[key] += 1

    server = IgtlServer(0, host="127.0.0.1").start()
    client = IgtlClient("127.0.0.1", server.port, lambda m, t, c: bump("messages"), on_chunk=on_chunk,
                        on_chunk_end=lambda c: bump("ends")).start()
    try:
        assert client.wait_connected(5.0)
        deadline = time.monotonic() + 5.0
        while server.client_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for k in range(6):
            server.broadcast(_frame(1.0 + k * 1e-3))
            deadline = time.monotonic() + 5.0
            while seen["ends"] < k + 1 and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        client.close()
        server.close()
    # chunks 1, 3, 5 declined -> 2 messages each through the decoder; 2 raised; 4, 6 taken
    assert seen == {"chunks": 6, "messages": 6, "ends": 6}
