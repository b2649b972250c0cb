"""MedViLL's model tester for the shared checks (tests/common), and its deterministic tiny inputs."""

import torch

from medvlp_hf import (
    MedViLLConfig,
    MedViLLForImageTextClassification,
    MedViLLForPreTraining,
    MedViLLForReportGeneration,
    MedViLLForRetrieval,
    MedViLLForVQA,
    MedViLLModel,
)
from tests.common.model_tester import ModelTester

SEP, PAD = 102, 0
HEAD_LABELS = {MedViLLForVQA: 6, MedViLLForImageTextClassification: 4}
TEXT_LENGTHS = (5, 2, 3, 4)


def tiny_config(**overrides) -> MedViLLConfig:
    overrides.setdefault("hidden_dropout_prob", 0.0)
    overrides.setdefault("attention_probs_dropout_prob", 0.0)
    return MedViLLConfig.from_preset("tiny", **overrides)


def text_batch(lengths, generator, vocab_low=1000, vocab_high=2000, left_pad=False):
    """Text streams `[SEP] w.. [SEP]` with the given numbers of words, padded to the longest."""
    total = max(lengths) + 2
    rows, masks = [], []
    for n in lengths:
        words = torch.randint(vocab_low, vocab_high, (n,), generator=generator).tolist()
        stream = [SEP] + words + [SEP]
        pad = [PAD] * (total - len(stream))
        rows.append(pad + stream if left_pad else stream + pad)
        masks.append([0] * len(pad) + [1] * len(stream) if left_pad else [1] * len(stream) + [0] * len(pad))
    return torch.tensor(rows), torch.tensor(masks)


def pixel_batch(config, batch_size, generator):
    return torch.randn(batch_size, 3, config.image_size, config.image_size, generator=generator)


def head_labels(model_class, config, input_ids, attention_mask, generator):
    """Labels of the right kind for each head (what the task collators produce)."""
    batch_size = input_ids.shape[0]
    if model_class in (MedViLLForPreTraining, MedViLLForReportGeneration):
        labels = torch.full_like(input_ids, -100)
        labels[:, 1] = input_ids[:, 1]
        if model_class is MedViLLForReportGeneration:
            return {"labels": labels}
        return {"labels": labels, "itm_labels": torch.randint(0, 2, (batch_size,), generator=generator)}
    if model_class is MedViLLForVQA:
        return {"labels": torch.rand(batch_size, config.num_labels, generator=generator).round()}
    if model_class is MedViLLForRetrieval:
        return {"labels": torch.randint(0, 2, (batch_size,), generator=generator)}
    if model_class is MedViLLForImageTextClassification:
        return {"labels": torch.randint(0, 2, (batch_size, config.num_labels), generator=generator).float()}
    return {}


class MedViLLModelTester(ModelTester):
    base_model_class = MedViLLModel
    model_classes = (
        MedViLLModel,
        MedViLLForPreTraining,
        MedViLLForVQA,
        MedViLLForReportGeneration,
        MedViLLForRetrieval,
        MedViLLForImageTextClassification,
    )
    # ITM is left out of the pre-training check (training_rows): its negatives are sampled, as in the original.
    mean_loss_model_classes = (
        MedViLLForPreTraining,
        MedViLLForVQA,
        MedViLLForReportGeneration,
        MedViLLForRetrieval,
        MedViLLForImageTextClassification,
    )
    model_folder = "medvill"

    def get_config(self, **overrides):
        return tiny_config(**overrides)

    def config_for(self, model_class, **overrides):
        overrides.setdefault("num_labels", HEAD_LABELS.get(model_class, 2))
        return tiny_config(**overrides)

    def training_overrides(self):
        return {"num_pretraining_image_tokens": 4}  # every grid cell: pre-training draws no random subset

    def prepare_inputs(self, config, batch_size=3, seed=0, left_pad=False, model_class=None):
        generator = torch.Generator().manual_seed(seed)
        input_ids, attention_mask = text_batch(TEXT_LENGTHS[:batch_size], generator, left_pad=left_pad)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_batch(config, batch_size, generator) * 3,
        }

    def prepare_labels(self, model_class, config, inputs, generator):
        return head_labels(model_class, config, inputs["input_ids"], inputs["attention_mask"], generator)

    def training_rows(self, model_class, config, count):
        """Rows with precomputed ResNet features (BatchNorm batch statistics legitimately depend on the micro-batch)
        and, for pre-training, MLM labels only (see `mean_loss_model_classes`). The rows' masked-token counts
        differ (1, 1, 2, 3), so a per-micro-batch token mean would not equal the full-batch one."""
        rows = super().training_rows(model_class, config, count)
        torch.manual_seed(0)
        encoder = MedViLLModel(config).eval()
        for index, row in enumerate(rows):
            with torch.no_grad():
                row["image_features"] = encoder.get_image_features(row.pop("pixel_values")[None])[0]
            row.pop("itm_labels", None)
            if model_class in (MedViLLForPreTraining, MedViLLForReportGeneration):
                extra = torch.arange(2, max(2, 1 + index))
                row["labels"][extra] = row["input_ids"][extra]
        return rows
