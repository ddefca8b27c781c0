"""The phantom's case generator, split into steps (issue 16), still writes the bytes it wrote before.

SHA-256 of the five files of one small case, computed with the generator as it was on main at 31398fb
(spine_nav.imaging.phantom, before the split); plan.json with its ``metadata.generator`` renamed to the
module's new home (spine_nav.phantom.case), its only change. Volumes are gzip with mtime 0, JSON is
written with fixed formatting, so the same seed gives the same bytes (docs/phantom.md)."""
from __future__ import annotations

import hashlib

from spine_nav.phantom.case import generate_case

BEFORE_THE_SPLIT = {
    "preop_ct.nii.gz": "dcf8032fdae8de39d99a1a5f306e36696b0185d3078d82459c1f85ee2000f3cb",
    "preop_labels.nii.gz": "c12cf2b096f5553f10627a3bc22382affdea937a107ecedc430aa32eff9c9799",
    "cbct.nii.gz": "5660f571d312af6eb9527090ca52bba8b60dcd5625632aa616b7809f63dd6eff",
    "ground_truth.json": "ce6ef1b36a177e3594c0e87134a2f8d6c17c367290414192da4985d7f3c0d983",
    "plan.json": "da32e492039ff4a0cbeca7fec9238f56b699f94245a7e6474e3560e70b5c85fe",
}


def test_seed_0_case_is_byte_identical_to_before_the_split(tmp_path):
    files = generate_case(tmp_path / "case", seed=0, levels=("L3", "L4"), voxel_mm=1.2, cbct_voxel_mm=1.5)
    got = {name: hashlib.sha256((files.out_dir / name).read_bytes()).hexdigest() for name in BEFORE_THE_SPLIT}
    assert got == BEFORE_THE_SPLIT
    assert '"generator": "spine_nav.phantom.case"' in files.plan.read_text()
