"""Pre-training batches: (image, caption) pairs, optionally with MLM on the text and image-text matching labels."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .base import ProcessorCollator, text_labels_mode
from .masking import mask_tokens_for_mlm
from .negatives import NegativeSampler


class PreTrainingCollator(ProcessorCollator):
    """Image + caption (report) -> model inputs, optionally with MLM `labels` [B, L] and `itm_labels` [B].

    With a `negatives` sampler, each example's caption is replaced with `negative_probability` by the caption of
    the record the sampler draws (MedViLL: `LabelConditionedNegatives`, p=0.5) and `itm_labels` says which pairs
    match (1) or not (0). With `mlm_probability`, MLM masks the text tokens of whichever caption is used (never the
    tokenizer's special tokens or padding): each with `mlm_probability`, 80% mask token / 10% random token / 10%
    unchanged by default, and `labels` holds the original ids there, -100 elsewhere; `mask_first_if_none=True`
    masks the first text token of a row where nothing was chosen, as MedViLL does.

    Models that mask text or draw hard negatives inside their forward (M2I2, MISS) take plain pairs:
    `PreTrainingCollator(processor, mlm_probability=None)` gives exactly the processor's outputs, with the LM `labels`
    of the captions when the processor writes them (`text_label_kinds`, MISS: the decoder's targets).
    """

    def __init__(
        self,
        processor,
        negatives: NegativeSampler | None = None,
        negative_probability: float = 0.5,
        mlm_probability: float | None = 0.15,
        mask_ratio: float = 0.8,
        random_ratio: float = 0.1,
        mask_first_if_none: bool = False,
        max_length: int | None = None,
        text_column: str = "report",
        image_column: str = "image",
        seed: int = 0,
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs, seed)
        if mlm_probability is not None and self.tokenizer.mask_token_id is None:
            raise ValueError(
                f"{type(self.tokenizer).__name__} has no mask token, so it cannot do MLM; pass mlm_probability=None"
            )
        self.negatives = negatives
        self.negative_probability = negative_probability
        self.mlm_probability = mlm_probability
        self.mask_ratio = mask_ratio
        self.random_ratio = random_ratio
        self.mask_first_if_none = mask_first_if_none
        self.text_column = text_column

    def pair_text(self, example: Mapping) -> tuple[str, int]:
        """The caption to pair with the example's image and its matching label."""
        if self.negatives is not None and self.random() < self.negative_probability:
            return self.negatives.text(self.negatives.sample_index(example, self.generator)), 0
        return example[self.text_column], 1

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        texts, itm_labels = zip(*(self.pair_text(example) for example in examples))
        labels_mode = text_labels_mode(self.processor) if self.mlm_probability is None else {}
        batch = self.encode(self.images_of(examples), texts, **labels_mode)
        if self.mlm_probability is not None:
            batch["input_ids"], batch["labels"] = mask_tokens_for_mlm(
                batch["input_ids"],
                self.text_token_mask(batch),
                self.tokenizer.mask_token_id,
                len(self.tokenizer),
                self.generator,
                probability=self.mlm_probability,
                mask_ratio=self.mask_ratio,
                random_ratio=self.random_ratio,
                mask_first_if_none=self.mask_first_if_none,
            )
        if self.negatives is not None:
            batch["itm_labels"] = torch.tensor(itm_labels, dtype=torch.long)
        return batch
