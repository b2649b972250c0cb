"""The synthetic demo set: deterministic, fast, answers/reports/labels agree, and every asked finding is drawn."""
from collections import Counter

import numpy as np
import pytest

from medvlp_hf.data import CHEXPERT_LABELS, DEMO_ANSWERS, demo_answers, load_demo
from medvlp_hf.data.demo_drawing import DemoFindings, draw_chest_xray

SIZE = 64


def test_demo_is_deterministic_and_seeded():
    first, again, other = (load_demo(num_train=12, num_test=4, image_size=SIZE, seed=s) for s in (3, 3, 4))
    assert first.num_rows == {"train": 12, "test": 4}
    for split in ("train", "test"):
        assert first[split]["question"] == again[split]["question"]
        for a, b in zip(first[split]["image"], again[split]["image"]):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    assert first["train"]["report"] != other["train"]["report"]
    assert first["train"]["report"] != first["test"]["report"][:12]


def test_demo_images_have_the_asked_size():
    data = load_demo(num_train=3, num_test=2, image_size=128)
    assert data["train"][0]["image"].size == (128, 128) and data["train"][0]["image"].mode == "L"
    assert (len(data["train"]), len(data["test"])) == (3, 2)


def _stated_side(report, phrase):
    return next((side for side in ("left", "right") if f"{side} {phrase}" in report), None)


def _report_findings(report):
    """What the templated report states (the reference the answers and labels must agree with)."""
    return {
        "cardiomegaly": "heart is enlarged" in report, "pleural effusion": _stated_side(report, "pleural effusion"),
        "pneumothorax": _stated_side(report, "pneumothorax"), "nodule": _stated_side(report, "lung"),
        "support device": "support tube" in report,
    }


def test_answers_reports_and_labels_agree():
    data = load_demo(num_train=400, num_test=0, image_size=32, seed=1)["train"]
    label_of = {"cardiomegaly": "Cardiomegaly", "pleural effusion": "Pleural Effusion", "pneumothorax": "Pneumothorax",
                "nodule": "Lung Lesion", "support device": "Support Devices"}
    questions = Counter()
    for row in data:
        stated = _report_findings(row["report"])
        labels = dict(zip(CHEXPERT_LABELS, row["labels"]))
        for name, value in stated.items():
            assert labels[label_of[name]] == float(bool(value)), row
        pathologies = [name for name, value in stated.items() if value and name != "support device"]
        assert labels["No Finding"] == float(not pathologies)
        question, answer = row["question"], row["answer"]
        questions[question] += 1
        assert answer in DEMO_ANSWERS and row["image_organ"] == "CHEST"
        assert row["answer_type"] == ("CLOSED" if answer in ("yes", "no") else "OPEN")
        if question == "What is the main abnormality?":
            assert pathologies == ([] if answer == "none" else [answer])
        elif question.startswith("Which"):
            asked = next(name for name in stated if name.split()[-1] in question)
            assert stated[asked] == answer
        elif question == "Is there any abnormality?":
            assert answer == ("yes" if pathologies else "no")
        else:
            asked = next(name for name in stated if name.split()[-1] in question.replace("enlarged", "cardiomegaly"))
            assert answer == ("yes" if stated[asked] else "no")
    assert len(questions) == 10
    answers = Counter(data["answer"])
    assert 0.4 < answers["yes"] / (answers["yes"] + answers["no"]) < 0.6
    assert 0.4 < answers["left"] / (answers["left"] + answers["right"]) < 0.6
    assert demo_answers() == list(DEMO_ANSWERS)


def _pair(seed, **findings):
    """The same random pose/noise drawn with two finding sets (the rng is used identically for both)."""
    return [draw_chest_xray(DemoFindings(**kwargs), SIZE, np.random.default_rng(seed)).astype(int)
            for kwargs in findings.values()]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("finding, sign", [("effusion", 1), ("nodule", 1), ("pneumothorax", -1)])
def test_sided_findings_are_visible_on_their_side(seed, finding, sign):
    left, right = _pair(seed, left={finding: "left"}, right={finding: "right"})
    difference = left - right
    half = SIZE // 2
    # the patient's left is the image's right half: the finding brightens (or darkens) it there ...
    assert sign * difference[:, half:].sum() > 10 * 255
    # ... and the other image shows it on the image's left half
    assert sign * difference[:, :half].sum() < -10 * 255


@pytest.mark.parametrize("seed", range(5))
def test_enlarged_heart_and_support_device_are_visible(seed):
    normal, enlarged = _pair(seed, normal={}, enlarged={"cardiomegaly": True})
    changed = np.argwhere(enlarged != normal)
    assert len(changed) > 40 and (enlarged - normal).sum() > 40 * 60
    assert changed[:, 0].min() > 0.45 * SIZE  # in the lower chest, where the heart is
    plain, tube = _pair(seed, plain={}, tube={"support_device": True})
    changed = np.argwhere(tube != plain)
    assert len(changed) > 20 and changed[:, 0].max() < 0.5 * SIZE
    assert np.abs(changed[:, 1] - SIZE / 2).max() < 0.1 * SIZE
