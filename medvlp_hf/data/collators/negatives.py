"""Negative (mismatched) image-report pairs for image-text matching and retrieval fine-tuning.

`LabelConditionedNegatives` is MedViLL's rule: a negative report (or image) comes from a record whose
CheXpert label set differs from the query's, so it cannot accidentally describe the query image.
`RandomNegatives` draws any other record, as models without label conditioning do.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ..chexpert import label_set


def _column(pool, name: str, image_column: str = "image") -> list:
    """One column of a `datasets.Dataset` or of a list of dicts. A Dataset's column is read without decoding its
    images even when a format transform computes it from the whole row (TransCap captions)."""
    if hasattr(pool, "column_names"):
        if name not in pool.column_names:
            raise KeyError(f"the negative pool has no column {name!r}; its columns are {pool.column_names}")
        return list(pool.select_columns([column for column in pool.column_names if column != image_column])[name])
    return [record[name] for record in pool]


class _NegativePool:
    """A pool of records to draw negatives from, with its texts read once."""

    def __init__(self, pool, text_column: str, image_column: str, max_tries: int):
        if len(pool) < 2:
            raise ValueError("a negative pool needs at least two records")
        self.pool = pool
        self.texts = _column(pool, text_column, image_column)
        self.image_column = image_column
        self.max_tries = max_tries

    def __len__(self) -> int:
        return len(self.texts)

    def text(self, index: int) -> str:
        return self.texts[index]

    def image(self, index: int):
        return self.pool[index][self.image_column]

    def _draw(self, accept, generator: torch.Generator, what: str) -> int:
        """Rejection-sample an index with `accept(index)`; fall back to an exact draw after max_tries."""
        for _ in range(self.max_tries):
            index = int(torch.randint(len(self), (), generator=generator))
            if accept(index):
                return index
        allowed = [index for index in range(len(self)) if accept(index)]
        if not allowed:
            raise ValueError(f"no record of the negative pool qualifies as a negative ({what})")
        return allowed[int(torch.randint(len(allowed), (), generator=generator))]


class LabelConditionedNegatives(_NegativePool):
    """Negatives whose CheXpert label set (positive observations) differs from the query's (MedViLL)."""

    def __init__(self, pool, text_column: str = "report", label_column: str = "labels",
                 image_column: str = "image", max_tries: int = 300):
        super().__init__(pool, text_column, image_column, max_tries)
        self.label_column = label_column
        self.label_sets = [label_set(labels) for labels in _column(pool, label_column, image_column)]

    def sample_index(self, example: Mapping, generator: torch.Generator) -> int:
        query = label_set(example[self.label_column])
        return self._draw(lambda index: self.label_sets[index] != query, generator, f"label set {sorted(query)}")


class RandomNegatives(_NegativePool):
    """Any record whose text differs from the query's."""

    def __init__(self, pool, text_column: str = "report", image_column: str = "image", max_tries: int = 300):
        super().__init__(pool, text_column, image_column, max_tries)
        self.text_column = text_column

    def sample_index(self, example: Mapping, generator: torch.Generator) -> int:
        query = example[self.text_column]
        return self._draw(lambda index: self.texts[index] != query, generator, "every text equals the query's")


NegativeSampler = LabelConditionedNegatives | RandomNegatives
