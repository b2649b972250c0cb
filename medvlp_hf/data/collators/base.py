"""What every task collator shares: the processor protocol, encoding examples with it, the random generator.

The collators work with any processor that follows this protocol (every zoo processor does; transformers'
`BlipProcessor`, `CLIPProcessor` do for all but generative targets):

- `processor(images=[PIL.Image], text=[str], padding="longest", truncation=True, return_tensors="pt",
  max_length=int (when the collator has one), **processor_kwargs)` returns the model inputs. The batch carries
  every key it returns (`input_ids`, `attention_mask`, `pixel_values`, `token_type_ids`, ...), nothing is assumed
  about the text layout (`[CLS] w [SEP]`, `<s> w </s>`, MedViLL's `[SEP] w [SEP]`).
- `processor.tokenizer` has the standard special-token API: MLM never masks `all_special_ids` nor padding, writes
  `mask_token_id`, and draws random replacements from `range(len(tokenizer))`.
- Generative targets: `processor(text_target=[str], generator=torch.Generator, ...)`, with `images=` for report
  generation and the same padding/truncation/max_length/return_tensors arguments, returns what the model trains on
  to produce that text: `labels` (-100 where nothing is predicted) plus any inputs the layout needs (an answer or
  report decoder's inputs; MedViLL, one stream, returns its masked `input_ids`/`attention_mask`). `generator` drives
  any randomness the original keeps in its data pipeline (MedViLL's report-generation masks); processors with
  deterministic targets ignore it.
- Questions: a zoo processor lists the kinds of text it encodes in `text_kinds`; one with `"question"` there is called
  with `text_kind="question"` for VQA questions and their answer targets, and writes its model's question layout
  (MedViLL's question cleaning, MISS's `[ENC] question [SEP]` and `[DEC] answer [SEP]`). Other processors get the
  questions as plain text.
- LM targets of the text itself: a processor whose model also learns to write the text it reads (MISS's pre-training
  decoder on the caption) lists that kind of text in `text_label_kinds`; called with `return_labels=True` it adds
  `labels` aligned with `input_ids` (-100 where nothing is predicted). The pre-training collator asks for them when it
  does no MLM, so Trainer can count the target tokens of an accumulated batch (`num_items_in_batch`).

Datasets must keep their raw columns for these collators (`TrainingArguments(remove_unused_columns=False)`).

All randomness comes from the collator's own `torch.Generator` seeded by `seed`, so a collator built
with the same seed produces the same batches. In a DataLoader worker process the generator is seeded from
`seed` and the worker's seed instead: every worker gets a copy of the collator, and copies of one generator
would draw the same masks and negatives in every worker.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..imaging import to_pil_image
from ..randomness import WorkerSeededGenerator

PROTOCOL = "the processor protocol of medvlp_hf.data.collators.base"


def question_mode(processor) -> dict:
    """The processor arguments that mark texts as VQA questions (see the protocol above)."""
    return {"text_kind": "question"} if "question" in getattr(processor, "text_kinds", ()) else {}


def text_labels_mode(processor, text_kind: str = "report") -> dict:
    """The processor arguments that add the LM targets of `text_kind` texts, when it writes them (see the protocol)."""
    return {"return_labels": True} if text_kind in getattr(processor, "text_label_kinds", ()) else {}


class ProcessorCollator:
    """Base class: encodes examples with the processor and finds the text tokens of its output."""

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        image_column: str = "image",
        processor_kwargs: Mapping | None = None,
        seed: int = 0,
    ):
        if getattr(processor, "tokenizer", None) is None:
            raise TypeError(
                f"{type(processor).__name__} has no `tokenizer`; the collators need a processor with an image "
                f"processor and a tokenizer ({PROTOCOL})"
            )
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.image_column = image_column
        self.processor_kwargs = dict(processor_kwargs or {})
        self.seed = seed
        self._random = WorkerSeededGenerator(seed)

    @property
    def generator(self) -> torch.Generator:
        """The collator's generator; inside a DataLoader worker, one seeded by (seed, worker seed)."""
        return self._random.get()

    def images_of(self, examples: Sequence[Mapping]) -> list:
        return [to_pil_image(example[self.image_column]) for example in examples]

    def _call(self, max_length: int | None, **inputs) -> dict:
        kwargs = dict(padding="longest", truncation=True, return_tensors="pt", **self.processor_kwargs)
        if max_length is not None:
            kwargs["max_length"] = max_length
        return dict(self.processor(**inputs, **kwargs))

    def encode(self, images: list, texts: Sequence[str], **text_mode) -> dict:
        """Model inputs for (image, text) pairs: every key the processor returns."""
        return self._call(self.max_length, images=images, text=list(texts), **text_mode)

    def encode_targets(self, targets: Sequence[str], images: list | None = None, max_length: int | None = None,
                       **text_mode) -> dict:
        """What the model trains on to generate `targets` (from `images`): the processor's text-target encoding,
        with `labels`. Raises ValueError when the processor returns no `labels` (it has no text-target support)."""
        encoded = self._call(max_length, images=images, text_target=list(targets), generator=self.generator,
                             **text_mode)
        if "labels" not in encoded:
            raise ValueError(
                f"{type(self.processor).__name__}(text_target=...) returned {sorted(encoded)} without `labels`: it "
                f"does not encode generative targets ({PROTOCOL}); use the model's own processor"
            )
        return encoded

    def text_token_mask(self, batch: Mapping) -> torch.Tensor:
        """True at the text tokens of `batch["input_ids"]`: not a special token of the tokenizer, not padding."""
        input_ids = batch["input_ids"]
        text = ~torch.isin(input_ids, torch.tensor(self.tokenizer.all_special_ids, dtype=input_ids.dtype))
        if "attention_mask" in batch:
            text &= batch["attention_mask"].bool()
        return text

    def random(self) -> float:
        """One uniform draw in [0, 1) from the collator's generator."""
        return float(torch.rand((), generator=self.generator))
