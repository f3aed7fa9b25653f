"""Bad CT input gets a clear error that names the file and the problem."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from dataset_builder.ct import CTInputError, read_pair, remove_outside_body
from dataset_builder.phantom import make_thorax_phantom


@pytest.fixture()
def nifti_pair(tmp_path):
    ct = make_thorax_phantom(shape=(24, 20, 18), spacing_mm=(16.0, 16.0, 20.0))
    ct_path, lab_path = tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(ct.hu.astype(np.int16), ct.affine), ct_path)
    nib.save(nib.Nifti1Image(ct.labels.astype(np.uint8), ct.affine), lab_path)
    return ct, ct_path, lab_path


def test_good_pair_reads_back(nifti_pair):
    ct, ct_path, lab_path = nifti_pair
    vol = read_pair(ct_path, lab_path, ct.label_names, "s1", "test")
    assert np.array_equal(vol.labels, ct.labels) and vol.spacing_mm == (16.0, 16.0, 20.0)
    assert "lung_left" not in vol.structure_labels.values()  # derived structures are not labels
    assert "lung_upper_lobe_left" in vol.structure_labels.values()


def test_truncated_ct_is_reported(nifti_pair, tmp_path):
    ct, ct_path, lab_path = nifti_pair
    raw = gzip.decompress(ct_path.read_bytes())
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(CTInputError, match="truncated|cannot"):
        read_pair(bad, lab_path, ct.label_names, "s1", "test")


def test_non_nifti_file_is_reported(nifti_pair, tmp_path):
    ct, _, lab_path = nifti_pair
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("this is not an image")
    with pytest.raises(CTInputError, match="notes.nii.gz"):
        read_pair(bad, lab_path, ct.label_names, "s1", "test")


def test_label_map_with_other_shape_is_reported(nifti_pair, tmp_path):
    ct, ct_path, _ = nifti_pair
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 17), np.uint8), ct.affine), other)
    with pytest.raises(CTInputError, match="shape"):
        read_pair(ct_path, other, ct.label_names, "s1", "test")


def test_label_map_with_other_affine_is_reported(nifti_pair, tmp_path):
    ct, ct_path, _ = nifti_pair
    shifted = ct.affine.copy()
    shifted[0, 3] += 5.0
    other = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(ct.labels.astype(np.uint8), shifted), other)
    with pytest.raises(CTInputError, match="affine"):
        read_pair(ct_path, other, ct.label_names, "s1", "test")


def test_scanner_table_is_removed_but_the_lungs_are_kept():
    ct = make_thorax_phantom()
    hu = ct.hu.copy()
    hu[:, 2:4, :] = 300  # a dense plate below the patient, not touching the body
    cleaned = remove_outside_body(hu)
    assert (cleaned[:, 2:4, :] == -1000).all()
    assert np.array_equal(cleaned[ct.labels > 0], ct.hu[ct.labels > 0])
