"""The arm guide as a node hosts it: the hand-over between input callbacks and the servo thread (no ROS).

:class:`GuideHost` creates the :class:`spine_nav.arm.controller.ArmGuide` at the first joint feedback (the
guide starts where the arm is; reference samples that came before are kept and handed over then), keeps
the latest joint feedback for the servo thread, the plan for ``arm/command``, and tells each servo cycle
which tracker sample it answers and whether a hold has just begun (so the node sends that command now).
Clocks: every ``t_s`` is the servo's clock (time.monotonic).
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from spine_nav.arm.commands import execute
from spine_nav.arm.controller import ArmGuide, ArmGuideConfig
from spine_nav.arm.kinematics import ArmKinematics


class GuideHost:
    def __init__(self, kin: ArmKinematics, T_tracker_robotbase: np.ndarray, config: ArmGuideConfig) -> None:
        self.kin, self.config = kin, config
        self._T_tracker_robotbase = T_tracker_robotbase
        self._lock = threading.Lock()
        self._feedback: tuple[np.ndarray, np.ndarray, float] | None = None
        self._pending_reference: list = []
        self._new_reference_stamp: Any = None  # stamp of a reference sample the servo has not answered yet
        self._was_holding = False  # servo thread only
        self.guide: ArmGuide | None = None
        self.plan = None
        self.not_navigable: dict[str, str] = {}

    def on_reference(self, T_tracker_reference: np.ndarray, t_s: float, stamp: Any) -> None:
        """A tracker sample of the patient reference; ``stamp`` comes back from :meth:`cycle` once answered."""
        if self.guide is None:
            self._pending_reference = [(T_tracker_reference, t_s)]
            return
        self.guide.on_reference(T_tracker_reference, t_s)
        with self._lock:
            self._new_reference_stamp = stamp

    def on_joint_state(self, q_rad: np.ndarray, qd_rad_s: np.ndarray, t_s: float) -> None:
        with self._lock:
            self._feedback = (q_rad, qd_rad_s, t_s)
        if self.guide is None:
            self.guide = ArmGuide(self.kin, self._T_tracker_robotbase, self.config, q0_rad=q_rad)
            for T, t in self._pending_reference:
                self.guide.on_reference(T, t)

    def cycle(self, t_s: float) -> tuple[bool, Any]:
        """One servo step (servo thread). Returns (a hold began in this cycle and no sample is answered,
        the stamp of the reference sample this cycle answers or None)."""
        with self._lock:
            fb = self._feedback
            answered, self._new_reference_stamp = self._new_reference_stamp, None
        if self.guide is None or fb is None:
            return False, None
        holding = self.guide.step(t_s, fb[0], fb[1], fb[2]).holding
        hold_began = holding and not self._was_holding and answered is None
        self._was_holding = holding
        return hold_began, answered

    def command(self, command: str, screw_id: str, t_s: float) -> tuple[bool, str]:
        """``arm/command`` (:func:`spine_nav.arm.commands.execute`)."""
        return execute(self.guide, command, screw_id, self.plan, self.not_navigable, t_s)
