"""Where spine_nav's data files are: ``urdf/``, ``config/``, ``launch/``, ``sim/`` (its share folder).

setup.py installs them as ``data_files`` into ``<prefix>/share/spine_nav/`` (the ament layout: colcon,
and pip for a wheel, where ``<prefix>`` is the environment's ``sys.prefix``). At run time
:func:`share_dir` finds them, in this order:

1. a source checkout: the package (located with :mod:`importlib.resources`) sits next to
   ``package.xml`` and ``setup.py``: the checkout's own files, so an edit applies without reinstalling
   (the editable install of ``make setup``);
2. the ament index (``ament_index_python``: ``<prefix>/share/spine_nav`` of a prefix on
   ``AMENT_PREFIX_PATH``, where colcon installs it);
3. this Python's prefix (``sys.prefix`` / ``sysconfig``'s ``data`` path: where pip put a wheel's
   ``data_files``).

Files inside the Python package itself (the console's built web page) are read with
:func:`importlib.resources.files` directly. ``tests/test_wheel_install.py`` checks a wheel installed into a
fresh environment finds everything from another working directory.
"""
from __future__ import annotations

import sys
import sysconfig
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

PACKAGE = "spine_nav"
#: the folders setup.py installs into share/spine_nav (the ones read at run time)
SHARE_FOLDERS = ("config", "launch", "sim", "urdf")


class ResourceNotFound(FileNotFoundError):
    """No share folder of spine_nav was found (names the places tried)."""


def package_dir() -> Path:
    """The folder of the imported ``spine_nav`` package (a checkout's or site-packages')."""
    return Path(str(files(PACKAGE)))


def source_checkout() -> Path | None:
    """The source checkout the package is imported from, or None when it is installed."""
    root = package_dir().parent
    if (root / "package.xml").is_file() and (root / "setup.py").is_file():
        return root
    return None


def _installed_candidates() -> list[Path]:
    out: list[Path] = []
    try:
        from ament_index_python.packages import get_package_share_directory

        out.append(Path(get_package_share_directory(PACKAGE)))
    except (ImportError, LookupError, ValueError, OSError):  # not installed, not on (or no) AMENT_PREFIX_PATH
        pass
    out += [Path(sys.prefix) / "share" / PACKAGE, Path(sysconfig.get_paths()["data"]) / "share" / PACKAGE]
    return out


@lru_cache(maxsize=None)
def share_dir() -> Path:
    """The folder holding ``config/``, ``urdf/``, ``launch/`` and ``sim/`` (see the module docstring)."""
    checkout = source_checkout()
    if checkout is not None:
        return checkout
    tried = _installed_candidates()
    for cand in tried:
        if (cand / "config").is_dir() and (cand / "urdf").is_dir():
            return cand
    raise ResourceNotFound(f"spine_nav's share folder (config/, urdf/) not found; tried: "
                           f"{', '.join(str(p) for p in tried)} (is the package installed with its data files?)")


def share_path(*parts: str) -> Path:
    """``share_dir() / parts``, e.g. ``share_path("config", "nodes.yaml")`` (not checked to exist)."""
    return share_dir().joinpath(*parts)
