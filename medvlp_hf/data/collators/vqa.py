"""VQA batches: closed-set soft-score targets over an answer vocabulary, or answer tokens for generative models.

Only model inputs and `labels` go into the batch; evaluation reads `answer_type` etc. from the dataset.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..answers import normalize_answer
from .base import ProcessorCollator, question_mode


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
    count as wrong, as in the papers' VQA-RAD protocol. Questions are encoded in the processor's question mode when
    it has one (see `base`).
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
        questions = [str(example[self.question_column]) for example in examples]
        batch = self.encode(self.images_of(examples), questions, **question_mode(self.processor))
        batch["labels"] = torch.stack([self.targets(example) for example in examples])
        return batch


class GenerativeVQACollator(ProcessorCollator):
    """Question + image -> model inputs and the answer targets of the model's answer decoder:
    `processor(text_target=answers, max_length=max_answer_length)`, i.e. `labels` [B, T] (-100 at padding) in the
    model's layout (M2I2 `[CLS] answer [SEP]`, MISS `[DEC] answer [SEP]`) plus any decoder inputs it returns.

    Raises ValueError for a processor whose targets live in the question's own input stream (MedViLL: no answer
    decoder, closed-set VQA only - use `VQACollator`).
    """

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        max_answer_length: int | None = 32,
        question_column: str = "question",
        answer_column: str = "answer",
        image_column: str = "image",
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs)
        self.max_answer_length = max_answer_length
        self.question_column = question_column
        self.answer_column = answer_column

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        mode = question_mode(self.processor)
        questions = [str(example[self.question_column]) for example in examples]
        batch = self.encode(self.images_of(examples), questions, **mode)
        answers = [str(example[self.answer_column]) for example in examples]
        targets = self.encode_targets(answers, max_length=self.max_answer_length, **mode)
        shared = sorted(set(batch) & set(targets))
        if shared:
            raise ValueError(
                f"{type(self.processor).__name__} encodes answer targets into {shared}, which the question's inputs "
                "already hold: its model reads targets in the question's own stream and has no answer decoder; "
                "train closed-set VQA with VQACollator instead"
            )
        return {**batch, **targets}
