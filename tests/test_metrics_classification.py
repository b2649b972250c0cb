"""Classification metrics: equality with scikit-learn AUROC / F1, undefined classes, thresholds."""
import math

import numpy as np
import pytest

from medvlp_hf.metrics import binary_auroc
from medvlp_hf.metrics import classification_metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.random((60, 5)).round(1)  # rounding makes many ties
    labels = (rng.random((60, 5)) < 0.35).astype(int)
    labels[0] = 1
    labels[1] = 0
    result = classification_metrics(scores, labels, threshold=0.5, class_names=list("abcde"))
    assert result["auroc_micro"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores, average="micro"))
    assert result["auroc_macro"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores, average="macro"))
    predicted = (scores > 0.5).astype(int)
    assert result["f1_micro"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted, average="micro", zero_division=0))
    assert result["f1_macro"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted, average="macro", zero_division=0))
    for c, name in enumerate("abcde"):
        assert result["per_class"][name]["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels[:, c], scores[:, c]))
        assert result["per_class"][name]["precision"] == pytest.approx(
            sklearn_metrics.precision_score(labels[:, c], predicted[:, c], zero_division=0)
        )
        assert result["per_class"][name]["support"] == labels[:, c].sum()


def test_threshold_is_strict():
    result = classification_metrics(np.array([[0.5], [0.7]]), np.array([[1], [1]]), threshold=0.5)
    assert result["per_class"]["0"]["recall"] == 0.5


def test_class_with_one_label_value_has_no_auroc():
    scores = np.array([[0.9, 0.2], [0.1, 0.4], [0.8, 0.3]])
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    result = classification_metrics(scores, labels)
    assert math.isnan(result["per_class"]["1"]["auroc"])
    assert result["auroc_macro"] == pytest.approx(sklearn_metrics.roc_auc_score(labels[:, 0], scores[:, 0]))
    assert math.isnan(binary_auroc([1, 1], [0.2, 0.3]))


def test_binary_and_logit_inputs():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([2.0, -1.0, 0.5, -0.2])
    labels = torch.tensor([1, 0, 0, 1])
    result = classification_metrics(logits, labels, threshold=0.0)
    assert result["auroc_macro"] == pytest.approx(sklearn_metrics.roc_auc_score(labels.numpy(), logits.numpy()))
    assert result["f1_micro"] == pytest.approx(sklearn_metrics.f1_score(labels.numpy(), (logits > 0).int().numpy()))


def test_input_errors():
    with pytest.raises(ValueError, match="multi-hot"):
        classification_metrics(np.zeros((2, 2)), np.array([[0, 2], [1, 0]]))
    with pytest.raises(ValueError, match="must both be"):
        classification_metrics(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="class_names"):
        classification_metrics(np.zeros((2, 2)), np.zeros((2, 2)), class_names=["a"])
