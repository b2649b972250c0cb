"""Multi-label diagnosis classification over the 14 CheXpert observations (MedViLL's image + report
classifier): label fields of the head, the optional positive-class weighting, and its metrics."""

from dataclasses import dataclass, field

import numpy as np

from ..data import CHEXPERT_LABELS
from ..metrics import classification_metrics
from .datasets import id_column

LABEL_COLUMN = "labels"


@dataclass
class ClassificationArguments:
    use_report_text: bool = field(
        default=True,
        metadata={"help": "Read the report with the image, as MedViLL's diagnosis classifier does; "
                  "--use_report_text false classifies from the image alone."},
    )
    pos_weight: bool = field(
        default=False,
        metadata={"help": "Weight each label's positives by negatives/positives in the training split "
                  "(MedViLL's BCE pos_weight)."},
    )
    threshold: float = field(default=0.5, metadata={"help": "Probability above which a label is predicted (F1)."})


def set_label_fields(config):
    config.id2label = dict(enumerate(CHEXPERT_LABELS))
    config.label2id = {name: index for index, name in enumerate(CHEXPERT_LABELS)}
    config.problem_type = "multi_label_classification"


def positive_class_weights(train_dataset):
    """negatives / positives per label over the training split (1.0 for a label without positives)."""
    labels = np.asarray(train_dataset[LABEL_COLUMN], dtype=np.float64)
    positives = labels.sum(axis=0)
    weights = np.divide(len(labels) - positives, positives, out=np.ones_like(positives), where=positives > 0)
    return weights.tolist()


def _sigmoid(logits):
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def classification_compute_metrics(threshold):
    """AUROC micro/macro and F1 micro/macro at `threshold` (per-class numbers stay in the predictions file)."""

    def compute_metrics(prediction):
        scores = classification_metrics(_sigmoid(prediction.predictions), prediction.label_ids, threshold=threshold)
        return {key: scores[key] for key in ("auroc_micro", "auroc_macro", "f1_micro", "f1_macro")}

    return compute_metrics


def classification_prediction_rows(threshold):
    def rows(output, dataset):
        probabilities = _sigmoid(output.predictions)
        ids = dataset[id_column(dataset)]
        for row_id, labels, row in zip(ids, output.label_ids, probabilities, strict=True):
            yield {
                "id": row_id,
                "labels": [name for name, value in zip(CHEXPERT_LABELS, labels) if value == 1],
                "predicted": [name for name, value in zip(CHEXPERT_LABELS, row) if value > threshold],
                "probabilities": dict(zip(CHEXPERT_LABELS, map(float, row))),
            }

    return rows
