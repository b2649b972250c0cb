"""The CheXpert label space shared by every report labeler and the clinical-efficacy scores.

A labeler is any callable ``texts -> np.ndarray`` of shape (N, 14), columns in
``CHEXPERT_OBSERVATIONS`` order, values ``POSITIVE`` (1), ``NEGATIVE`` (0), ``UNCERTAIN`` (-1) or
``NaN`` (not mentioned), the encoding of the CheXpert labeler and of MIMIC-CXR's chexpert.csv.
"""
from typing import Protocol
from typing import Sequence

import numpy as np

CHEXPERT_OBSERVATIONS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
FIVE_OBSERVATIONS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
POSITIVE = 1.0
NEGATIVE = 0.0
UNCERTAIN = -1.0


class ReportLabeler(Protocol):
    """Turns report texts into an (N, 14) CheXpert label matrix."""

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


def check_label_matrix(labels, name: str = "labels") -> np.ndarray:
    """``labels`` as a float (N, 14) array, after checking that every value is 1, 0, -1 or NaN."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != len(CHEXPERT_OBSERVATIONS):
        raise ValueError(f"{name} must be (reports, {len(CHEXPERT_OBSERVATIONS)}), got shape {labels.shape}")
    known = np.isnan(labels) | np.isin(labels, (POSITIVE, NEGATIVE, UNCERTAIN))
    if not known.all():
        row, column = np.argwhere(~known)[0]
        raise ValueError(
            f"{name}[{row}, {column}] ({CHEXPERT_OBSERVATIONS[column]}) is {labels[row, column]}; "
            "CheXpert labels are 1, 0, -1 or NaN"
        )
    return labels
