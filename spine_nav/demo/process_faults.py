"""Process faults in the demo (`spine-nav demo --inject kill:NODE`): a stack process dies mid-drilling.

Layout: with a ``kill:`` injection every node runs in its own process, as ``launch/spine_nav.launch.py``
starts them (tracker_bridge, trajectory_guard, arm_guide, registration, and the simulated tracker
sim_tracker; only the MuJoCo arm stays in the demo process, which reads its truth). The simulated
tracker in its own process gets the wall time of its sample 0 (``t0_wall_s``), so a respawned one
continues the same timeline, and the demo keeps a replica of its model for the truth (static pose +
breathing; noise and tremor do not enter the truth).

What happens on ``kill:NODE`` (:meth:`ProcessFaults.inject`): SIGKILL to the node's process group; the
:class:`~spine_nav.demo.processes.Supervisor` (polling every 10 ms) reports it on
``supervisor/process_lost`` (diagnostic_msgs/DiagnosticStatus, also on ``/diagnostics``): the arm guide
holds with cause "process lost (process NODE (...) killed by SIGKILL)". When the arm guide itself is
killed, nothing can tell it anything: the simulated arm's own command watchdog (``sim_arm``
``command_timeout_s``, 80 ms) holds it. ``hold_after_ms`` = injection -> the arm holding (sim_arm's
first hold after the kill: a ``hold`` command from the arm guide, or its watchdog), both on this
machine's monotonic clock. Then (:meth:`ProcessFaults.recover`) the supervisor respawns the process
(backoff 0.5 s), the demo waits until the stack is healthy again (every process up, a fresh guard
status that is not TRACKING_LOST/NO_PLAN on the active screw, a fresh arm state, services up), registers
again when the registration node was the one restarted (its registered plan died with it), and the
caller resumes the arm explicitly and finishes the case.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from spine_nav.demo.processes import NodeProcess, ProcessEvent, Supervisor, exit_text
from spine_nav.demo.report import FaultResult

#: Nodes ``--inject kill:NODE`` may kill (each in its own process in the kill layout).
KILLABLE = ("tracker_bridge", "trajectory_guard", "arm_guide", "registration", "sim_tracker")
#: Killable nodes whose death does not stop the arm (docs/safety.md, "Which inputs and processes are
#: safety-relevant"): reported on /diagnostics and in the report, restarted, the arm keeps guiding.
NOT_SAFETY_RELEVANT = ("registration",)
NO_HOLD_WATCH_S = 0.5      # after such a kill: the arm must not hold within this window (checked, reported)
HOLD_WAIT_S = 2.0          # bounded waits for the detection / the hold / the cause after a kill
RESPAWN_WAIT_S = 30.0
HEALTHY_WAIT_S = 60.0


def parse_inject(text: str) -> str:
    """``kill:NODE`` -> itself, validated; ValueError naming the input otherwise."""
    kind, _, node = text.partition(":")
    if kind != "kill" or node not in KILLABLE:
        raise ValueError(f"--inject {text!r}: expected kill:NODE with NODE one of {', '.join(KILLABLE)}")
    return f"kill:{node}"


def fault_handled(f: FaultResult) -> bool:
    """The fault was handled as it should be: the arm held (or, for the death of a process that is not
    safety-relevant, kept guiding and the death was detected), and it was not left unrecovered."""
    node = (f.kind or "").partition(":")[2] if (f.kind or "").startswith("kill:") else ""
    ok = (f.detected and not f.arm_held) if node in NOT_SAFETY_RELEVANT else f.arm_held
    return ok and f.recovered is not False


def stack_processes(args: list[str], logs: Path, rt: int, sim_rt: int, split: bool) -> list[NodeProcess]:
    """The demo's stack processes. ``split``: one per node incl. the simulated tracker (the kill layout);
    else bridge + guard composed (in-process tool samples), the arm guide, the registration."""
    if not split:
        return [NodeProcess("navigation", ["tracker_bridge", "trajectory_guard"], args, logs / "navigation.log",
                            rt_priority=rt),
                NodeProcess("arm", ["arm_guide"], args, logs / "arm_guide.log", rt_priority=rt),
                NodeProcess("registration", ["registration"], args, logs / "registration.log", safety_relevant=False)]
    return [NodeProcess(n, [n], args, logs / f"{n}.log", rt_priority=rt)
            for n in ("tracker_bridge", "trajectory_guard", "arm_guide")] + [
        NodeProcess("registration", ["registration"], args, logs / "registration.log", safety_relevant=False),
        NodeProcess("sim_tracker", ["sim_tracker"], args, logs / "sim_tracker.log", rt_priority=sim_rt)]


def replica_tracker_model(params_file: Path, T_tracker_reference, rate_hz: float, t0_s: float):
    """The simulated tracker's model as the child process builds it (for the truth only: static pose +
    breathing from config/nodes.yaml's sim_tracker section, sample 0 at wall time ``t0_s``)."""
    import yaml

    from spine_nav.sim.tracker import TrackerModel, TrackerModelConfig

    p = (yaml.safe_load(Path(params_file).read_text()).get("sim_tracker") or {}).get("ros__parameters") or {}
    cfg = TrackerModelConfig(rate_hz=rate_hz, T_tracker_reference=T_tracker_reference,
                             breathing_amplitude_mm=float(p.get("breathing_amplitude_mm", 2.0)),
                             breathing_hz=float(p.get("breathing_hz", 0.25)))
    return TrackerModel(cfg, t0_s=t0_s)


def process_lost_publisher(node) -> Callable[[ProcessEvent], None]:
    """Supervisor ``on_lost`` callback: ``/diagnostics`` for every lost process (ERROR when it is
    safety-relevant, else WARN), ``supervisor/process_lost`` (which holds the arm) only for the
    safety-relevant ones."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from spine_nav.nodes.qos import STATUS_QOS

    lost_pub = node.create_publisher(DiagnosticStatus, "supervisor/process_lost", STATUS_QOS)
    diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def publish(event: ProcessEvent) -> None:
        level = DiagnosticStatus.ERROR if event.safety_relevant else DiagnosticStatus.WARN
        st = DiagnosticStatus(level=level, name=f"spine_nav/supervisor/{event.label}",
                              hardware_id="supervisor", message=event.message,
                              values=[KeyValue(key="nodes", value=",".join(event.nodes)),
                                      KeyValue(key="returncode", value=str(event.returncode)),
                                      KeyValue(key="safety_relevant", value=str(event.safety_relevant).lower())])
        if event.safety_relevant:
            lost_pub.publish(st)
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = node.get_clock().now().to_msg()
        diag_pub.publish(arr)

    return publish


class ProcessFaults:
    """Kill a node's process, measure the hold, wait for the stack to be healthy again."""

    def __init__(self, supervisor: Supervisor, procs: list[NodeProcess], sim_arm, log: Callable[[str], None],
                 register_again: Callable[[int], None]) -> None:
        self.sup, self.sim_arm, self.log = supervisor, sim_arm, log
        self.by_node = {n: p for p in procs for n in p.nodes}
        self.register_again = register_again
        self._registrations = 1
        self.t_inj = 0.0  # monotonic time of the last injection

    def inject(self, kind: str, c) -> FaultResult:
        """Kill (SIGKILL) the process of ``kind`` = ``kill:NODE``; bounded waits for the supervisor's
        detection, the arm's hold and its cause. ``recovered`` is left None (see :meth:`recover`)."""
        node = parse_inject(kind).split(":", 1)[1]
        proc = self.by_node[node]
        n_holds = len(self.sim_arm.hold_events)
        self.log(f"      injecting: SIGKILL to process {proc.label} ({', '.join(proc.nodes)}), pid {proc.proc.pid}")
        wall_inj, t_inj = time.time(), time.monotonic()
        self.t_inj = t_inj
        proc.kill()
        if not proc.safety_relevant:
            return self._inject_not_safety_relevant(kind, proc, c, t_inj, n_holds)
        deadline = t_inj + HOLD_WAIT_S
        hold = None
        while time.monotonic() < deadline:
            holds = [h for h in self.sim_arm.hold_events[n_holds:] if h[0] >= t_inj]
            if holds:
                hold = holds[0]
                break
            time.sleep(0.002)
        lost = self.sup.events_since(t_inj, "lost", proc.label)
        if not lost:
            c.wait_for(lambda: bool(self.sup.events_since(t_inj, "lost", proc.label)), HOLD_WAIT_S)
            lost = self.sup.events_since(t_inj, "lost", proc.label)
        detected_ms = (lost[0].t_mono - t_inj) * 1e3 if lost else None
        if node == "arm_guide":
            cause = (f"sim_arm command watchdog: no arm/joint_command for {self.sim_arm.command_timeout_s * 1e3:.0f} ms "
                     f"(process {proc.label} {exit_text(lost[0].returncode) if lost else 'silent'})")
        else:
            def held_state():
                return next((m for t, m in reversed(c.rec.arm_states) if t >= wall_inj and m.holding), None)

            c.wait_for(lambda: held_state() is not None, HOLD_WAIT_S)
            st = held_state()
            cause = st.stop_cause if st is not None else "arm did not report a hold"
            if lost and proc.label not in cause:  # another detector was first (e.g. the guard's watchdog)
                cause += f"; supervisor: {lost[0].message}"
        hold_ms = (hold[0] - t_inj) * 1e3 if hold else None
        fault = FaultResult(kind, detected=bool(lost), arm_held=hold is not None, cause=cause,
                            detail=(f"supervisor: {lost[0].message} after {detected_ms:.1f} ms; " if lost else
                                    "supervisor: not detected; ")
                            + (f"arm held by {'its command watchdog' if hold[1] == 'watchdog' else 'a hold command'}"
                               if hold else "arm not held"),
                            kind=kind, hold_after_ms=hold_ms, recovered=None)
        self.log(f"      {kind}: detected={fault.detected} ({_ms(detected_ms)} ms) arm_held={fault.arm_held} "
                 f"({_ms(hold_ms)} ms) cause={cause}")
        return fault

    def _inject_not_safety_relevant(self, kind: str, proc, c, t_inj: float, n_holds: int) -> FaultResult:
        """A process the arm does not depend on while guiding died: it must be reported (supervisor,
        /diagnostics) and must not stop the arm: no hold naming it within NO_HOLD_WATCH_S. A hold with
        another cause meanwhile (a loaded machine's stale sample) is not this fault's and is only noted."""
        wall_inj = time.time() - (time.monotonic() - t_inj)
        c.wait_for(lambda: bool(self.sup.events_since(t_inj, "lost", proc.label)), HOLD_WAIT_S)
        lost = self.sup.events_since(t_inj, "lost", proc.label)
        c.wait_for(lambda: time.monotonic() > t_inj + NO_HOLD_WATCH_S, NO_HOLD_WATCH_S + 1.0)
        holds = [h for h in self.sim_arm.hold_events[n_holds:] if h[0] >= t_inj]
        causes = sorted({m.stop_cause for t, m in c.rec.arm_states if t >= wall_inj and m.holding})
        ours = [x for x in causes if proc.label in x or x.startswith("process lost")]
        detected_ms = (lost[0].t_mono - t_inj) * 1e3 if lost else None
        cause = (f"process lost, reported only (not safety-relevant while guiding): {lost[0].message}" if lost
                 else f"process {proc.label}: not detected")
        if ours:
            arm = f"arm held by this fault ({'; '.join(ours)}): not expected"
        elif holds:
            arm = (f"arm kept guiding as far as this fault goes; an unrelated stop meanwhile: "
                   f"{'; '.join(causes) or 'a hold'}")
        else:
            arm = f"arm kept guiding (no hold within {NO_HOLD_WATCH_S * 1e3:.0f} ms)"
        detail = (f"supervisor: {lost[0].message} after {detected_ms:.1f} ms, on /diagnostics (WARN); "
                  if lost else "supervisor: not detected; ") + arm
        fault = FaultResult(kind, detected=bool(lost), arm_held=bool(ours), cause=cause, detail=detail,
                            kind=kind, hold_after_ms=(holds[0][0] - t_inj) * 1e3 if ours and holds else None,
                            recovered=None)
        self.log(f"      {kind}: detected={fault.detected} ({_ms(detected_ms)} ms) arm_held={fault.arm_held} "
                 f"cause={cause}; {arm}")
        return fault

    def recover(self, fault: FaultResult, c, screw_id: str) -> tuple[bool, str]:
        """Wait (bounded) for the respawn and a healthy stack; register again after a registration restart."""
        node = fault.kind.split(":", 1)[1]
        proc = self.by_node[node]
        t0, t_inj = time.monotonic(), self.t_inj
        if not c.wait_for(lambda: bool(self.sup.events_since(t_inj, "respawned", proc.label))
                          and self.sup.healthy(), RESPAWN_WAIT_S):
            return False, f"process {proc.label} not respawned within {RESPAWN_WAIT_S:.0f} s"
        if node == "registration":
            # Its service is in the ROS graph twice for a while (the dead server stays until its DDS lease
            # expires), so the graph cannot say when the new one listens; a request sent before is lost.
            # The new process says so itself ("ready: service registration/register").
            if not c.wait_for(lambda: "ready: service registration/register" in proc.output_since_start(),
                              RESPAWN_WAIT_S, period_s=0.05):
                return False, f"respawned registration not ready within {RESPAWN_WAIT_S:.0f} s"
            time.sleep(0.5)  # discovery of the new server by the demo's client (localhost: well under 0.5 s)
            self._registrations += 1
            self.log("      the registration node lost its registered plan with its process: registering again")
            self.register_again(self._registrations)
        ok, why = self.wait_healthy(c, screw_id)
        fault.recovered = ok
        fault.detail += f"; stack healthy again after {time.monotonic() - t0:.1f} s" if ok else f"; {why}"
        self.log(f"      {fault.kind}: " + (f"stack healthy again after {time.monotonic() - t0:.1f} s" if ok else why))
        return ok, why

    def wait_healthy(self, c, screw_id: str, timeout_s: float = HEALTHY_WAIT_S) -> tuple[bool, str]:
        """Every process up, fresh guard status on ``screw_id`` that is not TRACKING_LOST/NO_PLAN (re-selects
        the screw on a restarted guard), fresh arm state, arm and guard services up. Bounded."""
        deadline = time.monotonic() + timeout_s
        why = "not checked"
        last_select = 0.0
        while time.monotonic() < deadline:
            now = time.time()
            st = c.rec.statuses[-1] if c.rec.statuses else None
            arm = c.rec.arm_states[-1] if c.rec.arm_states else None
            if not self.sup.healthy():
                why = "a stack process is down"
            elif st is None or now - st.received_s > 0.3:
                why = "no fresh guard status"
            elif arm is None or now - arm[0] > 0.5:
                why = "no fresh arm state"
            elif not (c.arm_cli.service_is_ready() and c.select_cli.service_is_ready()):
                why = "arm/command or guard/select_screw not up"
            elif st.screw_id != screw_id:
                why = f"guard follows {st.screw_id or 'no screw'}"
                if time.monotonic() - last_select > 0.5:
                    last_select = time.monotonic()
                    try:
                        c.select_screw(screw_id)
                    except TimeoutError as exc:
                        why = str(exc)
            elif st.state in ("TRACKING_LOST", "NO_PLAN"):
                why = f"guard {st.state} ({st.reason})"
            else:
                return True, ""
            time.sleep(0.05)
        return False, f"stack not healthy within {timeout_s:.0f} s: {why}"


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"
