"""A wheel works on its own: built from the source, installed into a fresh environment (not the editable
checkout), run from another directory: `spine-nav phantom` and `spine-nav arm urdf` find their data
(spine_nav/resources.py: share/spine_nav from the wheel's data files; the console page as package data).

The fresh environment sees the shared environment's site-packages for the heavy dependencies (numpy,
scipy, nibabel, xacro) through a path in a .pth file: a plain path line, so the shared environment's own
.pth hooks (among them the editable install's finder) are not run and cannot import the checkout.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: what a wheel is built from (setup.py's inputs); nothing else of the checkout is copied
SOURCES = ("setup.py", "setup.cfg", "package.xml", "MANIFEST.in", "resource", "config", "launch", "sim", "urdf",
           "spine_nav")

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 240.0) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def test_setup_installs_the_folders_resources_reads():
    from spine_nav.resources import SHARE_FOLDERS

    tree = ast.parse((REPO / "setup.py").read_text())
    setup_folders = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                         if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SHARE_FOLDERS")
    assert tuple(setup_folders) == SHARE_FOLDERS
    for folder in SHARE_FOLDERS:
        assert (REPO / folder).is_dir(), folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.so")  # the wheel compiles its own C
    for name in SOURCES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        else:
            shutil.copy2(p, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(src)], cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("spine_nav-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    py = venv / "bin" / "python"
    own_site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=tmp, env=env).stdout.strip())
    shared = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (own_site / "_shared_site_packages.pth").write_text("\n".join(shared) + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
         cwd=tmp, env=env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return {"venv": venv, "py": py, "bin": venv / "bin", "cwd": elsewhere, "env": env}


def test_the_wheel_copy_is_imported_with_its_data(installed):
    code = ("import json, spine_nav, spine_nav.resources as r, spine_nav.console.server as s, "
            "spine_nav.tracking.native as n, spine_nav.guard.native as gn, spine_nav.nodes.direct_publish as dp; "
            "print(json.dumps({'file': spine_nav.__file__, 'share': str(r.share_dir()), "
            "'native': n.frames and n.frames.__file__, 'why_python': n.WHY_PYTHON, "
            "'guard_native': gn.judge and gn.judge.__file__, 'guard_why_python': gn.WHY_PYTHON, "
            "'rcl_publish': dp._native and dp._native.__file__, 'rcl_publish_why_not': dp.WHY_RCLPY, "
            "'checkout': str(r.source_checkout()), 'static': str(s.STATIC_DIR), "
            "'index': (s.STATIC_DIR / 'index.html').is_file()}))")
    out = json.loads(_run([str(installed["py"]), "-c", code], cwd=installed["cwd"], env=installed["env"]).stdout)
    venv = installed["venv"].resolve()
    assert Path(out["file"]).resolve().is_relative_to(venv), out  # not the checkout's (editable) copy
    assert out["checkout"] == "None"
    assert out["native"] and Path(out["native"]).resolve().is_relative_to(venv), out  # built into the wheel
    assert out["guard_native"] and Path(out["guard_native"]).resolve().is_relative_to(venv), out  # (_judge.c)
    assert out["rcl_publish"] and Path(out["rcl_publish"]).resolve().is_relative_to(venv), out  # (_rcl_publish.c)
    assert Path(out["share"]).resolve() == venv / "share" / "spine_nav"
    assert Path(out["static"]).resolve().is_relative_to(venv)
    assert out["index"] == (REPO / "spine_nav" / "console" / "static" / "index.html").is_file()
    for folder in ("config", "launch", "sim", "urdf"):
        assert (venv / "share" / "spine_nav" / folder).is_dir(), folder


def test_spine_nav_phantom_and_arm_urdf_from_another_directory(installed):
    cwd, env, bin_ = installed["cwd"], installed["env"], installed["bin"]
    script = bin_ / "spine-nav"
    assert script.read_text().startswith(f"#!{installed['py']}"), "console script of another interpreter"
    _run([str(script), "arm", "urdf", "arm.urdf"], cwd=cwd, env=env)
    urdf = (cwd / "arm.urdf").read_text()
    assert "<robot" in urdf and 'name="Flange"' in urdf
    out = _run([str(script), "phantom", "--out", "case", "--levels", "L4", "--voxel-mm", "1.5",
                "--cbct-voxel-mm", "2.0", "--json"], cwd=cwd, env=env).stdout
    files = json.loads(out)
    assert (cwd / "case" / "plan.json").is_file() and (cwd / "case" / "cbct.nii.gz").is_file(), files
