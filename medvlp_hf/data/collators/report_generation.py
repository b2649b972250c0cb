"""Report-generation fine-tuning batches with MedViLL's seq2seq masks (see `masking`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import ProcessorCollator
from .masking import last_real_positions, mask_tokens_for_report_generation


class ReportGenerationCollator(ProcessorCollator):
    """Image + report -> model inputs with up to `max_predictions` text tokens (or the closing [SEP])
    replaced by [MASK], and `labels` [B, L] holding the original ids there, -100 elsewhere."""

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        text_column: str = "report",
        image_column: str = "image",
        max_predictions: int = 3,
        mask_probability: float = 0.15,
        final_token_probability: float = 0.5,
        seed: int = 0,
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs, seed)
        self.text_column = text_column
        self.max_predictions = max_predictions
        self.mask_probability = mask_probability
        self.final_token_probability = final_token_probability

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        batch = self.encode(self.images_of(examples), [example[self.text_column] for example in examples])
        batch["input_ids"], batch["labels"] = mask_tokens_for_report_generation(
            batch["input_ids"],
            self.text_token_mask(batch["input_ids"], batch["attention_mask"]),
            last_real_positions(batch["attention_mask"]),
            self.mask_token_id,
            self.generator,
            max_predictions=self.max_predictions,
            probability=self.mask_probability,
            final_token_probability=self.final_token_probability,
        )
        return batch
