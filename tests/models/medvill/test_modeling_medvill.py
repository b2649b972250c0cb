"""MedViLL on the shared model checks (tests/common), plus what is special to MedViLL."""

import pytest
import torch

import medvlp_hf
from medvlp_hf import (
    MedViLLForImageTextClassification,
    MedViLLForPreTraining,
    MedViLLForRetrieval,
    MedViLLForVQA,
    MedViLLModel,
)
from tests.common.model_tester import ModelTesterMixin
from tests.models.medvill.tester import MedViLLModelTester, head_labels, tiny_config

TESTER = MedViLLModelTester()


class TestMedViLLModel(ModelTesterMixin):
    tester = TESTER


def build(model_class, seed=0, **overrides):
    return TESTER.build(model_class, seed, **overrides)


def batch(config, batch_size=3, seed=0):
    return TESTER.prepare_inputs(config, batch_size=batch_size, seed=seed)


def test_initialisation():
    model = build(MedViLLForPreTraining)
    assert model.mlm_head.decoder.weight is model.medvill.embeddings.word_embeddings.weight
    assert torch.count_nonzero(model.mlm_head.bias) == 0
    assert torch.allclose(model.medvill.embeddings.layer_norm.weight, torch.ones(32))
    std = model.medvill.encoder.layers[0].attention.query.weight.std().item()
    assert model.config.initializer_range == 32**-0.5  # the tiny preset's width-scaled init
    assert 0.8 * 32**-0.5 < std < 1.2 * 32**-0.5
    assert model.medvill.image_encoder.bn1.running_var.eq(1).all()


def test_base_config_is_the_released_model():
    config = medvlp_hf.MedViLLConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.vocab_size, config.image_size, config.num_image_tokens) == (30522, 512, 256)
    assert config.image_feature_size == 2048 and config.num_pretraining_image_tokens == 180
    with torch.device("meta"):
        model = MedViLLForPreTraining(config)
    unique = {id(p): p.numel() for p in model.parameters()}
    resnet = sum(p.numel() for p in model.medvill.image_encoder.parameters())
    assert resnet == 23_508_032  # torchvision ResNet-50 without fc
    assert sum(unique.values()) == 135_188_092  # originals.md §1.4: the original pre-training model


def test_output_attentions_uses_eager_weights():
    model = build(MedViLLModel)
    inputs = batch(model.config)
    with torch.no_grad():
        output = model(**inputs, output_attentions=True, output_hidden_states=True)
    assert len(output.attentions) == 2 and len(output.hidden_states) == 3
    weights = output.attentions[0]
    assert weights.shape == (3, 2, 12, 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 12))
    padded_column = 5 + 4  # row 1 has 2 words: text stream ends at index 4, prefix is 5 long
    assert weights[1, :, :, padded_column].abs().max() == 0


def test_pretraining_outputs_and_image_sampling():
    model = build(MedViLLForPreTraining)
    inputs = batch(model.config)
    labels = head_labels(MedViLLForPreTraining, model.config, inputs["input_ids"], inputs["attention_mask"],
                         torch.Generator().manual_seed(0))
    output = model(**inputs, **labels)
    torch.testing.assert_close(output.loss, output.mlm_loss + output.itm_loss)
    assert output.logits.shape == (3, 7, model.config.vocab_size) and output.itm_logits.shape == (3, 2)
    assert output.image_token_indices.tolist() == [0, 1, 2, 3]
    model.train()
    sampled = model(**inputs, **labels).image_token_indices
    assert len(sampled) == model.config.num_pretraining_image_tokens and sampled.equal(sampled.sort().values)
    fixed = torch.tensor([0, 2, 3])
    with torch.no_grad():
        first = model.eval()(**inputs, image_token_indices=fixed).logits
        second = model(**inputs, image_token_indices=fixed).logits
    assert torch.equal(first, second)


@pytest.mark.parametrize("mask_type", ["bidirectional", "bar", "s2s", "bi_s2s", "non_crossing"])
def test_every_pretraining_mask_trains(mask_type):
    model = build(MedViLLForPreTraining, attention_mask_type=mask_type).train()
    inputs = batch(model.config)
    labels = head_labels(MedViLLForPreTraining, model.config, inputs["input_ids"], inputs["attention_mask"],
                         torch.Generator().manual_seed(0))
    output = model(**inputs, **labels)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert model.itm_head.weight.grad.abs().sum() > 0


def test_vqa_pooling_and_probabilities():
    model = build(MedViLLForVQA)
    inputs = batch(model.config)
    with torch.no_grad():
        output = model(**inputs)
        hidden = model.medvill(**inputs, attention_mask_type="bidirectional").last_hidden_state
    features = hidden[:, 0] * hidden[:, 5]
    torch.testing.assert_close(output.logits, model.answer_classifier(features))
    torch.testing.assert_close(output.probabilities, output.logits.sigmoid())
    model.config.vqa_pooling = "cls"
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, model.answer_classifier(hidden[:, 0]))
    labels = torch.tensor([1, 0, 5])
    one_hot = torch.nn.functional.one_hot(labels, 6).float()
    torch.testing.assert_close(model(**inputs, labels=labels).loss, model(**inputs, labels=one_hot).loss)


def test_classification_pos_weight_changes_the_loss():
    inputs = batch(tiny_config())
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]])
    plain = build(MedViLLForImageTextClassification)(**inputs, labels=labels)
    weighted_model = build(MedViLLForImageTextClassification, classification_pos_weight=[2.0, 2.0, 2.0, 2.0])
    weighted = weighted_model(**inputs, labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        plain.logits, labels, pos_weight=torch.full((4,), 2.0)
    )
    torch.testing.assert_close(weighted.loss, expected)


def test_retrieval_ranking_matches_pairwise_scores():
    model = build(MedViLLForRetrieval, seed=3, initializer_range=0.2)
    inputs = batch(model.config, batch_size=4, seed=5)
    image = inputs["pixel_values"][:1]
    scores, order = model.rank_texts(image, inputs["input_ids"], inputs["attention_mask"], batch_size=3)
    with torch.no_grad():
        pairwise = model(**inputs | {"pixel_values": image.expand(4, -1, -1, -1)}).scores
    torch.testing.assert_close(scores, pairwise)
    assert order.tolist() == pairwise.argsort(descending=True).tolist()
    text = inputs["input_ids"][:1]
    scores, _ = model.rank_images(inputs["pixel_values"], text, batch_size=3)
    with torch.no_grad():
        expected = model(input_ids=text.expand(4, -1), pixel_values=inputs["pixel_values"]).scores
    torch.testing.assert_close(scores, expected)


def test_frozen_image_encoder_like_the_original():
    model = build(MedViLLForVQA, freeze_image_encoder=True)
    assert not any(p.requires_grad for p in model.medvill.image_encoder.parameters())
    assert all(p.requires_grad for p in model.medvill.encoder.parameters())


def test_bad_inputs_get_clear_errors():
    model = build(MedViLLForVQA)
    inputs = batch(model.config)
    with pytest.raises(ValueError, match="start with the \\[SEP\\]"):
        model(**inputs | {"input_ids": inputs["input_ids"].clone().fill_(101)})
    with pytest.raises(ValueError, match="pixel_values has shape"):
        model(**inputs | {"pixel_values": torch.zeros(3, 3, 32, 32)})
    with pytest.raises(ValueError, match="needs `pixel_values`"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(**inputs | {"attention_mask": inputs["attention_mask"][:, :3]})
    with pytest.raises(ValueError, match="attention_mask_type"):
        tiny_config(attention_mask_type="causal")
