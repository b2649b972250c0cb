"""Clinical-efficacy scores: sklearn equality, uncertain policy, MedViLL label accuracy by hand."""
import math

import numpy as np
import pytest

from medvlp_hf.metrics import CHEXPERT_OBSERVATIONS
from medvlp_hf.metrics import FIVE_OBSERVATIONS
from medvlp_hf.metrics import binarize_labels
from medvlp_hf.metrics import clinical_efficacy_scores
from medvlp_hf.metrics import compute_clinical_efficacy
from medvlp_hf.metrics import medvill_label_accuracy

NAN = float("nan")


def _random_labels(rng, n):
    return rng.choice([1.0, 0.0, -1.0, NAN], size=(n, 14), p=[0.3, 0.2, 0.1, 0.4])


def test_binarize_by_uncertain_policy():
    labels = np.array([[1, 0, -1, NAN] + [NAN] * 10])
    assert binarize_labels(labels, "positive")[0, :4].tolist() == [1, 0, 1, 0]
    assert binarize_labels(labels, "negative")[0, :4].tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="uncertain="):
        binarize_labels(labels, "ignore")
    with pytest.raises(ValueError, match=r"labels\[0, 1\] \(Cardiomegaly\) is 2.0"):
        binarize_labels(np.array([[1, 2] + [0] * 12]))


@pytest.mark.parametrize("uncertain", ["positive", "negative"])
def test_equal_to_sklearn(uncertain):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    predicted, expected = _random_labels(rng, 40), _random_labels(rng, 40)
    scores = clinical_efficacy_scores(predicted, expected, uncertain=uncertain)
    y_pred, y_true = binarize_labels(predicted, uncertain), binarize_labels(expected, uncertain)
    five = [CHEXPERT_OBSERVATIONS.index(name) for name in FIVE_OBSERVATIONS]
    for suffix, columns in (("14", slice(None)), ("5", five)):
        for average in ("micro", "macro"):
            p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
                y_true[:, columns], y_pred[:, columns], average=average, zero_division=0
            )
            assert scores[f"precision_{average}_{suffix}"] == pytest.approx(p)
            assert scores[f"recall_{average}_{suffix}"] == pytest.approx(r)
            assert scores[f"f1_{average}_{suffix}"] == pytest.approx(f)
        assert scores[f"exact_match_{suffix}"] == pytest.approx(
            sklearn_metrics.accuracy_score(y_true[:, columns], y_pred[:, columns])
        )
        assert scores[f"accuracy_micro_{suffix}"] == pytest.approx((y_true[:, columns] == y_pred[:, columns]).mean())
    per_class_f1 = sklearn_metrics.f1_score(y_true, y_pred, average=None, zero_division=0)
    for i, name in enumerate(CHEXPERT_OBSERVATIONS):
        assert scores["per_observation"][name]["f1"] == pytest.approx(per_class_f1[i])
        assert scores["per_observation"][name]["support"] == int(y_true[:, i].sum())


def test_uncertain_policy_changes_the_score():
    expected = np.full((1, 14), NAN)
    expected[0, 1] = 1.0
    predicted = np.full((1, 14), NAN)
    predicted[0, 1] = -1.0
    assert clinical_efficacy_scores(predicted, expected, "positive")["f1_micro_5"] == 1.0
    assert clinical_efficacy_scores(predicted, expected, "negative")["f1_micro_5"] == 0.0


def test_medvill_label_accuracy_by_hand():
    predicted = np.full((2, 14), NAN)
    expected = np.full((2, 14), NAN)
    predicted[:, 0], expected[:, 0] = [1, 0], [1, -1]  # Atelectasis: 1 exact match of 2 mentioned each
    predicted[:, 1], expected[:, 1] = [1, NAN], [NAN, NAN]  # Cardiomegaly: nothing mentioned in references
    predicted[:, 2], expected[:, 2] = [NAN, NAN], [0, NAN]  # Consolidation: nothing mentioned in predictions
    result = medvill_label_accuracy(predicted, expected)
    # accuracy: Atelectasis 1/2, Cardiomegaly 1/2, Consolidation 1/2, the other 11 all-NaN columns 1
    assert result["medvill_accuracy"] == pytest.approx((3 * 0.5 + 11) / 14)
    # precision defined where predictions mention something: Atelectasis 1/2, Cardiomegaly 0/1
    assert result["medvill_precision"] == pytest.approx((0.5 + 0.0) / 2)
    # recall defined where references mention something: Atelectasis 1/2, Consolidation 0/1
    assert result["medvill_recall"] == pytest.approx((0.5 + 0.0) / 2)
    # F1 defined only where both are: Atelectasis 0.5
    assert result["medvill_f1"] == pytest.approx(0.5)


def test_medvill_label_accuracy_without_mentions_is_nan():
    empty = np.full((1, 14), NAN)
    result = medvill_label_accuracy(empty, empty)
    assert result["medvill_accuracy"] == 1.0
    assert math.isnan(result["medvill_precision"]) and math.isnan(result["medvill_f1"])


def test_compute_clinical_efficacy_through_a_labeler():
    def fake_labeler(texts):
        rows = np.full((len(texts), 14), NAN)
        for i, text in enumerate(texts):
            rows[i, CHEXPERT_OBSERVATIONS.index("Edema")] = {"edema": 1.0, "no edema": 0.0, "maybe edema": -1.0}[text]
        return rows

    result = compute_clinical_efficacy(["edema", "no edema"], ["edema", "maybe edema"], labeler=fake_labeler)
    assert result["per_observation"]["Edema"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "accuracy": 0.5, "support": 2}
    assert result["medvill_accuracy"] == pytest.approx((0.5 + 13) / 14)


def test_compute_clinical_efficacy_with_the_rule_labeler():
    result = compute_clinical_efficacy(
        ["No pleural effusion. Cardiomegaly.", "Possible pneumonia."],
        ["Small pleural effusion. Cardiomegaly.", "Pneumonia."],
    )
    assert result["per_observation"]["Cardiomegaly"]["f1"] == 1.0
    assert result["per_observation"]["Pleural Effusion"]["recall"] == 0.0
    assert result["per_observation"]["Pneumonia"]["f1"] == 1.0
    assert result["uncertain"] == "positive"


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match="must be \\(reports, 14\\)"):
        clinical_efficacy_scores(np.zeros((2, 13)), np.zeros((2, 13)))
    with pytest.raises(ValueError, match="differ in shape"):
        clinical_efficacy_scores(np.zeros((2, 14)), np.zeros((3, 14)))
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        compute_clinical_efficacy(["a", "b"], ["a"])
