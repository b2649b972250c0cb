"""Retrieval metrics: MedViLL Hit/R/P@K + MRR, the three mAP@K normalisers, cross-modal R@K."""
import numpy as np
import pytest

from medvlp_hf.metrics import cross_modal_recall_at_k, cross_modal_recall_from_rankings
from medvlp_hf.metrics import map_at_k_capped
from medvlp_hf.metrics import map_at_k_hits
from medvlp_hf.metrics import map_at_k_trec
from medvlp_hf.metrics import relevance_from_labels
from medvlp_hf.metrics import retrieval_metrics


def test_reference_toy_values():
    """The cross-check table of the ecosystem notes (own impl = torchmetrics shifted = ranx/trec_eval)."""
    scores = np.random.default_rng(0).normal(size=(4, 10)).round(3)
    relevance = relevance_from_labels([0, 1, 2, 0], [0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    result = retrieval_metrics(scores, relevance)
    expected = {
        "hit@1": 0.25, "hit@5": 1.0, "hit@10": 1.0,
        "recall@1": 0.083333, "recall@5": 0.5, "recall@10": 1.0,
        "precision@1": 0.25, "precision@5": 0.3, "precision@10": 0.3,
        "mrr": 0.466667, "map@5_hits": 0.4, "map@10_hits": 0.390245, "map@5_trec": 0.222222, "map@10_trec": 0.390245,
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key


def test_map_definitions_by_hand():
    # one query; candidate scores give the ranked relevance 1 0 1 0 0 1 1 (4 relevant)
    scores = np.array([[7, 6, 5, 4, 3, 2, 1]], dtype=float)
    relevance = np.array([[1, 0, 1, 0, 0, 1, 1]])
    precision_sum = 1 / 1 + 2 / 3  # hits at ranks 1 and 3
    assert map_at_k_hits(scores, relevance, 3) == pytest.approx(precision_sum / 2)
    assert map_at_k_trec(scores, relevance, 3) == pytest.approx(precision_sum / 4)
    assert map_at_k_capped(scores, relevance, 3) == pytest.approx(precision_sum / 3)
    full = (1 + 2 / 3 + 3 / 6 + 4 / 7) / 4
    for function in (map_at_k_hits, map_at_k_trec, map_at_k_capped):
        assert function(scores, relevance, 7) == pytest.approx(full)
    assert map_at_k_hits(np.array([[2.0, 1.0]]), np.array([[0, 1]]), 1) == 0.0


def test_hit_recall_precision_mrr_by_hand():
    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.2, 0.1, 0.7, 0.3]])
    relevance = np.array([[0, 1, 1, 0], [1, 0, 0, 0]])
    result = retrieval_metrics(scores, relevance, ks=(1, 2, 3))
    # ranks: query 0 -> relevant at 2 and 4; query 1 -> relevant at 3
    assert result["hit@1"] == 0.0 and result["hit@2"] == 0.5 and result["hit@3"] == 1.0
    assert result["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert result["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_ties_keep_candidate_order_and_negative_scores_count():
    relevance = np.array([[0, 1, 0]])
    assert retrieval_metrics(np.array([[-1.0, -1.0, -1.0]]), relevance, ks=(1, 2))["hit@2"] == 1.0
    assert retrieval_metrics(np.array([[-1.0, -1.0, -1.0]]), relevance, ks=(1, 2))["hit@1"] == 0.0
    assert retrieval_metrics(np.array([[-3.0, -0.5, -2.0]]), relevance, ks=(1,))["hit@1"] == 1.0


def test_empty_queries_policy():
    scores = np.array([[0.2, 0.1], [0.3, 0.4]])
    relevance = np.array([[0, 0], [1, 0]])
    with pytest.raises(ValueError, match="first: 0"):
        retrieval_metrics(scores, relevance, ks=(1,))
    result = retrieval_metrics(scores, relevance, ks=(1,), empty_queries="skip")
    assert result["num_queries"] == 1 and result["hit@1"] == 0.0 and result["mrr"] == 0.5


def test_multi_hot_label_relevance():
    relevance = relevance_from_labels(np.array([[1, 0, 1], [0, 1, 0]]), np.array([[0, 0, 1], [1, 0, 0], [0, 1, 1]]))
    assert relevance.tolist() == [[True, True, True], [False, False, True]]
    with pytest.raises(ValueError, match="multi-hot"):
        relevance_from_labels([0, 1], np.zeros((2, 2)))


def test_cross_modal_recall_both_directions():
    similarity = np.array(
        [
            [0.9, 0.1, 0.8],  # image 0: its text 0 ranks 1st
            [0.7, 0.6, 0.2],  # image 1: its text 1 ranks 2nd
            [0.1, 0.2, 0.3],  # image 2: its text 2 ranks 1st
        ]
    )
    result = cross_modal_recall_at_k(similarity, ks=(1, 2))
    assert result["i2t_r@1"] == pytest.approx(2 / 3) and result["i2t_r@2"] == 1.0
    # columns: text 0 -> image 0 ranks 1st; text 1 -> image 1 ranks 1st; text 2 -> image 2 ranks 2nd
    assert result["t2i_r@1"] == pytest.approx(2 / 3) and result["t2i_r@2"] == 1.0


def test_cross_modal_with_several_texts_per_image():
    similarity = np.array([[0.1, 0.9, 0.5, 0.2], [0.8, 0.3, 0.4, 0.1]])
    result = cross_modal_recall_at_k(similarity, ks=(1,), text_to_image=[0, 0, 1, 1])
    # image 0's best text (1) is its own; image 1's best text (0) is not
    assert result["i2t_r@1"] == 0.5
    # texts 0, 1, 2, 3 (of images 0, 0, 1, 1) rank images 1, 0, 0, 0 first: only text 1 is right
    assert result["t2i_r@1"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="text_to_image"):
        cross_modal_recall_at_k(similarity)


def test_cross_modal_recall_from_rankings_by_hand():
    # images 0, 1 with texts (0, 1) and (2); rankings truncated after 2 candidates
    image_rankings = [[2, 1], [0, 1]]  # image 0: its text 1 second; image 1: its text 2 not in the first two
    text_rankings = [[1, 0], [0, 1], [1, 0]]  # texts 0, 1, 2 -> image 0 second, first; image 1 first
    result = cross_modal_recall_from_rankings(image_rankings, text_rankings, [0, 0, 1], ks=(1, 2))
    assert result == {"i2t_r@1": 0.0, "t2i_r@1": pytest.approx(2 / 3), "i2t_r@2": 0.5, "t2i_r@2": 1.0}


def test_cross_modal_recall_from_rankings_equals_the_similarity_version():
    similarity = np.random.default_rng(0).normal(size=(5, 9))
    text_to_image = [0, 1, 2, 3, 4, 0, 1, 2, 0]
    full = cross_modal_recall_at_k(similarity, ks=(1, 3, 5), text_to_image=text_to_image)
    head = cross_modal_recall_from_rankings(
        np.argsort(-similarity, axis=1)[:, :5], np.argsort(-similarity.T, axis=1)[:, :5], text_to_image, ks=(1, 3, 5)
    )
    assert head == full


def test_cross_modal_recall_from_rankings_refuses_short_rankings_and_images_without_text():
    with pytest.raises(ValueError, match="R@5 needs 3"):
        cross_modal_recall_from_rankings([[0, 1], [1, 0]], [[0, 1], [1, 0], [0, 1]], [0, 1, 1], ks=(5,))
    with pytest.raises(ValueError, match="have no text"):
        cross_modal_recall_from_rankings([[0], [0]], [[0]], [0], ks=(1,))
