"""Render one CT into radiographs with one binary mask per anatomical structure.

A structure's mask is where the *geometric* path length of the ray through it exceeds
``mask_threshold_mm`` (default 1.5 mm: about two CT voxels, so a ray grazing a single voxel does not count).
Density-weighted projections would leave air-filled lungs and trachea hollow. Derived structures
(``lung_left`` = the left lobes) use the summed path length of their members, i.e. the 3-D union.

Every view of a CT comes from one projector (CT loaded once) and every structure of a view comes from the same
projection pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from chexanatomy.anatomy import (
    COSTOPHRENIC_MIN_WIDTH,
    COSTOPHRENIC_SIDES,
    LUNG_LOBES,
    STRUCTURES,
    expand_derived,
    leaf_members,
)
from chexanatomy.regions import above_costophrenic_angle, without_specks
from chexanatomy.subjects import stable_seed

from .appearance import Appearance, attenuation_channels, display, mix_line_integrals, random_appearance
from .ct import CTVolume, remove_outside_body
from .geometry import (
    FRONTAL_VIEWS,
    Framing,
    Pose,
    ViewGeometry,
    framed_geometry,
    random_framing,
    rays,
    view_geometry,
)
from .projector import SlabProjector
from .realism import extend_body, virtual_non_contrast

FRAMINGS = ("radiograph", "fixed")


@dataclass(frozen=True)
class RenderSettings:
    """What to render per CT.

    Attributes:
        size_px: output height = width (224-1024 for the corpus; smaller is allowed for tests).
        views: any of ``PA``, ``AP``, ``LAT``.
        poses_per_view: pose 0 is the standard position; the others are random perturbations.
        mask_threshold_mm: geometric path length (mm) above which a pixel belongs to a structure.
        min_area_px: structures with fewer pixels in a view are omitted from that view.
        randomize: draw poses beyond pose 0, every view's framing and appearance at random (seeded).
        max_rotation_deg, max_translation_mm: ranges of the random pose (uniform, per axis).
        seed: base seed; every (subject, view, pose) derives its own from it.
        virtual_non_contrast: set an enhanced CT's blood pool to unenhanced blood (``realism.virtual_non_contrast``).
        extend_body: continue the body beyond the CT's coverage: neck, abdomen, cut arms (``realism.extend_body``).
        framing: ``radiograph`` fits the field to the lungs as a radiographer does (``geometry.Framing``);
            ``fixed`` is a 430 mm field centred on the lungs.
        physics: beam hardening, scatter, detector blur and quantum noise (``appearance.display``).
        processing: strength of clinical processing, collimation and markers in [0, 1] (0 = none).
    """

    size_px: int = 512
    views: tuple[str, ...] = ("PA", "LAT")
    poses_per_view: int = 3
    mask_threshold_mm: float = 1.5
    min_area_px: int = 8
    randomize: bool = True
    max_rotation_deg: float = 5.0
    max_translation_mm: float = 20.0
    seed: int = 0
    virtual_non_contrast: bool = True
    extend_body: bool = True
    framing: str = "radiograph"
    physics: bool = True
    processing: float = 1.0

    def __post_init__(self):
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, got {self.framing!r}")
        if not 0.0 <= self.processing <= 1.0:
            raise ValueError(f"processing must be in [0, 1], got {self.processing}")


@dataclass
class RenderedView:
    """One radiograph and its masks.

    Attributes:
        image: uint8 [H, W], display convention of ``geometry.py`` (patient's right on the image left).
        masks: structure name -> bool [H, W]; only structures with at least ``min_area_px`` pixels.
        geometry, pose, appearance: everything needed to reproduce the view.
        framing: how the field was fitted to the lungs (``None`` for the fixed field).
        pose_index: index of the pose within its view (0 = standard position).
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    geometry: ViewGeometry
    pose: Pose
    appearance: Appearance
    pose_index: int
    framing: Framing | None = None


def _pose(settings: RenderSettings, rng: np.random.Generator, index: int) -> Pose:
    if index == 0 or not settings.randomize:
        return Pose()
    rot = rng.uniform(-settings.max_rotation_deg, settings.max_rotation_deg, 3)
    shift = rng.uniform(-settings.max_translation_mm, settings.max_translation_mm, 3)
    return Pose(tuple(float(v) for v in rot), tuple(float(v) for v in shift))


def structure_paths(
    projected: torch.Tensor, label_ids: list[int], id_to_structure: dict[int, str]
) -> dict[str, torch.Tensor]:
    """Path length (mm) per structure name: labels mapping to one structure and derived members are summed.

    Args:
        projected: float32 [L, ...] path lengths per label id (order of ``label_ids``).
        label_ids: the L label ids, one per row of ``projected``.
        id_to_structure: label id -> structure name; every id in ``label_ids`` must be a key.

    Returns:
        Structure name -> [...] path length (mm), for every primary structure present and every derived
        structure whose members are all present.
    """
    primary: dict[str, torch.Tensor] = {}
    for row, label_id in enumerate(label_ids):
        name = id_to_structure[label_id]
        primary[name] = primary[name] + projected[row] if name in primary else projected[row]
    out = dict(primary)
    for name in expand_derived(primary):
        out[name] = sum(primary[m] for m in leaf_members(name))
    return out


def isocenter_of(ct: CTVolume) -> tuple[float, float, float]:
    """Centre of the lungs (RAS mm), or of the volume when the label map has no lungs."""
    centre = ct.world_center_of(LUNG_LOBES)
    if centre is None:
        centre = ct.affine[:3, :3] @ ((np.array(ct.hu.shape) - 1) / 2) + ct.affine[:3, 3]
    return tuple(float(v) for v in centre)


def make_projector(
    ct: CTVolume, device: str = "cpu", settings: RenderSettings | None = None
) -> tuple[SlabProjector, dict[int, str], bool]:
    """The projector of ``ct``, its label id -> structure map, and whether contrast was removed.

    Outside-body objects are always removed. ``settings`` (default: plain rendering, as ``bench_render`` checks it
    against Siddon) switch on virtual non-contrast and the body beyond the CT's coverage.
    """
    id_to_structure = ct.structure_labels
    hu, labels, affine = remove_outside_body(ct.hu), ct.labels, ct.affine
    enhanced = False
    if settings is not None and settings.virtual_non_contrast:
        hu, enhanced = virtual_non_contrast(hu, labels, id_to_structure)
    if settings is not None and settings.extend_body:
        hu, labels, affine = extend_body(hu, labels, affine, id_to_structure)
    projector = SlabProjector(attenuation_channels(hu), labels, affine, sorted(id_to_structure), device)
    return projector, id_to_structure, enhanced


def _geometry(ct: CTVolume, view: str, settings: RenderSettings, rng: np.random.Generator, lungs=None):
    """The view's geometry and framing: fitted to the lungs' world box ``lungs`` (``radiograph``) or the fixed field.

    ``lungs`` is ``ct.world_box_of(LUNG_LOBES)``, looked up once per CT by the caller (``None``: the fixed 430 mm
    field centred on the volume, as for a CT without lungs).
    """
    if settings.framing != "radiograph" or lungs is None:
        return view_geometry(view, settings.size_px, isocenter_of(ct)), None
    framing = random_framing(rng) if settings.randomize else Framing()
    return framed_geometry(view, settings.size_px, lungs, framing), framing


def projected_masks(paths: dict[str, torch.Tensor], threshold_mm: float) -> dict[str, torch.Tensor]:
    """Bool masks [...] per structure: path length above ``threshold_mm``, minus occluders where a structure has them.

    A structure with ``occluders`` (the radiographic lung fields, ``chexanatomy.anatomy.LUNG_FIELD_OCCLUDERS``) keeps
    only the pixels whose ray passes none of the occluders present in ``paths``.
    """
    masks = {name: path > threshold_mm for name, path in paths.items()}
    for name in masks:
        occluders = [masks[o] for o in STRUCTURES[name].occluders if o in masks]
        if occluders:
            masks[name] = masks[name] & ~torch.stack(occluders).any(0)
    return masks


SPECK_SHARE = 0.001  # an occluded structure's pieces under 0.1 % of the image are slivers between occluders


def view_masks(paths: dict[str, torch.Tensor], view: str, settings: RenderSettings) -> dict[str, np.ndarray]:
    """The targets of one view: bool [H, W] per structure of at least ``settings.min_area_px`` pixels.

    A ``frontal_only`` structure (the radiographic lung fields) is left out of a lateral view. A structure with
    occluders loses its pieces under ``SPECK_SHARE`` of the image (a PA lung field, about 12 % of the image, kept 3-4
    specks of a few pixels where thin occluders crossed it), so ``lung_fields`` stays the union of the two sides.
    Each side's lung field then ends at its costophrenic angle (:func:`end_at_costophrenic_angles`).
    """
    out = {}
    for name, mask in projected_masks(paths, settings.mask_threshold_mm).items():
        structure = STRUCTURES[name]
        if structure.frontal_only and view not in FRONTAL_VIEWS:
            continue
        mask = mask.cpu().numpy()
        if structure.occluders:
            mask = without_specks(mask, max(1, round(SPECK_SHARE * mask.size)))
        out[name] = mask
    out = end_at_costophrenic_angles(out)
    return {name: mask for name, mask in out.items() if int(mask.sum()) >= settings.min_area_px}


def end_at_costophrenic_angles(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``masks`` with each side's lung field ended at its costophrenic angle, and ``lung_fields`` without the same rows.

    ``chexanatomy.anatomy.COSTOPHRENIC_MIN_WIDTH`` says where (``chexanatomy.regions.above_costophrenic_angle``); the
    pixels a side loses are taken out of ``lung_fields`` too, which stays the union of the two sides. Other
    structures are returned as they are.
    """
    out = dict(masks)
    removed = []
    for side in COSTOPHRENIC_SIDES:
        if side in out:
            ended = above_costophrenic_angle(out[side], COSTOPHRENIC_MIN_WIDTH)
            removed.append(out[side] & ~ended)
            out[side] = ended
    if removed and "lung_fields" in out:
        out["lung_fields"] = out["lung_fields"] & ~np.any(removed, axis=0)
    return out


@dataclass
class _ViewPlan:
    """Everything about one view and pose that is drawn before projection (its generator draws the noise after)."""

    view: str
    pose_index: int
    pose: Pose
    geometry: ViewGeometry
    framing: Framing | None
    appearance: Appearance
    rng: np.random.Generator


def _plans(ct: CTVolume, settings: RenderSettings, enhanced: bool) -> list[_ViewPlan]:
    """The views x poses of ``ct`` in order (view, pose index), each drawn from its own seeded generator.

    Each generator draws, in this order, the pose, the framing, the appearance and later the view's noise; a view
    therefore renders the same whatever else is rendered with it.
    """
    lungs = ct.world_box_of(LUNG_LOBES) if settings.framing == "radiograph" else None  # once per CT
    plans = []
    for view in settings.views:
        for i in range(settings.poses_per_view):
            rng = np.random.default_rng(stable_seed(settings.seed, ct.subject_id, view, i))
            pose = _pose(settings, rng, i)
            geometry, framing = _geometry(ct, view, settings, rng, lungs)
            look = Appearance()
            if settings.randomize:
                look = random_appearance(rng, settings.physics, settings.processing, view)
            plans.append(_ViewPlan(view, i, pose, geometry, framing, replace(look, virtual_non_contrast=enhanced), rng))
    return plans


def render_subject(
    ct: CTVolume, settings: RenderSettings, device: str = "cpu", batch: bool = True
) -> list[RenderedView]:
    """All views x poses of one CT, in order (view, pose index).

    The CT's set-up (``make_projector``, the lungs' box) is paid once. With ``batch`` every view and pose goes
    through the projector in one call (``SlabProjector.project_views``, which renders each exactly as it renders
    alone); without, one view at a time (less memory: one view's path lengths at a time). Both give the same bytes.
    """
    projector, id_to_structure, enhanced = make_projector(ct, device, settings)
    plans = _plans(ct, settings, enhanced)
    views = [rays(p.geometry, p.pose) for p in plans]
    projections = projector.project_views(views) if batch else [projector.project(*v) for v in views]
    out = []
    for plan, proj in zip(plans, projections, strict=True):
        paths = structure_paths(proj.path_mm[0], proj.label_ids, id_to_structure)
        line = mix_line_integrals(proj.line_integral[0], plan.appearance)
        image = display(line, plan.appearance, plan.rng, plan.geometry.pixel_mm)
        masks = view_masks(paths, plan.view, settings)
        out.append(RenderedView(image, masks, plan.geometry, plan.pose, plan.appearance, plan.pose_index, plan.framing))
    return out
