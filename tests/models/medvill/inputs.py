"""Deterministic tiny MedViLL inputs shared by the model tests."""

import torch

from medvlp_hf import MedViLLConfig

SEP, PAD = 102, 0
HEAD_LABELS = {"ForVQA": 6, "ForImageTextClassification": 4}


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


def head_labels(head_name, config, input_ids, attention_mask, generator):
    """Labels of the right kind for each head (what the task collators produce)."""
    batch_size = input_ids.shape[0]
    if head_name == "ForPreTraining":
        labels = torch.full_like(input_ids, -100)
        labels[:, 1] = input_ids[:, 1]
        return {"labels": labels, "itm_labels": torch.randint(0, 2, (batch_size,), generator=generator)}
    if head_name == "ForReportGeneration":
        labels = torch.full_like(input_ids, -100)
        labels[:, 1] = input_ids[:, 1]
        return {"labels": labels}
    if head_name == "ForVQA":
        return {"labels": torch.rand(batch_size, config.num_labels, generator=generator).round()}
    if head_name == "ForRetrieval":
        return {"labels": torch.randint(0, 2, (batch_size,), generator=generator)}
    if head_name == "ForImageTextClassification":
        return {"labels": torch.randint(0, 2, (batch_size, config.num_labels), generator=generator).float()}
    return {}
