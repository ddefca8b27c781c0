"""Slices and the bone surface of the case's volumes, served on demand (no ROS).

Frames: a volume's affine maps voxel indices to LPS mm in its own frame (``Volume.frame``);
the intraop CBCT is in ``Reference``, where the plan and the tool are, so the page slices the
CBCT through the tool tip. Slices are axis-aligned in voxel space and oriented for display
(radiological convention):

* axial: columns toward patient Left (+x), rows toward Posterior (+y)
* coronal: columns toward Left (+x), rows toward Inferior (-z)
* sagittal: columns toward Posterior (+y), rows toward Inferior (-z)

Each slice comes with its 2D geometry: ``origin_mm`` (centre of pixel row 0, column 0),
``row_mm`` and ``col_mm`` (mm step per row / column, 3-vectors), so the page maps any point in
the volume's frame onto the image exactly (``r = (p - o).row / |row|^2``).

Only files that are directly inside the case directory are served; any other path is refused.
"""
from __future__ import annotations

import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spine_nav.imaging.volume import Volume

AXES = ("axial", "coronal", "sagittal")
#: per display axis: (fixed LPS axis, (LPS axis, sign) along rows, (LPS axis, sign) along columns)
_LAYOUT: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "axial": (2, (1, +1), (0, +1)),
    "coronal": (1, (2, -1), (0, +1)),
    "sagittal": (0, (2, -1), (1, +1)),
}
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
HU_RANGE = (-1024, 3071)


class CaseError(ValueError):
    """A request names a file that is not a volume of the case (or outside it); message says which.

    ``status`` is the HTTP status the server answers with (403 refused, 404 not there, 400 bad request).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Slice:
    pixels: np.ndarray        # (rows, cols) int16, HU clipped to HU_RANGE
    origin_mm: np.ndarray     # centre of pixel (0, 0) in the volume's frame
    row_mm: np.ndarray        # step per row (3,)
    col_mm: np.ndarray        # step per column (3,)
    frame: str
    index: int                # slice index along the fixed voxel axis
    step_mm: float = 0.0      # distance between this slice's plane and the next one (0: unknown)

    def header(self) -> dict[str, Any]:
        return {"rows": int(self.pixels.shape[0]), "cols": int(self.pixels.shape[1]),
                "origin_mm": self.origin_mm.tolist(), "row_mm": self.row_mm.tolist(),
                "col_mm": self.col_mm.tolist(), "frame": self.frame, "index": self.index,
                "step_mm": self.step_mm}

    def to_bytes(self) -> bytes:
        """``uint32 header length`` + JSON header + little-endian int16 pixels (row-major)."""
        head = json.dumps(self.header()).encode()
        pad = (-(4 + len(head))) % 2
        head += b" " * pad
        return struct.pack("<I", len(head)) + head + self.pixels.astype("<i2").tobytes()


def _load_volume_file(path: Path) -> Volume:
    """Load a case volume; the intraop CBCT's affine maps into ``Reference`` (phantom convention)."""
    from spine_nav.imaging.volume_io import load_volume

    return load_volume(path, frame="Reference" if path.name.startswith("cbct") else "PreopCT")


class CaseData:
    """The volumes of one case directory, loaded lazily and cached (thread-safe)."""

    def __init__(self, case_dir: str | Path | None) -> None:
        self.case_dir = Path(case_dir).resolve() if case_dir else None
        if self.case_dir is not None and not self.case_dir.is_dir():
            raise CaseError(f"{case_dir}: case directory not found")
        self._volumes: dict[str, Volume] = {}
        self._meshes: dict[tuple[str, float], bytes] = {}
        self._lock = threading.Lock()

    def volume_names(self) -> list[str]:
        if self.case_dir is None:
            return []
        return sorted(p.name for p in self.case_dir.iterdir()
                      if p.is_file() and p.name.endswith(VOLUME_SUFFIXES))

    def info(self) -> dict[str, Any]:
        """What the page needs first: case name, volumes, which one to slice (CBCT if present)."""
        names = self.volume_names()
        image = [n for n in names if "label" not in n]
        default = next((n for n in image if n.startswith("cbct")), image[0] if image else None)
        return {"case_dir": str(self.case_dir) if self.case_dir else None, "volumes": names,
                "slice_volume": default}

    def resolve(self, name: str) -> Path:
        """The case file ``name``; CaseError when it is not a volume directly inside the case directory."""
        if self.case_dir is None:
            raise CaseError("no case directory (start the console with --case DIR)", 404)
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise CaseError(f"{name!r}: not a file name in the case directory", 403)
        path = (self.case_dir / name).resolve()
        if path.parent != self.case_dir:
            raise CaseError(f"{name!r}: outside the case directory", 403)
        if not name.endswith(VOLUME_SUFFIXES) or not path.is_file():
            raise CaseError(f"{name!r}: not a volume of this case (have: {', '.join(self.volume_names())})", 404)
        return path

    def volume(self, name: str) -> Volume:
        path = self.resolve(name)
        with self._lock:
            if name not in self._volumes:
                self._volumes[name] = _load_volume_file(path)
            return self._volumes[name]

    def slice(self, name: str, axis: str, point_mm: np.ndarray) -> Slice:
        """Slice ``axis`` of volume ``name`` through ``point_mm`` (the volume's frame; clamped inside)."""
        if axis not in _LAYOUT:
            raise CaseError(f"axis {axis!r}: expected one of {', '.join(AXES)}")
        p = np.asarray(point_mm, dtype=float)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise CaseError(f"point {point_mm!r}: expected 3 finite numbers (mm)")
        vol = self.volume(name)
        A = vol.affine_lps[:3, :3]
        # which voxel axis runs mostly along each LPS axis (phantom and scanner volumes are
        # axis-aligned up to small obliquity; the reported 2D geometry stays exact either way)
        vox_of_lps = np.argmax(np.abs(A), axis=1)
        if len(set(vox_of_lps.tolist())) != 3:
            raise CaseError(f"{name}: affine too oblique to slice along voxel axes")
        fixed_lps, (row_lps, row_sign), (col_lps, col_sign) = _LAYOUT[axis]
        ijk = vol.lps_to_index(p[None, :])[0]
        shape = vol.shape
        fixed_vox = int(vox_of_lps[fixed_lps])
        idx = int(np.clip(np.rint(ijk[fixed_vox]), 0, shape[fixed_vox] - 1))
        sl: list[Any] = [slice(None)] * 3
        sl[fixed_vox] = idx
        plane = np.asarray(vol.data[tuple(sl)])
        rem = [a for a in range(3) if a != fixed_vox]  # voxel axes left in `plane`, in order
        row_vox, col_vox = int(vox_of_lps[row_lps]), int(vox_of_lps[col_lps])
        if rem.index(row_vox) != 0:
            plane = plane.T
        # flip so that rows/cols advance in the wanted LPS direction
        row_step = A[:, row_vox].copy()
        col_step = A[:, col_vox].copy()
        start = np.zeros(3)
        start[fixed_vox] = idx
        if np.sign(row_step[row_lps]) != row_sign:
            plane = plane[::-1, :]
            start[row_vox] = shape[row_vox] - 1
            row_step = -row_step
        if np.sign(col_step[col_lps]) != col_sign:
            plane = plane[:, ::-1]
            start[col_vox] = shape[col_vox] - 1
            col_step = -col_step
        origin = vol.index_to_lps(start[None, :])[0]
        pixels = np.clip(np.rint(plane), *HU_RANGE).astype(np.int16)
        # plane spacing: the fixed axis' voxel step along the plane's normal (the page asks for a new
        # slice only when a point is nearer the next plane than this one)
        normal = np.cross(row_step, col_step)
        step = abs(float(A[:, fixed_vox] @ normal)) / float(np.linalg.norm(normal))
        return Slice(np.ascontiguousarray(pixels), origin, row_step, col_step, vol.frame, idx, step)

    def surface(self, name: str, iso_hu: float = 500.0, step: int = 2) -> bytes:
        """Bone surface (marching cubes at ``iso_hu`` on every ``step``-th voxel), in the volume's frame.

        Bytes: ``uint32 n_vertices, uint32 n_faces``, float32 xyz (mm) per vertex, uint32 x3 per face.
        skimage's marching cubes (not hand-written); ``step`` keeps the mesh small for the page.
        """
        from skimage.measure import marching_cubes

        key = (name, float(iso_hu))
        with self._lock:
            if key in self._meshes:
                return self._meshes[key]
        vol = self.volume(name)
        data = np.asarray(vol.data, dtype=np.float32)
        if not (data.min() < iso_hu < data.max()):
            verts = np.zeros((0, 3), np.float32)
            faces = np.zeros((0, 3), np.uint32)
        else:
            verts_ijk, faces, _, _ = marching_cubes(data, level=iso_hu, step_size=max(1, int(step)))
            verts = vol.index_to_lps(verts_ijk).astype(np.float32)
            faces = faces.astype(np.uint32)
        blob = struct.pack("<II", len(verts), len(faces)) + verts.astype("<f4").tobytes() + faces.astype("<u4").tobytes()
        with self._lock:
            self._meshes[key] = blob
        return blob
