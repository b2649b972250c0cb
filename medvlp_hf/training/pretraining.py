"""Pre-training evaluation: masked-token accuracy and image-report matching accuracy next to the loss (MedViLL), or
the metrics of each objective of a model that pre-trains on matching pairs (MISS: ITC, ITM, LM; M2I2: ITC, ITM, MLM,
MIM)."""

import numpy as np
import torch
from torch.nn import functional as F

from ..data import LabelConditionedNegatives, RandomNegatives
from .datasets import id_column

IGNORE_INDEX = -100
LABEL_COLUMN = "labels"
PREDICTION_OUTPUTS = ("logits", "itm_logits")


def negatives_for(dataset, text_column):
    """Label-conditioned negatives (MedViLL's) when the data has a `labels` label-set column (CheXpert labels, or
    TransCap's finding sets), else random other reports."""
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


class MatchingPairMetrics:
    """Evaluation of pre-training on matching (image, caption) pairs by the model's own objectives (MISS: ITC with
    momentum encoders and queues, ITM on hard negatives, LM on the caption; M2I2: ITC, ITM, MLM with the masking the
    model draws, MIM; `config.pretraining_objectives`), each reduced to per-example values inside the evaluation loop
    (`reduce`, for `preprocess_logits_for_metrics`) so the metrics are exact over the whole split whatever the batch and
    process layout:

    - `itc_image_to_text_accuracy` / `itc_text_to_image_accuracy`: share of images (captions) whose own caption
      (image) scores highest among the batch's momentum features and the queue, the ITC objective's targets;
    - `itm_accuracy`: share of the 3 pairs per example (the pair, the caption with its hard-negative image, the image
      with its hard-negative caption) the ITM head classifies right;
    - `lm_loss` (the token mean of the label-smoothed decoder cross-entropy, as the model's `lm_loss`), `lm_accuracy`
      (next-token arg-max) and `lm_tokens` over every target token of the split;
    - `mlm_loss` (cross-entropy to the masked tokens, without the momentum-distillation term), `mlm_accuracy` and
      `mlm_tokens` over every masked token of the split (the model's `mlm_labels`);
    - `mim_loss`: the MAE loss (mean squared error of the removed patches of the normalised image) over every removed
      patch of the split (each batch's mean weighted by its removed patches, `mim_patches`).
    """

    OUTPUTS = {
        "itc": ("logits_per_image", "logits_per_text"),
        "itm": ("itm_logits", "itm_labels"),
        "lm": ("logits",),
        "mlm": ("logits", "mlm_labels"),
        "mim": ("mim_loss", "mim_patch_mask"),
    }

    def __init__(self, objectives, label_smoothing=0.0):
        unknown = sorted(set(objectives) - set(self.OUTPUTS))
        if unknown:
            raise ValueError(f"pre-training objectives {unknown} have no evaluation; known: {sorted(self.OUTPUTS)}.")
        self.objectives = [name for name in self.OUTPUTS if name in objectives]
        self.label_smoothing = label_smoothing

    @property
    def prediction_outputs(self) -> tuple:
        """The model outputs `reduce` reads, in order (`MedVLPTrainer(prediction_outputs=...)`), each named once."""
        names = (name for objective in self.objectives for name in self.OUTPUTS[objective])
        return tuple(dict.fromkeys(names))

    def reduce(self, outputs, labels):
        """Per-example (B, k) float arrays, one per objective: ITC (image->text, text->image) right, ITM (pair,
        negative image, negative caption) right, LM (summed loss, target tokens, right tokens), MLM (summed loss,
        masked tokens, right tokens), MIM (the batch's loss, removed patches)."""
        outputs = dict(zip(self.prediction_outputs, outputs if isinstance(outputs, tuple) else (outputs,)))
        reduced = []
        if "itc" in self.objectives:
            rows = torch.arange(outputs["logits_per_image"].shape[0], device=outputs["logits_per_image"].device)
            reduced.append(torch.stack([outputs[name].argmax(-1) == rows for name in self.OUTPUTS["itc"]], -1).float())
        if "itm" in self.objectives:
            right = outputs["itm_logits"].argmax(-1) == outputs["itm_labels"]
            reduced.append(right.view(3, -1).T.float())
        if "lm" in self.objectives:
            reduced.append(self._token_sums(outputs["logits"][:, :-1], labels[:, 1:], self.label_smoothing))
        if "mlm" in self.objectives:
            reduced.append(self._token_sums(outputs["logits"], outputs["mlm_labels"]))
        if "mim" in self.objectives:
            removed = outputs["mim_patch_mask"].float().sum(-1)
            reduced.append(torch.stack([outputs["mim_loss"].float().expand_as(removed), removed], -1))
        return tuple(reduced)

    @staticmethod
    def _token_sums(logits, targets, label_smoothing=0.0):
        """(B, 3): each example's summed cross-entropy, scored tokens and arg-max-right tokens."""
        predicted = logits.float()
        scored = targets != IGNORE_INDEX
        losses = F.cross_entropy(predicted.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                 label_smoothing=label_smoothing, reduction="none")
        right = (predicted.argmax(-1) == targets) & scored
        return torch.stack([losses.sum(-1), scored.sum(-1).float(), right.sum(-1).float()], -1)

    def _by_objective(self, predictions):
        predictions = predictions if isinstance(predictions, tuple) else (predictions,)
        return {objective: np.asarray(values, dtype=np.float64) for objective, values in zip(self.objectives, predictions)}

    def compute_metrics(self, prediction) -> dict:
        reduced = self._by_objective(prediction.predictions)
        metrics = {}
        if "itc" in reduced:
            metrics["itc_image_to_text_accuracy"], metrics["itc_text_to_image_accuracy"] = reduced["itc"].mean(0)
        if "itm" in reduced:
            metrics["itm_accuracy"] = float(reduced["itm"].mean())
        for objective in ("lm", "mlm"):
            if objective in reduced:
                loss_sum, tokens, right = reduced[objective].sum(0)
                metrics.update({f"{objective}_loss": loss_sum / tokens, f"{objective}_accuracy": right / tokens,
                                f"{objective}_tokens": int(tokens)})
        if "mim" in reduced:
            losses, removed = reduced["mim"].T
            metrics.update(mim_loss=(losses * removed).sum() / removed.sum(), mim_patches=int(removed.sum()))
        return {name: float(value) if not isinstance(value, int) else value for name, value in metrics.items()}

    def prediction_rows(self, output, dataset):
        reduced = self._by_objective(output.predictions)
        for index, row_id in enumerate(dataset[id_column(dataset)]):
            row = {"id": row_id}
            if "itc" in reduced:
                row["itc_image_to_text_right"], row["itc_text_to_image_right"] = map(bool, reduced["itc"][index])
            if "itm" in reduced:
                row["itm_pair_right"], row["itm_negative_image_right"], row["itm_negative_caption_right"] = map(
                    bool, reduced["itm"][index]
                )
            for objective in ("lm", "mlm"):
                if objective in reduced:
                    loss_sum, tokens, right = reduced[objective][index]
                    row.update({f"{objective}_loss_sum": float(loss_sum), f"{objective}_tokens": int(tokens),
                                f"{objective}_right_tokens": int(right)})
            yield row


def check_pair_batches(splits, training_args):
    """Raise ValueError when a split would end with a batch of one example: ITM draws each hard negative from the other
    examples of its batch, so a lone example has none. Names the split and the batch-size option to change."""
    options = {"train": "per_device_train_batch_size", "eval": "per_device_eval_batch_size",
               "predict": "per_device_eval_batch_size"}
    for phase, dataset in splits.items():
        batch_size = getattr(training_args, options[phase])
        per_process = -(-len(dataset) // training_args.world_size)
        if phase == "train" and training_args.dataloader_drop_last:
            continue
        if per_process % batch_size == 1:
            raise ValueError(
                f"the {phase} split ({len(dataset)} examples over {training_args.world_size} process(es)) ends with a "
                f"batch of 1 at --{options[phase]} {batch_size}, and ITM needs at least 2 examples per batch to draw "
                f"hard negatives from; choose another --{options[phase]}"
                + (" or --dataloader_drop_last." if phase == "train" else " (or --max_*_samples).")
            )
