"""Per-vertebra CBCT-to-preop registration with a quality gate (pure core, no ROS).

Frames and units: preop points are in ``PreopCT`` (LPS mm); CBCT points are in the
frame of the CBCT volume's affine (``Reference``, LPS mm). Every transform a level
returns is ``T_cbct_preop`` (maps PreopCT mm to CBCT/Reference mm) and is returned
only when the quality gate accepted it.
"""
from spine_nav.registration.config import GateThresholds, RegistrationConfig  # noqa: F401
from spine_nav.registration.pipeline import (  # noqa: F401
    CaseRegistration,
    LevelResult,
    RegistrationError,
    register_case,
    register_volumes,
)
