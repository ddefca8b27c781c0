"""The drive in front of the simulated arm: how a position-streaming controller turns commands into motion
(no ROS).

:class:`StreamedPositionDrive` applies streamed joint positions to a :class:`spine_nav.sim.arm.MujocoArm`
like a robot driver: a first-order hold between the streamed positions (the command period measured, 1-50 ms),
a setpoint that moves at most 90 % of the joint velocity limit per physics step (a late, bursty command
stream must not become a velocity spike), and its own watchdog: a command older than
``command_timeout_s`` is dropped and the arm holds where it is (when the arm guide's process dies, this
holds the arm). Physics runs in real time: each :meth:`tick` steps as many ``sim.dt_s`` steps as wall time
has passed, at most ``max_steps`` (falling behind shifts the clock instead of catching up in a burst).
``hold_events`` records (time, "watchdog" | "command") for every hold: the watchdog's, and the first
command marked holding after moving ones. Times in seconds on one monotonic clock.
"""
from __future__ import annotations

import numpy as np

from spine_nav.sim.arm import MujocoArm

#: fraction of the joint velocity limit the setpoint may move per physics step
SETPOINT_VELOCITY_FRACTION = 0.9
#: bounds of the measured command period used for the first-order hold (s)
MIN_COMMAND_PERIOD_S, MAX_COMMAND_PERIOD_S, DEFAULT_COMMAND_PERIOD_S = 1e-3, 0.05, 0.004


class StreamedPositionDrive:
    def __init__(self, sim: MujocoArm, command_timeout_s: float, max_steps: int, t0_s: float) -> None:
        self.sim, self.command_timeout_s, self.max_steps = sim, command_timeout_s, max_steps
        self._max_step_rad = SETPOINT_VELOCITY_FRACTION * sim.arm.velocity_limit_rad_s * sim.dt_s
        self._t0, self._steps = t0_s, 0
        self._last_cmd_s: float | None = None
        self._cmd_period_s = DEFAULT_COMMAND_PERIOD_S
        self._q_from: np.ndarray | None = None
        self._q_to: np.ndarray | None = None
        self._cmd_holding = False
        #: (time, "watchdog" | "command"): when the arm started holding, and why
        self.hold_events: list[tuple[float, str]] = []

    def command(self, q_rad: np.ndarray, holding: bool, now_s: float) -> None:
        """Stream ``q_rad`` (chain order, finite: the caller checks); ``holding``: the sender marked it a hold."""
        if holding and not self._cmd_holding:
            self.hold_events.append((now_s, "command"))
        self._cmd_holding = holding
        if self._last_cmd_s is not None:
            self._cmd_period_s = min(MAX_COMMAND_PERIOD_S, max(MIN_COMMAND_PERIOD_S, now_s - self._last_cmd_s))
        self._q_from = self._setpoint(now_s)
        self._q_to = q_rad
        self._last_cmd_s = now_s

    def _setpoint(self, now_s: float) -> np.ndarray:
        """The interpolated command now (first-order hold between streamed positions, like a driver)."""
        if self._q_to is None:
            return self.sim.state()[1]
        a = min(1.0, (now_s - self._last_cmd_s) / self._cmd_period_s) if self._last_cmd_s else 1.0
        return self._q_from + a * (self._q_to - self._q_from)

    def tick(self, now_s: float) -> bool:
        """Step the physics up to ``now_s``; True when the watchdog has just dropped a stale command."""
        stale = self._last_cmd_s is not None and now_s - self._last_cmd_s > self.command_timeout_s
        if stale:
            _, q, _ = self.sim.state()
            self._q_from = self._q_to = q  # watchdog: hold where the arm is
            self._last_cmd_s = None
            self.hold_events.append((now_s, "watchdog"))
        due = int((now_s - self._t0) / self.sim.dt_s) - self._steps
        n = max(0, min(due, self.max_steps))
        if due > self.max_steps:  # fell behind (CPU): do not try to catch up in a burst
            self._t0 += (due - n) * self.sim.dt_s
        if n:
            q_ctrl = self._setpoint(now_s)
            ctrl = self.sim.data.ctrl.copy()
            for _ in range(n):
                ctrl += np.clip(q_ctrl - ctrl, -self._max_step_rad, self._max_step_rad)
                self.sim.command(ctrl)
                self.sim.step()
            self._steps += n
        return stale
