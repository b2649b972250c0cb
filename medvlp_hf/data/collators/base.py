"""What every task collator shares: calling the processor on (image, text) pairs and the random generator.

The processor is duck-typed: `processor(images=[PIL...], text=[str...], padding="longest",
truncation=True, max_length=int, return_tensors="pt", **processor_kwargs)` must return `input_ids`,
`attention_mask` and `pixel_values` with the text stream `[SEP] w_1 .. w_n [SEP] [PAD]..`, and
`processor.tokenizer` gives the special token ids. Datasets must keep their raw columns for these
collators (`TrainingArguments(remove_unused_columns=False)`).

All randomness comes from the collator's own `torch.Generator` seeded by `seed`, so a collator built
with the same seed produces the same batches. In a DataLoader worker process the generator is seeded from
`seed` and the worker's seed instead: every worker gets a copy of the collator, and copies of one generator
would draw the same masks and negatives in every worker.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..imaging import to_pil_image


class ProcessorCollator:
    """Base class: encodes (image, text) pairs and finds the text tokens of the text stream."""

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        image_column: str = "image",
        processor_kwargs: Mapping | None = None,
        seed: int = 0,
    ):
        self.processor = processor
        self.max_length = max_length
        self.image_column = image_column
        self.processor_kwargs = dict(processor_kwargs or {})
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._worker_seed = None
        tokenizer = processor.tokenizer
        self.sep_token_id = tokenizer.sep_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.cls_token_id = tokenizer.cls_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)

    @property
    def generator(self) -> torch.Generator:
        """The collator's generator; inside a DataLoader worker, one seeded by (seed, worker seed)."""
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self._generator = torch.Generator().manual_seed((self.seed * 1_000_003 + worker.seed) % 2**63)
        return self._generator

    def images_of(self, examples: Sequence[Mapping]) -> list:
        return [to_pil_image(example[self.image_column]) for example in examples]

    def encode(self, images: list, texts: list[str]) -> dict:
        """Processor output as a plain dict of tensors."""
        kwargs = dict(padding="longest", truncation=True, return_tensors="pt", **self.processor_kwargs)
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        encoded = self.processor(images=images, text=list(texts), **kwargs)
        return {key: encoded[key] for key in ("input_ids", "attention_mask", "pixel_values")}

    def text_token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """True at the wordpieces of the text: not [CLS]/[SEP]/[PAD], not padding."""
        special = torch.tensor([self.cls_token_id, self.sep_token_id, self.pad_token_id])
        return attention_mask.bool() & ~torch.isin(input_ids, special)

    def random(self) -> float:
        """One uniform draw in [0, 1) from the collator's generator."""
        return float(torch.rand((), generator=self.generator))

    def randint(self, high: int) -> int:
        """One uniform integer in [0, high) from the collator's generator."""
        return int(torch.randint(high, (), generator=self.generator))
