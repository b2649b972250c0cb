"""Common model checks for every MedViLL head (DESIGN.md "Tests"), on the tiny config."""

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
)

import medvlp_hf
from medvlp_hf import (
    MedViLLForImageTextClassification,
    MedViLLForPreTraining,
    MedViLLForReportGeneration,
    MedViLLForRetrieval,
    MedViLLForVQA,
    MedViLLModel,
)
from tests.models.medvill.inputs import HEAD_LABELS, head_labels, pixel_batch, text_batch, tiny_config

HEADS = [
    MedViLLModel,
    MedViLLForPreTraining,
    MedViLLForVQA,
    MedViLLForReportGeneration,
    MedViLLForRetrieval,
    MedViLLForImageTextClassification,
]
TRAINABLE_HEADS = HEADS[1:]


def head_name(model_class):
    return model_class.__name__.removeprefix("MedViLL")


def build(model_class, seed=0, **overrides):
    overrides.setdefault("num_labels", HEAD_LABELS.get(head_name(model_class), 2))
    torch.manual_seed(seed)
    return model_class(tiny_config(**overrides)).eval()


def batch(config, lengths=(5, 2, 3), seed=0, left_pad=False):
    generator = torch.Generator().manual_seed(seed)
    input_ids, attention_mask = text_batch(lengths, generator, left_pad=left_pad)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_batch(config, len(lengths), generator),
    }


def output_tensors(output):
    return {key: value for key, value in output.items() if torch.is_tensor(value) and value.is_floating_point()}


@pytest.mark.parametrize("model_class", HEADS, ids=head_name)
def test_save_load_round_trip_is_bit_exact_and_strict(model_class, tmp_path):
    model = build(model_class)
    inputs = batch(model.config)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    with torch.no_grad():
        expected, actual = output_tensors(model(**inputs)), output_tensors(reloaded.eval()(**inputs))
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_checkpoint_of_another_size_is_refused(tmp_path):
    build(MedViLLForVQA).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        MedViLLForVQA.from_pretrained(tmp_path, hidden_size=64, num_attention_heads=2, intermediate_size=128)


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


@pytest.mark.parametrize("model_class", HEADS, ids=head_name)
def test_batch_equals_one_by_one(model_class):
    model = build(model_class)
    inputs = batch(model.config)
    with torch.no_grad():
        batched = model(**inputs)
        for row in range(3):
            length = int(inputs["attention_mask"][row].sum())
            single = model(
                input_ids=inputs["input_ids"][row : row + 1, :length],
                attention_mask=inputs["attention_mask"][row : row + 1, :length],
                pixel_values=inputs["pixel_values"][row : row + 1],
            )
            for key, value in output_tensors(single).items():
                reference = batched[key][row : row + 1]
                if key in ("logits", "last_hidden_state") and reference.dim() == 3:
                    reference = reference[:, : value.shape[1]]
                torch.testing.assert_close(value, reference, atol=1e-5, rtol=1e-5, msg=f"{key} row {row}")


@pytest.mark.parametrize("model_class", HEADS, ids=head_name)
def test_eager_equals_sdpa(model_class, tmp_path):
    build(model_class).save_pretrained(tmp_path)
    inputs = batch(tiny_config())
    sdpa = model_class.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    eager = model_class.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert sdpa.config._attn_implementation == "sdpa"
    with torch.no_grad():
        expected, actual = output_tensors(eager(**inputs)), output_tensors(sdpa(**inputs))
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=1e-4, msg=key)


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


@pytest.mark.parametrize("model_class", TRAINABLE_HEADS, ids=head_name)
def test_gradient_checkpointing_gives_the_same_gradients(model_class):
    inputs = batch(tiny_config())
    gradients = []
    for checkpointing in (False, True):
        model = build(model_class).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert all(layer.gradient_checkpointing for layer in model.medvill.encoder.layers)
        labels = head_labels(head_name(model_class), model.config, inputs["input_ids"], inputs["attention_mask"],
                             torch.Generator().manual_seed(1))
        torch.manual_seed(0)
        model(**inputs, **labels).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("model_class", TRAINABLE_HEADS, ids=head_name)
def test_loss_falls_over_twenty_steps(model_class):
    model = build(model_class).train()
    inputs = batch(model.config, lengths=(6, 4, 5, 3))
    labels = head_labels(head_name(model_class), model.config, inputs["input_ids"], inputs["attention_mask"],
                         torch.Generator().manual_seed(2))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        torch.manual_seed(0)
        loss = model(**inputs, **labels).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_pretraining_outputs_and_image_sampling():
    model = build(MedViLLForPreTraining)
    inputs = batch(model.config)
    labels = head_labels("ForPreTraining", model.config, inputs["input_ids"], inputs["attention_mask"],
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
    labels = head_labels("ForPreTraining", model.config, inputs["input_ids"], inputs["attention_mask"],
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
    inputs = batch(model.config, lengths=(4, 4, 4, 4), seed=5)
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


def test_auto_classes_load_each_head(tmp_path):
    expectations = {
        MedViLLForVQA: AutoModelForVisualQuestionAnswering,
        MedViLLForReportGeneration: AutoModelForImageTextToText,
        MedViLLForPreTraining: AutoModelForPreTraining,
        MedViLLForRetrieval: medvlp_hf.AutoModelForRetrieval,
        MedViLLModel: AutoModel,
    }
    for model_class, auto_class in expectations.items():
        folder = tmp_path / model_class.__name__
        model = build(model_class)
        model.save_pretrained(folder)
        loaded = auto_class.from_pretrained(folder)
        assert type(loaded) is model_class
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert type(AutoConfig.from_pretrained(tmp_path / "MedViLLForVQA")) is medvlp_hf.MedViLLConfig
