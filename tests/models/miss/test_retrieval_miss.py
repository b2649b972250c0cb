"""MISSForRetrieval's two-stage protocol (image states, pair scores) and its ITC + ITM training on matched pairs, each
against a computation written here from the model's parts."""

import torch
from torch.nn import functional as F

from medvlp_hf import MISSForRetrieval
from tests.models.miss.tester import ENC, MISSModelTester, tiny_config

TESTER = MISSModelTester()


def build(seed=0):
    torch.manual_seed(seed)
    return MISSForRetrieval(tiny_config()).eval()


def pairs(model, batch_size=4, seed=0):
    return TESTER.prepare_inputs(model.config, batch_size=batch_size, seed=seed)


def test_pair_scores_are_the_itm_match_logit_over_precomputed_image_states():
    model = build()
    inputs = pairs(model)
    with torch.no_grad():
        states = model.get_image_hidden_states(inputs["pixel_values"])
        scores = model.score_pairs(states, inputs["input_ids"], inputs["attention_mask"])
        full = model(**inputs)
        one_image = model.score_pairs(states[:1].expand(4, -1, -1), inputs["input_ids"], inputs["attention_mask"])
        alone = torch.stack([
            model(input_ids=inputs["input_ids"][t : t + 1], attention_mask=inputs["attention_mask"][t : t + 1],
                  pixel_values=inputs["pixel_values"][:1]).logits[0, 1]
            for t in range(4)
        ])
    assert states.shape == (4, 1 + (32 // 8) ** 2, model.config.vision_config.hidden_size)
    torch.testing.assert_close(scores, full.logits[:, 1])
    torch.testing.assert_close(one_image, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.get_image_features(inputs["pixel_values"]), model.vision_proj(states[:, 0]))


def test_contrastive_training_loss_is_in_batch_itc_with_shared_images_plus_itm_on_given_negatives():
    model = build()
    inputs = pairs(model)
    inputs["pixel_values"][1] = inputs["pixel_values"][0]
    image_ids = torch.tensor([7, 7, 3, 5])
    negative_images, negative_texts = torch.tensor([2, 3, 0, 1]), torch.tensor([3, 2, 1, 0])
    output = model(**inputs, return_loss=True, image_ids=image_ids, negative_image_indices=negative_images,
                   negative_text_indices=negative_texts)
    with torch.no_grad():
        states = model.vision_model(inputs["pixel_values"]).last_hidden_state
        image = F.normalize(model.vision_proj(states[:, 0]), dim=-1)
        text = F.normalize(model.get_text_features(inputs["input_ids"], inputs["attention_mask"]), dim=-1)
        similarity = image @ text.T / model.config.itc_temperature
        targets = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
        itc = (F.cross_entropy(similarity, targets) + F.cross_entropy(similarity.T, targets)) / 2

        def itm(text_rows, image_rows):
            ids, mask = inputs["input_ids"][text_rows], inputs["attention_mask"][text_rows]
            return model.itm_head(model.text_encoder(ids.clone().index_fill_(1, torch.tensor([0]), ENC), mask,
                                                     states[image_rows]).last_hidden_state[:, 0])

        rows = torch.arange(4)
        logits = torch.cat([itm(rows, rows), itm(rows, negative_images), itm(negative_texts, rows)])
        itm_loss = F.cross_entropy(logits, torch.tensor([1] * 4 + [0] * 8))
    torch.testing.assert_close(output.logits_per_image, similarity)
    torch.testing.assert_close(output.itc_loss, itc)
    torch.testing.assert_close(output.logits, logits)
    torch.testing.assert_close(output.itm_loss, itm_loss)
    torch.testing.assert_close(output.loss, itc + itm_loss)
    assert output.itm_labels.tolist() == [1] * 4 + [0] * 8


def test_drawn_hard_negatives_never_show_the_pairs_own_image():
    model = build()
    inputs = pairs(model, batch_size=5)
    image_ids = torch.tensor([0, 0, 1, 1, 2])
    same = image_ids[:, None] == image_ids[None, :]
    drawn = set()
    for seed in range(20):
        output = model(**inputs, return_loss=True, image_ids=image_ids,
                       generator=torch.Generator().manual_seed(seed))
        for negatives in (output.negative_image_indices, output.negative_text_indices):
            assert not same[torch.arange(5), negatives].any()
            drawn.add(tuple(negatives.tolist()))
    assert len(drawn) > 2


def test_contrastive_training_updates_towers_projections_head_and_temperature():
    model = build().train()
    output = model(**pairs(model), return_loss=True, generator=torch.Generator().manual_seed(0))
    output.loss.backward()
    for name in ("itm_head.weight", "vision_proj.weight", "text_proj.weight", "temperature",
                 "vision_model.encoder.layers.0.self_attn.qkv.weight", "text_encoder.encoder.layer.0.crossattention."
                 "self.key.weight"):
        gradient = model.get_parameter(name).grad
        assert gradient is not None and bool(gradient.abs().sum() > 0), name

