"""ament_python package spine_nav (ROS 2 Jazzy). Console scripts: one per node, plus `spine-nav`."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spine_nav"

# One console script per ROS 2 node (name -> module with a main()). Keep in sync with
# spine_nav/nodes/registry.py (a test checks it).
NODE_SCRIPTS = {
    "plan_publisher": "spine_nav.nodes.plan_publisher:main",
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
