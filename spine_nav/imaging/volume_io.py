"""Reading and writing CT / CBCT / label volumes (no ROS).

Formats: NIfTI (``.nii``, ``.nii.gz``; nibabel), NRRD (``.nrrd``, ``.nhdr``;
pynrrd) and DICOM series (a folder; SimpleITK/GDCM, which applies
RescaleSlope/RescaleIntercept so CT voxels come out in HU).

Every loaded :class:`~spine_nav.imaging.volume.Volume` carries its voxel-index
-> LPS-mm affine. NIfTI stores RAS, NRRD may store RAS or LPS: both are
converted to LPS once, here (x and y negated). DICOM is LPS already.

Errors are :class:`VolumeError` whose message names the file and the problem.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from spine_nav.imaging.volume import Volume, VolumeError

#: Diagonal flip between RAS and LPS (its own inverse), homogeneous.
LPS_FROM_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])

_NRRD_SPACES_TO_LPS = {
    # NRRD "space" value -> 3x3 matrix mapping that space's coordinates to LPS
    "left-posterior-superior": np.eye(3),
    "lps": np.eye(3),
    "right-anterior-superior": np.diag([-1.0, -1.0, 1.0]),
    "ras": np.diag([-1.0, -1.0, 1.0]),
    "left-anterior-superior": np.diag([1.0, -1.0, 1.0]),
    "las": np.diag([1.0, -1.0, 1.0]),
}


def _kind(p: Path) -> str:
    name = p.name.lower()
    if p.is_dir():
        return "dicom"
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    if name.endswith(".nrrd") or name.endswith(".nhdr"):
        return "nrrd"
    if name.endswith(".dcm"):
        return "dicom-file"
    return "unknown"


def load_volume(path: str | os.PathLike[str], frame: str = "PreopCT") -> Volume:
    """Load a volume; its affine maps voxel indices to LPS mm in ``frame``.

    Raises VolumeError (naming ``path``) when the file is missing, corrupt or of an
    unsupported kind.
    """
    p = Path(path)
    if not p.exists():
        raise VolumeError(f"{p}: volume file not found")
    kind = _kind(p)
    try:
        if kind == "nifti":
            data, affine = _load_nifti(p)
        elif kind == "nrrd":
            data, affine = _load_nrrd(p)
        elif kind == "dicom":
            data, affine = _load_dicom_series(p)
        elif kind == "dicom-file":
            raise VolumeError(f"{p}: a single DICOM file; pass the folder holding the whole series")
        else:
            raise VolumeError(f"{p}: unsupported volume format (expected .nii, .nii.gz, .nrrd, .nhdr "
                              "or a DICOM series folder)")
    except VolumeError as exc:
        if str(p) in str(exc):
            raise
        raise VolumeError(f"{p}: {exc}") from None
    except Exception as exc:  # the readers raise many types on corrupt input
        raise VolumeError(f"{p}: cannot read {kind} volume ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(f"{p}: expected a 3D volume, got shape {data.shape}")
    try:
        return Volume(data=data, affine_lps=affine, frame=frame, meta={"source": str(p), "format": kind})
    except VolumeError as exc:
        raise VolumeError(f"{p}: {exc}") from None


def _load_nifti(p: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(p))
    # dataobj applies scl_slope/scl_inter; integer files without scaling stay integer
    data = np.asanyarray(img.dataobj)
    affine_ras = np.asarray(img.affine, dtype=float)
    return np.ascontiguousarray(data), LPS_FROM_RAS_4 @ affine_ras


def _load_nrrd(p: Path) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    data, header = nrrd.read(str(p))
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space not in _NRRD_SPACES_TO_LPS:
        raise VolumeError(f"unsupported NRRD space {space!r}")
    to_lps = _NRRD_SPACES_TO_LPS[space]
    dirs = header.get("space directions")
    if dirs is None:
        spacings = header.get("spacings", [1.0, 1.0, 1.0])
        dirs = np.diag(np.asarray(spacings, dtype=float)[:3])
    dirs = np.asarray([d for d in dirs if d is not None and np.all(np.isfinite(d))], dtype=float)
    if dirs.shape != (3, 3):
        raise VolumeError(f"NRRD 'space directions' must give 3 spatial axes, got {dirs.shape}")
    origin = np.asarray(header.get("space origin", [0.0, 0.0, 0.0]), dtype=float)
    A = np.eye(4)
    A[:3, :3] = to_lps @ dirs.T  # rows of 'space directions' are the axis vectors
    A[:3, 3] = to_lps @ origin
    return data, A


def _load_dicom_series(p: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(p))
    if not ids:
        raise VolumeError("no DICOM series found in this folder")
    if len(ids) > 1:
        raise VolumeError(f"{len(ids)} DICOM series in this folder; put one series per folder")
    files = reader.GetGDCMSeriesFileNames(str(p), ids[0])
    if len(files) < 2:
        raise VolumeError("DICOM series has fewer than 2 slices")
    reader.SetFileNames(files)
    img = reader.Execute()  # GDCM applies RescaleSlope/Intercept -> HU
    return _from_sitk(img)


def _from_sitk(img: Any) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)  # (k, j, i)
    data = np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))
    D = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    A = np.eye(4)
    A[:3, :3] = D @ np.diag(img.GetSpacing())  # ITK is LPS
    A[:3, 3] = img.GetOrigin()
    return data, A


def volume_to_nifti_bytes(volume: Volume) -> bytes:
    """Uncompressed NIfTI-1 bytes (RAS affine in qform and sform, code 1 = scanner)."""
    import nibabel as nib

    affine_ras = LPS_FROM_RAS_4 @ volume.affine_lps
    img = nib.Nifti1Image(np.asarray(volume.data), affine_ras)
    img.set_qform(affine_ras, code=1)
    img.set_sform(affine_ras, code=1)
    img.header.set_xyzt_units("mm")
    return img.to_bytes()


def save_volume(volume: Volume, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Save ``volume`` as NIfTI (``.nii`` or ``.nii.gz``), RAS on disk.

    Byte-identical output for identical input (gzip with mtime 0, no file name in
    the gzip header). Refuses to overwrite an existing file unless ``overwrite``;
    writes to a temp file and renames, so an interrupted save leaves no half file.
    """
    p = Path(path)
    name = p.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise VolumeError(f"{p}: save_volume writes NIfTI; use a .nii or .nii.gz name")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p}: already exists; refusing to overwrite (pass overwrite=True / --force)")
    raw = volume_to_nifti_bytes(volume)
    if name.endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)  # fast; CT noise compresses poorly anyway
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(raw)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
