"""Trainer integration: the logged loss and the trained weights do not depend on how a batch is split
into gradient-accumulation steps (ecosystem.md §7/§8, transformers#47688).

The examples carry precomputed ResNet grid features: BatchNorm batch statistics legitimately depend on
the micro-batch, and this test is about loss normalisation only."""

import pytest
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from medvlp_hf import MedViLLForReportGeneration, MedViLLForVQA
from tests.models.medvill.inputs import head_labels, text_batch, tiny_config


class FixedExamples(Dataset):
    def __init__(self, model_class, config, size=8):
        generator = torch.Generator().manual_seed(0)
        input_ids, attention_mask = text_batch([3 + i % 4 for i in range(size)], generator)
        labels = head_labels(model_class.__name__.removeprefix("MedViLL"), config, input_ids, attention_mask, generator)
        if model_class is MedViLLForReportGeneration:
            labels["labels"][::2, 2] = input_ids[::2, 2]
        self.rows = [
            {"input_ids": input_ids[i], "attention_mask": attention_mask[i],
             "image_features": torch.randn(config.num_image_tokens, config.image_feature_size, generator=generator), **{k: v[i] for k, v in labels.items()}}
            for i in range(size)
        ]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def train(model_class, tmp_path, batch_size, accumulation):
    config = tiny_config(num_labels=3)
    torch.manual_seed(0)
    model = model_class(config)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"run-{batch_size}-{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=1,
        learning_rate=1e-2,
        optim="sgd",
        lr_scheduler_type="constant",
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_drop_last=False,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=FixedExamples(model_class, config))
    result = trainer.train()
    return result.training_loss, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("model_class", [MedViLLForVQA, MedViLLForReportGeneration], ids=lambda c: c.__name__)
def test_gradient_accumulation_gives_the_same_loss_and_weights(model_class, tmp_path):
    full_loss, full_weights = train(model_class, tmp_path, batch_size=8, accumulation=1)
    split_loss, split_weights = train(model_class, tmp_path, batch_size=2, accumulation=4)
    assert split_loss == pytest.approx(full_loss, rel=1e-4)
    for name in full_weights:
        torch.testing.assert_close(split_weights[name], full_weights[name], atol=1e-6, rtol=1e-4, msg=name)
