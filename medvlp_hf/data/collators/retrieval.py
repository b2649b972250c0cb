"""Image-report retrieval: matched/mismatched training pairs, and label-relevance candidate groups for ranking.

MedViLL fine-tunes its matching head on one positive and one negative pair per record (a record with a
different label set supplies the negative's image with p=0.5, else its report) and evaluates by scoring
each query against a group of candidates, every candidate with the query's label set counting as relevant.
Contrastive models (BLIP's retrieval recipe) train on matched pairs only and draw their negatives from the batch.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..chexpert import label_set
from ..imaging import to_pil_image
from .base import ProcessorCollator
from .negatives import NegativeSampler, _column

DIRECTIONS = ("i2t", "t2i")


class RetrievalPairCollator(ProcessorCollator):
    """Each example -> its true pair (`labels` 1) followed by a negative pair (`labels` 0): batch size 2B."""

    def __init__(
        self,
        processor,
        negatives: NegativeSampler,
        swap_image_probability: float = 0.5,
        max_length: int | None = None,
        text_column: str = "report",
        image_column: str = "image",
        seed: int = 0,
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs, seed)
        self.negatives = negatives
        self.swap_image_probability = swap_image_probability
        self.text_column = text_column

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        images, texts, labels = [], [], []
        for example, image in zip(examples, self.images_of(examples)):
            text = example[self.text_column]
            negative = self.negatives.sample_index(example, self.generator)
            if self.random() < self.swap_image_probability:
                negative_image, negative_text = to_pil_image(self.negatives.image(negative)), text
            else:
                negative_image, negative_text = image, self.negatives.text(negative)
            images += [image, negative_image]
            texts += [text, negative_text]
            labels += [1, 0]
        batch = self.encode(images, texts)
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch


class MatchedPairCollator(ProcessorCollator):
    """Matched (image, text) pairs for contrastive retrieval training, where the model contrasts the batch's pairs
    and draws its matching negatives from it (ITC + ITM, BLIP's retrieval fine-tuning): the processor's outputs plus
    `return_loss=True` (CLIP's convention for asking a model for its contrastive loss), and with `image_id_column`
    `image_ids` (B,), equal for pairs of one image, so that they count as positives of each other."""

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        text_column: str = "report",
        image_column: str = "image",
        image_id_column: str | None = None,
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs)
        self.text_column = text_column
        self.image_id_column = image_id_column

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        batch = self.encode(self.images_of(examples), [example[self.text_column] for example in examples])
        batch["return_loss"] = True
        if self.image_id_column is not None:
            index = {}
            batch["image_ids"] = torch.tensor(
                [index.setdefault(example[self.image_id_column], len(index)) for example in examples]
            )
        return batch


def retrieval_candidate_groups(
    labels: Sequence[Sequence[float]], num_candidates: int | None = None, seed: int = 0
) -> list[dict]:
    """One group per query record `i`: `candidates` = `i` plus `num_candidates - 1` other records drawn at
    random (all records when None), in random order; `relevance` is 1 where a candidate's CheXpert label
    set equals the query's (the query's own pair is always relevant)."""
    sets = [label_set(vector) for vector in labels]
    count = len(sets)
    if num_candidates is not None and not 1 <= num_candidates <= count:
        raise ValueError(f"num_candidates={num_candidates} must be between 1 and the {count} records")
    generator = torch.Generator().manual_seed(seed)
    groups = []
    for query in range(count):
        if num_candidates is None:
            candidates = torch.randperm(count, generator=generator).tolist()
        else:
            others = [index for index in torch.randperm(count, generator=generator).tolist() if index != query]
            candidates = [query, *others[: num_candidates - 1]]
            candidates = [candidates[i] for i in torch.randperm(len(candidates), generator=generator).tolist()]
        relevance = [int(sets[candidate] == sets[query]) for candidate in candidates]
        groups.append({"query": query, "candidates": candidates, "relevance": relevance})
    return groups


class RetrievalGroupCollator(ProcessorCollator):
    """One candidate group -> model inputs scoring the query against every candidate.

    `direction="i2t"`: the query image with each candidate report; `"t2i"`: the query report with each
    candidate image. Relevance stays in the group dict for the retrieval metrics.
    """

    def __init__(
        self,
        processor,
        dataset,
        direction: str = "i2t",
        max_length: int | None = None,
        text_column: str = "report",
        image_column: str = "image",
        processor_kwargs: Mapping | None = None,
    ):
        super().__init__(processor, max_length, image_column, processor_kwargs)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction={direction!r}; choose 'i2t' (image query) or 't2i' (report query)")
        self.dataset = dataset
        self.direction = direction
        self.texts = _column(dataset, text_column, image_column)

    def __call__(self, group: Mapping) -> dict:
        query, candidates = group["query"], list(group["candidates"])
        if self.direction == "i2t":
            image = to_pil_image(self.dataset[query][self.image_column])
            return self.encode([image] * len(candidates), [self.texts[index] for index in candidates])
        images = [to_pil_image(self.dataset[index][self.image_column]) for index in candidates]
        return self.encode(images, [self.texts[query]] * len(candidates))
