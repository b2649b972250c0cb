"""CheXpert labels for loaders: label-string parsing and the uncertain/blank policy.

The 14 observation names (MIMIC-CXR csv order) are `medvlp_hf.metrics`' `CHEXPERT_OBSERVATIONS`, re-exported
here as `CHEXPERT_LABELS` so labels and clinical-efficacy scores share one label space.

Every loader that yields CheXpert labels returns them as a 14-float vector in `CHEXPERT_LABELS` order.
The labeler values are 1.0 (positive), 0.0 (negative), -1.0 (uncertain) and blank (not mentioned);
`apply_label_policy` turns them into training targets, and the policy is a loader argument.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from medvlp_hf.metrics.chexpert_labels import CHEXPERT_OBSERVATIONS as CHEXPERT_LABELS

from .errors import DataFormatError

NUM_CHEXPERT_LABELS = len(CHEXPERT_LABELS)
_INDEX_BY_LOWER_NAME = {name.lower(): index for index, name in enumerate(CHEXPERT_LABELS)}

UNCERTAIN_POLICIES = ("zeros", "ones", "keep")
BLANK_POLICIES = ("zeros", "keep")


def chexpert_index(name: str) -> int:
    """Position of an observation name (case-insensitive) in `CHEXPERT_LABELS`."""
    try:
        return _INDEX_BY_LOWER_NAME[name.strip().lower()]
    except KeyError:
        raise DataFormatError(
            f"unknown CheXpert observation {name!r}; expected one of {', '.join(CHEXPERT_LABELS)}"
        ) from None


def labels_from_names(names: Iterable[str]) -> list[float]:
    """Multi-hot 14-vector with 1.0 at every named observation."""
    vector = [0.0] * NUM_CHEXPERT_LABELS
    for name in names:
        vector[chexpert_index(name)] = 1.0
    return vector


def parse_label_string(label: str) -> list[float]:
    """MedViLL's JSONL label string ("'Cardiomegaly', 'Edema'"; empty is '' or "''") as a 14-vector."""
    if not isinstance(label, str):
        raise DataFormatError(f"label must be a string like \"'Cardiomegaly', 'Edema'\", got {label!r}")
    names = [part.strip().strip("'\"").strip() for part in label.split(",")]
    return labels_from_names(name for name in names if name)


def _parse_value(value) -> float:
    """One labeler cell (1/0/-1 as number or text, or blank) as a float; blank is NaN."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        value = value.strip()
        if value == "" or value.lower() == "nan":
            return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(f"CheXpert value {value!r} is not 1, 0, -1 or blank") from None
    if not math.isnan(number) and number not in (1.0, 0.0, -1.0):
        raise DataFormatError(f"CheXpert value {value!r} is not 1, 0, -1 or blank")
    return number


def apply_label_policy(values: Sequence, uncertain: str = "zeros", blank: str = "zeros") -> list[float]:
    """Map 14 labeler cells to targets: uncertain (-1) -> 0/1/kept -1, blank -> 0/kept NaN."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain={uncertain!r}; choose one of {UNCERTAIN_POLICIES}")
    if blank not in BLANK_POLICIES:
        raise ValueError(f"blank={blank!r}; choose one of {BLANK_POLICIES}")
    if len(values) != NUM_CHEXPERT_LABELS:
        raise DataFormatError(f"expected {NUM_CHEXPERT_LABELS} CheXpert values, got {len(values)}")
    result = []
    for value in map(_parse_value, values):
        if math.isnan(value):
            value = 0.0 if blank == "zeros" else math.nan
        elif value == -1.0:
            value = {"zeros": 0.0, "ones": 1.0, "keep": -1.0}[uncertain]
        result.append(value)
    return result


def label_set(vector: Sequence[float]) -> frozenset[int]:
    """Indices of positive observations: two records have the same label set iff these are equal."""
    return frozenset(index for index, value in enumerate(vector) if value == 1.0)
