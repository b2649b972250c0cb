"""Two-stage image-text retrieval, as ALBEF's and BLIP's `evaluation` rank: for any zoo model with contrastive
features and a pair score (MISS; M2I2 and the later models).

Stage 1 (ITC): the embedding of every image and of every text, each computed once in batches, and the cosine
similarity of every image with every text. Stage 2: each query's top `k` candidates of stage 1 are re-ranked by the
model's pair score (ITM) - for image queries its k best texts, for text queries their k best images. The pairs both
directions need are grouped by image, so the image tower runs once per image in stage 2 (once more than in stage 1)
and its states serve all of that image's pairs. The re-ranked candidates come first, the others follow in stage-1
order; `k` >= the number of candidates re-ranks every pair (an exhaustive ITM ranking).

R@K as ALBEF/BLIP count it (instance relevance, several texts per image allowed): an image query is right at K when
any of its texts is in its top K, a text query when its image is. Stage-1 figures come with the two-stage ones.

Under torch.distributed / accelerate the images and texts of each stage are split over the processes and the
features and pair scores gathered, so every process returns the same result.
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from torch.nn import functional as F

from ..metrics import cross_modal_recall_from_rankings


@runtime_checkable
class TwoStageRetrievalModel(Protocol):
    """What a model offers to be evaluated (and, in examples/run_retrieval.py, fine-tuned) by two-stage retrieval.

    - `get_image_features(pixel_values)` -> (B, D) and `get_text_features(input_ids, attention_mask)` -> (B, D): the
      contrastive (ITC) embeddings, as CLIP's; normalised here, so their cosine is the stage-1 similarity.
    - `get_image_hidden_states(pixel_values)` -> (B, ...): whatever the pair score needs of an image, one row per
      image (a ViT's states); computed once per image and indexed per pair.
    - `score_pairs(image_hidden_states, input_ids, attention_mask)` -> (B,): the ranking score of each (image row,
      text) pair, higher = better match (an ITM head's "match" logit).

    Training: such models also train on matched (image, text) pairs through `forward(..., return_loss=True)`
    (contrastive + matching losses, as BLIP's retrieval fine-tuning), which is how run_retrieval.py fine-tunes them.
    """

    def get_image_features(self, pixel_values): ...

    def get_text_features(self, input_ids, attention_mask=None): ...

    def get_image_hidden_states(self, pixel_values): ...

    def score_pairs(self, image_hidden_states, input_ids, attention_mask=None): ...


def supports_two_stage_retrieval(model) -> bool:
    """Whether `model` (or the model a PEFT wrapper holds) implements `TwoStageRetrievalModel`."""
    return isinstance(_unwrapped(model), TwoStageRetrievalModel)


def _unwrapped(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class TwoStageRetrievalResult:
    """
    metrics: `i2t_r@K` / `t2i_r@K` after re-ranking, `itc_i2t_r@K` / `itc_t2i_r@K` of stage 1 alone.
    similarity: (images, texts) stage-1 cosine similarity.
    image_rankings: (images, n) text indices, best first: the re-ranked top k, then stage-1 order; n = max(k, max(ks))
        capped at the number of texts. `text_rankings`: (texts, m) image indices, likewise.
    image_scores / text_scores: (queries, k) the re-ranking scores of the first k entries of the rankings.
    """

    metrics: dict
    similarity: torch.Tensor
    image_rankings: torch.Tensor
    text_rankings: torch.Tensor
    image_scores: torch.Tensor
    text_scores: torch.Tensor


@torch.no_grad()
def two_stage_retrieval(model, images, input_ids, attention_mask=None, text_to_image=None, k=128, ks=(1, 5, 10),
                        batch_size=32, add_similarity=False, process_state=None) -> TwoStageRetrievalResult:
    """Rank every text for every image and every image for every text (see the module docstring).

    Args:
        model: a `TwoStageRetrievalModel`; evaluated in eval mode (its mode is restored afterwards).
        images: (I, 3, H, W) pixel values, or any sequence whose `images[list_of_indices]` returns them (e.g.
            `ProcessedImages`, which decodes dataset rows on demand).
        input_ids / attention_mask: (T, L) every text, padded; columns that are padding in a whole batch are dropped.
        text_to_image: (T,) the image of each text (default: text i is image i's, I == T).
        k: candidates re-ranked per query (BLIP's `k_test`); capped at the number of candidates.
        ks: the K of R@K.
        batch_size: images per image-tower batch, texts per text batch, pairs per pair-score batch.
        add_similarity: re-rank by pair score + stage-1 cosine (BLIP's `score + topk_sim`) instead of the pair score
            alone (ALBEF's).
        process_state: an `accelerate.PartialState` or `Accelerator` (default: the current state) whose processes
            share the work.

    Raises:
        TypeError: the model lacks a method of the protocol. ValueError: inconsistent shapes or arguments.
    """
    model = _unwrapped(model)
    if not supports_two_stage_retrieval(model):
        missing = [name for name in ("get_image_features", "get_text_features", "get_image_hidden_states",
                                     "score_pairs") if not hasattr(model, name)]
        raise TypeError(f"{type(model).__name__} cannot be evaluated by two-stage retrieval: it lacks {missing} "
                        "(see medvlp_hf.training.two_stage_retrieval.TwoStageRetrievalModel).")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    n_images, n_texts = len(images), len(input_ids)
    if text_to_image is None:
        if n_images != n_texts:
            raise ValueError(f"{n_images} images and {n_texts} texts: pass text_to_image (the image of each text) "
                             "when they are not paired one to one.")
        text_to_image = torch.arange(n_texts)
    text_to_image = torch.as_tensor(text_to_image, dtype=torch.long)
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape or text_to_image.shape != (n_texts,):
        raise ValueError(f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and "
                         f"text_to_image {tuple(text_to_image.shape)} must be (texts, length), the same, and (texts,).")
    if k < 1 or batch_size < 1 or not ks or min(ks) < 1:
        raise ValueError(f"k={k}, batch_size={batch_size} and ks={ks} must be positive.")
    state = process_state or PartialState()
    was_training = model.training
    model.eval()
    try:
        texts = _Texts(input_ids, attention_mask, model.device)
        image_features = _sharded_rows(state, n_images, batch_size,
                                       lambda rows: model.get_image_features(_pixels(images, rows, model.device)))
        text_features = _sharded_rows(state, n_texts, batch_size,
                                      lambda rows: model.get_text_features(*texts.batch(rows)))
        similarity = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        k_texts, k_images = min(k, n_texts), min(k, n_images)
        image_order = _ranked_head(similarity, max(k_texts, *ks))
        text_order = _ranked_head(similarity.T, max(k_images, *ks))
        pairs = _PairScores(model, images, texts, state, batch_size, n_texts)
        pairs.compute(torch.cat([
            torch.arange(n_images).repeat_interleave(k_texts) * n_texts + image_order[:, :k_texts].flatten(),
            text_order[:, :k_images].flatten() * n_texts + torch.arange(n_texts).repeat_interleave(k_images),
        ]))
    finally:
        model.train(was_training)
    image_rankings, image_scores = _rerank(
        image_order, k_texts, pairs.lookup(torch.arange(n_images)[:, None], image_order[:, :k_texts]),
        similarity, add_similarity,
    )
    text_rankings, text_scores = _rerank(
        text_order, k_images, pairs.lookup(text_order[:, :k_images], torch.arange(n_texts)[:, None]),
        similarity.T, add_similarity,
    )
    metrics = cross_modal_recall_from_rankings(image_rankings, text_rankings, text_to_image, ks)
    stage_one = cross_modal_recall_from_rankings(image_order, text_order, text_to_image, ks)
    metrics.update({f"itc_{name}": value for name, value in stage_one.items()})
    return TwoStageRetrievalResult(metrics, similarity, image_rankings, text_rankings, image_scores, text_scores)


def _pixels(images, rows, device):
    return images[list(rows)].to(device)


class _Texts:
    """Batches of the padded texts, without the columns that are padding in every row of the batch."""

    def __init__(self, input_ids, attention_mask, device):
        self.input_ids, self.attention_mask, self.device = input_ids, attention_mask, device

    def batch(self, rows):
        rows = torch.as_tensor(rows, dtype=torch.long)
        mask = self.attention_mask[rows]
        columns = mask.bool().any(0)
        return self.input_ids[rows][:, columns].to(self.device), mask[:, columns].to(self.device)


def _sharded_rows(state, count, batch_size, compute):
    """(count, ...) float32 CPU rows `compute(batch of row indices)`, the rows split over the processes."""
    with state.split_between_processes(list(range(count))) as shard:
        local = [(rows, compute(rows).float().cpu()) for rows in _chunks(shard, batch_size)]
    gathered = gather_object(local)
    rows = torch.tensor([row for batch_rows, _ in gathered for row in batch_rows], dtype=torch.long)
    values = torch.cat([values for _, values in gathered])
    return values[rows.argsort()]


def _chunks(items, size):
    return [items[start : start + size] for start in range(0, len(items), size)]


class _PairScores:
    """Pair scores of (image, text) pairs coded `image * texts + text`, computed with the image tower run once per
    image of the pairs (images split over the processes)."""

    def __init__(self, model, images, texts, state, batch_size, n_texts):
        self.model, self.images, self.texts = model, images, texts
        self.state, self.batch_size, self.n_texts = state, batch_size, n_texts

    def compute(self, codes):
        codes = codes.unique()  # sorted, so grouped by image
        with self.state.split_between_processes((codes // self.n_texts).unique().tolist()) as shard:
            local = []
            for image_rows in _chunks(shard, self.batch_size):
                states = self.model.get_image_hidden_states(_pixels(self.images, image_rows, self.model.device))
                image_rows = torch.tensor(image_rows, dtype=torch.long)
                bounds = torch.tensor([image_rows[0], image_rows[-1] + 1]) * self.n_texts
                start, end = torch.searchsorted(codes, bounds).tolist()
                for batch in codes[start:end].split(self.batch_size):
                    rows = torch.searchsorted(image_rows, batch // self.n_texts)
                    scores = self.model.score_pairs(states[rows.to(states.device)],
                                                    *self.texts.batch(batch % self.n_texts))
                    local.append((batch, scores.float().cpu()))
        gathered = gather_object(local)
        codes = torch.cat([batch for batch, _ in gathered])
        order = codes.argsort()
        self.codes, self.scores = codes[order], torch.cat([scores for _, scores in gathered])[order]

    def lookup(self, image_indices, text_indices):
        """Scores of the pairs (broadcast index tensors), which `compute` must have scored."""
        codes = (image_indices * self.n_texts + text_indices).contiguous()
        return self.scores[torch.searchsorted(self.codes, codes)]


def _ranked_head(similarity, depth, rows_per_chunk=1024):
    """(queries, min(depth, candidates)) each row's candidates by descending similarity, ties in candidate order (as
    the metrics rank), sorted a chunk of rows at a time so that no full (queries, candidates) index matrix is held."""
    depth = min(depth, similarity.shape[1])
    return torch.cat([chunk.argsort(dim=1, descending=True, stable=True)[:, :depth]
                      for chunk in similarity.split(rows_per_chunk)])


def _rerank(order, k, pair_scores, similarity, add_similarity):
    """(queries, n) candidates: the first k of stage 1's `order` by re-ranking score (ties keep stage-1 order), then
    the rest of `order`; and (queries, k) the re-ranking scores in that order."""
    head = order[:, :k]
    scores = pair_scores + similarity.gather(1, head) if add_similarity else pair_scores
    by_score = scores.argsort(dim=1, descending=True, stable=True)
    return torch.cat([head.gather(1, by_score), order[:, k:]], dim=1), scores.gather(1, by_score)
