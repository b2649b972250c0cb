"""M2I2ForRetrieval through the zoo's two-stage retrieval evaluator, and its retrieval training on matched pairs, each
against a computation written here from the model's parts as ALBEF's `Retrieval.py` (evaluation) and
`models/model_retrieval.py` (training) compute it: a text's `text`-mode states once, the fusion layers over them
cross-attending an image's ViT states, the ITM head's "match" logit; ITC on the normalised [CLS] projections."""

import pytest
import torch
from torch.nn import functional as F

from medvlp_hf import M2I2ForRetrieval
from tests.models.m2i2.tester import M2I2ModelTester, pixel_batch, text_batch
from tests.test_training_two_stage_retrieval import (
    assert_exhaustive_ranking, assert_reranked_shortlist, assert_well_separated, evaluate,
)

TESTER = M2I2ModelTester()


def build():
    return TESTER.build(M2I2ForRetrieval)


def pairs(model, batch_size=4):
    return TESTER.prepare_inputs(model.config, batch_size=batch_size)


def itm_logits(model, text_states, text_mask, image_states):
    """ALBEF's ITM: the fusion layers over `text`-mode states, cross-attending the image states; the head on [CLS]."""
    joint = model.text_encoder(attention_mask=text_mask, encoder_hidden_states=image_states, mode="fusion",
                               text_hidden_states=text_states).last_hidden_state[:, 0]
    return model.itm_head(joint)


@pytest.fixture(scope="module")
def evaluation_setup():
    model = build()
    generator = torch.Generator().manual_seed(1)
    pixels = pixel_batch(model.config, 5, generator)
    input_ids, attention_mask = text_batch([5, 2, 3, 4, 1, 6, 2, 3], generator)
    return model, pixels, input_ids, attention_mask, albef_evaluation(model, pixels, input_ids, attention_mask)


@torch.no_grad()
def albef_evaluation(model, pixels, input_ids, attention_mask):
    """ALBEF's `evaluation`, brute force: (images, texts) ITM match logits of every pair (each image's ViT states and
    each unpadded text's `text`-mode states computed alone), and the cosine similarity of the ITC embeddings."""
    images = [model.vision_model(pixels[i : i + 1]).last_hidden_state for i in range(len(pixels))]
    texts = [
        model.text_encoder(input_ids[t : t + 1, : int(attention_mask[t].sum())], mode="text").last_hidden_state
        for t in range(len(input_ids))
    ]
    scores = torch.tensor([
        [itm_logits(model, text, None, image)[0, 1].item() for text in texts] for image in images
    ])
    image_embeds = F.normalize(torch.cat([model.vision_proj(image[:, 0]) for image in images]), dim=-1)
    text_embeds = F.normalize(torch.cat([model.text_proj(text[:, 0]) for text in texts]), dim=-1)
    return scores, image_embeds @ text_embeds.T


def test_top_k_at_least_the_candidates_is_albefs_exhaustive_itm_ranking(evaluation_setup):
    scores, similarity = evaluation_setup[-1]
    assert_well_separated(scores)
    assert_well_separated(scores.T)
    assert_exhaustive_ranking(evaluate(evaluation_setup, k=100, batch_size=3), scores, similarity)


def test_top_k_below_the_candidates_re_ranks_the_itc_shortlist(evaluation_setup):
    scores, similarity = evaluation_setup[-1]
    assert_well_separated(similarity)
    assert_well_separated(similarity.T)
    result = evaluate(evaluation_setup, k=2, batch_size=4)
    assert_reranked_shortlist(result, scores, similarity, k=2)
    # the re-ranking changed the order and a figure, or the comparison above would not tell the stages apart
    assert not torch.equal(result.image_rankings, similarity.argsort(dim=1, descending=True)[:, :5])
    assert any(value != result.metrics[f"itc_{name}"] for name, value in result.metrics.items()
               if not name.startswith("itc_"))


def test_pair_scores_are_the_itm_match_logit_over_text_mode_states_and_precomputed_image_states():
    model = build()
    inputs = pairs(model)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        states = model.get_image_hidden_states(inputs["pixel_values"])
        scores = model.score_pairs(states, ids, mask)
        one_image = model.score_pairs(states[:1].expand(4, -1, -1), ids, mask)
        text_states = model.text_encoder(ids, mask, mode="text").last_hidden_state
        expected = itm_logits(model, text_states, mask, states)[:, 1]
        expected_one_image = itm_logits(model, text_states, mask, states[:1].expand(4, -1, -1))[:, 1]
        features = model.get_image_features(inputs["pixel_values"])
        full = model(**inputs)
    assert states.shape == (4, 1 + model.config.vision_config.grid_size**2, model.config.vision_config.hidden_size)
    torch.testing.assert_close(states, model.vision_model(inputs["pixel_values"]).last_hidden_state)
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(one_image, expected_one_image)
    torch.testing.assert_close(scores, full.logits[:, 1])
    torch.testing.assert_close(features, model.vision_proj(states[:, 0]))
    assert not torch.allclose(one_image, scores)


def test_training_loss_is_in_batch_itc_with_shared_images_plus_itm_on_given_negatives():
    model = build()
    inputs = pairs(model)
    inputs["pixel_values"][1] = inputs["pixel_values"][0]
    image_ids = torch.tensor([7, 7, 3, 5])
    negative_images, negative_texts = torch.tensor([2, 3, 0, 1]), torch.tensor([3, 2, 1, 0])
    output = model(**inputs, return_loss=True, image_ids=image_ids, negative_image_indices=negative_images,
                   negative_text_indices=negative_texts)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        states = model.vision_model(inputs["pixel_values"]).last_hidden_state
        text_states = model.text_encoder(ids, mask, mode="text").last_hidden_state
        image = F.normalize(model.vision_proj(states[:, 0]), dim=-1)
        text = F.normalize(model.text_proj(text_states[:, 0]), dim=-1)
        similarity = image @ text.T / model.config.itc_temperature
        targets = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
        itc = (F.cross_entropy(similarity, targets) + F.cross_entropy(similarity.T, targets)) / 2
        rows = torch.arange(4)
        logits = torch.cat([
            itm_logits(model, text_states[rows], mask[rows], states[rows]),
            itm_logits(model, text_states[rows], mask[rows], states[negative_images]),
            itm_logits(model, text_states[negative_texts], mask[negative_texts], states[rows]),
        ])
        itm = F.cross_entropy(logits, torch.tensor([1] * 4 + [0] * 8))
    torch.testing.assert_close(output.logits_per_image, similarity)
    torch.testing.assert_close(output.logits_per_text, similarity.T)
    torch.testing.assert_close(output.itc_loss, itc)
    torch.testing.assert_close(output.logits, logits)
    torch.testing.assert_close(output.scores, logits.softmax(-1)[:, 1])
    torch.testing.assert_close(output.itm_loss, itm)
    torch.testing.assert_close(output.loss, itc + itm)
    assert output.itm_labels.tolist() == [1] * 4 + [0] * 8
    assert output.negative_image_indices is negative_images and output.negative_text_indices is negative_texts


def test_hard_negatives_are_drawn_as_albef_draws_them_never_from_the_pairs_own_image():
    """ALBEF: weights softmax(similarity over the batch), 0 where the example shows the same image; a negative image
    for each text (from the text's row), then a negative text for each image."""
    model = build()
    inputs = pairs(model, batch_size=5)
    image_ids = torch.tensor([0, 0, 1, 1, 2])
    same = image_ids[:, None] == image_ids[None, :]
    drawn = set()
    for seed in range(12):
        output = model(**inputs, return_loss=True, image_ids=image_ids, generator=torch.Generator().manual_seed(seed))
        similarity = output.logits_per_image.detach()
        generator = torch.Generator().manual_seed(seed)
        images, texts = (
            torch.multinomial(F.softmax(rows, dim=1).masked_fill(same, 0), 1, generator=generator)[:, 0]
            for rows in (similarity.T, similarity)
        )
        assert torch.equal(output.negative_image_indices, images)
        assert torch.equal(output.negative_text_indices, texts)
        for negatives in (images, texts):
            assert not same[torch.arange(5), negatives].any()
        drawn.add((tuple(images.tolist()), tuple(texts.tolist())))
    assert len(drawn) > 2
    # evaluation without a generator draws with seed 0, so evaluation losses repeat
    first, second = (model(**inputs, return_loss=True, image_ids=image_ids) for _ in range(2))
    assert torch.equal(first.negative_image_indices, second.negative_image_indices)
    torch.testing.assert_close(first.loss, second.loss)


def test_a_temperature_at_its_floor_still_draws_other_images():
    """At the clamped minimum temperature a row's softmax can put all of its mass on the example's own image; the
    draw is over the other images' weights and stays defined."""
    model = build()
    with torch.no_grad():
        model.temperature.fill_(model.config.itc_temperature_min)
    inputs = pairs(model, batch_size=4)
    image_ids = torch.tensor([0, 0, 1, 2])
    output = model(**inputs, return_loss=True, image_ids=image_ids, generator=torch.Generator().manual_seed(0))
    same = image_ids[:, None] == image_ids[None, :]
    assert not same[torch.arange(4), output.negative_image_indices].any()
    assert not same[torch.arange(4), output.negative_text_indices].any()
    assert torch.isfinite(output.loss)


def test_training_reaches_towers_projections_head_and_temperature_and_keeps_no_momentum_state():
    model = build().train()
    output = model(**pairs(model), return_loss=True, generator=torch.Generator().manual_seed(0))
    output.loss.backward()
    fusion = model.config.text_config.fusion_layer
    for name in ("itm_head.weight", "vision_proj.weight", "text_proj.weight", "temperature",
                 "vision_model.encoder.layers.0.self_attn.qkv.weight",
                 "text_encoder.encoder.layer.0.attention.self.query.weight",
                 f"text_encoder.encoder.layer.{fusion}.crossattention.self.key.weight"):
        gradient = model.get_parameter(name).grad
        assert gradient is not None and bool(gradient.abs().sum() > 0), name
    assert {key.split(".")[0] for key in model.state_dict()} == {
        "vision_model", "text_encoder", "vision_proj", "text_proj", "temperature", "itm_head"
    }

