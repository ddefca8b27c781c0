"""Progress over the kept sessions (no ROS): text, JSON and an HTML page with plots (matplotlib).

Per attempt (oldest first): its screws with grades and errors, the share graded A, mean tip error
(mm) and mean angular error (deg) of its placed screws. The page has the grade distribution (per
trainee) and the error per attempt over time, plus the leaderboard and the attempt table. Proxy grades
(cases without ground truth) are marked as such wherever they appear.
"""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

GRADES = ("A", "B", "C", "D", "E")


def _mean(vals) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def progress(attempts: Sequence[dict[str, Any]], leaderboard: Sequence[dict[str, Any]],
             trainee: str | None = None) -> dict[str, Any]:
    out_attempts = []
    counts: dict[str, dict[str, int]] = {}
    for a in attempts:
        placed = [s for s in a["screws"] if s["status"] == "placed"]
        c = counts.setdefault(a["trainee"], {g: 0 for g in GRADES})
        for s in placed:
            if s["gr_grade"] in c:
                c[s["gr_grade"]] += 1
        out_attempts.append({
            "id": a["id"], "trainee": a["trainee"], "started": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                            time.gmtime(a["started_s"])),
            "started_s": a["started_s"], "status": a["status"], "mode": a["mode"], "source": a["source"],
            "case": {"case_dir": a["case_dir"], "seed": a["seed"], "variant": a["variant"],
                     "ground_truth": a["ground_truth"]},
            "tool_samples": a["tool_samples"],
            "screws": [{k: s[k] for k in ("screw_id", "level", "status", "gr_grade", "grade_basis", "breach_mm",
                                          "entry_error_mm", "tip_error_mm", "angular_error_deg", "time_to_place_s",
                                          "guard_violations", "depth_overruns")} for s in a["screws"]],
            "grade_a_share": (sum(s["gr_grade"] == "A" for s in placed) / len(placed)) if placed else None,
            "mean_tip_error_mm": _mean(s["tip_error_mm"] for s in placed),
            "mean_angular_error_deg": _mean(s["angular_error_deg"] for s in placed),
            "proxy_graded": any(s["grade_basis"] == "proxy" for s in placed),
        })
    board = [b for b in leaderboard if trainee is None or b["trainee"] == trainee] if trainee else list(leaderboard)
    return {"trainee": trainee, "attempts": out_attempts, "grade_counts": counts, "leaderboard": board,
            "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def _f(v, d: int = 2) -> str:
    return "—" if v is None else f"{v:.{d}f}"


def text_report(rep: dict[str, Any]) -> str:
    lines = []
    who = rep["trainee"] or "all trainees"
    lines.append(f"Training progress ({who}): {len(rep['attempts'])} attempt(s)")
    for a in rep["attempts"]:
        grades = "".join(s["gr_grade"] or "-" for s in a["screws"] if s["status"] == "placed") or "-"
        lines.append(f"  #{a['id']:<4d} {a['started']}  {a['trainee']:12s} {a['case']['variant']:12s} {a['status']:10s}"
                     f" screws {len(a['screws'])} grades {grades}  A {_f(a['grade_a_share'] and 100 * a['grade_a_share'], 0)}%"
                     f"  tip {_f(a['mean_tip_error_mm'])} mm  angle {_f(a['mean_angular_error_deg'])} deg"
                     + ("  [PROXY grades]" if a["proxy_graded"] else ""))
    if rep["leaderboard"]:
        lines.append("Leaderboard (share of grade A, then mean tip error):")
        for i, b in enumerate(rep["leaderboard"], 1):
            share = None if b["grade_a_share"] is None else 100 * b["grade_a_share"]
            lines.append(f"  {i}. {b['trainee']:12s} {b['screws']} screws, A {_f(share, 0)}%, "
                         f"tip {_f(b['mean_tip_error_mm'])} mm, {b['attempts']} attempt(s)")
    return "\n".join(lines)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(rep: dict[str, Any]) -> dict[str, str]:
    """{name: base64 PNG}: grade distribution per trainee, error per attempt over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = sorted(rep["grade_counts"])
    w = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        ax.bar(np.arange(len(GRADES)) + i * w - 0.4 + w / 2, [rep["grade_counts"][n][g] for g in GRADES], w, label=n)
    ax.set_xticks(range(len(GRADES)), GRADES)
    ax.set_xlabel("Gertzbein-Robbins grade")
    ax.set_ylabel("screws")
    ax.set_title("Grade distribution")
    if names:
        ax.legend(fontsize=8)
    out["grades"] = _png(fig)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax2 = ax.twinx()
    for n in names:
        atts = [a for a in rep["attempts"] if a["trainee"] == n and a["mean_tip_error_mm"] is not None]
        x = list(range(1, len(atts) + 1))
        ax.plot(x, [a["mean_tip_error_mm"] for a in atts], "o-", label=f"{n}: tip (mm)")
        ax2.plot(x, [a["mean_angular_error_deg"] for a in atts], "s--", alpha=0.6, label=f"{n}: angle (deg)")
    ax.set_xlabel("attempt (in time order)")
    ax.set_ylabel("mean tip error (mm)")
    ax2.set_ylabel("mean angular error (deg)")
    ax.set_title("Error per attempt over time")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    if h1:
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    out["errors"] = _png(fig)
    return out


def write_html(rep: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    imgs = plots(rep)
    e = html.escape
    rows = []
    for a in rep["attempts"]:
        grades = " ".join(f"{e(s['screw_id'])}:{e(s['gr_grade'] or '-')}{'*' if s['grade_basis'] == 'proxy' else ''}"
                          for s in a["screws"])
        rows.append(f"<tr><td>{a['id']}</td><td>{e(a['started'])}</td><td>{e(a['trainee'])}</td>"
                    f"<td>{e(str(a['case']['variant']))} (seed {a['case']['seed']})</td><td>{e(a['status'])}</td>"
                    f"<td>{grades}</td><td>{_f(a['mean_tip_error_mm'])}</td><td>{_f(a['mean_angular_error_deg'])}</td></tr>")
    board = "".join(f"<tr><td>{i}</td><td>{e(b['trainee'])}</td><td>{b['screws']}</td>"
                    f"<td>{_f(None if b['grade_a_share'] is None else 100 * b['grade_a_share'], 0)} %</td>"
                    f"<td>{_f(b['mean_tip_error_mm'])}</td><td>{b['attempts']}</td></tr>"
                    for i, b in enumerate(rep["leaderboard"], 1))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>spine_nav training report</title>
<style>body{{font-family:sans-serif;margin:1.5em;background:#111;color:#ddd}} table{{border-collapse:collapse}}
td,th{{border:1px solid #444;padding:3px 8px;font-size:13px}} img{{background:#fff;margin:6px}}</style></head><body>
<h1>Training progress — {e(rep['trainee'] or 'all trainees')}</h1>
<p>{len(rep['attempts'])} attempt(s); generated {e(rep['generated'])}. Grades: Gertzbein-Robbins against the
phantom's cortex; <b>*</b> = PROXY grade (case without ground truth: tip lateral deviation beyond 1 mm).</p>
<img id="plot-grades" alt="grade distribution" src="data:image/png;base64,{imgs['grades']}">
<img id="plot-errors" alt="error per attempt over time" src="data:image/png;base64,{imgs['errors']}">
<h2>Leaderboard</h2><table id="leaderboard"><tr><th>#</th><th>trainee</th><th>screws</th><th>grade A</th>
<th>mean tip error (mm)</th><th>attempts</th></tr>{board}</table>
<h2>Attempts</h2><table id="attempts"><tr><th>id</th><th>started (UTC)</th><th>trainee</th><th>case</th><th>status</th>
<th>screws: grade</th><th>mean tip (mm)</th><th>mean angle (deg)</th></tr>{''.join(rows)}</table>
</body></html>
"""
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(doc)
    return p
