"""OR navigation console in the browser (issue #9): the ROS-free server core.

* :mod:`spine_nav.console.state`: what the page needs to know (latest plan, tool, guard, arm,
  health, registration, training results), as JSON-ready dicts in mm/deg.
* :mod:`spine_nav.console.slices`: CT/CBCT slices and the bone surface from the case directory
  (never a file outside it).
* :mod:`spine_nav.console.server`: one HTTP + WebSocket port (websockets library, asyncio):
  static page, slice/mesh endpoints, pushes updates to every page.

The ROS side (subscriptions, message -> dict) is :mod:`spine_nav.nodes.console_bridge`.
"""
from spine_nav.console.server import ConsoleServer
from spine_nav.console.slices import CaseData, CaseError
from spine_nav.console.state import ConsoleState, gertzbein_robbins_grade

__all__ = ["ConsoleServer", "CaseData", "CaseError", "ConsoleState", "gertzbein_robbins_grade"]
