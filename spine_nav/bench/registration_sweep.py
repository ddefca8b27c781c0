"""`spine-nav bench registration --sweep`: the gate on a family of phantoms and deliberately wrong cases.

Cases (small: 3 consecutive levels, preop CT 1.2 mm, so a sweep of 20 seeds takes minutes):

* correct cases: every seed x every variant of :data:`VARIANTS` (CBCT voxel 0.5-1.5 mm, noise
  10-80 HU, blur, metal, a field-of-view crop, motion over the clinical range with breathing and
  manipulation, scoliosis 10-40 deg Cobb, morphometric sizes); each CBCT is also misplaced by
  exactly 30 deg / 50 mm (whole spine) so the global initialisation is exercised;
* wrong cases (:data:`WRONG_KINDS`) on separate seeds: a level label swapped with its neighbour,
  a level segmented one vertebra off, a CBCT of another patient, a start 30 deg / 50 mm off about
  an end level, half a level outside the FOV, heavy noise (800 HU), heavy metal (1500 HU streaks).

Each case runs through the pipeline once with the data-derived gate (default); the baseline
``OLD_FIXED_GATE`` (limits tuned on the one default phantom) judges the same fits
(:func:`~spine_nav.registration.pipeline.regate`: its checks on the recorded figures; the retry
pass the gate steers is not re-run).

Seeds: tuning seeds (``--tuning``; the gate's factors were set on them) and fresh seeds
(default) are disjoint ranges; the report uses fresh seeds.

Metrics (``metrics``: the data-derived gate; ``baselines.old_fixed_gate``: the old one):
* false_reject_rate: refused levels / levels of correct cases;
* bad_accepted_over_2mm: accepted levels of wrong cases with TRE > 2 mm (another patient's CBCT
  has no true transform: every accepted level counts);
* tre_p95_mm / tre_max_mm: over accepted levels of correct cases (screw entry and target points);
* time_per_level_median_s: the level's own time + its share of surface extraction and the
  whole-spine initialisation (file I/O and phantom generation excluded).
``details.roc``: false-reject rate and bad accepts when the residual factor (``rmse_per_edge``,
with ``p95_per_edge`` = 2x) is varied, recomputed from the recorded figures (the other checks'
outcomes held fixed), i.e. the operating curve the default factor was picked on.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

TUNING_SEED0, FRESH_SEED0 = 2000, 3000
WRONG_OFFSET = 500  # wrong cases use seed0 + 500 + i
OTHER_PATIENT_OFFSET = 50000
LEVEL_WINDOWS = (("L1", "L2", "L3"), ("L2", "L3", "L4"), ("L3", "L4", "L5"))
PREOP_VOXEL_MM = 1.2
#: variant -> (CBCT voxel mm, metal, PhantomVariation keyword arguments; callables get an rng)
VARIANTS: dict[str, tuple[float, bool, dict[str, Any]]] = {
    "default": (1.0, False, {}),
    "fine_0.5mm_10HU": (0.5, False, {"cbct_noise_hu": 10.0}),
    "external_0.9mm_35HU": (0.9, False, {"cbct_noise_hu": 35.0, "level_angle_deg": (0.0, 4.0),
                                         "level_offset_mm": (0.0, 3.0), "morphometry": True}),
    "noisy_1.2mm_60HU_motion6": (1.2, False, {"cbct_noise_hu": 60.0, "level_angle_deg": (0.0, 6.0),
                                              "level_offset_mm": (0.0, 5.0), "breathing_mm": 2.0,
                                              "manipulation_mm": 1.5, "morphometry": True}),
    "coarse_1.5mm_80HU_blur": (1.5, False, {"cbct_noise_hu": 80.0, "cbct_blur_sigma_vox": 1.0}),
    "metal": (1.0, True, {}),
    "fov_crop": (1.0, False, {"fov_z_margin_mm": 0.0, "fov_radius_scale": 0.95}),
    "scoliosis_10-40deg": (1.0, False, {"cobb_deg": "uniform(10,40)", "morphometry": True}),
}
WRONG_KINDS = ("label_swapped", "shifted_one_vertebra", "other_patient_cbct", "start_30deg_50mm",
               "half_level_outside_fov", "heavy_noise_800HU", "heavy_metal_1500HU")
HEAVY_NOISE_HU = 800.0
#: sweep sizes: the default form fits ~5 minutes on 2 idle cores (~6 CPU-s per case: ~3 s phantom
#: generation + ~2.4 s registration), ``--full`` is the issue's minimum (>= 20 seeds x the variants)
DEFAULT_SEEDS, DEFAULT_WRONG_SEEDS = 4, 1
FULL_SEEDS, FULL_WRONG_SEEDS = 20, 3


def add_arguments(p) -> None:
    p.add_argument("--sweep", action="store_true", help="the gate on the phantom family + wrong cases (minutes)")
    p.add_argument("--sweep-seeds", type=int, help=f"seeds per variant in --sweep (default {DEFAULT_SEEDS}; "
                   f"--full: {FULL_SEEDS})")
    p.add_argument("--wrong-seeds", type=int, help=f"seeds per wrong-case kind in --sweep (default {DEFAULT_WRONG_SEEDS}; "
                   f"--full: {FULL_WRONG_SEEDS})")
    p.add_argument("--full", action="store_true",
                   help=f"the issue's full sweep: {FULL_SEEDS} seeds x every variant + {FULL_WRONG_SEEDS} seeds x every "
                        "wrong kind (~20 CPU-minutes; the default is the ~5-minute form)")
    p.add_argument("--variants", help="comma-separated subset of the sweep's variants")
    p.add_argument("--tuning", action="store_true", help="run --sweep on the tuning seeds instead of fresh ones")
    p.add_argument("--jobs", type=int, default=2, help="parallel worker processes for --sweep (default 2)")
    p.add_argument("--from-partial", help="summarise the cases in an earlier sweep's OUT.partial.jsonl (no run)")


def _say(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _variation(name: str, seed: int):
    from spine_nav.imaging.phantom import PhantomVariation

    voxel, metal, kw = VARIANTS[name]
    rng = np.random.default_rng([seed, 5])
    out = {}
    for k, v in kw.items():
        if isinstance(v, str) and v.startswith("uniform("):
            lo, hi = (float(x) for x in v[8:-1].split(","))
            v = float(rng.uniform(lo, hi))
        out[k] = v
    return voxel, metal, PhantomVariation(**out)


def _case(root: Path, seed: int, voxel: float, metal: bool, variation, tag: str) -> dict[str, Any]:
    from spine_nav.bench.registration import _load_case
    from spine_nav.imaging.phantom import generate_case

    files = generate_case(root / tag, seed=seed, levels=LEVEL_WINDOWS[seed % 3], voxel_mm=PREOP_VOXEL_MM,
                          cbct_voxel_mm=voxel, metal=metal, variation=variation, overwrite=True)
    case = _load_case(files)
    case["centres"] = {lv: np.asarray(files.truth["levels"][lv]["body_centre_preop_mm"]) for lv in case["T"]}
    return case


def _wrong_inputs(kind: str, root: Path, seed: int) -> tuple[dict[str, Any], bool]:
    """(inputs, whether a true transform exists) of one wrong case."""
    from spine_nav.bench.registration import _misplaced
    from spine_nav.imaging.phantom import PhantomVariation
    from spine_nav.registration import badcases as bc

    if kind == "heavy_metal_1500HU":
        return _misplaced(_case(root, seed, 1.0, True, PhantomVariation(metal_streak_hu=1500.0), "w"), seed), True
    base = _case(root, seed, 1.0, False, PhantomVariation(), "w")
    if kind == "start_30deg_50mm":
        lv0 = next(iter(base["T"]))
        about = bc.level_centre_in_cbct(base["T"], base["centres"][lv0], lv0)
        T_mis = bc.whole_spine_misplacement(np.random.default_rng([seed, 3]), 30.0, 50.0, about)
        cbct, truth = bc.displaced_cbct(base["cbct"], T_mis, base["T"])
        return {**base, "cbct": cbct, "T": truth}, True
    case = _misplaced(base, seed)
    levels = list(case["T"])
    if kind == "label_swapped":
        return {**case, "labels": bc.swap_labels(case["labels"], 1, 2)}, True
    if kind == "shifted_one_vertebra":
        return {**case, "labels": bc.shift_label(case["labels"], 2, 3)}, True
    if kind == "other_patient_cbct":
        other = _case(root, seed + OTHER_PATIENT_OFFSET, 1.0, False, PhantomVariation(morphometry=True), "o")
        return {**case, "cbct": _misplaced(other, seed)["cbct"]}, False
    if kind == "half_level_outside_fov":
        c0 = bc.level_centre_in_cbct(case["T"], case["centres"][levels[0]], levels[0])
        c1 = bc.level_centre_in_cbct(case["T"], case["centres"][levels[1]], levels[1])
        return {**case, "cbct": bc.cut_fov(case["cbct"], c0, c1)}, True
    if kind == "heavy_noise_800HU":
        return {**case, "cbct": bc.noisy(case["cbct"], HEAVY_NOISE_HU, seed=seed)}, True
    raise ValueError(f"wrong-case kind {kind!r}")


def _register(inputs: dict[str, Any], gate, num_threads: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records per level for the data-derived ``gate`` and for ``OLD_FIXED_GATE`` judging the same fits."""
    from spine_nav.bench.registration import _tre
    from spine_nav.registration import RegistrationConfig, register_volumes
    from spine_nav.registration.config import OLD_FIXED_GATE
    from spine_nav.registration.pipeline import regate

    res = register_volumes(inputs["preop"], inputs["labels"], inputs["cbct"], inputs["plan"],
                           RegistrationConfig(gate=gate, num_threads=num_threads))
    n = len(res.levels)
    shared = res.timings_s["surfaces_s"] + res.timings_s["global_s"]
    shared_cpu = res.timings_s["surfaces_cpu_s"] + res.timings_s["global_cpu_s"]
    cq, pq = res.cbct_quality, res.preop_quality
    width = cq.get("edge_mm", float("nan")) + cq.get("surface_noise_mm", float("nan"))  # as the gate scales
    out = []
    for lv, r in res.levels.items():
        q = r.quality
        tre = fitted_tre = None
        if lv in res.fitted and lv in inputs["T"]:
            fitted_tre = float(max(_tre(inputs["plan"], lv, res.fitted[lv], inputs["T"][lv])))
        if r.T_cbct_preop is not None and lv in inputs["T"]:
            tre = float(max(_tre(inputs["plan"], lv, r.T_cbct_preop, inputs["T"][lv])))
        other_fail = [f for f in q.failures if not f.startswith(("inlier RMSE", "95 % of residuals"))]
        fov_only = [f for f in q.failures if not f.startswith("only") or "field of view" not in f]
        out.append({"level": lv, "accepted": bool(r.accepted), "reason": r.reason, "tre_max_mm": tre,
                    "fitted_tre_max_mm": fitted_tre,
                    "time_per_level_s": r.time_s + shared / n, "cpu_per_level_s": r.cpu_s + shared_cpu / n,
                    "rmse_mm": q.inlier_rmse_mm,
                    "p95_mm": q.residual_p95_mm, "width_mm": width, "fov_fraction": q.fov_fraction,
                    "fitness": q.fitness, "multistart_spread_mm": q.multistart_spread_mm,
                    "multistart_worse_minima": q.multistart_worse_minima, "retried_starts": q.retried_starts,
                    "metal_near": bool(q.metal_distance_mm <= gate.metal_radius_mm),
                    "other_checks_ok": not other_fail, "non_fov_checks_ok": not fov_only,
                    "noise_hu": cq.get("noise_hu"), "edge_mm": cq.get("edge_mm"),
                    "preop_edge_mm": pq.get("edge_mm")})
    old = []
    for rec, (lv, (ok, reason)) in zip(out, regate(res, OLD_FIXED_GATE).items()):
        tre = None
        if ok and lv in inputs["T"]:
            tre = float(max(_tre(inputs["plan"], lv, res.fitted[lv], inputs["T"][lv])))
        old.append({**rec, "accepted": ok, "reason": reason, "tre_max_mm": tre})
    return out, old


def _task(job: tuple[str, str, int, int]) -> dict[str, Any]:
    """One case (run in a worker process): ('correct', variant, seed) or ('wrong', kind, seed)."""
    from spine_nav.bench.registration import _misplaced
    from spine_nav.registration.config import GateThresholds

    kind, name, seed, threads = job
    c0 = time.process_time()
    root = Path(tempfile.mkdtemp(prefix="sweep_"))
    try:
        if kind == "correct":
            voxel, metal, var = _variation(name, seed)
            inputs, has_truth = _misplaced(_case(root, seed, voxel, metal, var, "c"), seed), True
        else:
            inputs, has_truth = _wrong_inputs(name, root, seed)
        out = {"kind": kind, "name": name, "seed": seed, "has_truth": has_truth}
        out["new"], out["old"] = _register(inputs, GateThresholds(), threads)
        out["cpu_s"] = time.process_time() - c0  # phantom generation + registration, this worker process
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _summary(cases: list[dict[str, Any]], gate: str) -> dict[str, Any]:
    correct = [lv for c in cases if c["kind"] == "correct" for lv in c[gate]]
    wrong = [(c, lv) for c in cases if c["kind"] == "wrong" for lv in c[gate]]
    tres = [lv["tre_max_mm"] for lv in correct if lv["accepted"] and lv["tre_max_mm"] is not None]
    refused = sum(not lv["accepted"] for lv in correct)
    bad = sum(1 for c, lv in wrong if lv["accepted"] and (not c["has_truth"] or lv["tre_max_mm"] is None
                                                          or lv["tre_max_mm"] > 2.0))
    times = [lv["time_per_level_s"] for lv in correct]
    cpus = [lv["cpu_per_level_s"] for lv in correct if "cpu_per_level_s" in lv]
    a = np.asarray(tres, float)
    return {
        "false_reject_rate": round(refused / len(correct), 4) if correct else None,
        "bad_accepted_over_2mm": int(bad),
        "tre_p95_mm": round(float(np.percentile(a, 95)), 4) if a.size else None,
        "tre_max_mm": round(float(a.max()), 4) if a.size else None,
        "time_per_level_median_s": round(float(np.median(times)), 4) if times else None,
        "cpu_per_level_median_s": round(float(np.median(cpus)), 4) if cpus else None,
        "correct_levels": len(correct), "correct_levels_refused": int(refused),
        "wrong_case_levels": len(wrong),
        "wrong_case_levels_refused": int(sum(not lv["accepted"] for _, lv in wrong)),
    }


def _per_group(cases: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(c["name"] for c in cases if c["kind"] == kind):
        sub = [c for c in cases if c["name"] == name and c["kind"] == kind]
        row: dict[str, Any] = {"cases": len(sub)}
        for gate in ("new", "old"):
            lvs = [(c, lv) for c in sub for lv in c[gate]]
            tres = np.asarray([lv["tre_max_mm"] for _, lv in lvs if lv["accepted"] and lv["tre_max_mm"] is not None])
            row[gate] = {
                "levels": len(lvs), "accepted": sum(lv["accepted"] for _, lv in lvs),
                "accepted_over_2mm": sum(1 for c, lv in lvs if lv["accepted"] and (
                    not c["has_truth"] or lv["tre_max_mm"] is None or lv["tre_max_mm"] > 2.0)),
                "tre_p95_mm": round(float(np.percentile(tres, 95)), 3) if tres.size else None,
                "tre_max_mm": round(float(tres.max()), 3) if tres.size else None,
            }
        row["cbct_noise_hu_measured"] = round(float(np.median([c["new"][0]["noise_hu"] for c in sub if c["new"]])), 1)
        row["cbct_edge_mm_measured"] = round(float(np.median([c["new"][0]["edge_mm"] for c in sub if c["new"]])), 3)
        refusals = [lv["reason"] for c in sub for lv in c["new"] if not lv["accepted"]]
        row["example_refusal"] = refusals[0][:160] if refusals else None
        rows[name] = row
    return rows


def _roc(cases: list[dict[str, Any]], factors=(0.10, 0.12, 0.14, 0.16, 0.18, 0.20, 0.25, 0.30, 0.40, 0.60)
         ) -> list[dict[str, Any]]:
    """False-reject rate / bad accepts vs the residual factor (other checks held at their outcome)."""
    from spine_nav.registration.config import GateThresholds

    g = GateThresholds()
    out = []
    for f in factors:
        refused = total = bad = 0
        for c in cases:
            for lv in c["new"]:
                if not math.isfinite(lv["rmse_mm"]) or not math.isfinite(lv["width_mm"]):
                    ok = False
                else:
                    m = g.metal_factor if lv["metal_near"] else 1.0
                    ok = (lv["other_checks_ok"] and lv["rmse_mm"] <= m * max(g.max_inlier_rmse_mm, f * lv["width_mm"])
                          and lv["p95_mm"] <= m * max(g.max_residual_p95_mm, 2 * f * lv["width_mm"]))
                if c["kind"] == "correct":
                    total += 1
                    refused += not ok
                elif ok and (not c["has_truth"] or lv["tre_max_mm"] is None or lv["tre_max_mm"] > 2.0):
                    bad += 1
        out.append({"rmse_per_edge": f, "false_reject_rate": round(refused / max(total, 1), 4),
                    "bad_accepted_over_2mm": bad})
    return out


def _roc_fov(cases: list[dict[str, Any]], limits=(0.5, 0.6, 0.65, 0.7, 0.75, 0.8)) -> list[dict[str, Any]]:
    """False-reject rate / bad accepts vs the field-of-view limit (other checks held at their outcome);
    also the largest TRE of a correct level that this limit would accept."""
    out = []
    for lim in limits:
        refused = total = bad = 0
        worst = 0.0
        for c in cases:
            for lv in c["new"]:
                if "fov_fraction" not in lv:
                    continue
                f = lv["fov_fraction"]
                ok = lv["non_fov_checks_ok"] and f is not None and math.isfinite(f) and f >= lim
                if c["kind"] == "correct":
                    total += 1
                    refused += not ok
                    if ok and lv["fitted_tre_max_mm"] is not None:
                        worst = max(worst, lv["fitted_tre_max_mm"])
                elif ok and (not c["has_truth"] or lv["fitted_tre_max_mm"] is None or lv["fitted_tre_max_mm"] > 2.0):
                    bad += 1
        out.append({"min_fov_fraction": lim, "false_reject_rate": round(refused / max(total, 1), 4),
                    "bad_accepted_over_2mm": bad, "tre_max_mm_of_accepted_correct": round(worst, 3)})
    return out


def table_markdown(per_variant: dict[str, Any], per_wrong: dict[str, Any]) -> str:
    lines = ["| case | levels | accepted (gate / old gate) | TRE p95 / max mm (gate) | measured noise HU / edge mm | accepted > 2 mm (gate / old) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for title, rows in (("", per_variant), ("wrong: ", per_wrong)):
        for name, r in rows.items():
            n, o = r["new"], r["old"]
            lines.append(f"| {title}{name} | {n['levels']} | {n['accepted']} / {o['accepted']} | "
                         f"{n['tre_p95_mm']} / {n['tre_max_mm']} | {r['cbct_noise_hu_measured']} / "
                         f"{r['cbct_edge_mm_measured']} | {n['accepted_over_2mm']} / {o['accepted_over_2mm']} |")
    return "\n".join(lines)


def run(args):
    from spine_nav.bench import BenchResult

    seed0 = TUNING_SEED0 if args.tuning else FRESH_SEED0
    names = [v.strip() for v in args.variants.split(",")] if args.variants else list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    full = bool(getattr(args, "full", False))
    n_seeds = args.sweep_seeds if args.sweep_seeds is not None else (FULL_SEEDS if full else DEFAULT_SEEDS)
    n_wrong = args.wrong_seeds if args.wrong_seeds is not None else (FULL_WRONG_SEEDS if full else DEFAULT_WRONG_SEEDS)
    jobs = max(1, int(args.jobs))
    threads = max(1, (os.cpu_count() or 2) // jobs)
    tasks = []  # seed by seed, wrong cases interleaved: an interrupted sweep still covers every kind
    for i in range(max(n_seeds, n_wrong)):
        tasks += [("correct", v, seed0 + i, threads) for v in names] if i < n_seeds else []
        tasks += [("wrong", k, seed0 + WRONG_OFFSET + i, threads) for k in WRONG_KINDS] if i < n_wrong else []
    _say(f"bench registration --sweep: {len(tasks)} cases on {'tuning' if args.tuning else 'fresh'} seeds "
         f"({jobs} worker(s) x {threads} thread(s))")
    t0, c0 = time.perf_counter(), time.process_time()
    cases = []
    if getattr(args, "from_partial", None):  # summarise the cases an earlier (interrupted) sweep wrote
        cases = [json.loads(line) for line in Path(args.from_partial).read_text().splitlines() if line.strip()]
        tasks = []
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        for i, c in enumerate(ex.map(_task, tasks, chunksize=1)):
            cases.append(c)
            if getattr(args, "out", None):  # progress survives an interrupted sweep
                with open(f"{args.out}.partial.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(c) + "\n")
            acc = sum(lv["accepted"] for lv in c["new"])
            _say(f"  [{i + 1}/{len(tasks)}] {c['kind']} {c['name']} seed {c['seed']}: {acc}/{len(c['new'])} accepted"
                 + "".join(f"; {lv['level']} refused: {lv['reason'][:110]}" for lv in c["new"] if not lv["accepted"]))
    per_variant, per_wrong = _per_group(cases, "correct"), _per_group(cases, "wrong")
    table = table_markdown(per_variant, per_wrong)
    _say(table)
    seeds = sorted({c["seed"] for c in cases if c["kind"] == "correct"})
    wseeds = sorted({c["seed"] for c in cases if c["kind"] == "wrong"})
    return BenchResult(
        bench="registration",
        metrics=_summary(cases, "new"),
        baselines={"old_fixed_gate": _summary(cases, "old")},
        env={"mode": "sweep", "seed_set": "tuning" if args.tuning else "fresh", "seeds": [seeds[0], seeds[-1]],
             "wrong_seeds": [wseeds[0], wseeds[-1]] if wseeds else [], "variants": names,
             "wrong_kinds": list(WRONG_KINDS), "levels_per_case": 3, "preop_voxel_mm": PREOP_VOXEL_MM,
             "misplacement": "30 deg / 50 mm added to every CBCT", "jobs": jobs, "threads_per_job": threads,
             "form": "full" if full else "default", "load_average_1_5_15": list(os.getloadavg()),
             "bench_wall_s": round(time.perf_counter() - t0, 1), "cases": len(cases),
             "bench_cpu_s": round(sum(c.get("cpu_s", 0.0) for c in cases), 1),
             "seeds_completed": len(seeds)},
        details={"per_variant": per_variant, "wrong_cases": per_wrong, "roc": _roc(cases),
                 "roc_fov": _roc_fov(cases), "table_markdown": table,
                 "refusals_of_correct_levels": [
                     {"case": f"{c['name']}/seed{c['seed']}/{lv['level']}", "reason": lv["reason"]}
                     for c in cases if c["kind"] == "correct" for lv in c["new"] if not lv["accepted"]]},
    )


