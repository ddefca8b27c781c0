"""Volume I/O: NIfTI / NRRD / DICOM series, RAS->LPS once, clear errors, deterministic saving."""
from __future__ import annotations

import numpy as np
import pytest

from spine_nav.imaging import Volume, VolumeError, load_volume, save_volume


def _vol(shape=(6, 5, 4), dtype=np.int16):
    data = (np.arange(np.prod(shape)).reshape(shape) - 30).astype(dtype)
    A = np.array([[0.8, 0, 0, -10.0], [0, 0.7, 0, 20.0], [0, 0, 1.5, -150.0], [0, 0, 0, 1]])
    return Volume(data, A)


def test_nifti_round_trip_lps_and_bytes(tmp_path):
    v = _vol()
    p1 = save_volume(v, tmp_path / "a.nii.gz")
    p2 = save_volume(v, tmp_path / "b.nii.gz")
    assert p1.read_bytes() == p2.read_bytes()  # byte-identical for identical input
    back = load_volume(p1)
    np.testing.assert_array_equal(back.data, v.data)
    np.testing.assert_allclose(back.affine_lps, v.affine_lps, atol=1e-5)
    # a point known in LPS lands on the same voxel
    np.testing.assert_allclose(back.lps_to_index(np.array([[-10.0 + 0.8 * 2, 20.0 + 0.7, -150.0]])), [[2, 1, 0]],
                               atol=1e-5)


def test_nifti_ras_file_converted_to_lps(tmp_path):
    import nibabel as nib

    data = np.zeros((4, 4, 4), np.int16)
    ras = np.diag([1.0, 1.0, 1.0, 1.0])
    ras[:3, 3] = [5.0, 6.0, 7.0]
    nib.save(nib.Nifti1Image(data, ras), str(tmp_path / "r.nii"))
    v = load_volume(tmp_path / "r.nii")
    # voxel (0,0,0) is RAS (5,6,7) = LPS (-5,-6,7); +i is +R = -L
    np.testing.assert_allclose(v.index_to_lps(np.array([[0, 0, 0], [1, 0, 0]])), [[-5, -6, 7], [-6, -6, 7]])


def test_save_refuses_overwrite(tmp_path):
    v = _vol()
    save_volume(v, tmp_path / "a.nii.gz")
    with pytest.raises(FileExistsError, match="a.nii.gz"):
        save_volume(v, tmp_path / "a.nii.gz")
    save_volume(v, tmp_path / "a.nii.gz", overwrite=True)


@pytest.mark.parametrize("space,flip", [("left-posterior-superior", [1, 1, 1]), ("right-anterior-superior", [-1, -1, 1])])
def test_nrrd_spaces(tmp_path, space, flip):
    import nrrd

    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    hdr = {"space": space, "space directions": np.diag([0.5, 0.6, 2.0]), "space origin": np.array([1.0, 2.0, 3.0])}
    nrrd.write(str(tmp_path / "v.nrrd"), data, hdr)
    v = load_volume(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(v.data, data)
    f = np.array(flip, float)
    np.testing.assert_allclose(v.index_to_lps(np.array([[1, 1, 1]])), [f * np.array([1.5, 2.6, 5.0])])


def _write_dicom_slice(path, pixels, k, slope, intercept):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(k)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.7"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.8"
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [-20.0, -30.0, -100.0 + 2.5 * k]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.75, 0.75]
    ds.SliceThickness = 2.5
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_dicom_series_rescale_to_hu(tmp_path):
    raw = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9)  # (slice, row, column)
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(raw.shape[0]):
        _write_dicom_slice(folder / f"s{k:03d}.dcm", raw[k], k, slope=2, intercept=-1024)
    v = load_volume(folder)
    assert v.shape == (9, 8, 3)  # (column i, row j, slice k)
    # RescaleSlope 2 and RescaleIntercept -1024 applied -> HU
    assert float(v.data[0, 0, 0]) == pytest.approx(2.0 * raw[0, 0, 0] - 1024)
    assert float(v.data[4, 2, 1]) == pytest.approx(2.0 * raw[1, 2, 4] - 1024)
    np.testing.assert_allclose(v.spacing_mm, [0.75, 0.75, 2.5], atol=1e-4)
    np.testing.assert_allclose(v.index_to_lps(np.array([[0, 0, 2]])), [[-20, -30, -95]], atol=1e-4)


def test_errors_name_file_and_problem(tmp_path):
    with pytest.raises(VolumeError, match="missing.nii.gz.*not found"):
        load_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(VolumeError, match="corrupt.nii.gz.*cannot read"):
        load_volume(bad)
    trunc = tmp_path / "trunc.nrrd"
    trunc.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n\nxx")
    with pytest.raises(VolumeError, match="trunc.nrrd"):
        load_volume(trunc)
    other = tmp_path / "image.png"
    other.write_bytes(b"png")
    with pytest.raises(VolumeError, match="image.png.*unsupported"):
        load_volume(other)
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(VolumeError, match="emptydir.*no DICOM series"):
        load_volume(empty)
