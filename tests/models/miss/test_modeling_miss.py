"""MISS on the shared model, momentum and contrastive checks (tests/common), plus what is special to MISS: each loss against a
reference computation written here, the towers against transformers' BLIP towers, the tied pre-training decoder, VQA
initialisation from pre-training, answer ranking, the released model's size."""

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import BlipTextConfig, BlipTextLMHeadModel, BlipTextModel, BlipVisionConfig, BlipVisionModel

import medvlp_hf
from medvlp_hf import MISSConfig, MISSForPreTraining, MISSForReportGeneration, MISSForRetrieval, MISSForVQA, MISSModel
from tests.common.albef_style import (
    assert_bias_initialised_to_zero,
    assert_momentum_step,
    reference_itc_loss,
    reference_itm_logits,
)
from tests.common.contrastive_tester import ContrastiveTesterMixin
from tests.common.model_tester import ModelTesterMixin
from tests.common.momentum_tester import MomentumTesterMixin
from tests.models.miss.tester import (
    CLS,
    DEC,
    ENC,
    MISSModelTester,
    MISSMomentumTester,
    decoder_labels,
    text_batch,
    tiny_config,
)

TESTER = MISSModelTester()


class TestMISSModel(ModelTesterMixin):
    tester = TESTER


class TestMISSMomentum(MomentumTesterMixin):
    momentum_tester = MISSMomentumTester()


class TestMISSContrastive(ContrastiveTesterMixin):
    tester = TESTER


def build(model_class, seed=0, **overrides):
    return TESTER.build(model_class, seed, **overrides)


def batch(config, batch_size=3, seed=0, model_class=None):
    return TESTER.prepare_inputs(config, batch_size=batch_size, seed=seed, model_class=model_class)


def unique_parameters(model):
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def momentum_image_features(model, pixel_values):
    return model.vision_proj_m(model.vision_model_m(pixel_values).last_hidden_state[:, 0])


# ------------------------------------------------------------------ the released model


def test_base_config_is_the_released_model():
    """originals.md §1.4: unique parameters of `MISS_Pretrain` (momentum encoders included; the queues are buffers) and
    of `MISS_VQA` at 480 px; ViT-B/16, BERT-base, vocabulary 30,524 with [DEC] 30522 and [ENC] 30523."""
    config = MISSConfig()
    assert (config.vision_config.image_size, config.vision_config.patch_size, config.vision_config.layer_norm_eps) == (
        224, 16, 1e-6
    )
    assert (config.text_config.vocab_size, config.bos_token_id, config.enc_token_id) == (30524, DEC, ENC)
    assert (config.queue_size, config.projection_dim, config.momentum) == (57600, 256, 0.995)
    assert (config.label_smoothing, config.alpha, config.itc_temperature) == (0.1, 0.4, 0.07)
    with torch.device("meta"):
        pretraining = MISSForPreTraining(config)
        vqa = MISSForVQA(MISSConfig(vision_config={"image_size": 480, "drop_path_rate": 0.1}))
    assert unique_parameters(pretraining) == 475_892_799
    assert unique_parameters(vqa) == 361_478_972
    assert pretraining.feature_queue.image_queue.shape == (256, 57600)
    assert [layer.drop_path_rate for layer in vqa.vision_model.encoder.layers][::11] == [0.0, 0.1]


def test_towers_equal_transformers_blip_towers():
    """With the same weights, the ViT equals transformers' `BlipVisionModel`, the JTM encoder its `BlipTextModel`
    (text and multimodal modes) and the decoder its `BlipTextLMHeadModel` (eager attention there, SDPA here)."""
    model = build(MISSForPreTraining)
    vision, text = model.config.vision_config, model.config.text_config
    blip_vision = BlipVisionModel(BlipVisionConfig(
        hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size, image_size=vision.image_size,
        num_hidden_layers=vision.num_hidden_layers, num_attention_heads=vision.num_attention_heads,
        patch_size=vision.patch_size, layer_norm_eps=vision.layer_norm_eps,
    )).eval()
    blip_vision.load_state_dict(model.vision_model.state_dict())
    blip_text_config = BlipTextConfig(
        vocab_size=text.vocab_size, hidden_size=text.hidden_size, encoder_hidden_size=text.encoder_hidden_size,
        intermediate_size=text.intermediate_size, num_hidden_layers=text.num_hidden_layers,
        num_attention_heads=text.num_attention_heads, max_position_embeddings=text.max_position_embeddings,
        is_decoder=True,
    )
    blip_encoder = BlipTextModel(blip_text_config, add_pooling_layer=False).eval()
    blip_encoder.load_state_dict(model.text_encoder.state_dict())
    blip_decoder = BlipTextLMHeadModel(blip_text_config).eval()
    blip_decoder.load_state_dict(model.text_decoder.state_dict())
    inputs = batch(model.config)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        image = model.vision_model(inputs["pixel_values"]).last_hidden_state
        torch.testing.assert_close(image, blip_vision(inputs["pixel_values"]).last_hidden_state, atol=1e-5, rtol=1e-5)
        real = mask.bool()
        for states in (None, image):
            ours = model.text_encoder(ids, mask, states).last_hidden_state
            theirs = blip_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=states, is_decoder=False)
            torch.testing.assert_close(ours[real], theirs.last_hidden_state[real], atol=1e-5, rtol=1e-5)
        _, ours = model.text_decoder(ids, mask, image)
        theirs = blip_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).logits
        torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)


def test_stochastic_depth_drops_whole_residual_branches_per_sample_in_training_only():
    """timm's DropPath: block i drops each sample's residual branches with drop_path_rate * i / (layers - 1) and scales
    kept ones by 1 / (1 - rate); evaluation is deterministic."""
    model = build(MISSModel, vision_config={"drop_path_rate": 0.5, "num_hidden_layers": 3})
    assert [layer.drop_path_rate for layer in model.vision_model.encoder.layers] == [0.0, 0.25, 0.5]
    layer = model.vision_model.encoder.layers[2]
    hidden = torch.randn(64, 5, model.config.vision_config.hidden_size)
    with torch.no_grad():
        attended, _ = layer.self_attn(layer.layer_norm1(hidden))
        kept = hidden + 2 * attended
        expected = {
            "drop both": hidden,
            "keep attention": kept,
            "keep mlp": hidden + 2 * layer.mlp(layer.layer_norm2(hidden)),
            "keep both": kept + 2 * layer.mlp(layer.layer_norm2(kept)),
        }
        torch.manual_seed(0)
        output, _ = layer.train()(hidden)
        seen = set()
        for row in range(64):
            matches = [name for name, value in expected.items() if torch.allclose(output[row], value[row], atol=1e-5)]
            assert len(matches) == 1, row
            seen.add(matches[0])
        assert seen == set(expected), "all four per-sample outcomes occur"
        evaluation, _ = layer.eval()(hidden)
        torch.testing.assert_close(evaluation, hidden + attended + layer.mlp(layer.layer_norm2(hidden + attended)))


# ------------------------------------------------------------------ pre-training losses


def test_itc_loss_is_momentum_distilled_contrast_against_the_queue():
    """ITC = mean of the image->text and text->image cross-entropies against soft targets alpha * softmax(momentum
    similarity) + (1 - alpha) * identity, over the batch's momentum features and the queue (`miss_pretrain.py`)."""
    model = build(MISSForPreTraining, pretraining_objectives=["itc"])
    with torch.no_grad():
        for _, online, shadow in model.momentum_parameter_pairs():
            shadow.add_(0.05 * torch.randn_like(shadow))  # momentum encoders that differ from the encoders
    inputs = batch(model.config)
    output = model(**inputs, alpha=0.4)
    with torch.no_grad():
        temperature = model.temperature
        image = F.normalize(model.get_image_features(inputs["pixel_values"]), dim=-1)
        text = F.normalize(model.get_text_features(inputs["input_ids"], inputs["attention_mask"]), dim=-1)
        image_m = F.normalize(momentum_image_features(model, inputs["pixel_values"]), dim=-1)
        text_m = F.normalize(model.text_proj_m(
            model.text_encoder_m(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state[:, 0]), dim=-1)
        expected = reference_itc_loss(image, text, image_m, text_m, model.feature_queue, temperature, alpha=0.4)
    torch.testing.assert_close(output.itc_loss, expected)
    torch.testing.assert_close(output.loss, output.itc_loss)
    assert output.logits_per_image.shape == (3, 3 + model.config.queue_size)


def test_itm_loss_on_injected_hard_negatives():
    """ITM = cross-entropy of the ITM head on the [ENC] encoding of the B positives, each text with its negative image
    and each image with its negative text, labels 1, 0, 0."""
    model = build(MISSForPreTraining, pretraining_objectives=["itc", "itm"])
    inputs = batch(model.config)
    negative_images, negative_texts = torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])
    output = model(**inputs, negative_image_indices=negative_images, negative_text_indices=negative_texts)
    ids, mask, pixels = inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
    with torch.no_grad():
        def match(text_rows, image_rows):
            encoded = model.get_joint_features(ids[text_rows], pixels[image_rows], mask[text_rows])
            return model.itm_head(encoded.last_hidden_state[:, 0])

        logits, labels = reference_itm_logits(match, negative_images, negative_texts)
    torch.testing.assert_close(output.itm_logits, logits, atol=1e-5, rtol=1e-5)
    assert output.itm_labels.tolist() == labels.tolist()
    torch.testing.assert_close(output.itm_loss, F.cross_entropy(logits, labels), atol=1e-5, rtol=1e-5)
    assert output.negative_image_indices is negative_images


def test_hard_negatives_are_drawn_from_the_generator_and_never_the_pair_itself():
    model = build(MISSForPreTraining, pretraining_objectives=["itc", "itm"]).train()
    inputs = batch(model.config)
    draws = []
    for seed in range(20):
        output = model(**inputs, generator=torch.Generator().manual_seed(seed))
        model._momentum_features.clear()
        draws.append((output.negative_image_indices, output.negative_text_indices))
        assert (output.negative_image_indices != torch.arange(3)).all()
        assert (output.negative_text_indices != torch.arange(3)).all()
    again = model(**inputs, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.negative_image_indices, draws[3][0])
    assert len({tuple(draw[0].tolist()) for draw in draws}) > 1
    model.eval()
    first, second = model(**inputs), model(**inputs)
    assert torch.equal(first.itm_logits, second.itm_logits), "evaluation draws the same negatives every time"


def test_lm_loss_is_label_smoothed_next_token_cross_entropy():
    """LM: the decoder reads `[DEC] w.. [SEP]`; loss = mean over target tokens of (1 - eps) * NLL + eps * mean over
    the vocabulary of -log p, eps = 0.1 (`med.py`), and under Trainer a token mean over the accumulated batch."""
    model = build(MISSForPreTraining, pretraining_objectives=["lm"])
    inputs = batch(model.config)
    output = model(**inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    decoder_ids = ids.clone()
    decoder_ids[:, 0] = DEC
    with torch.no_grad():
        image = model.vision_model(inputs["pixel_values"]).last_hidden_state
        _, logits = model.text_decoder(decoder_ids, mask, image)
    torch.testing.assert_close(output.logits, logits)
    log_probs = logits[:, :-1].log_softmax(-1)
    targets = ids[:, 1:]
    scored = mask[:, 1:].bool()
    nll = -log_probs.gather(-1, targets[..., None])[..., 0]
    per_token = 0.9 * nll - 0.1 * log_probs.mean(-1)
    torch.testing.assert_close(output.lm_loss, per_token[scored].mean())
    explicit = model(**inputs, labels=decoder_labels(ids, mask), num_items_in_batch=torch.tensor(2 * int(scored.sum())))
    torch.testing.assert_close(explicit.lm_loss, per_token[scored].sum() / (2 * scored.sum()))


def test_pretraining_loss_is_the_sum_of_the_objectives_and_weights_batch_terms_by_token_share():
    model = build(MISSForPreTraining)
    inputs = batch(model.config)
    generator = torch.Generator().manual_seed(0)
    output = model(**inputs, generator=generator)
    torch.testing.assert_close(output.loss, output.itc_loss + output.itm_loss + output.lm_loss)
    targets = int((decoder_labels(inputs["input_ids"], inputs["attention_mask"]) != -100).sum())
    shared = model(**inputs, generator=torch.Generator().manual_seed(0), num_items_in_batch=torch.tensor(2 * targets))
    torch.testing.assert_close(shared.loss, (output.itc_loss + output.itm_loss + output.lm_loss) / 2)


def test_momentum_step_is_an_ema_that_enqueues_and_clamps_the_temperature():
    model = build(MISSForPreTraining, pretraining_objectives=["itc"]).train()
    inputs = batch(model.config)
    output = model(**inputs)
    output.loss.backward()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter.sub_(0.5 * parameter.grad)
        model.temperature.fill_(1e-5)
        image_m = F.normalize(momentum_image_features(model, inputs["pixel_values"]), dim=-1)
    before = {name: (online.clone(), shadow.clone()) for name, online, shadow in model.momentum_parameter_pairs()}
    model.momentum_step()
    assert_momentum_step(model, before, image_m)
    assert [model.distillation_alpha_at(epoch) for epoch in (0, 1, 2, 5)] == pytest.approx([0, 0.2, 0.4, 0.4])


# ------------------------------------------------------------------ tied decoder, initialisation from pre-training


def test_pretraining_decoder_is_tied_to_the_encoder_except_self_attention_through_save_and_load(tmp_path):
    model = build(MISSForPreTraining)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors").keys()
    assert not {key for key in saved if key.startswith("text_decoder.bert.embeddings.")}
    assert not {key for key in saved if ".crossattention." in key and key.startswith("text_decoder.")}
    assert "text_decoder.bert.encoder.layer.0.attention.self.query.weight" in saved
    assert "text_decoder.cls.predictions.decoder.weight" not in saved
    for loaded in (model, MISSForPreTraining.from_pretrained(tmp_path)):
        decoder, encoder = loaded.text_decoder.bert, loaded.text_encoder
        assert decoder.embeddings.word_embeddings.weight is encoder.embeddings.word_embeddings.weight
        assert loaded.text_decoder.cls.predictions.decoder.weight is encoder.embeddings.word_embeddings.weight
        assert loaded.text_decoder.cls.predictions.decoder.bias is loaded.text_decoder.cls.predictions.bias
        for layer, twin in zip(decoder.encoder.layer, encoder.encoder.layer):
            assert layer.crossattention.self.key.weight is twin.crossattention.self.key.weight
            assert layer.output.dense.weight is twin.output.dense.weight
            assert layer.attention.self.query.weight is not twin.attention.self.query.weight
    assert unique_parameters(model) == unique_parameters(MISSForPreTraining.from_pretrained(tmp_path))


def test_vqa_from_pretraining_copies_the_decoder_untied_and_interpolates_the_grid(tmp_path):
    pretraining = build(MISSForPreTraining)
    pretraining.save_pretrained(tmp_path / "pretraining")
    with pytest.raises(ValueError, match=r"MISSForVQA\.from_pretraining"):
        MISSForVQA.from_pretrained(tmp_path / "pretraining")
    vqa = MISSForVQA.from_pretraining(tmp_path / "pretraining", image_size=64, drop_path_rate=0.1)
    assert vqa.config.vision_config.image_size == 64 and vqa.vision_model.encoder.layers[-1].drop_path_rate == 0.1
    decoder = vqa.text_decoder.bert
    assert decoder.embeddings.word_embeddings.weight is not vqa.text_encoder.embeddings.word_embeddings.weight
    assert vqa.text_decoder.cls.predictions.decoder.weight is decoder.embeddings.word_embeddings.weight
    source = dict(pretraining.named_parameters(remove_duplicate=False))
    for name, tensor in vqa.state_dict().items():
        if "position_embedding" not in name:
            assert torch.equal(tensor, source[name]), name
    grid = pretraining.vision_model.embeddings.position_embedding
    dim = grid.shape[-1]
    patches = grid[:, 1:].reshape(1, 4, 4, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(patches, size=(8, 8), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    expected = torch.cat([grid[:, :1], resized.reshape(1, 64, dim)], dim=1)
    torch.testing.assert_close(vqa.vision_model.embeddings.position_embedding, expected)
    vqa.save_pretrained(tmp_path / "vqa")
    reloaded = MISSForVQA.from_pretrained(tmp_path / "vqa")
    decoder_embeddings = reloaded.text_decoder.bert.embeddings.word_embeddings.weight
    assert decoder_embeddings is not reloaded.text_encoder.embeddings.word_embeddings.weight
    report = MISSForReportGeneration.from_pretraining(pretraining)
    assert report.config.vision_config.image_size == 32
    assert torch.equal(report.text_decoder.bert.encoder.layer[1].crossattention.self.value.weight,
                       pretraining.text_encoder.encoder.layer[1].crossattention.self.value.weight)


def test_a_folder_whose_grid_disagrees_with_its_config_is_refused(tmp_path):
    build(MISSForVQA).save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"image_size": 32', '"image_size": 64'))
    with pytest.raises(ValueError, match="holds 16 patch positions but .* asks for 64"):
        MISSForVQA.from_pretrained(tmp_path)


def test_pretraining_from_a_base_checkpoint_copies_the_momentum_encoders(tmp_path):
    base = build(MISSModel)
    base.save_pretrained(tmp_path)
    model = MISSForPreTraining.from_pretrained(tmp_path)
    for name, online, shadow in model.momentum_parameter_pairs():
        assert torch.equal(shadow, online) and torch.equal(online, base.state_dict()[name]), name
    norms = model.feature_queue.image_queue.norm(dim=0)
    build(MISSForPreTraining).save_pretrained(tmp_path / "pretraining")
    for loaded in (model, MISSForPreTraining.from_pretrained(tmp_path / "pretraining")):
        trainable = [name for name, _, shadow in loaded.momentum_parameter_pairs() if shadow.requires_grad]
        assert not trainable, f"momentum copies must stay frozen after loading (DDP needs it): {trainable[:3]}"
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_lm_heads_new_to_a_base_checkpoint_start_with_a_zero_bias(tmp_path):
    """The decoder's LM head that a head adds to a base checkpoint (pre-training, VQA, report generation) is
    initialised in `from_pretrained`, its bias to zero: transformers initialises a remote-code module only for a weight
    of its own, so a rule on the bias's parent module left it as uninitialised memory (NaN at times)."""
    build(MISSModel).save_pretrained(tmp_path)
    for head_class in (MISSForPreTraining, MISSForVQA, MISSForReportGeneration):
        predictions = head_class.from_pretrained(tmp_path).text_decoder.cls.predictions
        assert torch.equal(predictions.bias, torch.zeros_like(predictions.bias)), head_class.__name__
    # what from_pretrained does, without depending on what the memory held: only the bias is left to initialise
    model = build(MISSForVQA)
    assert_bias_initialised_to_zero(model, model.text_decoder.cls.predictions.bias)


# ------------------------------------------------------------------ VQA


def test_vqa_loss_is_per_answer_summed_label_smoothed_cross_entropy_over_questions():
    model = build(MISSForVQA)
    inputs = batch(model.config, model_class=MISSForVQA)
    labels = decoder_labels(inputs["decoder_input_ids"], inputs["decoder_attention_mask"])
    output = model(**inputs, labels=labels)
    log_probs = output.logits[:, :-1].log_softmax(-1)
    targets = labels[:, 1:]
    scored = targets != -100
    nll = -log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    per_token = (0.9 * nll - 0.1 * log_probs.mean(-1)) * scored
    torch.testing.assert_close(output.loss, per_token.sum(-1).mean())
    without_decoder_inputs = {k: v for k, v in inputs.items() if not k.startswith("decoder_")}
    torch.testing.assert_close(model(**without_decoder_inputs, labels=labels).loss, output.loss)


def test_answer_ranking_is_the_exhaustive_likelihood_ranking():
    """With k >= the candidates, every candidate answer's score is its log-likelihood given image and question (the
    decoder teacher-forced on it), and the answer is the arg-max; with the released quirk, the negative label-smoothed
    loss."""
    model = build(MISSForVQA, seed=1, initializer_range=0.3)
    inputs = batch(model.config, batch_size=2, seed=4)
    answers, answer_mask = text_batch([1, 3, 2, 2], torch.Generator().manual_seed(5), first=DEC)
    ranking = model.rank_answers(inputs["input_ids"], inputs["pixel_values"], answers, inputs["attention_mask"],
                                 answer_mask, k=4)
    expected, expected_smoothed = torch.empty(2, 4), torch.empty(2, 4)
    with torch.no_grad():
        for question in range(2):
            for answer in range(4):
                length = int(answer_mask[answer].sum())
                logits = model(
                    input_ids=inputs["input_ids"][question : question + 1],
                    attention_mask=inputs["attention_mask"][question : question + 1],
                    pixel_values=inputs["pixel_values"][question : question + 1],
                    decoder_input_ids=answers[answer : answer + 1, :length],
                ).logits
                log_probs = logits[0, :-1].log_softmax(-1)
                token_log_probs = log_probs.gather(-1, answers[answer, 1:length, None])[:, 0]
                expected[question, answer] = token_log_probs.sum()
                expected_smoothed[question, answer] = (0.9 * token_log_probs + 0.1 * log_probs.mean(-1)).sum()
    torch.testing.assert_close(ranking.scores, expected, atol=1e-5, rtol=1e-5)
    assert ranking.answer_indices.tolist() == expected.argmax(-1).tolist()
    model.config.vqa_ranking_uses_label_smoothing = True
    smoothed = model.rank_answers(inputs["input_ids"], inputs["pixel_values"], answers, inputs["attention_mask"],
                                  answer_mask, k=4).scores
    torch.testing.assert_close(smoothed, expected_smoothed, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ inputs


def test_bad_inputs_get_clear_errors():
    model = build(MISSForVQA)
    inputs = batch(model.config, model_class=MISSForVQA)
    with pytest.raises(ValueError, match=r"start with \[CLS\]"):
        model(**inputs | {"input_ids": inputs["input_ids"].clone().fill_(1500)})
    with pytest.raises(ValueError, match="pixel_values has shape"):
        model(**inputs | {"pixel_values": torch.zeros(3, 3, 16, 16)})
    with pytest.raises(ValueError, match=r"labels\[:, 0\] must be -100"):
        model(**inputs, labels=inputs["decoder_input_ids"])
    with pytest.raises(ValueError, match="needs the answer"):
        model(**{key: value for key, value in inputs.items() if not key.startswith("decoder_")})
    long_text = torch.full((1, 70), 1500)
    long_text[:, 0] = CLS
    with pytest.raises(ValueError, match="longer than the 64 positions"):
        build(MISSModel).get_text_features(long_text)
    with pytest.raises(ValueError, match="'itm' without 'itc'"):
        tiny_config(pretraining_objectives=["itm", "lm"])
    with pytest.raises(ValueError, match="encoder_hidden_size"):
        MISSConfig(text_config={"encoder_hidden_size": 64})


def test_the_package_exports_every_head():
    for name in ("MISSConfig", "MISSModel", "MISSForPreTraining", "MISSForVQA", "MISSForReportGeneration",
                 "MISSForRetrieval"):
        assert hasattr(medvlp_hf, name)
    assert MISSForPreTraining.lora_target_modules == ("query", "value")
    assert MISSConfig.from_preset("small").vision_config.hidden_size == 256
