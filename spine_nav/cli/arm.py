"""`spine-nav arm ...`: the arm model and its hand-eye calibration (simulator).

* ``spine-nav arm urdf OUT.urdf [--force]``: expand ``urdf/spine_arm.urdf.xacro`` (for tools that want a URDF file).
* ``spine-nav arm calibrate [--poses N] [--noise-mm S] [--json]``: hand-eye calibration motion in MuJoCo,
  prints T_tracker_robotbase as ``tracker_robotbase_xyz_mm`` / ``tracker_robotbase_quat_xyzw`` (the
  ``arm_guide`` parameters) and the residual.
* ``spine-nav arm check [--urdf FILE --base-link L --flange-link L ...] --case DIR [--json]``: base
  placement + static and breathing alignment of every planned screw in MuJoCo (:mod:`spine_nav.sim.arm_check`).

The ``--urdf ...`` options (:func:`spine_nav.arm.description.add_description_arguments`; also taken by ``bench arm``) select any
robot description (:mod:`spine_nav.arm.description`); without ``--urdf``: our own arm.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from spine_nav.arm.description import add_description_arguments, description_from_args
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
    k = acts.add_parser("check", help="can this arm guide the case's screws? (base placement + MuJoCo alignment)")
    add_description_arguments(k)
    k.add_argument("--case", required=True, help="case folder with plan.json (from `spine-nav phantom`)")
    k.add_argument("--standoff-mm", type=float, default=25.0)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--json", action="store_true", help="print one JSON object")
    k.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from spine_nav.sim.arm_check import check_arm
    from spine_nav.arm.kinematics import ArmKinematics
    from spine_nav.plan import PlanError
    from spine_nav.plan.io import load_plan

    try:
        arm = description_from_args(args)
    except ValueError as exc:
        return fail(str(exc))
    try:
        plan = load_plan(Path(args.case) / "plan.json")
    except PlanError as exc:
        return fail(f"--case: {exc}")
    kin = ArmKinematics(arm)
    info(f"arm check: {arm.source} ({arm.dof} axes: {', '.join(arm.joint_names)}), {len(plan.screws)} screws")
    res = check_arm(kin, plan, standoff_mm=args.standoff_mm, seed=args.seed, robot=str(args.urdf or "spine_arm"),
                    log=lambda m: info(f"  {m}"))
    out = res.to_dict()
    if args.json:
        print_json(out)
    else:
        for k, v in out.items():
            if k != "screws":
                print(f"{k:24s} {v}")
        for s in out["screws"]:
            print(f"  {s['screw_id']:10s} " + (f"static {s['static_error_mm']:.3f} mm / {s['static_error_deg']:.3f} deg, "
                                               f"breathing RMS {s['breathing_error_rms_mm']:.3f} mm"
                                               if s["reachable"] else f"not reachable: {s['reason']}"))
    return 0


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
    from spine_nav.sim.scenario import handeye_in_sim
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
