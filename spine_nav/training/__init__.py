"""Trainee mode (issue #21), pure core (no ROS): grading of a placed screw, the training case,
scripted attempts and the SQLite session store.

* :mod:`~spine_nav.training.grading`: one grading function, shared with the demo's report
  (placement errors against the plan + Gertzbein-Robbins from the phantom's cortex; a clearly
  labelled proxy when the case has no ground truth).
* :mod:`~spine_nav.training.case`: a case directory (plan, registration, optional ground truth) and
  the seeded phantom with a difficulty.
* :mod:`~spine_nav.training.script`: scripted attempts (jsonl of timed tool poses in PreopCT).
* :mod:`~spine_nav.training.store`: sessions kept in SQLite (WAL).
* :mod:`~spine_nav.training.attempt`: turning a stream of tool poses + guard verdicts into graded screws.

The ROS side (simulated tracker over OpenIGTLink -> tracker_bridge -> trajectory_guard) is driven by
``spine-nav train`` (:mod:`spine_nav.cli.train`).
"""
