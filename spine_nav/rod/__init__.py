"""Patient-specific spinal rods: seats from screws, contour, bending instructions, verification.

Pure core (numpy/scipy, no ROS). All coordinates in millimetres in the frame of the plan the
screws come from (PreopCT LPS for phantom and demo cases); angles in degrees.

* :mod:`~spine_nav.rod.seats`: the rod seat (tulip head centre) of each screw, per side, cranial first.
* :mod:`~spine_nav.rod.contour`: a smooth 3D curve through the seats with overhangs.
* :mod:`~spine_nav.rod.springback`: materials, minimum bend radius and springback per material/diameter.
* :mod:`~spine_nav.rod.bending`: three-point bender instructions and their forward simulation.
* :mod:`~spine_nav.rod.design`: one rod from seats to checked instructions (:func:`design_rod`).
* :mod:`~spine_nav.rod.export`: rods.json, the instruction sheet, the PNG and the STL.
"""
from __future__ import annotations


class RodError(ValueError):
    """Bad input for a rod; the message names the screws (or field) concerned."""
