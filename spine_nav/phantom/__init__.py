"""The synthetic patient (no ROS): analytic lumbar vertebrae (:mod:`.anatomy`) and the case generator
(:mod:`.case`: CT, labels, CBCT, plan and ground truth of one seeded case; see docs/phantom.md).

The phantom's one home: it sits above ``imaging`` (volumes it renders) and ``plan`` (the screws it
plans), so neither of those imports it (docs/architecture.md).
"""
