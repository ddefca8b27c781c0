"""Reference-array jump ("bump") detection: consecutive patient-reference samples that differ more than
breathing and tracker noise allow.

The patient reference array is screwed to the spine: it moves only physiologically (breathing, ~2 mm
at 0.25 Hz => peak speed 2*pi*f*A ~ 3 mm/s; the default bound ``max_speed_mm_s`` = 5 mm/s) and the
tracker adds 0.1-0.25 mm RMS noise. Between two consecutive samples ``dt`` apart (tracker time)
the translation of ``T_tracker_reference`` may therefore change by at most::

    limit_mm  = max(min_jump_mm, min(max_speed_mm_s * dt, max_drift_mm) + n_sigma * noise_mm)
    limit_deg = max(max_rotation_deg, n_sigma * sqrt(2) * noise_deg)

(``reference_jump_mm`` = ``min_jump_mm`` 1.0 mm, ``reference_jump_deg`` = 0.5 deg by default;
``max_drift_mm`` caps the allowance after a gap, e.g. an occluded reference: breathing cannot
move the array farther than its peak-to-peak excursion however long the gap; ``noise_mm`` and
``noise_deg`` are the 3D RMS noise of ONE reference sample's origin and orientation; measured on the
simulator's 4-marker array: 0.10/0.15/0.25 mm marker noise -> 0.07/0.10/0.17 mm and 0.07/0.10/0.17 deg,
so a 0.25 mm tracker needs ``noise_deg`` ~0.17 or the 0.5 deg rotation limit false-alarms). A larger step means
the array was knocked relative to the patient: every registration made with it is now wrong, so
the jump is reported once and the caller LATCHES the reference as lost until an explicit
:meth:`ReferenceJumpDetector.reset` (after re-registration).

Hand-written (a few lines of arithmetic) because it is a per-sample comparison on the bridge hot path
(no library offers it; scipy Rotation objects cost ~20 us each here, a numpy version measured 23 us per
sample, this plain-Python one ~11 us on the loaded 2-core machine). Units: mm, deg, s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spine_nav.tracking.native import frames as _frames


@dataclass(frozen=True)
class ReferenceJumpConfig:
    # metadata: the tracker_bridge parameter each field is (spine_nav.nodes.param_spec; name, unit, range)
    min_jump_mm: float = field(default=1.0, metadata={
        "ros_name": "reference_jump_mm", "unit": "mm", "range": (1e-6, None),
        "description": "reference step beyond max(this, speed x dt + n_sigma noise) latches TRACKING_LOST"})
    max_rotation_deg: float = field(default=0.5, metadata={
        "ros_name": "reference_jump_deg", "unit": "deg", "range": (1e-6, None),
        "description": "reference rotation step beyond max(this, n_sigma sqrt2 noise_deg) latches TRACKING_LOST"})
    max_speed_mm_s: float = field(default=5.0, metadata={  # physiological (breathing ~3 mm/s peak)
        "ros_name": "reference_max_speed_mm_s", "unit": "mm/s", "range": (0.0, None),
        "description": "physiological bound on the reference's speed"})
    max_drift_mm: float = 5.0       # cap of the speed allowance after a long gap (breathing peak-to-peak)
    noise_mm: float = field(default=0.25, metadata={
        "ros_name": "reference_noise_mm", "unit": "mm", "range": (0.0, None),
        "description": "tracker noise (3D RMS) of the reference origin, one sample"})
    noise_deg: float = field(default=0.1, metadata={
        "ros_name": "reference_noise_deg", "unit": "deg", "range": (0.0, None),
        "description": "tracker noise (3D RMS) of the reference orientation, one sample"})
    n_sigma: float = 4.0

    def __post_init__(self) -> None:
        for name in ("min_jump_mm", "max_rotation_deg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"reference jump detector: {name} must be > 0, got {getattr(self, name)}")
        for name in ("max_speed_mm_s", "max_drift_mm", "noise_mm", "noise_deg", "n_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"reference jump detector: {name} must be >= 0, got {getattr(self, name)}")

    def limit_mm(self, dt_s: float) -> float:
        """Largest translation step (mm) accepted between samples ``dt_s`` apart."""
        drift = min(self.max_speed_mm_s * max(dt_s, 0.0), self.max_drift_mm)
        return max(self.min_jump_mm, drift + self.n_sigma * self.noise_mm)

    @property
    def limit_deg(self) -> float:
        """Largest rotation step (deg) accepted between consecutive samples (step noise = sqrt(2) x sample noise)."""
        return max(self.max_rotation_deg, self.n_sigma * math.sqrt(2.0) * self.noise_deg)


@dataclass(frozen=True)
class ReferenceJump:
    """A detected jump: step sizes between the two samples and the human-readable reason."""

    translation_mm: float
    rotation_deg: float
    dt_s: float
    stamp_s: float

    @property
    def reason(self) -> str:
        return (f"reference array moved {self.translation_mm:.1f} mm / {self.rotation_deg:.1f} deg in "
                f"{self.dt_s * 1e3:.0f} ms: bumped? re-register before navigating")


def reference_step_py(P: list, R: list, dt: float, limits: tuple) -> tuple[float, float, bool]:
    """The step between two reference samples (first three rows of T_tracker_reference, mm) ``dt`` s apart and its
    verdict: (squared translation step mm^2, cosine of the rotation step clipped to [-1, 1], is it a jump) with
    ``limits`` = :attr:`ReferenceJumpDetector.step_limits`; the translation limit is
    :meth:`ReferenceJumpConfig.limit_mm` written with the same operations. The definition of
    ``_frames.reference_step`` (tests/test_native_frames.py: the same bits)."""
    max_speed_mm_s, max_drift_mm, min_jump_mm, noise_allowance_mm, cos_limit = limits
    p0, p1, p2 = P
    r0, r1, r2 = R
    d0, d1, d2 = r0[3] - p0[3], r1[3] - p1[3], r2[3] - p2[3]
    sq_mm = d0 * d0 + d1 * d1 + d2 * d2  # products, not ** 2 (libm pow may differ in the last bit)
    # relative rotation: cos(angle) = (trace(R0^T R) - 1) / 2, trace = sum of elementwise products (clipped
    # against rounding); written out: the generator/sum form cost 3x more per sample on the bridge's hot path
    c = (p0[0] * r0[0] + p0[1] * r0[1] + p0[2] * r0[2] + p1[0] * r1[0] + p1[1] * r1[1] + p1[2] * r1[2]
         + p2[0] * r2[0] + p2[1] * r2[1] + p2[2] * r2[2] - 1.0) / 2.0
    c = min(1.0, max(-1.0, c))
    limit_mm = max(min_jump_mm, min(max_speed_mm_s * max(dt, 0.0), max_drift_mm) + noise_allowance_mm)
    # not (a <= b) rather than a > b: a NaN step (non-finite input) counts as a jump
    return sq_mm, c, not (sq_mm <= limit_mm * limit_mm) or c < cos_limit


class ReferenceJumpDetector:
    """Feed every reference sample (``T_tracker_reference`` 4x4 mm, tracker stamp s) to :meth:`update`.

    Returns the :class:`ReferenceJump` for the first sample beyond the limits, then keeps
    ``latched`` (the jump) and returns None for later samples until :meth:`reset`. Not thread-safe
    (the caller, :class:`spine_nav.tracking.bridge.BridgeCore`, holds its lock).
    """

    def __init__(self, config: ReferenceJumpConfig | None = None) -> None:
        self.config = config or ReferenceJumpConfig()
        # the rotation test in cosine form: angle > limit <=> cos(angle) < cos(limit) (acos is decreasing
        # on [-1, 1]), so the accepted sample needs neither acos nor degrees (bridge hot path)
        cos_limit = math.cos(math.radians(min(self.config.limit_deg, 180.0)))  # constant (config is frozen)
        cfg = self.config
        #: (max_speed_mm_s, max_drift_mm, min_jump_mm, noise allowance mm = limit_mm's n_sigma x noise_mm term as it
        #: computes it, cos_limit): the arguments of :func:`reference_step_py` and its C twin
        self.step_limits = (cfg.max_speed_mm_s, cfg.max_drift_mm, cfg.min_jump_mm, cfg.n_sigma * cfg.noise_mm, cos_limit)
        self.latched: ReferenceJump | None = None
        #: the last reference sample (rows 0-2 of the 4x4 as lists, stamp s), None before one / after reset
        #: (read by the bridge's steady-frame path; changed only here)
        self.prev: tuple[list, float] | None = None
        self._max_sq_mm = 0.0  # largest accepted step since reset, squared (diagnostics: max_step_mm)
        self._min_cos = 1.0    # cosine of the largest accepted rotation step (diagnostics: max_step_deg)

    @property
    def max_step_mm(self) -> float:
        """Largest accepted translation step since the last reset (mm, diagnostics)."""
        return math.sqrt(self._max_sq_mm)

    @property
    def max_step_deg(self) -> float:
        """Largest accepted rotation step since the last reset (deg, diagnostics)."""
        return math.degrees(math.acos(self._min_cos))

    def update(self, T_tracker_reference: np.ndarray, stamp_s: float) -> ReferenceJump | None:
        return self.update_rows(np.asarray(T_tracker_reference, dtype=float)[:3].tolist(), stamp_s)

    def update_rows(self, R: list, stamp_s: float) -> ReferenceJump | None:
        """:meth:`update` with the transform's first three rows as lists (the bridge has them from validation)."""
        # plain-Python arithmetic on the 12 floats: ~5x cheaper than numpy calls on 4x4 arrays (bridge hot path)
        prev, self.prev = self.prev, (R, float(stamp_s))
        if prev is None or self.latched is not None:
            return None
        dt, sq_mm, c, jump = self._step(prev, R, stamp_s)
        if jump:
            self.latched = ReferenceJump(math.sqrt(sq_mm), math.degrees(math.acos(c)), dt, float(stamp_s))
            return self.latched
        self._note_step(sq_mm, c)
        return None

    def accept_steady(self, R: list, stamp_s: float, step: tuple[float, float]) -> None:
        """Commit a step the bridge's steady-frame path found within the limits (``_frames.steady_tip`` /
        ``steady_tip_py`` on :attr:`prev`, :attr:`latched` and :attr:`step_limits`): the state :meth:`update_rows`
        leaves for the same sample."""
        self.prev = (R, float(stamp_s))
        self._note_step(*step)

    def _step(self, prev: tuple, R: list, stamp_s: float) -> tuple[float, float, float, bool]:
        """(dt s, squared translation step mm^2, cosine of the rotation step clipped to [-1, 1], is it a jump):
        one C call (``_frames.reference_step``) when built, else :func:`reference_step_py`, which defines it."""
        rows, t0 = prev
        dt = float(stamp_s) - t0
        if _frames is None:
            return (dt, *reference_step_py(rows, R, dt, self.step_limits))
        return (dt, *_frames.reference_step(rows, R, dt, *self.step_limits))

    def _note_step(self, sq_mm: float, c: float) -> None:
        if sq_mm > self._max_sq_mm:
            self._max_sq_mm = sq_mm
        if c < self._min_cos:
            self._min_cos = c

    def reset(self) -> None:
        """Clear the latch and forget the last sample (call after re-registering to the moved array)."""
        self.latched, self.prev = None, None
        self._max_sq_mm, self._min_cos = 0.0, 1.0
