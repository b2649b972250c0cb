"""Multi-label classification scores as MedViLL / MedUnifier report them (sklearn semantics).

AUROC per class is the Mann-Whitney statistic with mid-ranks for ties (equal to sklearn's
trapezoidal ``roc_auc_score``); micro AUROC pools every (sample, class) cell; macro AUROC averages the
classes where it is defined (a class with one label value in ``labels`` has no AUROC and is reported as
NaN, where sklearn would raise). F1 uses ``score > threshold`` (MedViLL/MMBT: ``sigmoid(logits) > 0.5``)
with sklearn's ``zero_division=0``.
"""
import numpy as np

from medvlp_hf.metrics._arrays import as_numpy


def _mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def binary_auroc(labels, scores) -> float:
    """AUROC of one binary problem; NaN when ``labels`` holds a single class."""
    labels, scores = as_numpy(labels).astype(bool).ravel(), as_numpy(scores, np.float64).ravel()
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = _mid_ranks(scores)[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _f1_parts(predicted: np.ndarray, expected: np.ndarray, axis=None):
    tp = (predicted & expected).sum(axis=axis)
    fp = (predicted & ~expected).sum(axis=axis)
    fn = (~predicted & expected).sum(axis=axis)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(np.shape(tp)), where=denominator > 0)
    precision = np.divide(tp, tp + fp, out=np.zeros(np.shape(tp)), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(np.shape(tp)), where=(tp + fn) > 0)
    return f1, precision, recall


def classification_metrics(scores, labels, threshold: float = 0.5, class_names=None) -> dict:
    """AUROC micro/macro, F1 micro/macro at ``threshold`` and a per-class table.

    ``scores``: (N, C) probabilities or logits (pass ``threshold=0`` for logits); ``labels``: (N, C)
    multi-hot 0/1. A 1-D pair is treated as one binary class.
    """
    scores, labels = as_numpy(scores, np.float64), as_numpy(labels)
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels.reshape(-1, 1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (samples, classes)")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be multi-hot 0/1; for single-label multi-class targets one-hot them first")
    expected = labels.astype(bool)
    names = list(class_names) if class_names is not None else [str(c) for c in range(scores.shape[1])]
    if len(names) != scores.shape[1]:
        raise ValueError(f"{len(names)} class_names for {scores.shape[1]} classes")
    predicted = scores > threshold
    per_class_auroc = np.array([binary_auroc(expected[:, c], scores[:, c]) for c in range(scores.shape[1])])
    f1, precision, recall = _f1_parts(predicted, expected, axis=0)
    micro_f1, _, _ = _f1_parts(predicted, expected)
    defined = per_class_auroc[~np.isnan(per_class_auroc)]
    return {
        "auroc_micro": binary_auroc(expected, scores),
        "auroc_macro": float(defined.mean()) if defined.size else float("nan"),
        "f1_micro": float(micro_f1),
        "f1_macro": float(f1.mean()),
        "threshold": threshold,
        "per_class": {
            name: {
                "auroc": float(per_class_auroc[c]),
                "f1": float(f1[c]),
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "support": int(expected[:, c].sum()),
            }
            for c, name in enumerate(names)
        },
    }
