"""The structures a request asks for: picker regions, single picks and the cap, and their labels and colours.

Sides are the patient's: "left lung" is the patient's left lung, on the image's right in a PA view.
"""

from __future__ import annotations

from chexanatomy.anatomy import STRUCTURES
from chexanatomy.inference import Segmenter

from . import InputError

MAX_STRUCTURES = 60  # per request: the VLM answers one prompt per structure (~0.1 s each for the tiny CPU model)
# Lung fields first: on a radiograph the lungs are what a radiologist outlines (the SCR definition, not the whole
# lung behind the heart and the domes).
DEFAULT_STRUCTURES = ("lung_field_right", "lung_field_left", "heart", "trachea", "clavicle_right", "clavicle_left")
ALL = "all"
# Picker regions -> vocabulary groups (chexanatomy.anatomy.GROUPS). The "other" group is placed by structure:
# the back muscles go with the spine, the iliopsoas with the abdomen; brain and skull lie outside a chest film.
REGIONS = {
    "lungs": ("lungs",),
    "heart and vessels": ("heart_and_great_vessels",),
    "airway and mediastinum": ("airway", "mediastinum"),
    "ribs": ("ribs",),
    "spine": ("spine",),
    "shoulder girdle": ("shoulder_girdle",),
    "abdomen": ("abdomen",),
}
OTHER_GROUP_REGIONS = {
    "autochthon_left": "spine",
    "autochthon_right": "spine",
    "iliopsoas_left": "abdomen",
    "iliopsoas_right": "abdomen",
}
# 18 of Sasha Trubetskoy's 20 distinct colours (the two darkest are invisible on a radiograph).
PALETTE = [
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
    "#008080",
    "#e6beff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
]


def region_of(name: str) -> str | None:
    """The picker region of a vocabulary structure, None for those outside a chest radiograph (brain, skull)."""
    group = STRUCTURES[name].group
    if group == "other":
        return OTHER_GROUP_REGIONS.get(name)
    return next((region for region, groups in REGIONS.items() if group in groups), None)


def offered_structures(models: list[Segmenter]) -> list[str]:
    """Structures at least one model segments and the picker places in a region; region order, then vocabulary."""
    known = {n for m in models for n in m.structures}
    names = [n for n in STRUCTURES if n in known and region_of(n) is not None]
    return sorted(names, key=lambda n: list(REGIONS).index(region_of(n)))  # stable: vocabulary order within a region


def selected_structures(
    regions: list[str] | None, picks: list[str] | None, offered: list[str], limit: int
) -> tuple[list[str], list[str]]:
    """The union of whole regions ("all" = every offered structure) and single picks, in ``offered`` order, capped.

    Returns:
        (names, notes): at most ``limit`` names (the first in ``offered`` order) and a note when capped.

    Raises:
        InputError: when nothing is selected.
    """
    regions, wanted = list(regions or []), set(picks or [])
    wanted |= {n for n in offered if ALL in regions or region_of(n) in regions}
    names = [n for n in offered if n in wanted]
    if not names:
        raise InputError("No structure selected: pick at least one structure or region.")
    if len(names) <= limit:
        return names, []
    return names[:limit], [
        f"{len(names)} structures were selected; only the first {limit} (in region order, up to "
        f"{structure_label(names[limit - 1])}) are segmented per request."
    ]


def coverage_notes(names: list[str], models: list[tuple[str, Segmenter]]) -> list[str]:
    """A note per model that does not segment some of ``names`` (its table cells read "—")."""
    notes = []
    for title, model in models:
        missing = [structure_label(n) for n in names if n not in model.structures]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            notes.append(f"The {title} does not segment {shown} (— in its columns).")
    return notes


def structure_label(name: str) -> str:
    """The overlay/table label: the display name, which carries the patient's side ("left lung")."""
    return STRUCTURES[name].display


def color_map(names: list[str]) -> dict[str, str]:
    """A fixed colour per structure label (``names`` order through ``PALETTE``), the same in both overlays."""
    return {structure_label(n): PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
