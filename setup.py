"""ament_python package spine_nav (ROS 2 Jazzy). Console scripts: one per node, plus `spine-nav`.

Data read at run time (spine_nav/resources.py finds it): ``config/``, ``launch/``, ``sim/`` and ``urdf/``
go to ``share/spine_nav/`` (ament layout, also what pip does with a wheel's data files); the console's
built web page (spine_nav/console/static) is package data. tests/test_wheel_install.py builds a wheel,
installs it into a fresh environment and runs it from another directory.
"""
import os

from setuptools import Extension, find_packages, setup

PACKAGE = "spine_nav"

# One console script per ROS 2 node (name -> module with a main()). Keep in sync with
# spine_nav/nodes/registry.py (a test checks it).
SHARE_FOLDERS = ("config", "launch", "sim", "urdf")  # = spine_nav.resources.SHARE_FOLDERS (a test checks)


def share_data_files() -> list[tuple[str, list[str]]]:
    """Every file under SHARE_FOLDERS, keeping its sub-folder: (share/spine_nav/DIR, [files])."""
    out = []
    for top in SHARE_FOLDERS:
        for d, _, names in sorted(os.walk(top)):
            files = sorted(os.path.join(d, n) for n in names if not n.endswith((".pyc", "~")))
            if files:
                out.append((f"share/{PACKAGE}/{d}", files))
    return out


NODE_SCRIPTS = {
    "plan_publisher": "spine_nav.nodes.plan_publisher:main",
    "registration": "spine_nav.nodes.registration:main",
    "arm_guide": "spine_nav.nodes.arm_guide:main",
    "sim_arm": "spine_nav.nodes.sim_arm:main",
    "tracker_bridge": "spine_nav.nodes.tracker_bridge:main",
    "sim_tracker": "spine_nav.nodes.sim_tracker:main",
    "trajectory_guard": "spine_nav.nodes.trajectory_guard:main",
    "console_bridge": "spine_nav.nodes.console_bridge:main",
    "command_source": "spine_nav.nodes.command_source:main",
    "slicer_output": "spine_nav.nodes.slicer_output:main",
}

# The 1 kHz tracker frame's and guard sample's arithmetic in C (issue 17; docs/performance.md "The bridge in C", "The
# guard's geometry in C"). Each function has a pure-Python twin that defines its result (tests/test_native_frames.py,
# tests/test_native_guard.py compare them bit for bit) and is used when the extension is not built.
# -ffp-contract=off: no fused multiply-add, so the C doubles are the Python doubles.
NATIVE_FLAGS = ["-O2", "-ffp-contract=off", "-fno-fast-math"]
EXTENSIONS = [
    Extension(f"{PACKAGE}.tracking._frames", [f"{PACKAGE}/tracking/_frames.c"], extra_compile_args=NATIVE_FLAGS,
              depends=[f"{PACKAGE}/tracking/_rows.h"]),
    Extension(f"{PACKAGE}.nodes._pose_cdr", [f"{PACKAGE}/nodes/_pose_cdr.c"], extra_compile_args=NATIVE_FLAGS,
              include_dirs=[f"{PACKAGE}/tracking"], depends=[f"{PACKAGE}/tracking/_rows.h"]),
    # the guard's per-sample geometry (docs/performance.md "The guard's geometry in C"; tests/test_native_guard.py)
    Extension(f"{PACKAGE}.guard._judge", [f"{PACKAGE}/guard/_judge.c"], extra_compile_args=NATIVE_FLAGS),
    # the bridge's publishes through rcl (docs/performance.md "The bridge's publish through rcl"; no ROS headers or
    # link: rcl's function is looked up in the librcl.so rclpy loaded; tests/test_direct_publish.py)
    Extension(f"{PACKAGE}.nodes._rcl_publish", [f"{PACKAGE}/nodes/_rcl_publish.c"], extra_compile_args=NATIVE_FLAGS),
]

setup(
    name=PACKAGE,
    ext_modules=EXTENSIONS,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={f"{PACKAGE}.console": ["static/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_data_files(),
    ],
    install_requires=["setuptools"],
    zip_safe=False,  # C extensions
    maintainer="spine_nav developers",
    maintainer_email="spine-nav@example.org",
    description="Image-guided, robot-assisted spine surgery on ROS 2 Jazzy.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "spine-nav = spine_nav.cli.main:main",
            *[f"{name} = {target}" for name, target in NODE_SCRIPTS.items()],
        ],
    },
)
