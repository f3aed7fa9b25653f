import pytest

from chexanatomy import anatomy as A


def test_totalsegmentator_class_maps_have_the_published_ids():
    assert len(A.TOTALSEG_V1) == 104 and len(A.TOTALSEG_V2) == 117
    assert A.TOTALSEG_V1[7] == "aorta" and A.TOTALSEG_V1[43] == "trachea" and A.TOTALSEG_V1[104] == "urinary_bladder"
    assert A.TOTALSEG_V2[51] == "heart" and A.TOTALSEG_V2[92] == "rib_left_1"
    assert A.TOTALSEG_V2[117] == "costal_cartilages"


def test_v1_heart_chambers_and_v2_heart_are_one_structure():
    v1 = A.map_label_names(A.TOTALSEG_V1)
    assert {v1[i] for i in (44, 45, 46, 47, 48)} == {"heart"}
    assert A.map_label_names(A.TOTALSEG_V2)[51] == "heart"
    assert A.map_label_names(A.TOTALSEG_V1)[86] == "clavicle_left"


def test_excluded_labels_never_reach_the_vocabulary():
    mapped = A.map_label_names({1: "body", 2: "subcutaneous_fat", 3: "intervertebral_discs", 4: "trachea"})
    assert mapped == {4: "trachea"}


def test_derived_structures_are_unions_of_patient_side_members():
    assert A.leaf_members("lung_left") == ("lung_upper_lobe_left", "lung_lower_lobe_left")
    assert set(A.leaf_members("lungs")) == {
        "lung_upper_lobe_left", "lung_lower_lobe_left",
        "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right",
    }  # fmt: skip
    assert len(A.leaf_members("ribs_right")) == 12
    assert A.expand_derived(["lung_upper_lobe_left", "lung_lower_lobe_left"]) == ["lung_left", "lung_field_left"]


def test_lung_fields_are_lungs_seen_through_no_occluder():
    for side in ("left", "right"):
        field = A.STRUCTURES[f"lung_field_{side}"]
        assert field.members == (f"lung_{side}",) and field.side == side and not field.multipart
        assert {"heart", "aorta", "liver", "spleen", "trachea"} <= set(field.occluders)
        assert all(o in A.STRUCTURES and not A.STRUCTURES[o].occluders for o in field.occluders)
    assert A.get_structure("left lung field").name == "lung_field_left"
    assert not A.STRUCTURES["lung_left"].occluders


def test_prompt_names_and_synonyms_resolve():
    assert A.get_structure("RUL").name == "lung_upper_lobe_right"
    assert A.get_structure("left clavicle").name == "clavicle_left"
    assert A.get_structure("left collarbone").side == "left"
    with pytest.raises(KeyError, match="closest"):
        A.get_structure("left lugn")


def test_every_structure_has_a_known_group_and_side():
    for s in A.STRUCTURES.values():
        assert s.group in A.GROUPS
        assert s.side in (None, "left", "right")
        if s.side:
            assert s.side in s.name
    assert len(A.structures_in_group("ribs")) >= 26
