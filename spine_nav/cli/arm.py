"""`spine-nav arm ...`: the arm model and its hand-eye calibration (simulator).

* ``spine-nav arm urdf OUT.urdf [--force]``: expand ``urdf/spine_arm.urdf.xacro`` (for tools that want a URDF file).
* ``spine-nav arm calibrate [--poses N] [--noise-mm S] [--json]``: hand-eye calibration motion in MuJoCo,
  prints T_tracker_robotbase as ``tracker_robotbase_xyz_mm`` / ``tracker_robotbase_quat_xyzw`` (the
  ``arm_guide`` parameters) and the residual.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from spine_nav.cli.common import fail, info, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("arm", help="arm model (URDF) and hand-eye calibration in the simulator")
    acts = p.add_subparsers(dest="arm_action", metavar="ACTION")
    acts.required = True
    u = acts.add_parser("urdf", help="write the URDF expanded from urdf/spine_arm.urdf.xacro")
    u.add_argument("out", help="output .urdf path")
    u.add_argument("--force", action="store_true", help="overwrite an existing file")
    u.set_defaults(func=_urdf)
    c = acts.add_parser("calibrate", help="hand-eye calibration (robot base in the tracker) in MuJoCo")
    c.add_argument("--poses", type=int, default=30, help="calibration poses (>= 3)")
    c.add_argument("--noise-mm", type=float, default=0.1, help="tracker noise on the arm marker (RMS mm)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=_calibrate)


def _urdf(args: argparse.Namespace) -> int:
    from spine_nav.arm.model import load_arm_model
    from spine_nav.plan.io import write_text_safely

    out = Path(args.out)
    try:
        xml = load_arm_model().urdf_xml
    except ValueError as exc:
        return fail(str(exc), 1)
    try:
        write_text_safely(out, xml, overwrite=args.force)
    except FileExistsError as exc:
        return fail(str(exc))
    info(f"wrote {out}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from spine_nav.arm.kinematics import ArmKinematics
    from spine_nav.arm.model import load_arm_model
    from spine_nav.arm.scenario import handeye_in_sim
    from spine_nav.geometry import transform_difference, transform_to_quat
    from spine_nav.sim.arm import MujocoArm, default_scene

    if args.poses < 3:
        return fail(f"--poses: need at least 3, got {args.poses}")
    if not args.noise_mm >= 0:
        return fail(f"--noise-mm: must be >= 0, got {args.noise_mm}")
    scene = default_scene()
    kin = ArmKinematics(load_arm_model())
    info(f"hand-eye: {args.poses} poses, marker noise {args.noise_mm} mm RMS")
    he = handeye_in_sim(MujocoArm(kin.arm, T_tracker_robotbase=scene.T_tracker_robotbase), kin,
                        scene.q_home_rad, n_poses=args.poses, noise_mm=args.noise_mm, seed=args.seed)
    q, t = transform_to_quat(he.T_tracker_robotbase, order="xyzw")
    err_mm, err_deg = transform_difference(he.T_tracker_robotbase, scene.T_tracker_robotbase)
    out = {"tracker_robotbase_xyz_mm": [float(v) for v in t], "tracker_robotbase_quat_xyzw": [float(v) for v in q],
           "residual_rms_mm": he.residual_rms_mm, "residual_max_mm": he.residual_max_mm, "n_poses": he.n_poses,
           "error_vs_sim_truth_mm": err_mm, "error_vs_sim_truth_deg": err_deg}
    if args.json:
        print_json(out)
    else:
        for k, v in out.items():
            print(f"{k:28s} {v}")
    return 0
