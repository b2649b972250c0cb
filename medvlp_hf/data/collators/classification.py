"""Multi-label diagnosis batches: image (+ report) -> model inputs and multi-hot float `labels`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .base import ProcessorCollator


class ClassificationCollator(ProcessorCollator):
    """`labels` [B, K] float from the label column (the 14 CheXpert observations by default).

    The text is the report column, or empty strings with `text_column=None` (image-only classification).
    Targets must be 0/1: load with an uncertain/blank policy that maps -1 and blanks to 0 or 1.
    """

    def __init__(
        self,
        processor,
        label_column: str = "labels",
        text_column: str | None = "report",
        max_length: int | None = None,
        image_column: str = "image",
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs)
        self.label_column = label_column
        self.text_column = text_column

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        labels = torch.tensor([list(example[self.label_column]) for example in examples], dtype=torch.float32)
        if not torch.isin(labels, torch.tensor([0.0, 1.0])).all():
            raise ValueError(
                f"column {self.label_column!r} holds values other than 0/1 (uncertain -1 or blank NaN); load the "
                "data with uncertain='zeros'|'ones' and blank='zeros'"
            )
        texts = [example[self.text_column] if self.text_column else "" for example in examples]
        batch = self.encode(self.images_of(examples), texts)
        batch["labels"] = labels
        return batch
