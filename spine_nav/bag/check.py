"""`spine-nav bag check`: re-run the trajectory guard over a bag's tool samples and compare its decisions
with the recorded ``guard/status``, message by message (a regression test for guard changes).

Inputs replayed into a fresh :class:`spine_nav.guard.TrajectoryGuard`, in the order the guard saw them:

* its config: the bag's ``spine_nav/guard_config`` metadata record (written by the demo), else the
  ``trajectory_guard`` parameters of ``config/nodes.yaml``, overridable by the caller;
* ``plan/registered`` (applied when the recorder received it, before the next status computed later;
  earlier when a recorded status shows that the guard already had a plan while the re-run guard has none
  yet: on a loaded machine the recorder may receive the plan after the guard's first verdicts on it);
* ``tracking/health`` (applied by its header stamp: the bridge's clock, the same system clock the guard
  stamps its statuses with), filtered by the guard's ``health_tools`` as the node does;
* the screw selection (a service call, not on a topic): taken from the status' ``active_screw_id``;
* per recorded status, in publish order: if it is the first status for a recorded tool sample
  (``tool_sample_stamp``), the sample is judged with ``now`` = the status' ``header.stamp`` (the guard's
  clock when it took the sample in) and compared: same state, every metric within ``tol_mm`` (NaN
  equal to NaN); else it is a watchdog / tracker-health status, replayed with ``report_lost`` (it moves
  the guard's debounce as it did live) and not compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spine_nav.bag.reader import BagError, read_bag
from spine_nav.guard import GuardConfig, TrajectoryGuard
from spine_nav.guard.core import has_no_plan
from spine_nav.resources import share_path

METRIC_FIELDS = ("lateral_error_mm", "entry_offset_mm", "angular_error_deg", "depth_mm", "remaining_mm",
                 "predicted_tip_error_mm")
GUARD_CONFIG_METADATA = "spine_nav/guard_config"
DEFAULT_PARAMS = share_path("config", "nodes.yaml")
HEALTH_TOOLS = frozenset({"stylus", "reference"})  # the guard node's default ``health_tools``


@dataclass
class CheckResult:
    statuses: int = 0
    compared: int = 0
    agreed: int = 0
    replayed_lost: int = 0
    unmatched: int = 0  # statuses whose sample is not in the bag (not judged)
    repeats: int = 0  # heartbeat repeats of the last verdict (GuardStatus.repeat): not compared
    max_metric_diff_mm: float = 0.0
    first_disagreements: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    truncated: bool = False

    @property
    def agreement(self) -> float:
        return self.agreed / self.compared if self.compared else 0.0

    def to_dict(self) -> dict:
        return {"statuses": self.statuses, "compared": self.compared, "agreed": self.agreed,
                "agreement": self.agreement, "replayed_lost_statuses": self.replayed_lost, "heartbeat_repeats": self.repeats,
                "statuses_without_recorded_sample": self.unmatched, "max_metric_diff_mm": self.max_metric_diff_mm,
                "first_disagreements": self.first_disagreements, "bag_truncated": self.truncated,
                "guard_config": self.config}


def guard_config_for(metadata: dict, params_file: str | Path | None = None, overrides: dict | None = None) -> GuardConfig:
    """The guard config a bag was recorded with (see module doc), then ``overrides``."""
    import json

    if GUARD_CONFIG_METADATA in metadata:
        data = {k: json.loads(v) for k, v in metadata[GUARD_CONFIG_METADATA].items()}
    else:
        p = Path(params_file or DEFAULT_PARAMS)
        y = yaml.safe_load(p.read_text()) or {}
        params = (y.get("trajectory_guard") or {}).get("ros__parameters") or {}
        names = set(GuardConfig().to_dict())
        data = {k: v for k, v in params.items() if k in names}
    data.update(overrides or {})
    return GuardConfig.from_mapping(data)


def _ns(t) -> int:
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


def _same(a: float, b: float, tol: float) -> tuple[bool, float]:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b), 0.0
    d = abs(a - b)
    return d <= tol, d


def check_bag(path: str | Path, params_file: str | Path | None = None, overrides: dict | None = None,
              tol_mm: float = 1e-6, max_reported: int = 10) -> CheckResult:
    """Re-run the guard over the bag at ``path``; raises :class:`BagError` if it lacks the topics."""
    from spine_nav.nodes.conversions import msg_to_plan, pose_cdr_to_quat_mm

    info, msgs = read_bag(path, ["/guard/status", "/tracking/tool_tip", "/tracking/health", "/plan/registered"])
    by_topic: dict[str, list] = {}
    for m in msgs:
        by_topic.setdefault(m.topic.lstrip("/"), []).append(m)
    statuses = by_topic.get("guard/status", [])
    if not statuses:
        raise BagError(f"{path}: no guard/status messages to check against")
    samples = {}
    for m in by_topic.get("tracking/tool_tip", []):
        stamp, frame_id, q, t_mm = pose_cdr_to_quat_mm(m.data)
        samples[_ns(stamp)] = (stamp, frame_id, q, t_mm)
    plans = by_topic.get("plan/registered", [])
    health = sorted(((_ns(h.header.stamp), h) for h in (m.decode() for m in by_topic.get("tracking/health", []))),
                    key=lambda x: x[0])
    cfg = guard_config_for(info.metadata, params_file, overrides)
    guard = TrajectoryGuard(cfg)
    res = CheckResult(config=cfg.to_dict(), truncated=info.truncated)
    seen: set[int] = set()
    ip = ih = 0
    for sm in statuses:
        st = sm.decode()
        res.statuses += 1
        if getattr(st, "repeat", False):  # (bags recorded before the field existed decode without it)
            res.repeats += 1
            continue
        now_ns = _ns(st.header.stamp)
        now_s = now_ns * 1e-9
        while ip < len(plans) and (plans[ip].log_time_ns <= sm.log_time_ns
                                   or (guard.plan is None and not has_no_plan(st.state_name, st.reason))):
            pm = plans[ip].decode()
            if pm.header.frame_id == "Reference":
                plan, not_nav = msg_to_plan(pm)
                guard.set_plan(plan, not_nav)
            ip += 1
        while ih < len(health) and health[ih][0] <= now_ns:
            h = health[ih][1]
            if h.tool in HEALTH_TOOLS:
                lost = h.state == 1 or not h.visible
                reason = (h.reason or ("tool not visible" if not h.visible else "tracking lost")) if lost else ""
                guard.set_tracking_health(f"{h.tool or 'tool'}: {reason}" if lost else "", tool=h.tool)
            ih += 1
        if st.active_screw_id and st.active_screw_id != guard.selector.explicit_id:
            try:
                guard.select(st.active_screw_id)
            except KeyError:
                pass
        key = _ns(st.tool_sample_stamp)
        if key in seen or key not in samples:
            if key and key not in seen and key not in samples:
                res.unmatched += 1
            if st.state_name == "TRACKING_LOST":
                guard.report_lost(st.reason, now_s)
                res.replayed_lost += 1
            continue
        seen.add(key)
        stamp, frame_id, q, t_mm = samples[key]
        stamp_s = stamp.sec + stamp.nanosec * 1e-9
        if frame_id != "Reference":
            v = guard.reject_sample(f"tool pose in frame {frame_id!r}, expected 'Reference'", stamp_s, now_s)
        else:
            v = guard.evaluate_quat(q, t_mm, stamp_s, now_s)
        res.compared += 1
        ok = v.state.name == st.state_name and v.screw_id == st.active_screw_id
        diffs = {}
        for name in METRIC_FIELDS:
            same, d = _same(getattr(v.metrics, name), getattr(st, name), tol_mm)
            res.max_metric_diff_mm = max(res.max_metric_diff_mm, d)
            if not same:
                ok = False
                diffs[name] = (getattr(v.metrics, name), getattr(st, name))
        if ok:
            res.agreed += 1
        elif len(res.first_disagreements) < max_reported:
            res.first_disagreements.append({
                "status_index": res.statuses - 1, "sample_stamp_s": stamp_s,
                "recorded": f"{st.state_name} {st.active_screw_id} ({st.reason})",
                "rerun": f"{v.state.name} {v.screw_id} ({v.reason})",
                "metric_diffs": {k: list(d) for k, d in diffs.items()}})
    return res
