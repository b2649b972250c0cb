"""M2I2 on the shared model, momentum and contrastive checks (tests/common), plus what is special to M2I2: each pre-training loss
against a reference computation written here, the masking rules and their determinism, MAE's sin-cos table, the towers
against transformers' BERT and BLIP-ViT, VQA initialisation from the fusion layers, the VQA loss, answer ranking, the
released model's size."""

import math

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import BertConfig, BertModel, BlipVisionConfig, BlipVisionModel

import medvlp_hf
from medvlp_hf import M2I2Config, M2I2ForPreTraining, M2I2ForRetrieval, M2I2ForVQA, M2I2Model
from medvlp_hf.models.m2i2 import mask_caption_tokens, sincos_position_table, vqa_state_dict_from_pretraining
from tests.common.albef_style import (
    assert_bias_initialised_to_zero,
    assert_momentum_step,
    reference_itc_loss,
    reference_itm_logits,
)
from tests.common.contrastive_tester import ContrastiveTesterMixin
from tests.common.model_tester import ModelTesterMixin
from tests.common.momentum_tester import MomentumTesterMixin
from tests.models.m2i2.tester import (
    CLS,
    MASK,
    PAD,
    SEP,
    M2I2ModelTester,
    M2I2MomentumTester,
    answer_labels,
    candidate_answers,
    text_batch,
    tiny_config,
)

TESTER = M2I2ModelTester()


class TestM2I2Model(ModelTesterMixin):
    tester = TESTER


class TestM2I2Momentum(MomentumTesterMixin):
    momentum_tester = M2I2MomentumTester()


class TestM2I2Contrastive(ContrastiveTesterMixin):
    tester = TESTER


def build(model_class, seed=0, **overrides):
    return TESTER.build(model_class, seed, **overrides)


def batch(config, batch_size=3, seed=0, model_class=None):
    return TESTER.prepare_inputs(config, batch_size=batch_size, seed=seed, model_class=model_class)


def pretraining_batch(model, seed=0):
    """Inputs (captions, images, the three injected patch noises) and injected MLM targets."""
    inputs = batch(model.config, seed=seed, model_class=M2I2ForPreTraining)
    return inputs, TESTER.prepare_labels(M2I2ForPreTraining, model.config, inputs, torch.Generator().manual_seed(seed))


def unique_parameters(model):
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def perturb_momentum_encoders(model):
    with torch.no_grad():
        for _, _, shadow in model.momentum_parameter_pairs():
            shadow.add_(0.05 * torch.randn_like(shadow))


def masked_image_states(vision_model, pixel_values, noise, ratio=0.15):
    with torch.no_grad():
        return vision_model(pixel_values, noise, ratio).last_hidden_state


# ------------------------------------------------------------------ the released model


def test_base_config_is_the_released_model():
    """originals.md §1.4, unique parameters: the pre-training model counts 472,153,719, which holds the fixed sin-cos
    tables (frozen parameters there, buffers here) and the original's momentum ViT as a whole MAE, whose 8-block
    decoder no forward reads (M2I2ForPreTraining keeps no momentum MAE decoder); the queues are buffers in both. VQA at
    384 px counts 580,672,116 with the momentum copies of `distill: True` and half of that without."""
    config = M2I2Config()
    vision, text, decoder = config.vision_config, config.text_config, config.mim_decoder_config
    assert (vision.image_size, vision.patch_size, vision.layer_norm_eps, vision.position_embedding_type) == (
        256, 16, 1e-6, "sincos"
    )
    assert (text.vocab_size, text.fusion_layer, text.num_hidden_layers, text.layer_norm_eps) == (30522, 6, 12, 1e-12)
    assert (decoder.hidden_size, decoder.num_hidden_layers, decoder.num_attention_heads) == (512, 8, 16)
    assert (config.queue_size, config.projection_dim, config.momentum, config.itc_temperature, config.alpha) == (
        65536, 256, 0.995, 0.07, 0.4
    )
    assert (config.mlm_probability, config.mim_mask_ratio, config.vqa_answer_weight, config.vqa_ranking_top_k) == (
        0.15, 0.15, 0.5, 128
    )
    vqa_vision = {"image_size": 384, "position_embedding_type": "learned"}
    with torch.device("meta"):
        pretraining = M2I2ForPreTraining(config)
        vqa_distilled = M2I2ForVQA(M2I2Config(vision_config=vqa_vision, vqa_distillation=True))
        vqa = M2I2ForVQA(M2I2Config(vision_config=vqa_vision))
    tables = {name: buffer.numel() for name, buffer in pretraining.named_buffers() if name.endswith("position_embedding")}
    assert tables == {"vision_model.embeddings.position_embedding": 257 * 768, "mim_decoder.position_embedding": 257 * 512,
                      "vision_model_m.embeddings.position_embedding": 257 * 768}
    momentum_mae_decoder = unique_parameters(pretraining.mim_decoder) + 257 * 512
    assert momentum_mae_decoder == 26_139_904
    assert unique_parameters(pretraining) + sum(tables.values()) + momentum_mae_decoder == 472_153_719
    assert unique_parameters(vqa_distilled) == 580_672_116
    assert unique_parameters(vqa) == 290_336_058
    assert pretraining.feature_queue.image_queue.shape == (256, 65536)
    assert vqa.vision_model.embeddings.position_embedding.shape == (1, 577, 768)
    assert len(vqa.text_decoder.bert.encoder.layer) == 6


def test_sincos_table_is_maes():
    """Row 0 ([CLS]) zeros; patch (i, j): the first half of the channels encodes the column j, the second the row i,
    each as sin then cos of the position times 10000 ** (-k / (width / 4))."""
    width, grid = 16, 3
    expected = torch.zeros(1 + grid * grid, width, dtype=torch.float64)
    quarter = width // 4
    for i in range(grid):
        for j in range(grid):
            for k in range(quarter):
                frequency = 10000 ** (-k / quarter)
                row = 1 + i * grid + j
                expected[row, k] = math.sin(j * frequency)
                expected[row, quarter + k] = math.cos(j * frequency)
                expected[row, 2 * quarter + k] = math.sin(i * frequency)
                expected[row, 3 * quarter + k] = math.cos(i * frequency)
    table = sincos_position_table(width, grid)
    assert table.dtype == torch.float32
    torch.testing.assert_close(table, expected.float(), atol=1e-7, rtol=0)
    model = build(M2I2ForPreTraining)
    buffers = dict(model.named_buffers())
    assert torch.equal(buffers["vision_model.embeddings.position_embedding"][0], sincos_position_table(32, 4))
    assert torch.equal(buffers["mim_decoder.position_embedding"][0], sincos_position_table(16, 4))


def test_fixed_tables_and_momentum_copies_stay_untrained_through_save_and_load(tmp_path):
    """The sin-cos tables are saved (as the original saves them) but are buffers; the momentum copies stay frozen after
    `from_pretrained` (loading replaces parameters); a learnt table is a trained parameter."""
    build(M2I2ForPreTraining).save_pretrained(tmp_path)
    assert "vision_model.embeddings.position_embedding" in load_file(tmp_path / "model.safetensors")
    reloaded = M2I2ForPreTraining.from_pretrained(tmp_path)
    trained = {name for name, parameter in reloaded.named_parameters() if parameter.requires_grad}
    assert not {name for name in trained if name.endswith("position_embedding")}
    assert not {name for name in trained if name.split(".")[0] in reloaded.momentum_modules.values()}
    assert {name.split(".")[0] for name in trained} == {
        "vision_model", "text_encoder", "vision_proj", "text_proj", "temperature", "itm_head", "mlm_head", "mim_decoder"
    }
    build(M2I2ForVQA, vision_config={"position_embedding_type": "learned"}, vqa_distillation=True).save_pretrained(
        tmp_path / "vqa"
    )
    vqa = M2I2ForVQA.from_pretrained(tmp_path / "vqa")
    assert vqa.vision_model.embeddings.position_embedding.requires_grad
    assert not any(parameter.requires_grad for parameter in vqa.text_decoder_m.parameters())


# ------------------------------------------------------------------ towers


def test_towers_equal_transformers_bert_and_blip_vit():
    """With the same weights, the unmasked ViT equals transformers' `BlipVisionModel` (timm blocks), and the text
    encoder's `text` mode its `BertModel` with `fusion_layer` layers; `text` then `fusion` equals `multimodal`."""
    model = build(M2I2ForVQA)
    vision, text = model.config.vision_config, model.config.text_config
    blip = BlipVisionModel(BlipVisionConfig(
        hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size, image_size=vision.image_size,
        num_hidden_layers=vision.num_hidden_layers, num_attention_heads=vision.num_attention_heads,
        patch_size=vision.patch_size, layer_norm_eps=vision.layer_norm_eps,
    )).eval()
    blip.load_state_dict(model.vision_model.state_dict())
    bert = BertModel(BertConfig(
        vocab_size=text.vocab_size, hidden_size=text.hidden_size, num_hidden_layers=text.fusion_layer,
        num_attention_heads=text.num_attention_heads, intermediate_size=text.intermediate_size,
        max_position_embeddings=text.max_position_embeddings, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    ), add_pooling_layer=False).eval()
    bert.load_state_dict({k: v for k, v in model.text_encoder.state_dict().items() if "crossattention" not in k},
                         strict=False)
    inputs = batch(model.config)
    ids, mask, pixels = inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
    real = mask.bool()
    with torch.no_grad():
        image = model.vision_model(pixels).last_hidden_state
        torch.testing.assert_close(image, blip(pixels).last_hidden_state, atol=1e-5, rtol=1e-5)
        text_states = model.text_encoder(ids, mask, mode="text").last_hidden_state
        theirs = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(text_states[real], theirs[real], atol=1e-5, rtol=1e-5)
        fused = model.text_encoder(attention_mask=mask, encoder_hidden_states=image, mode="fusion",
                                   text_hidden_states=text_states).last_hidden_state
        joint = model.text_encoder(ids, mask, image, mode="multimodal").last_hidden_state
        torch.testing.assert_close(fused, joint, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------ masking


def test_image_masking_keeps_the_lowest_noise_patches():
    """MAE's masking: int(16 * 0.85) = 13 patches kept per image, those of lowest noise, in noise order, behind the
    [CLS]; the mask marks the 3 others in raster order; the same noise gives the same encoding."""
    model = build(M2I2ForPreTraining)
    vision = model.vision_model
    pixels = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    with torch.no_grad():
        output = vision(pixels, noise, 0.15)
        again = vision(pixels, noise.clone(), 0.15)
        embeddings = vision.embeddings
        patches = embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2) + embeddings.position_embedding[:, 1:]
        kept = noise.argsort(1)[:, :13]
        tokens = torch.stack([patches[b, kept[b]] for b in range(2)])
        cls = (embeddings.class_embedding + embeddings.position_embedding[:, :1]).expand(2, -1, -1)
        hidden, _, _ = vision.encoder(torch.cat([cls, tokens], 1))
        expected = vision.post_layernorm(hidden)
    assert output.last_hidden_state.shape == (2, 14, 32)
    torch.testing.assert_close(output.last_hidden_state, expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(output.last_hidden_state, again.last_hidden_state)
    removed = torch.ones(2, 16)
    removed.scatter_(1, kept, 0.0)
    assert torch.equal(output.patch_mask, removed)
    assert torch.equal(output.ids_restore, noise.argsort(1).argsort(1))


def test_pretraining_draws_are_deterministic_with_a_generator_and_in_evaluation():
    model = build(M2I2ForPreTraining).train()
    inputs = batch(model.config)

    def run(**kwargs):
        output = model(**inputs, **kwargs)
        model._momentum_features.clear()
        return output

    first, second = run(generator=torch.Generator().manual_seed(1)), run(generator=torch.Generator().manual_seed(1))
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    other = run(generator=torch.Generator().manual_seed(2))
    assert not torch.equal(first.mim_patch_mask, other.mim_patch_mask)
    assert not torch.equal(first.mlm_labels, other.mlm_labels)
    model.eval()
    evaluated, again = model(**inputs), model(**inputs)
    for key, value in evaluated.items():
        assert torch.equal(value, again[key]), key


def test_mlm_masking_follows_the_original_rules():
    """15% of the tokens, never [PAD] or [CLS] (a [SEP] can be chosen); of the chosen 80% [MASK], 10% a random token,
    10% kept; the labels are the chosen tokens. Drawn from the generator; `masked_positions` replaces the first draw."""
    config = tiny_config()
    generator = torch.Generator().manual_seed(0)
    lengths = [int(n) for n in torch.randint(5, 40, (400,), generator=generator)]
    ids, mask = text_batch(lengths, generator, end=SEP)
    masked, labels = mask_caption_tokens(ids, config, torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert not chosen[ids == PAD].any() and not chosen[ids == CLS].any()
    assert chosen[ids == SEP].any()
    eligible = (ids != PAD) & (ids != CLS)
    assert abs(chosen.sum() / eligible.sum() - 0.15) < 0.01
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    as_mask = (masked == MASK) & chosen
    kept = (masked == ids) & chosen
    assert abs(as_mask.sum() / chosen.sum() - 0.8) < 0.02
    assert abs(kept.sum() / chosen.sum() - 0.1) < 0.02
    assert abs((chosen & ~as_mask & ~kept).sum() / chosen.sum() - 0.1) < 0.02
    repeat, _ = mask_caption_tokens(ids, config, torch.Generator().manual_seed(1))
    assert torch.equal(repeat, masked)
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[:, :3] = True
    _, injected = mask_caption_tokens(ids, config, generator, masked_positions=positions)
    assert torch.equal(injected != -100, positions & eligible)


# ------------------------------------------------------------------ pre-training losses


def test_itc_loss_is_momentum_distilled_contrast_against_the_queue_on_masked_images():
    """ITC = mean of the image->text and text->image cross-entropies against soft targets alpha * softmax(momentum
    similarity) + (1 - alpha) * identity, over the batch's momentum features and the queue; the image features come
    from the masked ViT (online and momentum masks differ)."""
    model = build(M2I2ForPreTraining, pretraining_objectives=["itc"])
    perturb_momentum_encoders(model)
    inputs = batch(model.config, model_class=M2I2ForPreTraining)
    output = model(**inputs, alpha=0.4)
    ids, mask, pixels = inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
    with torch.no_grad():
        temperature = model.temperature
        image_states = masked_image_states(model.vision_model, pixels, inputs["patch_noise"])
        image = F.normalize(model.vision_proj(image_states[:, 0]), dim=-1)
        text = F.normalize(model.get_text_features(ids, mask), dim=-1)
        image_m = F.normalize(model.vision_proj_m(
            masked_image_states(model.vision_model_m, pixels, inputs["momentum_patch_noise"])[:, 0]), dim=-1)
        text_m = F.normalize(model.text_proj_m(
            model.text_encoder_m(ids, mask, mode="text").last_hidden_state[:, 0]), dim=-1)
        expected = reference_itc_loss(image, text, image_m, text_m, model.feature_queue, temperature, alpha=0.4)
    torch.testing.assert_close(output.itc_loss, expected)
    torch.testing.assert_close(output.loss, output.itc_loss)
    assert output.logits_per_image.shape == (3, 3 + model.config.queue_size)


def test_itm_loss_on_injected_hard_negatives():
    """ITM = cross-entropy of the ITM head on the [CLS] of the joint encoding (over the masked image) of the B
    positives, each text with its negative image and each image with its negative text, labels 1, 0, 0."""
    model = build(M2I2ForPreTraining, pretraining_objectives=["itc", "itm"])
    inputs = batch(model.config, model_class=M2I2ForPreTraining)
    negative_images, negative_texts = torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])
    output = model(**inputs, negative_image_indices=negative_images, negative_text_indices=negative_texts)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    states = masked_image_states(model.vision_model, inputs["pixel_values"], inputs["patch_noise"])
    with torch.no_grad():
        def match(text_rows, image_rows):
            encoded = model.get_joint_features(ids[text_rows], attention_mask=mask[text_rows],
                                               image_hidden_states=states[image_rows])
            return model.itm_head(encoded.last_hidden_state[:, 0])

        logits, labels = reference_itm_logits(match, negative_images, negative_texts)
    torch.testing.assert_close(output.itm_logits, logits, atol=1e-5, rtol=1e-5)
    assert output.itm_labels.tolist() == labels.tolist()
    torch.testing.assert_close(output.itm_loss, F.cross_entropy(logits, labels), atol=1e-5, rtol=1e-5)


def test_hard_negatives_are_drawn_from_the_generator_and_never_the_pair_itself():
    model = build(M2I2ForPreTraining, pretraining_objectives=["itc", "itm"]).train()
    inputs = batch(model.config, model_class=M2I2ForPreTraining)
    draws = []
    for seed in range(20):
        output = model(**inputs, generator=torch.Generator().manual_seed(seed))
        model._momentum_features.clear()
        draws.append(output.negative_image_indices)
        assert (output.negative_image_indices != torch.arange(3)).all()
        assert (output.negative_text_indices != torch.arange(3)).all()
    assert len({tuple(draw.tolist()) for draw in draws}) > 1


def test_mlm_loss_with_injected_masks_and_momentum_soft_labels():
    """MLM = (1 - alpha) * cross-entropy + alpha * soft cross-entropy against the momentum encoder's distributions,
    both means over the masked tokens, the captions read over the masked image (`xbert.BertForMaskedLM`); under Trainer
    a mean over the accumulated batch's masked tokens."""
    model = build(M2I2ForPreTraining, pretraining_objectives=["mlm"])
    perturb_momentum_encoders(model)
    inputs, targets = pretraining_batch(model)
    output = model(**inputs, **targets, alpha=0.4)
    mlm_ids, labels, mask, pixels = targets["mlm_input_ids"], targets["labels"], inputs["attention_mask"], inputs["pixel_values"]
    with torch.no_grad():
        image = masked_image_states(model.vision_model, pixels, inputs["patch_noise"])
        image_m = masked_image_states(model.vision_model_m, pixels, inputs["momentum_patch_noise"])
        logits = model.mlm_head(model.text_encoder(mlm_ids, mask, image).last_hidden_state)
        soft = model.mlm_head_m(model.text_encoder_m(mlm_ids, mask, image_m).last_hidden_state).softmax(-1)
    scored = labels != -100
    cross_entropy = F.cross_entropy(logits[scored], labels[scored], reduction="none")
    distilled = -(soft[scored] * logits[scored].log_softmax(-1)).sum(-1)
    torch.testing.assert_close(output.logits, logits)
    torch.testing.assert_close(output.mlm_loss, 0.6 * cross_entropy.mean() + 0.4 * distilled.mean())
    count = int(scored.sum())
    shared = model(**inputs, **targets, alpha=0.4, num_items_in_batch=torch.tensor(2 * count))
    torch.testing.assert_close(shared.mlm_loss, (0.6 * cross_entropy + 0.4 * distilled).sum() / (2 * count))


def test_mlm_masks_are_drawn_inside_the_model_or_completed_from_labels():
    model = build(M2I2ForPreTraining, pretraining_objectives=["mlm"], alpha=0.0)
    inputs, targets = pretraining_batch(model)
    output = model(**inputs, generator=torch.Generator().manual_seed(3))
    expected_ids, expected_labels = mask_caption_tokens(inputs["input_ids"], model.config, torch.Generator().manual_seed(3))
    assert torch.equal(output.mlm_input_ids, expected_ids) and torch.equal(output.mlm_labels, expected_labels)
    injected = model(**inputs, mlm_input_ids=expected_ids, labels=expected_labels)
    torch.testing.assert_close(injected.mlm_loss, output.mlm_loss)
    completed = model(**inputs, labels=targets["labels"])
    chosen = targets["labels"] != -100
    assert torch.equal(completed.mlm_labels, targets["labels"])
    assert torch.equal(completed.mlm_input_ids[~chosen], inputs["input_ids"][~chosen])


def test_mim_loss_is_the_mean_squared_error_on_the_removed_patches_of_the_normalised_image():
    """MAE: the decoder sees the kept patches' states at their places, a mask token elsewhere, sin-cos positions; the
    loss is the mean over removed patches of the per-patch mean squared error against the image's pixels (each patch
    flattened row by row, channels last)."""
    model = build(M2I2ForPreTraining, pretraining_objectives=["mim"])
    inputs = batch(model.config, model_class=M2I2ForPreTraining)
    output = model(**inputs)
    pixels, noise = inputs["pixel_values"], inputs["mim_patch_noise"]
    decoder = model.mim_decoder
    with torch.no_grad():
        states = decoder.embed(masked_image_states(model.vision_model, pixels, noise))
        kept = noise.argsort(1)[:, :13]
        tokens = decoder.mask_token.expand(3, 17, -1).clone()
        tokens[:, 0] = states[:, 0]
        for b in range(3):
            tokens[b, 1 + kept[b]] = states[b, 1:]
        hidden, _, _ = decoder.encoder(tokens + decoder.position_embedding)
        predictions = decoder.prediction(decoder.layer_norm(hidden))[:, 1:]
    torch.testing.assert_close(output.mim_predictions, predictions, atol=1e-5, rtol=1e-5)
    targets = torch.stack([
        torch.stack([pixels[b, :, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8].permute(1, 2, 0).flatten()
                     for i in range(4) for j in range(4)]) for b in range(3)
    ])
    removed = torch.ones(3, 16, dtype=torch.bool).scatter(1, kept, False)
    assert torch.equal(output.mim_patch_mask.bool(), removed)
    per_patch = ((predictions - targets) ** 2).mean(-1)
    torch.testing.assert_close(output.mim_loss, per_patch[removed].mean())


def test_pretraining_loss_is_the_sum_of_the_objectives_and_weights_batch_terms_by_token_share():
    model = build(M2I2ForPreTraining)
    inputs, targets = pretraining_batch(model)
    output = model(**inputs, **targets)
    terms = output.itc_loss + output.itm_loss + output.mlm_loss + output.mim_loss
    torch.testing.assert_close(output.loss, terms)
    count = int((targets["labels"] != -100).sum())
    shared = model(**inputs, **targets, num_items_in_batch=torch.tensor(2 * count))
    torch.testing.assert_close(shared.loss, terms / 2)


def test_momentum_step_is_an_ema_that_enqueues_and_clamps_the_temperature():
    model = build(M2I2ForPreTraining, pretraining_objectives=["itc"]).train()
    inputs = batch(model.config, model_class=M2I2ForPreTraining)
    model(**inputs).loss.backward()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter.sub_(0.5 * parameter.grad)
        model.temperature.fill_(1e-5)
        image_m = F.normalize(model.vision_proj_m(
            masked_image_states(model.vision_model_m, inputs["pixel_values"], inputs["momentum_patch_noise"])[:, 0]
        ), dim=-1)
    before = {name: (online.clone(), shadow.clone()) for name, online, shadow in model.momentum_parameter_pairs()}
    names = set(before)
    assert "mlm_head.predictions.bias" in names or "mlm_head.predictions.decoder.bias" in names
    assert "mlm_head.predictions.decoder.weight" not in names, "the tied LM-head weight is the word embeddings'"
    model.momentum_step()
    assert_momentum_step(model, before, image_m)
    assert [model.distillation_alpha_at(epoch) for epoch in (0, 0.5, 1, 3)] == pytest.approx([0, 0.2, 0.4, 0.4])


def test_pretraining_from_a_base_checkpoint_copies_the_momentum_encoders(tmp_path):
    base = build(M2I2Model)
    base.save_pretrained(tmp_path)
    model = M2I2ForPreTraining.from_pretrained(tmp_path)
    state = base.state_dict()
    for name, online, shadow in model.momentum_parameter_pairs():
        assert torch.equal(shadow, online), name
        if name in state:
            assert torch.equal(online, state[name]), name
    norms = model.feature_queue.image_queue.norm(dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_lm_heads_new_to_a_base_checkpoint_start_with_a_zero_bias(tmp_path):
    """A head's new LM head (the pre-training MLM heads, the VQA decoder's) is initialised in `from_pretrained`, its bias
    to zero; it used to keep whatever memory it was given (NaN at times), because transformers initialises a remote-code
    module only for a weight of its own and the rule was on the bias's parent module."""
    build(M2I2Model).save_pretrained(tmp_path)
    pretraining = M2I2ForPreTraining.from_pretrained(tmp_path)
    vqa = M2I2ForVQA.from_pretrained(tmp_path)
    for head in (pretraining.mlm_head, pretraining.mlm_head_m, vqa.text_decoder.cls):
        assert torch.equal(head.predictions.bias, torch.zeros_like(head.predictions.bias))
        assert head.predictions.decoder.bias is head.predictions.bias
    # what from_pretrained does, without depending on what the memory held: only the bias is left to initialise
    model = build(M2I2ForPreTraining)
    assert_bias_initialised_to_zero(model, model.mlm_head.predictions.bias)


# ------------------------------------------------------------------ VQA


def test_vqa_from_pretraining_starts_the_decoder_from_the_fusion_layers(tmp_path):
    """`train_rad.py`'s initialisation: decoder layer i = text-encoder layer fusion_layer + i, decoder embeddings = the
    text encoder's (an untied copy), LM head = the MLM head, the position table resized bicubically and then learnt;
    with distillation the momentum copies come from the momentum encoders the same way."""
    pretraining = build(M2I2ForPreTraining, text_config={"num_hidden_layers": 3})
    perturb_momentum_encoders(pretraining)
    pretraining.save_pretrained(tmp_path / "pretraining")
    with pytest.raises(ValueError, match=r"M2I2ForVQA\.from_pretraining"):
        M2I2ForVQA.from_pretrained(tmp_path / "pretraining")
    vqa = M2I2ForVQA.from_pretraining(tmp_path / "pretraining", vqa_distillation=True, image_size=48)
    assert vqa.config.vision_config.position_embedding_type == "learned" and vqa.config.vision_config.image_size == 48
    assert vqa.vision_model.embeddings.position_embedding.requires_grad
    fusion = pretraining.config.text_config.fusion_layer
    for suffix in ("", "_m"):
        encoder = getattr(pretraining, f"text_encoder{suffix}")
        decoder = getattr(vqa, f"text_decoder{suffix}")
        assert len(decoder.bert.encoder.layer) == 2
        for index, layer in enumerate(decoder.bert.encoder.layer):
            source = encoder.encoder.layer[fusion + index].state_dict()
            for name, tensor in layer.state_dict().items():
                assert torch.equal(tensor, source[name]), (suffix, index, name)
        for name, tensor in decoder.bert.embeddings.state_dict().items():
            assert torch.equal(tensor, encoder.embeddings.state_dict()[name]), name
        head = getattr(pretraining, f"mlm_head{suffix}").state_dict()
        for name, tensor in decoder.cls.state_dict().items():
            assert torch.equal(tensor, head[name]), name
        for name, tensor in getattr(vqa, f"text_encoder{suffix}").state_dict().items():
            assert torch.equal(tensor, encoder.state_dict()[name]), name
    assert vqa.text_decoder.bert.embeddings.word_embeddings.weight is not vqa.text_encoder.embeddings.word_embeddings.weight
    assert vqa.text_decoder.cls.predictions.decoder.weight is vqa.text_decoder.bert.embeddings.word_embeddings.weight
    table = pretraining.vision_model.embeddings.position_embedding
    patches = table[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    resized = F.interpolate(patches, size=(6, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    expected = torch.cat([table[:, :1], resized.reshape(1, 36, 32)], dim=1)
    torch.testing.assert_close(vqa.vision_model.embeddings.position_embedding, expected)
    for name, tensor in vqa.vision_model.state_dict().items():
        if "position_embedding" not in name:
            assert torch.equal(tensor, pretraining.vision_model.state_dict()[name]), name
    vqa.save_pretrained(tmp_path / "vqa")
    reloaded = M2I2ForVQA.from_pretrained(tmp_path / "vqa")
    for name, tensor in vqa.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    without = vqa_state_dict_from_pretraining(pretraining.state_dict(), M2I2ForVQA.from_pretraining(pretraining).config)
    assert not any(name.split(".")[0].endswith("_m") for name in without)


@pytest.mark.parametrize("model_class, vision", [(M2I2ForVQA, {"position_embedding_type": "learned"}),
                                                  (M2I2ForPreTraining, {})], ids=["learnt", "sincos"])
def test_a_folder_whose_grid_disagrees_with_its_config_is_refused(model_class, vision, tmp_path):
    build(model_class, vision_config=vision).save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"image_size": 32', '"image_size": 64'))
    with pytest.raises(ValueError, match="holds 16 patch positions but .* asks for 64"):
        model_class.from_pretrained(tmp_path)


def test_vqa_loss_is_half_the_summed_answer_cross_entropy_averaged_over_questions():
    model = build(M2I2ForVQA)
    inputs = batch(model.config, model_class=M2I2ForVQA)
    labels = answer_labels(inputs["decoder_input_ids"], inputs["decoder_attention_mask"])
    output = model(**inputs, labels=labels)
    log_probs = output.logits[:, :-1].log_softmax(-1)
    targets = labels[:, 1:]
    scored = targets != -100
    nll = -log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * scored
    torch.testing.assert_close(output.loss, (0.5 * nll.sum(-1)).sum() / 3)
    weights = torch.tensor([1.0, 0.2, 0.0])
    torch.testing.assert_close(model(**inputs, labels=labels, answer_weights=weights).loss, (weights * nll.sum(-1)).sum() / 3)
    without_decoder_inputs = {k: v for k, v in inputs.items() if not k.startswith("decoder_")}
    torch.testing.assert_close(model(**without_decoder_inputs, labels=labels).loss, output.loss)


def test_vqa_distillation_mixes_the_momentum_decoders_answer_distributions():
    model = build(M2I2ForVQA, vqa_distillation=True)
    perturb_momentum_encoders(model)
    inputs = batch(model.config, model_class=M2I2ForVQA)
    labels = answer_labels(inputs["decoder_input_ids"], inputs["decoder_attention_mask"])
    output = model(**inputs, labels=labels, alpha=0.4)
    with torch.no_grad():
        image_m = model.vision_model_m(inputs["pixel_values"]).last_hidden_state
        question_m = model.text_encoder_m(inputs["input_ids"], inputs["attention_mask"], image_m).last_hidden_state
        _, logits_m = model.text_decoder_m(inputs["decoder_input_ids"], inputs["decoder_attention_mask"], question_m,
                                           inputs["attention_mask"])
    soft = logits_m[:, :-1].softmax(-1)
    log_probs = output.logits[:, :-1].log_softmax(-1)
    targets = labels[:, 1:]
    scored = targets != -100
    nll = -log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    distilled = -(soft * log_probs).sum(-1)
    per_answer = ((0.6 * nll + 0.4 * distilled) * scored).sum(-1)
    torch.testing.assert_close(output.loss, (0.5 * per_answer).sum() / 3)
    model.train()
    before = {name: (online.clone(), shadow.clone()) for name, online, shadow in model.momentum_parameter_pairs()}
    assert {name.split(".")[0] for name in before} == {"vision_model", "text_encoder", "text_decoder"}
    model.momentum_step()
    for name, online, shadow in model.momentum_parameter_pairs():
        torch.testing.assert_close(shadow, before[name][1] * 0.995 + before[name][0] * 0.005, atol=0, rtol=0)


def rank(model, inputs, answers, answer_mask, k):
    return model.rank_answers(inputs["input_ids"], inputs["pixel_values"], answers, inputs["attention_mask"],
                              answer_mask, k=k)


def test_answer_ranking_with_k_beyond_the_candidates_is_the_exhaustive_likelihood_ranking():
    """k >= candidates: every candidate's score is its log-likelihood given image and question (the decoder
    teacher-forced on it alone), the answer its arg-max, the probabilities their softmax; with the released quirk, the
    first answer token's log-probability is added once more."""
    model = build(M2I2ForVQA, seed=1, initializer_range=0.3, text_config={"initializer_range": 0.3})
    inputs = batch(model.config, batch_size=2, seed=4)
    answers, answer_mask = candidate_answers([1, 3, 2, 2], seed=5)
    ranking = rank(model, inputs, answers, answer_mask, k=10)
    expected, first = torch.empty(2, 4), torch.empty(2, 4)
    with torch.no_grad():
        for question in range(2):
            length_q = int(inputs["attention_mask"][question].sum())
            for answer in range(4):
                length = int(answer_mask[answer].sum())
                logits = model(
                    input_ids=inputs["input_ids"][question : question + 1, :length_q],
                    pixel_values=inputs["pixel_values"][question : question + 1],
                    decoder_input_ids=answers[answer : answer + 1, :length],
                ).logits
                token_log_probs = logits[0, :-1].log_softmax(-1).gather(-1, answers[answer, 1:length, None])[:, 0]
                expected[question, answer] = token_log_probs.sum()
                first[question, answer] = token_log_probs[0]
    torch.testing.assert_close(ranking.scores, expected, atol=1e-5, rtol=1e-5)
    assert ranking.answer_indices.tolist() == expected.argmax(-1).tolist()
    torch.testing.assert_close(ranking.probabilities, expected.softmax(-1), atol=1e-5, rtol=1e-5)
    assert len(set(ranking.answer_indices.tolist()) | set(expected.argmin(-1).tolist())) > 1
    model.config.vqa_ranking_double_counts_first_token = True
    torch.testing.assert_close(rank(model, inputs, answers, answer_mask, k=4).scores, expected + first, atol=1e-5,
                               rtol=1e-5)


def test_answer_ranking_does_not_depend_on_the_candidates_padding_width():
    """A candidate's score is its own: extra padding columns, or the other candidates in the list, change none."""
    model = build(M2I2ForVQA, seed=1, initializer_range=0.3, text_config={"initializer_range": 0.3})
    inputs = batch(model.config, batch_size=2, seed=4)
    answers, answer_mask = candidate_answers([1, 3, 2, 2], seed=5)
    ranking = rank(model, inputs, answers, answer_mask, k=4)
    padded = rank(model, inputs, F.pad(answers, (0, 7)), F.pad(answer_mask, (0, 7)), k=4)
    torch.testing.assert_close(padded.scores, ranking.scores, atol=1e-6, rtol=1e-6)
    short = answer_mask.sum(1) < answer_mask.sum(1).max()
    only_short = rank(model, inputs, answers[short], answer_mask[short], k=int(short.sum()))
    torch.testing.assert_close(only_short.scores, ranking.scores[:, short], atol=1e-6, rtol=1e-6)


def test_answer_ranking_rescores_the_top_k_first_tokens_and_shares_the_question_states():
    """The k candidates of highest first-token probability are scored (the others get -inf and probability 0), and
    the decoder projects each question's states to keys and values once for its k candidates."""
    model = build(M2I2ForVQA, seed=1, initializer_range=0.3, text_config={"initializer_range": 0.3})
    inputs = batch(model.config, batch_size=2, seed=4)
    answers, answer_mask = candidate_answers([1, 3, 2, 2, 1], seed=5)
    calls = []
    key = model.text_decoder.bert.encoder.layer[0].crossattention.self.key
    handle = key.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        ranking = rank(model, inputs, answers, answer_mask, k=3)
    finally:
        handle.remove()
    assert calls == [2, 2], "the first-token pass and the candidate pass each project the 2 questions' states once"
    exhaustive = rank(model, inputs, answers, answer_mask, k=5)
    with torch.no_grad():
        states = model.encode_question(inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"])
        _, logits = model.text_decoder(answers[:1, :1].expand(2, 1), None, states.last_hidden_state,
                                       inputs["attention_mask"])
    first = logits[:, 0].log_softmax(-1)[:, answers[:, 1]]
    assert torch.equal(ranking.top_k_indices.sort(-1).values, first.topk(3, dim=1).indices.sort(-1).values)
    chosen = torch.zeros(2, 5, dtype=torch.bool).scatter(1, ranking.top_k_indices, True)
    torch.testing.assert_close(ranking.scores[chosen], exhaustive.scores[chosen], atol=1e-5, rtol=1e-5)
    assert torch.isinf(ranking.scores[~chosen]).all() and (ranking.probabilities[~chosen] == 0).all()
    torch.testing.assert_close(ranking.probabilities.sum(-1), torch.ones(2))


# ------------------------------------------------------------------ inputs and config


def test_bad_inputs_get_clear_errors():
    model = build(M2I2ForPreTraining)
    inputs, targets = pretraining_batch(model)
    with pytest.raises(ValueError, match=r"patch_noise has shape \(3, 5\).*\(3, 16\)"):
        model(**inputs | {"patch_noise": torch.rand(3, 5)})
    with pytest.raises(ValueError, match="mlm_input_ids needs the labels"):
        model(**inputs, mlm_input_ids=targets["mlm_input_ids"])
    with pytest.raises(ValueError, match="pixel_values has shape"):
        model(**inputs | {"pixel_values": torch.zeros(3, 3, 16, 16)})
    long_text = torch.full((1, 70), 1500)
    long_text[:, 0] = CLS
    with pytest.raises(ValueError, match="longer than the 64 positions"):
        build(M2I2Model).get_text_features(long_text)
    with pytest.raises(ValueError, match="pass `text_hidden_states`"):
        model.text_encoder(attention_mask=inputs["attention_mask"], encoder_hidden_states=torch.zeros(3, 5, 32),
                           mode="fusion")
    with pytest.raises(ValueError, match="pass `encoder_hidden_states`"):
        model.text_encoder(inputs["input_ids"], mode="multimodal")
    vqa = build(M2I2ForVQA)
    vqa_inputs = batch(vqa.config, model_class=M2I2ForVQA)
    with pytest.raises(ValueError, match=r"labels\[:, 0\] must be -100"):
        vqa(**vqa_inputs, labels=vqa_inputs["decoder_input_ids"])
    with pytest.raises(ValueError, match="needs the answer"):
        vqa(input_ids=vqa_inputs["input_ids"], pixel_values=vqa_inputs["pixel_values"])
    with pytest.raises(ValueError, match="cannot share 2 rows"):
        vqa.text_decoder(vqa_inputs["decoder_input_ids"], None, torch.zeros(2, 4, 32))
    distilled = build(M2I2ForVQA, vqa_distillation=True)
    states = torch.zeros(3, 4, 32)
    labels = answer_labels(vqa_inputs["decoder_input_ids"], vqa_inputs["decoder_attention_mask"])
    with pytest.raises(ValueError, match="momentum towers on the question and image"):
        distilled(encoder_hidden_states=states, labels=labels)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"pretraining_objectives": ["itm", "mlm"]}, "'itm' without 'itc'"),
        ({"text_config": {"fusion_layer": 2}}, "fusion_layer=2 must be in 1..1"),
        ({"text_config": {"encoder_hidden_size": 64}}, "encoder_hidden_size"),
        ({"vision_config": {"position_embedding_type": "rope"}}, "position_embedding_type"),
        ({"mim_mask_ratio": 0.0}, "remove at least one"),
        ({"pretraining_objectives": ["mae"]}, "pretraining_objectives"),
    ],
)
def test_bad_configs_get_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_the_package_exports_every_head_and_model_facts():
    for name in ("M2I2Config", "M2I2Model", "M2I2ForPreTraining", "M2I2ForVQA", "M2I2ForRetrieval"):
        assert hasattr(medvlp_hf, name)
    assert medvlp_hf.AutoModelForRetrieval.from_config(tiny_config()).__class__ is M2I2ForRetrieval
    assert M2I2ForPreTraining.lora_target_modules == ("query", "value")
    assert M2I2ForVQA.new_head_modules == ("text_decoder",)
    small = M2I2Config.from_preset("small")
    assert (small.vision_config.hidden_size, small.text_config.fusion_layer, small.vision_config.image_size) == (256, 2, 256)
