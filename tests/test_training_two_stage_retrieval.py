"""The two-stage retrieval evaluator against a brute-force reference: every pair through the full model, one at a
time, with the tiny MISS retrieval model (random weights, several texts per image)."""

import pytest
import torch
from torch.nn import functional as F

from medvlp_hf import MISSForRetrieval, MISSModel
from medvlp_hf.metrics import cross_modal_recall_at_k, cross_modal_recall_from_rankings
from medvlp_hf.training.two_stage_retrieval import _ranked_head, supports_two_stage_retrieval, two_stage_retrieval
from tests.models.miss.tester import pixel_batch, text_batch, tiny_config

KS = (1, 2, 5)
# images 0..4; image 0 has three texts, image 3 two, the others one
TEXT_TO_IMAGE = torch.tensor([0, 1, 2, 3, 4, 0, 3, 0])


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = MISSForRetrieval(tiny_config()).eval()
    generator = torch.Generator().manual_seed(1)
    pixels = pixel_batch(model.config, 5, generator)
    input_ids, attention_mask = text_batch([5, 2, 3, 4, 1, 6, 2, 3], generator)
    return model, pixels, input_ids, attention_mask, reference(model, pixels, input_ids, attention_mask)


@torch.no_grad()
def reference(model, pixels, input_ids, attention_mask):
    """(images, texts) pair scores, every pair through `forward` with its own image and unpadded text, and the
    stage-1 cosine similarity from one image / one text at a time."""
    texts = [input_ids[t : t + 1, : int(attention_mask[t].sum())] for t in range(len(input_ids))]
    scores = torch.tensor([
        [model(input_ids=text, pixel_values=pixels[i : i + 1]).logits[0, 1].item() for text in texts]
        for i in range(len(pixels))
    ])
    image = torch.cat([F.normalize(model.get_image_features(pixels[i : i + 1]), dim=-1) for i in range(len(pixels))])
    text = torch.cat([F.normalize(model.get_text_features(t), dim=-1) for t in texts])
    return scores, image @ text.T


def assert_well_separated(scores):
    """The reference orders are meaningful only if no two candidates of a query score within float noise."""
    gaps = scores.sort(dim=1).values.diff(dim=1)
    assert float(gaps.min()) > 1e-4


def reranked(order, k, scores):
    """Reference re-ranking: the first k of `order` sorted by `scores` (query x candidate), then the rest of `order`."""
    head = order[:, :k]
    by_score = scores.gather(1, head).argsort(dim=1, descending=True, stable=True)
    return torch.cat([head.gather(1, by_score), order[:, k:]], dim=1)


def assert_exhaustive_ranking(result, scores, similarity):
    """`result` (of TEXT_TO_IMAGE, KS, k >= the candidates) against the reference (images, texts) pair `scores` and
    stage-1 `similarity`: both directions ranked by the pair scores alone, the R@K of that ranking and of the
    similarity's."""
    assert torch.equal(result.image_rankings, scores.argsort(dim=1, descending=True))
    assert torch.equal(result.text_rankings, scores.T.argsort(dim=1, descending=True))
    torch.testing.assert_close(result.image_scores, scores.sort(dim=1, descending=True).values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.text_scores, scores.T.sort(dim=1, descending=True).values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.similarity, similarity, atol=1e-6, rtol=1e-5)
    assert result.metrics == {
        **cross_modal_recall_at_k(scores, KS, TEXT_TO_IMAGE),
        **{f"itc_{name}": value for name, value in cross_modal_recall_at_k(similarity, KS, TEXT_TO_IMAGE).items()},
    }


def assert_reranked_shortlist(result, scores, similarity, k):
    """`result` (of TEXT_TO_IMAGE, KS, top `k` below the candidates) against the reference: each query's k best
    candidates by similarity re-ranked by the pair scores, the rest in similarity order; the R@K of both rankings."""
    image_reference = reranked(similarity.argsort(dim=1, descending=True), k, scores)
    text_reference = reranked(similarity.T.argsort(dim=1, descending=True), k, scores.T)
    depth = max(k, *KS)
    assert torch.equal(result.image_rankings, image_reference[:, :depth])
    assert torch.equal(result.text_rankings, text_reference[:, :depth])
    torch.testing.assert_close(result.image_scores, scores.gather(1, image_reference[:, :k]), atol=1e-5, rtol=1e-5)
    assert result.metrics == {
        **cross_modal_recall_from_rankings(image_reference, text_reference, TEXT_TO_IMAGE, KS),
        **{f"itc_{name}": value for name, value in cross_modal_recall_at_k(similarity, KS, TEXT_TO_IMAGE).items()},
    }


def evaluate(setup, **options):
    model, pixels, input_ids, attention_mask, _ = setup
    return two_stage_retrieval(model, pixels, input_ids, attention_mask, TEXT_TO_IMAGE, ks=KS, **options)


def test_k_at_least_the_candidates_is_the_exhaustive_itm_ranking_in_both_directions(setup):
    scores, similarity = setup[-1]
    assert_well_separated(scores)
    assert_well_separated(scores.T)
    result = evaluate(setup, k=100, batch_size=3)
    assert_exhaustive_ranking(result, scores, similarity)
    # an image with several texts is found at K when any of them is in its top K
    hits = TEXT_TO_IMAGE[scores.argsort(dim=1, descending=True)] == torch.arange(5)[:, None]
    assert result.metrics["i2t_r@2"] == pytest.approx(hits[:, :2].any(1).double().mean().item())


def test_top_k_reranking_equals_the_reference_and_stage_one_figures_are_the_similarity_ranking(setup):
    scores, similarity = setup[-1]
    assert_well_separated(similarity)
    assert_well_separated(similarity.T)
    result = evaluate(setup, k=2, batch_size=4)
    assert_reranked_shortlist(result, scores, similarity, k=2)
    # the re-ranking changed something, or the comparison above would not tell the stages apart
    assert not torch.equal(result.image_rankings, similarity.argsort(dim=1, descending=True)[:, :5])


def test_blip_style_score_adds_the_similarity(setup):
    scores, similarity = setup[-1]
    result = evaluate(setup, k=3, add_similarity=True)
    combined = scores + similarity
    expected = reranked(similarity.argsort(dim=1, descending=True), 3, combined)
    assert torch.equal(result.image_rankings, expected[:, :5])
    torch.testing.assert_close(result.image_scores, combined.gather(1, expected[:, :3]), atol=1e-5, rtol=1e-5)


def test_deterministic_and_independent_of_the_batch_size(setup):
    results = [evaluate(setup, k=3, batch_size=size) for size in (1, 3, 3, 64)]
    for result in results[1:]:
        assert torch.equal(result.image_rankings, results[0].image_rankings)
        assert torch.equal(result.text_rankings, results[0].text_rankings)
        assert result.metrics == results[0].metrics
        torch.testing.assert_close(result.image_scores, results[0].image_scores, atol=1e-5, rtol=1e-5)
    assert torch.equal(results[1].image_scores, results[2].image_scores)


def test_the_image_tower_runs_once_per_image_in_each_stage(setup):
    model = setup[0]
    seen = []
    hook = model.vision_model.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))
    try:
        evaluate(setup, k=100, batch_size=2)
    finally:
        hook.remove()
    assert sum(seen) == 2 * 5


def test_models_without_the_protocol_and_bad_arguments_get_clear_errors(setup):
    model, pixels, input_ids, attention_mask, _ = setup
    assert supports_two_stage_retrieval(model) and not supports_two_stage_retrieval(MISSModel(tiny_config()))
    with pytest.raises(TypeError, match=r"lacks \['score_pairs'\]"):
        two_stage_retrieval(MISSModel(tiny_config()), pixels, input_ids, attention_mask, TEXT_TO_IMAGE)
    with pytest.raises(ValueError, match="pass text_to_image"):
        two_stage_retrieval(model, pixels, input_ids, attention_mask)
    with pytest.raises(ValueError, match="have no text"):
        two_stage_retrieval(model, pixels, input_ids, attention_mask, torch.tensor([0, 1, 2, 3, 0, 0, 3, 0]))
    with pytest.raises(ValueError, match="must be positive"):
        two_stage_retrieval(model, pixels, input_ids, attention_mask, TEXT_TO_IMAGE, k=0)
    assert not model.training


def test_duplicate_texts_tie_and_keep_candidate_order_in_both_stages(setup):
    """Identical reports (common in radiology) have identical features: ties rank in candidate order, as the metrics
    rank, however the rows are chunked (k=1: after the first candidate, the order is stage 1's; R@8 ranks all)."""
    model, pixels, input_ids, attention_mask, _ = setup
    input_ids, attention_mask = input_ids.clone(), attention_mask.clone()
    input_ids[6], attention_mask[6] = input_ids[1], attention_mask[1]
    result = two_stage_retrieval(model, pixels, input_ids, attention_mask, TEXT_TO_IMAGE, k=1, ks=(1, 8))
    assert torch.equal(result.similarity[:, 6], result.similarity[:, 1])
    for ranking in result.image_rankings.tolist():
        assert ranking.index(1) < ranking.index(6)
    stable = result.similarity.argsort(dim=1, descending=True, stable=True)
    assert torch.equal(_ranked_head(result.similarity, 8, rows_per_chunk=2), stable)
    assert {name.removeprefix("itc_"): value for name, value in result.metrics.items() if name.startswith("itc_")} \
        == cross_modal_recall_at_k(result.similarity, (1, 8), TEXT_TO_IMAGE)
