"""Clinical efficacy (CE): agreement of CheXpert labels extracted from generated and reference reports.

``clinical_efficacy_scores`` binarises both label matrices (positive -> 1; uncertain -> 1 or 0 by
``uncertain``; negative and unmentioned -> 0, as f1chexbert's report-generation mode and R2Gen-style
CE do) and reports precision / recall / F1 / accuracy per observation and micro/macro over the 14
observations and over the 5 (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion), plus
the share of reports whose labels all match. A class with no predicted (or no true) positive has
precision (recall) 0, sklearn's ``zero_division=0``.

``medvill_label_accuracy`` is MedViLL's ``get_label_accuracy`` on the raw {1, 0, -1, NaN} matrices:
per observation, accuracy counts NaN == NaN as a match; precision = exact matches among mentioned
labels / mentioned predictions; recall = the same / mentioned references; F1 their harmonic mean; each
averaged over the observations where it is defined (NaN excluded).
"""
import numpy as np

from medvlp_hf.metrics.chexpert_labeler import CheXpertRuleLabeler
from medvlp_hf.metrics.chexpert_labels import CHEXPERT_OBSERVATIONS
from medvlp_hf.metrics.chexpert_labels import FIVE_OBSERVATIONS
from medvlp_hf.metrics.chexpert_labels import POSITIVE
from medvlp_hf.metrics.chexpert_labels import UNCERTAIN
from medvlp_hf.metrics.chexpert_labels import check_label_matrix

UNCERTAIN_POLICIES = ("positive", "negative")


def binarize_labels(labels, uncertain: str = "positive") -> np.ndarray:
    """1 for positive (and uncertain when ``uncertain="positive"``), 0 otherwise, NaN included."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain={uncertain!r}; choose one of {UNCERTAIN_POLICIES}")
    labels = check_label_matrix(labels)
    hits = labels == POSITIVE
    if uncertain == "positive":
        hits |= labels == UNCERTAIN
    return hits.astype(np.int64)


def _safe_ratio(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros(np.shape(numerator), dtype=np.float64), where=denominator > 0)


def _f1(precision, recall):
    return _safe_ratio(2 * precision * recall, precision + recall)


def _binary_scores(predicted: np.ndarray, expected: np.ndarray, names) -> dict:
    """Per-class and micro/macro precision, recall, F1, accuracy of two (N, C) 0/1 matrices."""
    tp = (predicted & expected).sum(axis=0)
    fp = (predicted & (1 - expected)).sum(axis=0)
    fn = ((1 - predicted) & expected).sum(axis=0)
    precision, recall = _safe_ratio(tp, tp + fp), _safe_ratio(tp, tp + fn)
    accuracy = (predicted == expected).mean(axis=0)
    micro_precision = _safe_ratio(tp.sum(), tp.sum() + fp.sum())
    micro_recall = _safe_ratio(tp.sum(), tp.sum() + fn.sum())
    return {
        "per_observation": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(_f1(precision[i], recall[i])),
                "accuracy": float(accuracy[i]),
                "support": int(expected[:, i].sum()),
            }
            for i, name in enumerate(names)
        },
        "precision_micro": float(micro_precision),
        "recall_micro": float(micro_recall),
        "f1_micro": float(_f1(micro_precision, micro_recall)),
        "accuracy_micro": float((predicted == expected).mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(_f1(precision, recall).mean()),
        "accuracy_macro": float(accuracy.mean()),
        "exact_match": float((predicted == expected).all(axis=1).mean()),
    }


def clinical_efficacy_scores(predicted_labels, reference_labels, uncertain: str = "positive") -> dict:
    """CE scores of (N, 14) label matrices; keys ``<score>_<micro|macro>_<14|5>``, ``exact_match_<14|5>``
    and ``per_observation`` (all 14)."""
    predicted = binarize_labels(predicted_labels, uncertain)
    expected = binarize_labels(reference_labels, uncertain)
    if predicted.shape != expected.shape:
        raise ValueError(f"predicted labels {predicted.shape} and reference labels {expected.shape} differ in shape")
    if len(predicted) == 0:
        raise ValueError("no reports to score")
    five = [CHEXPERT_OBSERVATIONS.index(name) for name in FIVE_OBSERVATIONS]
    result = {"uncertain": uncertain}
    for suffix, columns in (("14", list(range(len(CHEXPERT_OBSERVATIONS)))), ("5", five)):
        names = [CHEXPERT_OBSERVATIONS[c] for c in columns]
        scores = _binary_scores(predicted[:, columns], expected[:, columns], names)
        per_observation = scores.pop("per_observation")
        if suffix == "14":
            result["per_observation"] = per_observation
        result.update({f"{key}_{suffix}": value for key, value in scores.items()})
    return result


def medvill_label_accuracy(predicted_labels, reference_labels) -> dict:
    """MedViLL ``get_label_accuracy``: category-averaged accuracy / precision / recall / F1 on raw labels."""
    predicted = check_label_matrix(predicted_labels, "predicted_labels")
    expected = check_label_matrix(reference_labels, "reference_labels")
    if predicted.shape != expected.shape:
        raise ValueError(f"predicted labels {predicted.shape} and reference labels {expected.shape} differ in shape")
    both_missing = np.isnan(predicted) & np.isnan(expected)
    accuracy = ((predicted == expected) | both_missing).mean(axis=0)
    matches = (predicted == expected).sum(axis=0).astype(np.float64)
    mentioned_predicted = (~np.isnan(predicted)).sum(axis=0)
    mentioned_expected = (~np.isnan(expected)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(mentioned_predicted > 0, matches / mentioned_predicted, np.nan)
        recall = np.where(mentioned_expected > 0, matches / mentioned_expected, np.nan)
        f1 = np.where((precision > 0) & (recall > 0), 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
    return {
        "medvill_accuracy": _mean_of_defined(accuracy),
        "medvill_precision": _mean_of_defined(precision),
        "medvill_recall": _mean_of_defined(recall),
        "medvill_f1": _mean_of_defined(f1),
    }


def _mean_of_defined(values) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def compute_clinical_efficacy(predictions, references, labeler=None, uncertain: str = "positive") -> dict:
    """Label generated and reference reports with ``labeler`` (default: the rule-based CheXpert
    labeler) and return ``clinical_efficacy_scores`` plus ``medvill_label_accuracy``."""
    labeler = labeler if labeler is not None else CheXpertRuleLabeler()
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    predicted, expected = labeler(list(predictions)), labeler(list(references))
    return {**clinical_efficacy_scores(predicted, expected, uncertain), **medvill_label_accuracy(predicted, expected)}
