"""Plan model and I/O (no ROS)."""
from spine_nav.plan.io import load_plan, plan_from_dict, plan_to_dict, save_plan, write_text_safely  # noqa: F401
from spine_nav.plan.model import KNOWN_LEVELS, Plan, PlanError, Screw  # noqa: F401
