"""Image-text retrieval metrics in the papers' conventions.

Ranking: candidates sorted by score, descending; ties keep candidate order (stable sort).

* ``retrieval_metrics`` (MedViLL): per query a row of candidate scores and a boolean relevance row
  (label-based: every candidate sharing the query's label is relevant; build it with
  ``relevance_from_labels``). Hit@K = 1 if a relevant item ranks in the top K; Recall@K = relevant in
  top K / all relevant; Precision@K = relevant in top K / K; MRR = mean 1 / rank of the first relevant.
* mAP@K under three normalisers, named apart (they differ whenever a query has more than K relevant
  items or misses some in the top K):
  ``map_at_k_hits`` divides by the relevant items found in the top K (MedUnifier ``compute_precK``,
  torchmetrics ``RetrievalMAP(top_k)``); ``map_at_k_trec`` divides by all relevant items (trec_eval
  ``map_cut_K``, ranx ``map@K``); ``map_at_k_capped`` divides by min(K, relevant) (the common "AP@K").
* ``cross_modal_recall_at_k`` (PTUnifier, MedUnifier): instance relevance on an image x text
  similarity matrix, R@K image->text and text->image; ``cross_modal_recall_from_rankings`` the same from each
  query's ranked candidates (a two-stage evaluation's re-ranked lists).
"""
import numpy as np

from medvlp_hf.metrics._arrays import as_numpy

MAP_NORMALIZERS = ("hits", "trec", "capped")


def relevance_from_labels(query_labels, candidate_labels) -> np.ndarray:
    """(Q, C) relevance: equal labels for 1-D label arrays, any shared positive label for multi-hot (2-D)."""
    queries, candidates = as_numpy(query_labels), as_numpy(candidate_labels)
    if queries.ndim == 1 and candidates.ndim == 1:
        return queries[:, None] == candidates[None, :]
    if queries.ndim == 2 and candidates.ndim == 2 and queries.shape[1] == candidates.shape[1]:
        return (queries.astype(bool)[:, None, :] & candidates.astype(bool)[None, :, :]).any(axis=-1)
    raise ValueError(
        f"labels must both be 1-D class ids or both (n, classes) multi-hot, got {queries.shape} and {candidates.shape}"
    )


def _ranked_relevance(scores, relevance, empty_queries: str) -> np.ndarray:
    """Relevance of each query's candidates in rank order (Q, C), after the empty-query policy."""
    scores, relevance = as_numpy(scores, np.float64), as_numpy(relevance).astype(bool)
    if scores.ndim != 2 or scores.shape != relevance.shape:
        raise ValueError(f"scores {scores.shape} and relevance {relevance.shape} must both be (queries, candidates)")
    empty = ~relevance.any(axis=1)
    if empty.any():
        if empty_queries == "error":
            raise ValueError(
                f"{int(empty.sum())} queries (first: {int(np.argmax(empty))}) have no relevant candidate; "
                "pass empty_queries='skip' to leave them out"
            )
        if empty_queries != "skip":
            raise ValueError(f"empty_queries={empty_queries!r}; choose 'error' or 'skip'")
        scores, relevance = scores[~empty], relevance[~empty]
    if len(scores) == 0:
        raise ValueError("no query with a relevant candidate to score")
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(relevance, order, axis=1)


def _average_precision_at_k(ranked: np.ndarray, k: int, normalizer: str) -> float:
    top = ranked[:, :k]
    hits_so_far = np.cumsum(top, axis=1)
    precision_sum = (top * hits_so_far / np.arange(1, top.shape[1] + 1)).sum(axis=1)
    if normalizer == "hits":
        denominator = top.sum(axis=1)
    elif normalizer == "trec":
        denominator = ranked.sum(axis=1)
    elif normalizer == "capped":
        denominator = np.minimum(k, ranked.sum(axis=1))
    else:
        raise ValueError(f"normalizer={normalizer!r}; choose one of {MAP_NORMALIZERS}")
    per_query = np.divide(precision_sum, denominator, out=np.zeros(len(top)), where=denominator > 0)
    return float(per_query.mean())


def map_at_k_hits(scores, relevance, k: int, empty_queries: str = "error") -> float:
    """mAP@K normalised by the relevant items retrieved in the top K (MedUnifier / torchmetrics)."""
    return _average_precision_at_k(_ranked_relevance(scores, relevance, empty_queries), k, "hits")


def map_at_k_trec(scores, relevance, k: int, empty_queries: str = "error") -> float:
    """mAP@K normalised by all relevant items of the query (trec_eval map_cut / ranx)."""
    return _average_precision_at_k(_ranked_relevance(scores, relevance, empty_queries), k, "trec")


def map_at_k_capped(scores, relevance, k: int, empty_queries: str = "error") -> float:
    """mAP@K normalised by min(K, relevant items of the query)."""
    return _average_precision_at_k(_ranked_relevance(scores, relevance, empty_queries), k, "capped")


def retrieval_metrics(scores, relevance, ks=(1, 5, 10), empty_queries: str = "error") -> dict:
    """Hit@K, Recall@K, Precision@K, MRR and the three mAP@K over (queries, candidates) scores."""
    ranked = _ranked_relevance(scores, relevance, empty_queries)
    relevant = ranked.sum(axis=1)
    first_rank = ranked.argmax(axis=1) + 1
    result = {"mrr": float((1.0 / first_rank).mean()), "num_queries": int(len(ranked))}
    for k in ks:
        found = ranked[:, :k].sum(axis=1)
        result[f"hit@{k}"] = float((found > 0).mean())
        result[f"recall@{k}"] = float((found / relevant).mean())
        result[f"precision@{k}"] = float((found / k).mean())
        for normalizer in MAP_NORMALIZERS:
            result[f"map@{k}_{normalizer}"] = _average_precision_at_k(ranked, k, normalizer)
    return result


def cross_modal_recall_at_k(similarity, ks=(1, 5, 10), text_to_image=None) -> dict:
    """R@K in both directions of an (images, texts) similarity matrix with instance relevance.

    ``text_to_image[t]`` is the image of text ``t`` (default: text i belongs to image i, square matrix).
    Image->text counts a hit when any of the image's texts ranks in the top K.
    """
    similarity = as_numpy(similarity, np.float64)
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be (images, texts), got shape {similarity.shape}")
    n_images, n_texts = similarity.shape
    if text_to_image is None:
        if n_images != n_texts:
            raise ValueError(f"similarity is {similarity.shape}: pass text_to_image when images and texts are not paired 1:1")
        text_to_image = np.arange(n_texts)
    return cross_modal_recall_from_rankings(
        np.argsort(-similarity, axis=1, kind="stable"), np.argsort(-similarity.T, axis=1, kind="stable"),
        text_to_image, ks,
    )


def cross_modal_recall_from_rankings(image_rankings, text_rankings, text_to_image, ks=(1, 5, 10)) -> dict:
    """R@K in both directions from each query's candidates in rank order, best first, with instance relevance (the
    ALBEF/BLIP evaluation): ``image_rankings`` (images, n) holds text indices, ``text_rankings`` (texts, m) image
    indices; ``text_to_image[t]`` is the image of text ``t``. An image query is right at K when any of its texts is
    among its first K, a text query when its image is. Rankings may stop after max(ks) candidates (a two-stage
    evaluation re-ranks only the head of each list).
    """
    image_rankings, text_rankings = as_numpy(image_rankings).astype(np.int64), as_numpy(text_rankings).astype(np.int64)
    text_to_image = as_numpy(text_to_image).astype(np.int64)
    n_images, n_texts = len(image_rankings), len(text_rankings)
    if image_rankings.ndim != 2 or text_rankings.ndim != 2:
        raise ValueError(f"rankings must be (queries, candidates), got {image_rankings.shape} and {text_rankings.shape}")
    if text_to_image.shape != (n_texts,) or n_texts == 0 or text_to_image.min() < 0 or text_to_image.max() >= n_images:
        raise ValueError(f"text_to_image must hold one image index in [0, {n_images}) per text ({n_texts})")
    without_text = np.setdiff1d(np.arange(n_images), text_to_image)
    if len(without_text):
        raise ValueError(f"{len(without_text)} images (first: {int(without_text[0])}) have no text in text_to_image; "
                         "every image query needs at least one relevant text")
    deepest = max(ks)
    for name, rankings, candidates in (("image", image_rankings, n_texts), ("text", text_rankings, n_images)):
        if rankings.shape[1] < min(deepest, candidates):
            raise ValueError(f"{name}_rankings rank {rankings.shape[1]} candidates per query; R@{deepest} needs "
                             f"{min(deepest, candidates)}")
    image_hits = text_to_image[image_rankings] == np.arange(n_images)[:, None]
    text_hits = text_rankings == text_to_image[:, None]
    result = {}
    for k in ks:
        result[f"i2t_r@{k}"] = float(image_hits[:, :k].any(axis=1).mean())
        result[f"t2i_r@{k}"] = float(text_hits[:, :k].any(axis=1).mean())
    return result
