"""ament_python package spine_nav (ROS 2 Jazzy). Console scripts: one per node, plus `spine-nav`."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spine_nav"

# One console script per ROS 2 node (name -> module with a main()). Keep in sync with
# spine_nav/nodes/registry.py (a test checks it).
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

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
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
