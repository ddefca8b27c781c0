"""`spine-nav demo --hosts`: the same case, with the OR's computers as Linux network namespaces.

Hosts (one namespace each, on one virtual bridge with no physical interface, :mod:`spine_nav.sim.netns`):

- ``tracker``: the tracker PC's network side, an OpenIGTLink relay (:mod:`spine_nav.sim.igtl_relay`) that
  accepts only the navigation host and forwards to the camera model; ``delay:tracker:MS`` delays it.
- ``navigation``: tracker_bridge + trajectory_guard (one process), registration (another).
- ``robot``: arm_guide, sim_arm (MuJoCo; the arm hardware) and a hold probe (records, on the robot
  side, when the arm's command stream turns to HOLD; it hears it even when the robot host is cut off).
- ``console``: console_bridge with its web page (on that host's loopback) and, in a process of its own
  at the stack's priority, its command panel (:mod:`spine_nav.nodes.command_source`): the surgeon's align/resume go world -> console
  (``console/arm_command``) -> robot (``arm/command``), and its heartbeat on ``arm/command_source``
  registers the console as the arm guide's command source, so a silent console holds the arm
  ("console silent").
- ``world`` (never cut): this process, i.e. the physics and the people. The tracker model (camera
  + patient truth, OpenIGTLink source for the relay, which alone may connect) and the conductor
  (surgeon, nurse, recorder) which moves the drill and presses the buttons.

DDS: every process on the same ROS_DOMAIN_ID, ``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``, UDPv4 only
(``config/dds/hosts_udp.xml``: no shared-memory transport, so DDS really crosses the virtual LAN).

``--inject cut:HOST`` sets that host's bridge port down when the drill is half way on the first screw
and up again 2 s later; the surgeon stops drilling meanwhile, resumes the arm explicitly when the
stack is heard again, and the case goes on. ``hold_after_ms`` = first HOLD command seen on the robot
side after the cut minus the moment just before the link was set down (both ``time.time()``).
``--inject delay:HOST:MS`` runs the whole case with MS ms added each way on HOST's link: for the tracker
in its OpenIGTLink relay (the camera model lives in the world namespace, so the tracker's cable would
otherwise be crossed twice per sample), for the others by :meth:`VirtualLan.delay` (a user-space
layer-2 forwarder in place of the host's bridge port: this kernel has no ``tc netem``).

Needs root; :class:`spine_nav.sim.netns.NetnsNotPermitted` says why not (no silent fallback).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spine_nav.demo.report import FaultResult
from spine_nav.demo.run import Demo, DemoConfig, Log, _p
from spine_nav.geometry import invert
from spine_nav.children import stop_child
from spine_nav.resources import package_dir, share_dir, share_path
from spine_nav.sim.netns import VirtualLan, enter_netns
from spine_nav.tracking.transport import DEFAULT_PORT

HOSTS = ("tracker", "navigation", "robot", "console")
WORLD = "world"
REPO = package_dir().parent  # the folder spine_nav is imported from (on the hosts' PYTHONPATH)
DDS_PROFILE = share_path("config", "dds", "hosts_udp.xml")
#: arm_guide's stale-reference watchdog in the multi-host run: the hold must come within 100 ms of a cut
#: (issue #19 target). 0.2 s in the one-machine demo (DEMO_WATCHDOGS); 0.06 s here leaves ~40 ms for
#: the last sample's age at the cut (10 ms at 100 Hz), transport and the command keep-alive period.
HOSTS_REFERENCE_TIMEOUT_S = 0.06
#: arm_guide keep-alive command rate here: the robot-side probe sees a HOLD within 10 ms of it.
HOSTS_COMMAND_RATE_HZ = 100.0
CUT_S = 2.0
#: the bridge's tracker watchdog here: the tracker link crosses a user-space relay and two namespaces, so
#: the one-machine demo's 70 ms (DEMO_WATCHDOGS) is kept at its former 100 ms; the arm's own 60 ms
#: reference watchdog above is what holds it on a tracker or navigation cut
HOSTS_TRACKER_TIMEOUT_MS = 100.0
#: the console's command panel relays this to arm/command (config/nodes.yaml command_source.relay_service)
CONSOLE_ARM_SERVICE = "console/arm_command"


@dataclass
class Injection:
    kind: str          # "cut" | "delay"
    host: str
    delay_ms: float = 0.0

    @property
    def label(self) -> str:
        return f"cut:{self.host}" if self.kind == "cut" else f"delay:{self.host}:{self.delay_ms:g}"


def parse_inject(text: str) -> Injection:
    """``cut:HOST`` or ``delay:HOST:MS`` (HOST in tracker, navigation, robot, console; MS in 0-1000)."""
    parts = text.split(":")
    if len(parts) == 2 and parts[0] == "cut" and parts[1] in HOSTS:
        return Injection("cut", parts[1])
    if len(parts) == 3 and parts[0] == "delay" and parts[1] in HOSTS:
        try:
            ms = float(parts[2])
        except ValueError:
            ms = -1.0
        if not 0.0 <= ms <= 1000.0:
            raise ValueError(f"--inject {text}: MS must be a number of milliseconds in 0-1000")
        return Injection("delay", parts[1], ms)
    raise ValueError(f"--inject {text!r}: expected cut:HOST or delay:HOST:MS (HOST: {', '.join(HOSTS)})")


@dataclass
class HostsPlan:
    """Which processes run on which host (labels for the report)."""
    processes: dict[str, list[dict]] = field(default_factory=lambda: {h: [] for h in (*HOSTS, WORLD)})


class HostsDemo(Demo):
    def __init__(self, cfg: DemoConfig, log: Log, inject: Injection | None = None, tag: str | None = None,
                 reference_timeout_s: float = HOSTS_REFERENCE_TIMEOUT_S) -> None:
        """``reference_timeout_s``: arm_guide's stale-reference watchdog here (HOSTS_REFERENCE_TIMEOUT_S for
        the measured hold times; a test on an overloaded machine may pass the one-machine demo's 0.2 s)."""
        super().__init__(cfg, log)
        self.inject = inject
        self.reference_timeout_s = float(reference_timeout_s)
        domain = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
        self.lan = VirtualLan((*HOSTS, WORLD), tag=tag or f"sn{domain}", subnet=(200, domain % 256))
        self.plan_hosts = HostsPlan()
        self._q: np.ndarray | None = None
        self._cut_active = threading.Event()
        self._t_restore: float | None = None
        self._cut_t: float | None = None
        self._cut_done = False
        self._cut_attempted = False
        self.network: dict = {}
        self._procs_hosts: list = []  # (host, NodeProcess)
        self._delay_proc: subprocess.Popen | None = None
        #: the robot-side hold probe's record (JSON lines, :func:`probe_main`), set when the run starts it
        self.probe_path: Path | None = None
        #: OpenIGTLink connections the camera model refused, (address, port, time.time()) as
        #: :attr:`spine_nav.tracking.transport.IgtlServer.refused`; read when the stack stops
        self.refused: list[tuple[str, int, float]] = []
        #: the conductor of the screw the cut is injected on (the surgeon's pause reads its recording)
        self._conductor = None
        #: the cut's outcome for the report (host, cut_s, hold_after_ms, screw, screw_status); {} = no cut
        self.network_cut: dict = {}

    # ------------------------------------------------------------------ the run
    def run(self):
        from spine_nav.demo.conductor import Conductor
        from spine_nav.nodes.runner import ComposedStack, realtime_threads

        t_start = time.monotonic()
        self.lan.create()  # raises NetnsNotPermitted (root needed) before any work
        try:
            self.prepare_case()
            self.calibrate_arm()
            lan, logs = self.lan, self.cfg.out_dir / "logs"
            os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET", FASTRTPS_DEFAULT_PROFILES_FILE=str(DDS_PROFILE))
            os.environ.pop("ROS_STATIC_PEERS", None)
            args = self.stack_args(DEFAULT_PORT) + self.hosts_args()
            self.log(f"[4/6] the stack on {len(HOSTS)} hosts (network namespaces {lan.tag}-*, bridge in {lan.lan_ns}, "
                     f"{lan.cidr}, no physical interface), DDS domain {os.environ.get('ROS_DOMAIN_ID', '0')} over UDP")
            delayed = self.inject if self.inject and self.inject.kind == "delay" else None
            if delayed and delayed.host != "tracker":
                logs.mkdir(parents=True, exist_ok=True)
                self._delay_proc = lan.delay(delayed.host, delayed.delay_ms, str(logs / "delay_link.log"))
                self.log(f"      {delayed.host}'s link: {delayed.delay_ms:g} ms added each way (layer-2 forwarder, "
                         f"pid {self._delay_proc.pid})")
            counters0 = {h: self.udp_tcp_counters(h) for h in (*HOSTS, WORLD)}
            rt = self.cfg.rt_priority
            procs = [self._node_proc("navigation", "navigation", ["tracker_bridge", "trajectory_guard"], args, rt),
                     self._node_proc("robot", "arm", ["arm_guide"], args, rt),
                     self._node_proc("navigation", "registration", ["registration"], args, 0),
                     self._node_proc("robot", "sim_arm", ["sim_arm"], args, min(rt, self.cfg.sim_rt_priority)),
                     self._node_proc("console", "console", ["console_bridge"], args, 0),
                     # the console's command panel: safety-relevant (its heartbeat holds the arm when it goes
                     # silent), so its own small process at the stack's priority, apart from the web console
                     self._node_proc("console", "command_source", ["command_source"], args, rt)]
            self.procs = {p.label: p for p in procs}
            self.probe_path = logs / "robot_hold_probe.jsonl"
            others = [self._popen("robot", "hold_probe", [sys.executable, "-m", "spine_nav.demo.hosts", "probe",
                                                          str(self.probe_path)], logs / "hold_probe.log"),
                      self._popen("tracker", "igtl_relay", [
                          sys.executable, "-m", "spine_nav.sim.igtl_relay", "--listen", f"0.0.0.0:{DEFAULT_PORT}",
                          "--upstream", f"{lan.ip(WORLD)}:{DEFAULT_PORT}", "--allow", lan.ip("navigation"),
                          "--delay-ms", str(delayed.delay_ms if delayed and delayed.host == "tracker" else 0)],
                          logs / "igtl_relay.log")]
            for host, p in self._procs_hosts:
                self.plan_hosts.processes[host].append({"label": p.label, "pid": p.proc.pid})
            self.plan_hosts.processes[WORLD].append({"label": "demo (sim_tracker camera model, conductor)",
                                                     "pid": os.getpid()})
            try:
                with enter_netns(lan.ns(WORLD)), realtime_threads(min(rt, self.cfg.sim_rt_priority)), \
                        ComposedStack(["sim_tracker"], params_file=share_path("config", "nodes.yaml"),
                                      extra_ros_args=args) as stack:
                    self.tracker_model = stack.nodes["sim_tracker"].model
                    self.tracker_send_delay_s = stack.nodes["sim_tracker"].server.send_delay_s
                    # the surgeon presses align/resume on the console: commands cross the console host
                    conductor = Conductor(arm_service=CONSOLE_ARM_SERVICE)
                    from sensor_msgs.msg import JointState

                    from spine_nav.nodes.qos import SENSOR_QOS

                    conductor.node.create_subscription(JointState, "joint_states", self._on_joint_state, SENSOR_QOS)
                    try:
                        if not conductor.wait_for(lambda: self._q is not None, 60.0):
                            raise RuntimeError("no joint_states from the robot host within 60 s:\n" + procs[3].tail())
                        self.run_case(conductor, procs)
                    finally:
                        self.recording = conductor.rec
                        conductor.close()
                    self.refused = list(stack.nodes["sim_tracker"].server.server.refused)
            finally:
                for p in procs:
                    if not p.alive():
                        self.log(f"      process {p.label} exited early (code {p.proc.returncode}):\n{p.tail()}")
                    p.stop()
                for label, proc, fh in others:
                    stop_child(proc, grace_s=5.0)
                    fh.close()
            counters1 = {h: self.udp_tcp_counters(h) for h in (*HOSTS, WORLD)}
            self.network = self.network_summary(counters0, counters1)
        finally:
            if self._delay_proc is not None:
                stop_child(self._delay_proc, grace_s=5.0)
            self.lan.destroy()
        return self.build_report(time.monotonic() - t_start)

    def hosts_args(self) -> list[str]:
        lan = self.lan
        return (_p("tracker_bridge", "host", lan.ip("tracker")) + _p("sim_tracker", "host", lan.ip(WORLD))
                + _p("sim_tracker", "allowed_peers", lan.ip("tracker"))
                + _p("arm_guide", "reference_timeout_s", self.reference_timeout_s)
                + _p("tracker_bridge", "timeout_ms", HOSTS_TRACKER_TIMEOUT_MS)
                + _p("arm_guide", "command_rate_hz", HOSTS_COMMAND_RATE_HZ)
                + _p("console_bridge", "case_dir", str(self.case_dir)))

    def _node_proc(self, host: str, label: str, nodes: list[str], args: list[str], rt: int):
        from spine_nav.demo.processes import NodeProcess

        p = NodeProcess(label, nodes, args, self.cfg.out_dir / "logs" / f"{label}.log", rt_priority=rt,
                        prefix=self.lan.exec_prefix(host))
        self._procs_hosts.append((host, p))
        return p

    def _popen(self, host: str, label: str, cmd: list[str], log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_path, "w")
        proc = subprocess.Popen(self.lan.exec_prefix(host) + cmd, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    [str(REPO), os.environ.get("PYTHONPATH", "")])})
        self.plan_hosts.processes[host].append({"label": label, "pid": proc.pid})
        return label, proc, fh

    def udp_tcp_counters(self, host: str) -> dict[str, int]:
        """UDP datagrams (DDS: nothing else uses UDP here) and TCP segments (OpenIGTLink) of ``host``'s
        namespace, from its /proc/net/snmp."""
        res = subprocess.run(self.lan.exec_prefix(host) + ["cat", "/proc/net/snmp"], capture_output=True,
                             text=True, timeout=10.0)
        rows = [line.split() for line in res.stdout.splitlines()]
        out = {}
        for i in range(0, len(rows) - 1, 2):
            head, vals = rows[i], rows[i + 1]
            if head and head[0] in ("Udp:", "Tcp:"):
                d = dict(zip(head[1:], vals[1:]))
                if head[0] == "Udp:":
                    out["udp_in"], out["udp_out"] = int(d["InDatagrams"]), int(d["OutDatagrams"])
                else:
                    out["tcp_in"], out["tcp_out"] = int(d["InSegs"]), int(d["OutSegs"])
        return out

    def network_summary(self, c0: dict, c1: dict) -> dict:
        traffic = {h: {k: c1[h].get(k, 0) - c0[h].get(k, 0) for k in c1[h]} for h in c1}
        return {"hosts": {h: {"ip": self.lan.ip(h), "namespace": self.lan.ns(h),
                              "processes": self.plan_hosts.processes[h],
                              "dds_udp_datagrams_in": traffic[h].get("udp_in"),
                              "dds_udp_datagrams_out": traffic[h].get("udp_out"),
                              "igtl_tcp_segments_in": traffic[h].get("tcp_in"),
                              "igtl_tcp_segments_out": traffic[h].get("tcp_out")} for h in (*HOSTS, WORLD)},
                "lan": self.lan.cidr, "domain_id": int(os.environ.get("ROS_DOMAIN_ID", "0") or 0),
                "dds_profile": str(DDS_PROFILE.relative_to(share_dir())),
                "reference_timeout_s": self.reference_timeout_s, "tracker_timeout_ms": HOSTS_TRACKER_TIMEOUT_MS,
                "inject": self.inject.label if self.inject else None,
                "igtl_refused_at_camera": [r[0] for r in self.refused]}

    # ------------------------------------------------------------------ truth without the in-process arm
    def _on_joint_state(self, msg) -> None:
        self._q = np.asarray(msg.position, dtype=float)

    def true_guide_in_reference(self) -> np.ndarray:
        """As :meth:`Demo.true_guide_in_reference`, from the robot host's ``joint_states`` (the last heard)."""
        T_tracker_guide = self.scene.T_tracker_robotbase @ self.kin.fk(self._q, "GuideTube")
        model = self.tracker_model
        return invert(model.T_tracker_reference_true(model.model_time_s(time.time()))) @ T_tracker_guide

    # ------------------------------------------------------------------ the cut
    def surgeon_pauses(self) -> bool:
        if self._cut_active.is_set():
            return True
        if self._t_restore is None or self._cut_done:
            return False
        c = self._conductor
        heard = (c.rec.statuses and c.rec.statuses[-1].received_s > self._t_restore + 0.2
                 and c.rec.arm_states and c.rec.arm_states[-1][0] > self._t_restore + 0.2)
        if heard or time.time() > self._t_restore + 10.0:
            self._cut_done = True
            return False
        return True

    def one_screw(self, c, planned, nav, inject, head: str, kills=()):
        if self.inject is None or self.inject.kind != "cut" or self._cut_attempted:
            return super().one_screw(c, planned, nav, inject, head, kills)
        self._cut_attempted = True  # on the first screw attempted only
        self._conductor = c
        stop = threading.Event()
        watcher = threading.Thread(target=self._cut_when_half_way, args=(c, nav, stop, head), daemon=True)
        watcher.start()
        try:
            result, fault = super().one_screw(c, planned, nav, inject, head, kills)
        finally:
            stop.set()
            watcher.join(CUT_S + 5.0)
        self.faults.append(self._cut_result(result))
        return result, fault

    def _cut_when_half_way(self, c, nav, stop: threading.Event, head: str) -> None:
        host = self.inject.host
        while not stop.is_set():
            st = c.last_status
            if st is not None and st.active_screw_id == nav.id and st.depth_mm >= 0.5 * nav.depth_mm:
                break
            stop.wait(0.005)
        else:
            return
        self._cut_active.set()
        self._cut_t = time.time()  # just before the link goes down: hold_after_ms is not flattered
        self.lan.cut(host)
        self.log(f"{head} injecting: {host}'s link cut at depth {c.last_status.depth_mm:.1f} mm, t={self._cut_t:.3f} (for {CUT_S:g} s)")
        stop.wait(CUT_S)  # the cut's length (ends early only if the screw ends, which the pause prevents)
        self.lan.restore(host)
        self._t_restore = time.time()
        self._cut_active.clear()
        self.log(f"{head} {host}'s link is back")

    def _cut_result(self, result) -> FaultResult:
        host = self.inject.host
        holds = read_probe(self.probe_path)
        # only a hold while the link was down is the cut's (later ones are the loaded machine's own stops)
        t_end = self._t_restore if self._t_restore is not None else float("inf")
        after = [h for h in holds if self._cut_t is not None and self._cut_t <= h["t"] <= t_end and h["hold"]]
        first = after[0] if after else None
        hold_ms = (first["t"] - self._cut_t) * 1000.0 if first else None
        if first is not None:  # the hold's own cause: arm/state's first stop cause after the cut (20 Hz)
            causes = [h["cause"] for h in holds if h.get("source") == "arm/state" and h["t"] >= first["t"] - 0.06]
            first = {**first, "cause": causes[0] if causes else first.get("cause")}
        self.network_cut = {"host": host, "cut_s": CUT_S, "hold_after_ms": hold_ms,
                            "screw": result.id, "screw_status": result.status}
        if self._cut_t is None:
            detail = f"not injected: the drill never reached half depth (screw {result.status}: {result.reason})"
        else:
            detail = (f"hold {hold_ms:.0f} ms after the cut (robot side); " if hold_ms is not None else
                      "no hold seen on the robot side; ") + f"link back after {CUT_S:g} s; screw {result.status}"
        return FaultResult(f"cut:{host}", kind=f"cut:{host}", hold_after_ms=hold_ms,
                           detected=first is not None, arm_held=first is not None,
                           cause=(first.get("cause") or "arm command HOLD") if first else
                           ("no hold" if self._cut_t is not None else "cut not injected"), detail=detail)

    # ------------------------------------------------------------------ report
    def build_report(self, duration_s: float):
        report = super().build_report(duration_s)
        net = dict(self.network)
        if self.network_cut:
            net["cut"] = self.network_cut
        report.case["network"] = net
        out = self.cfg.out_dir
        data = json.loads((out / "report.json").read_text())
        data.setdefault("case", {})["network"] = net
        (out / "report.json").write_text(json.dumps(data, indent=2, default=float) + "\n")
        with open(out / "report.md", "a") as fh:
            fh.write("\n" + network_markdown(net))
        return report


def network_markdown(net: dict) -> str:
    lines = ["## The OR network (`--hosts`)", "",
             f"LAN {net.get('lan')} (virtual bridge, no physical interface), DDS domain {net.get('domain_id')}, "
             f"profile `{net.get('dds_profile')}`; injected: {net.get('inject') or 'nothing'}.", "",
             "| host | address | processes | DDS UDP datagrams in/out | OpenIGTLink TCP segments in/out |",
             "|---|---|---|---|---|"]
    for h, d in net.get("hosts", {}).items():
        procs = ", ".join(f"{p['label']} ({p['pid']})" for p in d["processes"])
        lines.append(f"| {h} | {d['ip']} | {procs} | {d['dds_udp_datagrams_in']}/{d['dds_udp_datagrams_out']} | "
                     f"{d['igtl_tcp_segments_in']}/{d['igtl_tcp_segments_out']} |")
    cut = net.get("cut")
    if cut:
        hold = cut["hold_after_ms"]
        lines += ["", f"Cut of `{cut['host']}` for {cut['cut_s']:g} s during {cut['screw']}: arm hold "
                      f"{'%.0f ms after the cut' % hold if hold is not None else 'not seen'}; screw {cut['screw_status']}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- robot-side hold probe
def read_probe(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def probe_main(out_path: str, max_duration_s: float = 1800.0) -> int:
    """Robot-side recorder: one JSON line per change of the arm's command stream (HOLD or not) and of
    arm/state's stop cause, stamped ``time.time()`` on arrival. Runs until SIGINT/SIGTERM."""
    import signal

    import rclpy
    from spine_nav_interfaces.msg import ArmState
    from trajectory_msgs.msg import JointTrajectory

    from spine_nav.nodes.qos import STATUS_QOS

    rclpy.init()
    node = rclpy.create_node("hold_probe")
    fh = open(out_path, "w")
    state = {"hold": None, "cause": ""}
    stop = threading.Event()

    def on_cmd(msg) -> None:
        hold = msg.header.frame_id == "hold"
        if hold != state["hold"]:
            state["hold"] = hold
            fh.write(json.dumps({"t": time.time(), "hold": hold, "cause": state["cause"]}) + "\n")
            fh.flush()

    def on_state(msg) -> None:
        if msg.stop_cause != state["cause"]:
            state["cause"] = msg.stop_cause
            fh.write(json.dumps({"t": time.time(), "hold": bool(msg.holding), "cause": msg.stop_cause,
                                 "source": "arm/state"}) + "\n")
            fh.flush()

    node.create_subscription(JointTrajectory, "arm/joint_command", on_cmd, STATUS_QOS)
    node.create_subscription(ArmState, "arm/state", on_state, STATUS_QOS)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    while not stop.is_set() and time.monotonic() - t0 < max_duration_s:
        rclpy.spin_once(node, timeout_sec=0.05)
    fh.close()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "probe":
        sys.exit(probe_main(sys.argv[2]))
    print("usage: python -m spine_nav.demo.hosts probe OUT.jsonl", file=sys.stderr)
    sys.exit(2)
