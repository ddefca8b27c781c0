"""Analytic lumbar vertebra shapes as signed distance functions (no ROS).

A vertebra is described in its own *local* frame (mm, LPS-oriented):
origin at the centre of the vertebral body, +x = patient's left, +y = posterior,
+z = superior. :func:`vertebra_sdf` returns an (approximate) signed distance in
mm, negative inside bone. The union of primitives (body, pedicles, lamina,
articular processes, transverse and spinous processes) minus the spinal canal
is written here with numpy because no maintained library offers anatomical
SDFs; everything is vectorised over point arrays so a whole volume renders in
seconds (see ``spine-nav bench phantom``).

Per-level sizes follow adult lumbar morphometry (clinical literature summarised in
docs/phantom.md): pedicle transverse width
8 mm (L1) to 18 mm (L5), medial angulation ~10 deg (L1) to ~27 deg (L5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

LUMBAR_LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")


@dataclass(frozen=True)
class LevelShape:
    """Sizes of one vertebra (mm, deg). ``pedicle_width_mm`` is per side (left, right)."""

    level: str
    body_radius_x_mm: float      # half the lateral width of the body
    body_radius_y_mm: float      # half the antero-posterior depth of the body
    body_height_mm: float
    pedicle_width_mm: tuple[float, float]  # transverse (isthmus) width, left and right
    pedicle_height_mm: float
    medial_angle_deg: float      # pedicle axis vs sagittal plane (converging anteriorly)
    canal_half_width_mm: float
    canal_depth_mm: float
    lamina_thickness_mm: float
    transverse_length_mm: float
    spinous_length_mm: float
    spinous_tilt_deg: float      # spinous process slope toward inferior
    disc_height_mm: float        # disc below this vertebra

    @property
    def posterior_wall_y_mm(self) -> float:
        """y of the (flattened) posterior wall of the body."""
        return 0.8 * self.body_radius_y_mm

    def pedicle_axis(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(point, unit direction) of the pedicle axis in the local frame.

        The point is the pedicle's centre where it meets the body's posterior
        wall; the direction points posteriorly (and laterally by the medial angle).
        """
        s = 1.0 if side == "left" else -1.0
        w = self.pedicle_width_mm[0 if side == "left" else 1]
        th = math.radians(self.medial_angle_deg)
        p0 = np.array([s * (self.canal_half_width_mm + 0.5 * w), self.posterior_wall_y_mm, 0.0])
        u = np.array([s * math.sin(th), math.cos(th), 0.0])
        return p0, u

    @property
    def pedicle_length_mm(self) -> float:
        """Pedicle length along its axis from the posterior body wall to the lamina."""
        return (self.canal_depth_mm + 0.5 * self.lamina_thickness_mm) / math.cos(math.radians(self.medial_angle_deg))

    @property
    def extent_mm(self) -> float:
        """Radius of a sphere around the local origin that contains the whole vertebra (and its disc)."""
        y_back = self.posterior_wall_y_mm + self.canal_depth_mm + self.lamina_thickness_mm + self.spinous_length_mm
        x_side = self.canal_half_width_mm + max(self.pedicle_width_mm) + self.pedicle_length_mm + \
            self.transverse_length_mm
        z = 0.5 * self.body_height_mm + self.disc_height_mm + 10.0
        return float(math.sqrt(y_back ** 2 + x_side ** 2 + z ** 2)) + 2.0


#: Nominal adult lumbar sizes (mm, deg); per-case variation is added by the phantom.
NOMINAL: dict[str, LevelShape] = {
    lv: LevelShape(lv, bx, by, bh, (pw, pw), ph, ma, ch, cd, 8.0, tl, sl, st, dh)
    for lv, bx, by, bh, pw, ph, ma, ch, cd, tl, sl, st, dh in (
        #      bx    by    bh    pw    ph    ma    ch    cd    tl    sl    st   disc
        ("L1", 20.0, 15.0, 24.0, 8.0, 15.0, 10.0, 11.0, 15.0, 16.0, 28.0, 22.0, 9.0),
        ("L2", 21.0, 15.5, 25.0, 9.0, 15.0, 13.0, 11.5, 15.0, 20.0, 30.0, 20.0, 10.0),
        ("L3", 22.5, 16.5, 26.0, 11.0, 14.5, 17.0, 12.0, 15.5, 25.0, 30.0, 18.0, 11.0),
        ("L4", 23.5, 17.0, 26.0, 14.0, 14.0, 22.0, 12.5, 16.0, 21.0, 27.0, 15.0, 12.0),
        ("L5", 25.0, 17.5, 25.0, 18.0, 13.5, 27.0, 13.0, 16.0, 19.0, 22.0, 10.0, 10.0),
    )
}


def varied_shape(level: str, rng: np.random.Generator) -> LevelShape:
    """The nominal shape of ``level`` with small seeded variation (incl. left/right asymmetry)."""
    if level not in NOMINAL:
        raise ValueError(f"level {level!r}: the phantom knows {', '.join(LUMBAR_LEVELS)}")
    n = NOMINAL[level]
    f = 1.0 + 0.03 * rng.uniform(-1, 1, size=4)
    pw = n.pedicle_width_mm[0] * (1.0 + 0.04 * rng.uniform(-1, 1, size=2))
    return replace(
        n,
        body_radius_x_mm=n.body_radius_x_mm * f[0], body_radius_y_mm=n.body_radius_y_mm * f[1],
        body_height_mm=n.body_height_mm * f[2], pedicle_width_mm=(float(pw[0]), float(pw[1])),
        transverse_length_mm=n.transverse_length_mm * f[3],
        medial_angle_deg=n.medial_angle_deg + float(rng.uniform(-1.0, 1.0)),
        spinous_tilt_deg=n.spinous_tilt_deg + float(rng.uniform(-3.0, 3.0)),
    )


# --- primitives (points are (N, 3) local mm) ---------------------------------------------------

def _extrude(d2: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Exact SDF of a 2D SDF ``d2`` extruded over ``|z| <= h`` where ``dz = |z| - h``."""
    out = np.sqrt(np.maximum(d2, 0.0) ** 2 + np.maximum(dz, 0.0) ** 2)
    return out + np.minimum(np.maximum(d2, dz), 0.0)


def sd_ellipse(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    """First-order signed distance to the ellipse (x/a)^2 + (y/b)^2 = 1 (exact on the axes at the boundary)."""
    k = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    g = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(k > 1e-6, (k - 1.0) * k / np.maximum(g, 1e-12), -min(a, b))
    return d


def sd_box(q: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Exact SDF of an axis-aligned box centred at the origin (q = points - centre)."""
    d = np.abs(q) - half
    return np.linalg.norm(np.maximum(d, 0.0), axis=1) + np.minimum(d.max(axis=1), 0.0)


def _rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _body(p: np.ndarray, sh: LevelShape, z0: float, hz: float, shrink: float = 1.0) -> np.ndarray:
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    d2 = sd_ellipse(x, y, sh.body_radius_x_mm * shrink, sh.body_radius_y_mm * shrink)
    d2 = np.maximum(d2, y - sh.posterior_wall_y_mm * shrink)  # flattened posterior wall (kidney-ish)
    return _extrude(d2, np.abs(z - z0) - hz)


def _pedicle(p: np.ndarray, sh: LevelShape, side: str) -> np.ndarray:
    p0, u = sh.pedicle_axis(side)
    n = np.array([u[1], -u[0], 0.0])  # transverse, in the axial plane
    q = p - p0
    t = q @ u
    v = q @ n
    w = sh.pedicle_width_mm[0 if side == "left" else 1]
    d2 = sd_ellipse(v, q[:, 2], 0.5 * w, 0.5 * sh.pedicle_height_mm)
    L = sh.pedicle_length_mm
    return _extrude(d2, np.abs(t - 0.5 * (L - 8.0)) - 0.5 * (L + 8.0))


def _posterior_elements(p: np.ndarray, sh: LevelShape) -> list[np.ndarray]:
    yw = sh.posterior_wall_y_mm
    y_lam = yw + sh.canal_depth_mm + 0.5 * sh.lamina_thickness_mm
    wmax = max(sh.pedicle_width_mm)
    lam_half_x = sh.canal_half_width_mm + 0.5 * wmax + 3.0
    h = sh.body_height_mm
    out = [sd_box(p - np.array([0.0, y_lam, -0.12 * h]), np.array([lam_half_x, 0.5 * sh.lamina_thickness_mm,
                                                                    0.42 * h])) - 1.0]
    # spinous process: a rounded plate from the lamina, sloping inferiorly
    R = _rot_x(-sh.spinous_tilt_deg)  # local spinous axes -> vertebra axes
    c = np.array([0.0, y_lam, -0.1 * h]) + R @ np.array([0.0, 0.5 * sh.spinous_length_mm, 0.0])
    q = (p - c) @ R  # = R^T (p - c)
    out.append(sd_box(q, np.array([2.2, 0.5 * sh.spinous_length_mm, 4.5])) - 1.5)
    for side, s in (("left", 1.0), ("right", -1.0)):
        p0, u = sh.pedicle_axis(side)
        pend = p0 + sh.pedicle_length_mm * u  # pedicle-lamina junction
        tl = sh.transverse_length_mm
        # transverse process: lateral from the junction, slightly anterior
        out.append(sd_box(p - (pend + np.array([s * 0.5 * tl, -3.0, 1.0])), np.array([0.5 * tl, 2.5, 3.5])) - 1.0)
        # superior articular process (up, lateral) and inferior articular process (down, medial)
        sup = p - (pend + np.array([s * 1.5, 2.0, 0.5 * h + 1.0]))
        out.append(_extrude(np.sqrt(sup[:, 0] ** 2 + sup[:, 1] ** 2) - 3.5, np.abs(sup[:, 2]) - 5.0))
        inf = p - (pend + np.array([-s * 6.5, 5.0, -0.5 * h - 1.0]))
        out.append(_extrude(np.sqrt(inf[:, 0] ** 2 + inf[:, 1] ** 2) - 3.0, np.abs(inf[:, 2]) - 6.0))
    return out


def canal_sdf(p: np.ndarray, sh: LevelShape) -> np.ndarray:
    """SDF of the spinal canal (an elliptic tube along z), negative inside the canal."""
    yc = sh.posterior_wall_y_mm + 0.5 * sh.canal_depth_mm
    return sd_ellipse(p[:, 0], p[:, 1] - yc, sh.canal_half_width_mm, 0.5 * sh.canal_depth_mm)


def vertebra_sdf(p_local: np.ndarray, sh: LevelShape) -> np.ndarray:
    """Signed distance (mm, < 0 inside bone) of local points (N, 3) to the vertebra ``sh``."""
    p = np.asarray(p_local, dtype=np.float64)
    parts = [_body(p, sh, 0.0, 0.5 * sh.body_height_mm), _pedicle(p, sh, "left"), _pedicle(p, sh, "right")]
    parts += _posterior_elements(p, sh)
    d = parts[0]
    for q in parts[1:]:
        d = np.minimum(d, q)
    return np.maximum(d, -canal_sdf(p, sh))


def disc_sdf(p_local: np.ndarray, sh: LevelShape) -> np.ndarray:
    """SDF of the intervertebral disc just below vertebra ``sh`` (local frame of ``sh``)."""
    p = np.asarray(p_local, dtype=np.float64)
    z0 = -0.5 * sh.body_height_mm - 0.5 * sh.disc_height_mm
    return _body(p, sh, z0, 0.5 * sh.disc_height_mm + 0.5, shrink=0.96)
