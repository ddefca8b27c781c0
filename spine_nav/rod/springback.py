"""Rod materials: minimum bend radius and springback of a three-point bend, per material and diameter.

Material data (minimum values of the implant-grade standards; stated, not measured here):

======  ===================================  =========  ===========  ============
key     material (standard)                  E (GPa)    yield (MPa)  elongation
======  ===================================  =========  ===========  ============
ti      Ti-6Al-4V ELI (ASTM F136)            114        795          10 %
cocr    Co-28Cr-6Mo warm worked (ASTM F1537)  230        827          12 %
ss      316L cold worked (ASTM F138)         193        690          12 %
======  ===================================  =========  ===========  ============

Springback model (assumption, textbook elastic-perfectly-plastic beam; e.g. Hosford & Caddell,
*Metal Forming*, ch. "Bending"): a bend made plastic carries the fully plastic moment
``M_p = sigma_y d^3 / 6`` of a round section (diameter ``d``). When the bender releases, the bent
zone unloads elastically from ``M_p`` over its effective length ``L_b`` (the bender's die span,
assumed :data:`BEND_ZONE_MM` = 10 mm), so every plastic bend loses the same angle

    springback = M_p L_b / (E I) = 32 sigma_y L_b / (3 pi E d)       (I = pi d^4 / 64)

independent of the bend's size (no strain hardening). Hence ``commanded = bend + springback`` for
a bend > 0, and a command <= springback leaves the rod straight. Values (5.5 / 6.0 mm): ti 2.47 /
2.26 deg, cocr 1.27 / 1.17 deg, ss 1.26 / 1.16 deg: titanium springs back about twice as much as
cobalt-chromium or steel, as reported clinically. A real bender should be calibrated (bend a test
rod, measure, set ``springback_deg`` per material); the model is the default until then.

Minimum bend radius (assumption): the outer fibre's strain ``d / (2 R)`` stays below half the
material's elongation at break, ``R_min = d / elongation`` (ti 55 / 60 mm, cocr and ss 45.8 / 50 mm
for 5.5 / 6.0 mm rods).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from spine_nav.rod import RodError

#: Effective length (mm) of the bent zone of a three-point bender (die span); an assumption.
BEND_ZONE_MM = 10.0
#: Rod diameters (mm) the material table is stated for.
DIAMETERS_MM: tuple[float, ...] = (5.5, 6.0)


@dataclass(frozen=True)
class Material:
    key: str
    name: str
    youngs_modulus_gpa: float
    yield_strength_mpa: float
    elongation: float  # at break, fraction


MATERIALS: dict[str, Material] = {
    "ti": Material("ti", "Ti-6Al-4V ELI (ASTM F136)", 114.0, 795.0, 0.10),
    "cocr": Material("cocr", "CoCrMo warm worked (ASTM F1537)", 230.0, 827.0, 0.12),
    "ss": Material("ss", "316L stainless steel, cold worked (ASTM F138)", 193.0, 690.0, 0.12),
}


@dataclass(frozen=True)
class RodStock:
    """A rod material and diameter with its derived bending limits."""

    material: Material
    diameter_mm: float
    springback_deg: float
    min_bend_radius_mm: float

    def commanded_deg(self, bend_deg: float) -> float:
        """Angle to command so that the rod keeps ``bend_deg`` after springback (0 stays 0)."""
        if bend_deg < 0:
            raise ValueError(f"bend_deg: must be >= 0, got {bend_deg}")
        return 0.0 if bend_deg == 0.0 else bend_deg + self.springback_deg

    def residual_deg(self, commanded_deg: float) -> float:
        """Angle the rod keeps after the bender releases ``commanded_deg`` (the forward model)."""
        return max(0.0, commanded_deg - self.springback_deg)


def rod_stock(material: str, diameter_mm: float, springback_deg: float | None = None) -> RodStock:
    """The :class:`RodStock` for a material key and diameter; RodError names an unknown one."""
    if material not in MATERIALS:
        raise RodError(f"--material {material!r}: unknown (known: {', '.join(MATERIALS)})")
    d = float(diameter_mm)
    if not any(abs(d - k) < 1e-9 for k in DIAMETERS_MM):
        raise RodError(f"--diameter-mm {d:g}: unknown rod diameter (known: "
                       f"{', '.join(f'{k:g}' for k in DIAMETERS_MM)} mm)")
    m = MATERIALS[material]
    if springback_deg is None:
        sb = math.degrees(32.0 * m.yield_strength_mpa * BEND_ZONE_MM / (3.0 * math.pi * m.youngs_modulus_gpa * 1e3 * d))
    else:
        sb = float(springback_deg)
    return RodStock(m, d, sb, d / m.elongation)
