"""VQA batches: closed-set soft-score targets over an answer vocabulary, or answer tokens for generative models.

Only model inputs and `labels` go into the batch; evaluation reads `answer_type` etc. from the dataset.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..answers import normalize_answer
from .base import ProcessorCollator
from .masking import IGNORE_INDEX


def build_label2id(answers: Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    """Normalised answer -> label id, from an answer list (ids in list order) or a label2id mapping."""
    pairs = answers.items() if isinstance(answers, Mapping) else ((answer, i) for i, answer in enumerate(answers))
    label2id: dict[str, int] = {}
    for answer, label in pairs:
        key = normalize_answer(answer)
        if key in label2id and label2id[key] != label:
            raise ValueError(
                f"answers {answer!r} (id {label}) and id {label2id[key]} both normalise to {key!r}; "
                "deduplicate the answer list (answer_vocabulary() builds one)"
            )
        label2id[key] = label
    return label2id


class VQACollator(ProcessorCollator):
    """Question + image -> model inputs and `labels` [B, num_answers] float soft scores.

    An answer column holding one answer gives score 1.0 to its label; a list of answers gives each its
    score from `score_column` (or 1.0). Answers outside the vocabulary leave an all-zero target, so they
    count as wrong, as in the papers' VQA-RAD protocol. For MedViLL pass
    `processor_kwargs={"text_kind": "question"}` so questions get MedViLL's question cleaning.
    """

    def __init__(
        self,
        processor,
        answers: Sequence[str] | Mapping[str, int],
        max_length: int | None = None,
        question_column: str = "question",
        answer_column: str = "answer",
        score_column: str | None = None,
        image_column: str = "image",
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs)
        self.label2id = build_label2id(answers)
        self.num_answers = max(self.label2id.values()) + 1
        self.question_column = question_column
        self.answer_column = answer_column
        self.score_column = score_column

    def targets(self, example: Mapping) -> torch.Tensor:
        answers = example[self.answer_column]
        answers = answers if isinstance(answers, (list, tuple)) else [answers]
        scores = example[self.score_column] if self.score_column else [1.0] * len(answers)
        target = torch.zeros(self.num_answers)
        for answer, score in zip(answers, scores, strict=True):
            label = self.label2id.get(normalize_answer(answer))
            if label is not None:
                target[label] = max(float(target[label]), float(score))
        return target

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        batch = self.encode(self.images_of(examples), [example[self.question_column] for example in examples])
        batch["labels"] = torch.stack([self.targets(example) for example in examples])
        return batch


class GenerativeVQACollator(ProcessorCollator):
    """Question + image -> model inputs and `labels` [B, T]: the answer's wordpieces closed by [SEP]
    (the end-of-sequence token), right-padded with -100; the model adds its own start token."""

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        max_answer_length: int = 32,
        question_column: str = "question",
        answer_column: str = "answer",
        image_column: str = "image",
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs)
        if max_answer_length < 1:
            raise ValueError("max_answer_length must be >= 1 (it includes the closing [SEP])")
        self.max_answer_length = max_answer_length
        self.question_column = question_column
        self.answer_column = answer_column

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        batch = self.encode(self.images_of(examples), [example[self.question_column] for example in examples])
        answers = [str(example[self.answer_column]) for example in examples]
        pieces = self.processor.tokenizer(answers, add_special_tokens=False)["input_ids"]
        sequences = [ids[: self.max_answer_length - 1] + [self.sep_token_id] for ids in pieces]
        labels = torch.full((len(sequences), max(map(len, sequences))), IGNORE_INDEX, dtype=torch.long)
        for row, ids in enumerate(sequences):
            labels[row, : len(ids)] = torch.tensor(ids)
        batch["labels"] = labels
        return batch
