"""CheXpert label parsing/policies and answer normalisation used for VQA label ids."""
import json
import math

import pytest

from medvlp_hf.data import (
    CHEXPERT_LABELS, DataFormatError, answer_vocabulary, apply_label_policy, label_set, labels_from_names,
    normalize_answer, parse_label_string,
)


def test_chexpert_names_in_mimic_csv_order():
    assert CHEXPERT_LABELS == (
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
        "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
        "Pneumothorax", "Support Devices",
    )


@pytest.mark.parametrize(
    "text, positives",
    [
        ("'Cardiomegaly', 'Consolidation', 'Pleural Effusion', 'Support Devices'", {1, 2, 9, 13}),
        ("'No Finding'", {8}),
        ("''", set()),
        ("", set()),
        ("'enlarged cardiomediastinum'", {4}),
    ],
)
def test_parse_medvill_label_strings(text, positives):
    vector = parse_label_string(text)
    assert len(vector) == 14
    assert {i for i, value in enumerate(vector) if value == 1.0} == positives
    assert all(value in (0.0, 1.0) for value in vector)


def test_unknown_label_name_is_a_named_error():
    with pytest.raises(DataFormatError, match="Cardiomegally"):
        parse_label_string("'Cardiomegally'")


def test_label_policies():
    cells = ["1.0", "0.0", "-1.0", "", None, 1, 0, -1, "nan", 1.0, 0.0, -1.0, "", ""]
    zeros = apply_label_policy(cells)
    assert zeros == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    ones = apply_label_policy(cells, uncertain="ones")
    assert ones == [1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0]
    kept = apply_label_policy(cells, uncertain="keep", blank="keep")
    assert kept[:3] == [1, 0, -1] and math.isnan(kept[3]) and math.isnan(kept[4]) and math.isnan(kept[8])
    with pytest.raises(ValueError, match="uncertain"):
        apply_label_policy(cells, uncertain="maybe")
    with pytest.raises(DataFormatError, match="2"):
        apply_label_policy(["2"] + [""] * 13)
    with pytest.raises(DataFormatError, match="14"):
        apply_label_policy([""] * 13)


def test_label_set_is_the_positive_observations():
    assert label_set(labels_from_names(["Edema", "Atelectasis"])) == frozenset({0, 3})
    assert label_set([-1.0, 1.0] + [0.0] * 12) == frozenset({1})


@pytest.mark.parametrize(
    "raw, key",
    [("Yes", "yes"), ("yes.", "yes"), (4, "4"), ("The extremities", "extremities"), ("Chest X-ray", "chest xray"),
     ("x rays", "xrays"), ("two", "2"), ("1,000", "1000"), ("Skull \tcartilage", "skull cartilage")],
)
def test_normalize_answer(raw, key):
    assert normalize_answer(raw) == key


def test_answer_vocabulary_counts_normalised_answers():
    assert answer_vocabulary(["Yes", "yes", "no", "No", "NO", "left", "x"], min_count=2) == ["no", "yes"]


def test_real_vqa_rad_train_answers_all_map_to_the_mevf_answer_list(data_dir):
    root = data_dir / "vqa_rad"
    keys = json.loads((root / "answer_all_list.json").read_text())
    assert [normalize_answer(key) for key in keys] == keys
    train = json.loads((root / "trainset.json").read_text())
    assert {normalize_answer(record["answer"]) for record in train} <= set(keys)
