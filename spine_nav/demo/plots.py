"""PNG plots of a simulated case (matplotlib, offscreen Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spine_nav.demo.report import CaseReport  # noqa: E402

#: Guard states bottom (harmless) to top (stop), with the colours the console uses.
STATE_ORDER = ["NO_PLAN", "APPROACH", "ALIGNED", "WARN", "VIOLATION", "TRACKING_LOST"]
STATE_COLOURS = {"NO_PLAN": "#9e9e9e", "APPROACH": "#2196f3", "ALIGNED": "#4caf50", "WARN": "#ffb300",
                 "VIOLATION": "#e53935", "TRACKING_LOST": "#6a1b9a"}


def plot_deviation(report: CaseReport, path: Path) -> Path:
    """Per-screw entry, tip and angular error bars with the demo's targets as lines."""
    placed = [s for s in report.screws if s.status == "placed"]
    ids = [s.id for s in placed]
    x = np.arange(len(ids))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax1.bar(x - 0.2, [s.entry_error_mm for s in placed], 0.4, label="entry error (mm)")
    ax1.bar(x + 0.2, [s.tip_error_mm for s in placed], 0.4, label="tip error (mm)")
    ax1.axhline(0.5, color="C0", ls="--", lw=0.8, label="entry target (mean) 0.5 mm")
    ax1.axhline(1.0, color="C1", ls="--", lw=0.8, label="tip target (max) 1.0 mm")
    ax1.set_xticks(x, ids, rotation=45, ha="right")
    ax1.set_ylabel("mm")
    ax1.legend(fontsize=7)
    ax1.set_title("Placement error vs plan")
    ax2.bar(x, [s.angular_error_deg for s in placed], 0.5, color="C2")
    ax2.axhline(0.5, color="C2", ls="--", lw=0.8, label="target (mean) 0.5 deg")
    ax2.set_xticks(x, ids, rotation=45, ha="right")
    ax2.set_ylabel("deg")
    ax2.legend(fontsize=7)
    ax2.set_title("Angular error vs plan")
    for ax in (ax1, ax2):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_guard_states(times_s: Sequence[float], states: Sequence[str], screw_ids: Sequence[str],
                      path: Path) -> Path:
    """Guard state over the case (one point per status message), shaded by the active screw."""
    fig, ax = plt.subplots(figsize=(11, 3.2))
    t = np.asarray(times_s, dtype=float)
    if len(t):
        t = t - t[0]
        y = [STATE_ORDER.index(s) if s in STATE_ORDER else -1 for s in states]
        ax.scatter(t, y, s=2, c=[STATE_COLOURS.get(s, "k") for s in states])
        # label each screw's span
        start = 0
        for i in range(1, len(screw_ids) + 1):
            if i == len(screw_ids) or screw_ids[i] != screw_ids[start]:
                if screw_ids[start]:
                    ax.axvspan(t[start], t[i - 1], alpha=0.06, color="k")
                    ax.text((t[start] + t[i - 1]) / 2, len(STATE_ORDER) - 0.4, screw_ids[start], ha="center",
                            fontsize=7)
                start = i
    ax.set_yticks(range(len(STATE_ORDER)), STATE_ORDER)
    ax.set_ylim(-0.5, len(STATE_ORDER))
    ax.set_xlabel("time in case (s)")
    ax.set_title("Trajectory guard state per tracker sample")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(status_latency_s: Sequence[float], command_latency_s: Sequence[float], path: Path,
                 status_received_s: Sequence[float] = (), command_received_s: Sequence[float] = ()) -> Path:
    """Histograms of tracker-sample-time -> guard status / arm command published (the nodes' own records;
    dashed lines: their targets) and, as outlines, the same as received by the demo's recorder."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for vals, label, colour, filled in ((status_latency_s, "guard status published", "C0", True),
                                        (command_latency_s, "arm command published", "C1", True),
                                        (status_received_s, "status received by recorder", "C0", False),
                                        (command_received_s, "command received by recorder", "C1", False)):
        v = np.asarray(vals, dtype=float) * 1e3
        if len(v):
            ax.hist(v, bins=60, alpha=0.6 if filled else 0.9, color=colour, histtype="bar" if filled else "step",
                    label=f"{label} (p99 {np.percentile(v, 99):.2f} ms, n={len(v)})")
    ax.axvline(2.0, color="C0", ls="--", lw=0.8)
    ax.axvline(3.0, color="C1", ls="--", lw=0.8)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("samples")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("End-to-end latency from the tracker's sample time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_screw_slices(ct, plan, placed: dict, path: Path, window=(-250.0, 1250.0)) -> Path:
    """One oblique slice per placed screw (plane through the planned axis and patient left-right),
    planned screw in orange, placed screw in cyan, PreopCT frame."""
    from spine_nav.plan.render import oblique_slice

    ids = [s.id for s in plan.screws if s.id in placed]
    cols = min(5, len(ids))
    rows = int(np.ceil(len(ids) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sid in zip(axes.flat, ids):
        s = plan.screw(sid)
        d = s.direction
        perp = np.cross(d, [0.0, 0.0, 1.0])
        perp = perp / np.linalg.norm(perp)
        mid = 0.5 * (s.entry_mm + s.target_mm)
        half_u = 0.5 * s.depth_mm + 12.0
        img = oblique_slice(ct, mid, d, perp, half_u, 18.0, pixel_mm=0.5)
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], origin="lower",
                  extent=(-half_u, half_u, -18.0, 18.0))
        r = 0.5 * s.diameter_mm
        e, t = -0.5 * s.depth_mm, 0.5 * s.depth_mm
        ax.plot([e, t, t, e, e], [-r, -r, r, r, -r], color="tab:orange", lw=1.0, label="plan")
        tip, axis = placed[sid]
        u = np.asarray(axis) / np.linalg.norm(axis)
        ent = np.asarray(tip) - s.depth_mm * u
        proj = lambda p: (float(np.dot(p - mid, d)), float(np.dot(p - mid, perp)))  # noqa: E731
        (a0, b0), (a1, b1) = proj(ent), proj(np.asarray(tip))
        ax.plot([a0, a1], [b0, b1], color="cyan", lw=1.2, label="placed")
        ax.set_title(sid, fontsize=8)
        ax.axis("on")
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6, loc="upper right")
    fig.suptitle("Placed (cyan) vs planned (orange) screws on the preop CT", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
