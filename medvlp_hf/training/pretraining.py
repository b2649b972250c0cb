"""Pre-training evaluation: masked-token accuracy and image-report matching accuracy next to the loss."""

import numpy as np

from ..data import LabelConditionedNegatives, RandomNegatives
from .datasets import id_column

IGNORE_INDEX = -100
LABEL_COLUMN = "labels"
PREDICTION_OUTPUTS = ("logits", "itm_logits")


def negatives_for(dataset, text_column):
    """MedViLL's label-conditioned negatives when the data has CheXpert labels, else random other reports."""
    if LABEL_COLUMN in dataset.column_names:
        return LabelConditionedNegatives(dataset, text_column=text_column, label_column=LABEL_COLUMN)
    return RandomNegatives(dataset, text_column=text_column)


def reduce_pretraining_outputs(outputs, labels):
    """preprocess_logits_for_metrics: keep the arg-max token of the (B, L, V) MLM logits, not the logits."""
    mlm_logits, itm_logits = outputs
    return mlm_logits.argmax(-1), itm_logits


def pretraining_metrics(prediction):
    mlm_predictions, itm_logits = prediction.predictions
    mlm_labels, itm_labels = prediction.label_ids
    masked = mlm_labels != IGNORE_INDEX
    return {
        "mlm_accuracy": float((mlm_predictions[masked] == mlm_labels[masked]).mean()) if masked.any() else float("nan"),
        "masked_tokens": int(masked.sum()),
        "itm_accuracy": float((np.asarray(itm_logits).argmax(-1) == itm_labels).mean()),
    }


def pretraining_prediction_rows(output, dataset):
    mlm_predictions, itm_logits = output.predictions
    mlm_labels, itm_labels = output.label_ids
    itm_logits = np.asarray(itm_logits, dtype=np.float64)
    shifted = np.exp(itm_logits - itm_logits.max(-1, keepdims=True))
    match_probabilities = shifted[:, 1] / shifted.sum(-1)
    for row_id, predicted, labels, itm_label, probability in zip(
        dataset[id_column(dataset)], mlm_predictions, mlm_labels, itm_labels, match_probabilities, strict=True
    ):
        masked = labels != IGNORE_INDEX
        yield {
            "id": row_id,
            "itm_label": int(itm_label),
            "match_probability": float(probability),
            "masked_tokens": int(masked.sum()),
            "masked_correct": int((predicted[masked] == labels[masked]).sum()),
        }
