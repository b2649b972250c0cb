"""Pre-training batches: masked language modelling on the report plus image-report matching labels."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .base import ProcessorCollator
from .masking import mask_tokens_for_mlm
from .negatives import NegativeSampler


class PreTrainingCollator(ProcessorCollator):
    """Image + report -> MLM-masked model inputs, `labels` [B, L] (MLM targets, -100 elsewhere) and
    `itm_labels` [B] (1 = the report belongs to the image, 0 = a negative).

    With a `negatives` sampler, each example's report is replaced with `negative_probability` by the
    report of the record the sampler draws (MedViLL: `LabelConditionedNegatives`, p=0.5); without one all
    pairs are positives. MLM then masks the text tokens of whichever report is used, never the [SEP]s or
    padding: each with `mlm_probability`, 80% [MASK] / 10% random token / 10% unchanged by default.
    """

    def __init__(
        self,
        processor,
        negatives: NegativeSampler | None = None,
        negative_probability: float = 0.5,
        mlm_probability: float = 0.15,
        mask_ratio: float = 0.8,
        random_ratio: float = 0.1,
        max_length: int | None = None,
        text_column: str = "report",
        image_column: str = "image",
        seed: int = 0,
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs, seed)
        self.negatives = negatives
        self.negative_probability = negative_probability
        self.mlm_probability = mlm_probability
        self.mask_ratio = mask_ratio
        self.random_ratio = random_ratio
        self.text_column = text_column

    def pair_text(self, example: Mapping) -> tuple[str, int]:
        """The report to pair with the example's image and its matching label."""
        if self.negatives is not None and self.random() < self.negative_probability:
            return self.negatives.text(self.negatives.sample_index(example, self.generator)), 0
        return example[self.text_column], 1

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        texts, itm_labels = zip(*(self.pair_text(example) for example in examples))
        batch = self.encode(self.images_of(examples), list(texts))
        batch["input_ids"], batch["labels"] = mask_tokens_for_mlm(
            batch["input_ids"],
            self.text_token_mask(batch["input_ids"], batch["attention_mask"]),
            self.mask_token_id,
            self.vocab_size,
            self.generator,
            probability=self.mlm_probability,
            mask_ratio=self.mask_ratio,
            random_ratio=self.random_ratio,
        )
        batch["itm_labels"] = torch.tensor(itm_labels, dtype=torch.long)
        return batch
