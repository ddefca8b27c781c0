"""Interoperability with the reference OpenIGTLink C++ implementation (Debian libopenigtlink 1.11 examples).

The example programs are built unchanged from /usr/share/doc/openigtlink-examples (cmake, cached in
build/igtl_ref) and run against our codec and transport both ways:
their servers -> our client (TrackerServer: TRANSFORM; TrackingDataServer: STT_TDATA/TDATA/STP_TDATA) and
our server/client -> their ReceiveClient/ReceiveServer (TRANSFORM, POSITION, STATUS, STRING, POINT, TRAJ, TDATA).
libopenigtlink 1.11 speaks header version 1 only; v2/v3 headers are covered against pyigtl in test_igtl_codec.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spine_nav.geometry import random_transform, transform_to_quat
from spine_nav.tracking import codec
from spine_nav.tracking.codec import TDataElement
from spine_nav.tracking.tools import validate_pose
from spine_nav.tracking.transport import IgtlClient, IgtlServer
from tests.helpers import free_tcp_port, wait_until

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "tests" / "interop"
BUILD = REPO / "build" / "igtl_ref"
PROGRAMS = ("TrackerServer", "TrackerClient", "TrackingDataServer", "TrackingDataClient", "ReceiveClient",
            "ReceiveServer")


@pytest.fixture(scope="session")
def igtl_ref() -> Path:
    """Build (once; cached in build/igtl_ref) the reference example programs; fail loudly if impossible."""
    assert shutil.which("cmake"), "cmake missing (Makefile SYSTEM_PACKAGES installs it)"
    assert Path("/usr/share/doc/openigtlink-examples/examples").is_dir(), \
        "openigtlink-examples not installed (Makefile SYSTEM_PACKAGES installs it)"
    stamp = (SRC / "CMakeLists.txt").stat().st_mtime
    if not all((BUILD / p).exists() and (BUILD / p).stat().st_mtime >= stamp for p in PROGRAMS):
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cmake", "-S", str(SRC), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"], check=True,
                       capture_output=True, timeout=120)
        subprocess.run(["cmake", "--build", str(BUILD), "-j2"], check=True, capture_output=True, timeout=300)
    return BUILD


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=5)


class _Output:
    """A reference program's stdout/stderr read as they come (threads), so a test can wait for what it
    printed instead of sleeping; :meth:`finish` stops the program and returns (stdout, stderr)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self._out, self._err = proc, [], []
        self._threads = [threading.Thread(target=self._read, args=(f, buf), daemon=True)
                         for f, buf in ((proc.stdout, self._out), (proc.stderr, self._err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, buf: list) -> None:
        for line in iter(stream.readline, ""):
            buf.append(line)

    @property
    def out(self) -> str:
        return "".join(list(self._out))

    @property
    def err(self) -> str:
        return "".join(list(self._err))

    def finish(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for t in self._threads:
            t.join(timeout=5)
        return self.out, self.err


def _matrices_printed(text: str) -> list[np.ndarray]:
    """igtl::PrintMatrix blocks ('=============' + 4 rows + '=============') -> 4x4 arrays."""
    out = []
    for block in re.findall(r"=============\n((?:.*\n){4})=============", text):
        out.append(np.array([[float(x) for x in row.split(",")] for row in block.strip().splitlines()]))
    return out


def _connect_with_retry(port: int, on_msg, on_connect=None) -> IgtlClient:
    client = IgtlClient("127.0.0.1", port, on_msg, on_connect=on_connect, backoff_s=(0.05, 0.2)).start()
    assert client.wait_connected(10.0), f"could not connect to the reference server on {port}"
    return client


def test_reference_tracker_server_to_our_client_all_100_samples(igtl_ref):
    port = free_tcp_port()
    proc = _start([str(igtl_ref / "TrackerServer"), str(port), "100"])
    got, lock = [], threading.Lock()
    conns: list = []

    def on_msg(msg, _t, conn):
        # TrackerServer sends exactly 100 per connection; our client reconnects when it hangs up (~1 s
        # later), so only the first connection's messages are this sample set
        with lock:
            if not conns:
                conns.append(conn)
            if conn is conns[0]:
                got.append(msg)

    client = None
    try:
        client = _connect_with_retry(port, on_msg)
        assert wait_until(lambda: len(got) >= 100, timeout_s=20.0)
    finally:
        if client is not None:
            client.close()
        out, _ = _stop(proc)
    assert len(got) == 100 and not conns[0].errors  # every sample, none malformed
    assert all(m.type == "TRANSFORM" and m.device == "Tracker" for m in got)
    printed = _matrices_printed(out)[:100]  # what the reference sender packed for it, printed before each send
    assert len(printed) == 100
    for m, ref in zip(got, printed):
        np.testing.assert_allclose(m.poses[0][1], ref, rtol=1e-5, atol=1e-4)
    for m in got:  # igtl::QuaternionToMatrix normalises the example's non-unit quaternion: rigid poses
        validate_pose(m.poses[0][1], "Tracker")


def test_reference_tracking_data_server_tdata_start_stream_stop(igtl_ref):
    port = free_tcp_port()
    proc = _start([str(igtl_ref / "TrackingDataServer"), str(port)])
    got, lock = [], threading.Lock()

    def on_msg(msg, _t, _c):
        with lock:
            got.append(msg)

    client = None
    try:
        client = _connect_with_retry(port, on_msg, on_connect=lambda c: c.send(codec.encode_stt_tdata(20, "Tracker")))
        assert wait_until(lambda: len(got) >= 10, timeout_s=20.0)
        conn = client.connection
        conn.send(codec.encode_stp_tdata())
        assert wait_until(lambda: conn.closed, timeout_s=10.0)  # the reference server stops and hangs up
    finally:
        if client is not None:
            client.close()
        _stop(proc)
    with lock:
        msgs = list(got)
    assert all(m.type == "TDATA" for m in msgs) and not conn.errors
    for k, m in enumerate(msgs):
        assert [d for d, _ in m.poses] == ["Channel 0", "Channel 1", "Channel 2"]
        assert [e.type for e in m.raw.elements] == [1, 2, 4]
        phi = np.float32(0.1) * k  # channel 0: phi0 += 0.1 per message, position 50*(cos, sin, cos)
        np.testing.assert_allclose(m.poses[0][1][:3, 3], 50 * np.array([np.cos(phi), np.sin(phi), np.cos(phi)]),
                                   atol=1e-3)


def _all_types(T: np.ndarray) -> list[bytes]:
    q, p = transform_to_quat(T, order="xyzw")
    return [codec.encode_transform("StylusToTracker", T, 1234.5),
            codec.encode_position("ReferenceToTracker", p, q, 2.0),
            codec.encode_status("StylusToTracker", 16, 3.0, "hidden", error_name="MISSING", subcode=-5),
            codec.encode_string("GuardState", "ALIGNED L4_left", 4.0),
            codec.encode_point("PlanPoints", ["L4_left_entry", "L4_left_target"], [[1, 2, 3], [4, 5, 6]], 5.0),
            codec.encode_traj("PlanTrajectories", [{"name": "L4_left", "entry_mm": (1, 2, 3),
                                                    "target_mm": (4, 5, 6), "radius_mm": 3.25}], 6.0),
            codec.encode_tdata("Tracker", [TDataElement("Tool0ToTracker", T)], 7.0)]


def _check_reference_printout(err: str, out: str, T: np.ndarray, with_tdata: bool) -> None:
    q, p = transform_to_quat(T, order="xyzw")
    assert "Time stamp: 1234.500000000" in err
    np.testing.assert_allclose(_matrices_printed(out)[0], T, rtol=1e-5, atol=1e-4)  # TRANSFORM, CRC accepted
    pos = re.search(r"position   = \((.*)\)\nquaternion = \((.*)\)", err)
    np.testing.assert_allclose([float(x) for x in pos.group(1).split(",")], p, atol=1e-3)
    np.testing.assert_allclose([float(x) for x in pos.group(2).split(",")], q, atol=1e-5)  # OX OY OZ W
    assert re.search(r"Code      : 16\n SubCode   : -5\n Error Name: MISSING\n Status    : hidden", err)
    assert "String: ALIGNED L4_left" in err
    assert " Name      : L4_left_target" in err and "Position  : ( 4.000000, 5.000000, 6.000000 )" in err
    assert "Entry Pt  : ( 1.000000, 2.000000, 3.000000 )" in err and "Radius    : 3.250000" in err
    if with_tdata:
        assert " Name       : Tool0ToTracker" in err
        np.testing.assert_allclose(_matrices_printed(out)[1], T, rtol=1e-5, atol=1e-4)


def test_our_server_to_reference_receive_client_every_type(igtl_ref):
    T = random_transform(np.random.default_rng(0), max_translation_mm=200)
    server = IgtlServer(0, host="127.0.0.1").start()
    o = _Output(_start([str(igtl_ref / "ReceiveClient"), "127.0.0.1", str(server.port)]))
    try:
        assert wait_until(lambda: server.client_count == 1, timeout_s=10.0)
        for data in _all_types(T):
            server.broadcast(data)
        # the last message (TDATA) printed: every one before it was handled
        assert wait_until(lambda: " Name       : Tool0ToTracker" in o.err and len(_matrices_printed(o.out)) >= 2,
                          timeout_s=20.0), o.err[-2000:]
    finally:
        server.close()  # the reference client exits when the connection closes
        out, err = o.finish()
    _check_reference_printout(err, out, T, with_tdata=True)


def test_our_client_to_reference_receive_server_every_type(igtl_ref):
    T = random_transform(np.random.default_rng(1), max_translation_mm=200)
    port = free_tcp_port()
    o = _Output(_start([str(igtl_ref / "ReceiveServer"), str(port)]))
    client = None
    try:
        client = _connect_with_retry(port, None)
        for data in _all_types(T)[:-1]:  # ReceiveServer has no TDATA handler (skips it)
            assert client.send(data)
        # the last message (TRAJ) printed: every one before it was handled
        assert wait_until(lambda: "Radius    : 3.250000" in o.err and _matrices_printed(o.out), timeout_s=20.0), \
            o.err[-2000:]
    finally:
        if client is not None:
            client.close()
        out, err = o.finish()
    _check_reference_printout(err, out, T, with_tdata=False)


def test_reference_tracker_client_to_our_server(igtl_ref):
    got, lock = [], threading.Lock()

    def on_msg(msg, _t, _c):
        with lock:
            got.append(msg)

    server = IgtlServer(0, on_message=on_msg, host="127.0.0.1").start()
    proc = _start([str(igtl_ref / "TrackerClient"), "127.0.0.1", str(server.port), "200"])
    try:
        assert wait_until(lambda: len(got) >= 50, timeout_s=20.0)
    finally:
        out, _ = _stop(proc)
        server.close()
    with lock:
        msgs = list(got)
    printed = _matrices_printed(out)
    for m, ref in zip(msgs, printed):
        np.testing.assert_allclose(m.poses[0][1], ref, rtol=1e-5, atol=1e-4)
    t = np.array([m.timestamp_s for m in msgs])
    assert np.all(np.diff(t) > 0) and abs(t[-1] - time.time()) < 60  # its own wall-clock sample stamps
