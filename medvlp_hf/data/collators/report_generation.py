"""Report-generation fine-tuning batches: image + report -> the model's training inputs for generating the report."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import ProcessorCollator


class ReportGenerationCollator(ProcessorCollator):
    """Image + report -> `processor(images=..., text_target=reports, generator=...)`: `pixel_values`, `labels` and
    whatever the model's target layout adds. A report decoder (BLIP-style) gets the report ids with -100 at
    padding; MedViLL gets its report stream with up to 3 text tokens (or the closing [SEP]) replaced by [MASK],
    drawn from this collator's generator, and `labels` holding the original ids there, -100 elsewhere."""

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        text_column: str = "report",
        image_column: str = "image",
        seed: int = 0,
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs, seed)
        self.text_column = text_column

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        reports = [example[self.text_column] for example in examples]
        return self.encode_targets(reports, images=self.images_of(examples), max_length=self.max_length)
