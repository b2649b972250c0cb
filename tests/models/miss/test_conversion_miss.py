"""Parity of the MISS checkpoint converter with the authors' code (TIMMY-CHAN/MISS@ac8b724).

The fixtures (tests/fixtures/miss, see its README) hold what the original classes computed from tiny random
checkpoints in the original layout, which `conversion_fixtures` regenerates from the key table and the harness's seed:
parity records (pre-training ITC/ITM/LM, VQA loss/beam search/answer ranking, a VQA model initialised from a
pre-training checkpoint at a larger image size) and two consecutive pre-training forwards. Bound: rtol 1e-5,
atol 1e-4, tokens and indices identical.
"""

import json
import re
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForPreTraining, AutoModelForVisualQuestionAnswering, AutoProcessor

import medvlp_hf  # noqa: F401  (registers the Auto classes)
from medvlp_hf import cli
from medvlp_hf.conversion import conversion_utils, parity
from medvlp_hf.conversion import convert_miss_original_checkpoint as conv
from medvlp_hf.conversion.conversion_utils import CheckpointError

from .conversion_fixtures import (
    BERT,
    RECORD_HEADS,
    RECORDS,
    RELEASED_GEOMETRY,
    VISION_HEADS,
    checkpoint,
    convert,
    convert_arguments,
    fixture,
    write_original_files,
)

TOLERANCE = {"rtol": 1e-5, "atol": 1e-4}


def check(model, record):
    results = parity.check_record(model, record)
    for key, result in results.items():
        print(f"{record.architecture} {key}: max |diff| {result['max_abs_diff']:.3g}")
    return results


# --------------------------------------------------------------------------------------------------
# Numbers: the converted models reproduce the authors' code
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("record_name", RECORD_HEADS)
def test_converted_models_reproduce_the_original(record_name):
    """Pre-training (ITC/ITM/LM logits and losses after the momentum update the original's forward starts with), VQA
    (training loss and logits, the released beam search with its scores, answer ranking), and a VQA model initialised
    from the pre-training checkpoint at 48 px (position embeddings interpolated from 4x4 to 6x6)."""
    record = parity.read_record(RECORDS / record_name)
    assert record.tolerance == TOLERANCE and record.reference["implementation"] == "original"
    results = check(convert(record_name), record)
    assert not parity.failures(results)
    assert {result["compare"] for result in results.values()} >= {"allclose"}


def test_seeded_checkpoints_are_the_ones_the_harness_ran(tmp_path):
    for name, (kind, _) in RECORD_HEADS.items():
        save_file(checkpoint(kind), tmp_path / "model.safetensors")
        made_on = parity.read_record(RECORDS / name).reference["checkpoint_sha256"]
        assert conversion_utils.sha256_file(tmp_path / "model.safetensors") == made_on, name


def test_pretraining_parity_needs_the_momentum_update_first():
    """The original's forward moves the momentum encoders (EMA) before computing the ITC targets; without
    `momentum_step()` first the momentum features, and with them the ITC outputs, differ."""
    record = parity.read_record(RECORDS / "pretraining")
    record.cases = [replace(case, prepare=[]) for case in record.cases]
    failed = parity.failures(parity.check_record(convert("pretraining"), record))
    assert any(key.startswith("itc_itm_lm.logits_per_image") for key in failed), failed
    assert not any(key.startswith(("itc_itm_lm.itm_", "itc_itm_lm.lm_", "itc_itm_lm.logits.")) for key in failed)


def test_two_training_steps_move_queue_and_momentum_encoders_as_the_original():
    """Two consecutive original forwards (each: EMA, features, enqueue) against medvlp-hf's order under Trainer
    (`momentum_step()` after each optimizer step; features kept by training-mode forwards, dropout off): the second
    forward sees the first's momentum features in the queue, and the queues and pointer end equal."""
    io, meta = fixture("pretraining")
    model = convert("pretraining", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    assert int(model.feature_queue.queue_ptr) == int(io["initial_queue_ptr"])
    inputs = {name: io[name] for name in ("input_ids", "attention_mask", "negative_image_indices",
                                          "negative_text_indices")}
    inputs["pixel_values"] = io["pixel_values"].float()
    with torch.no_grad():
        for _ in range(meta["forwards"]):
            model.momentum_step()
            output = model(**inputs, alpha=meta["alpha"])
        model.momentum_step()
    for name in ("logits_per_image", "logits_per_text", "itc_loss", "itm_loss", "lm_loss"):
        torch.testing.assert_close(getattr(output, name), io[f"second.{name}"], **TOLERANCE)
    queue = model.feature_queue
    torch.testing.assert_close(queue.image_queue, io["image_queue"], **TOLERANCE)
    torch.testing.assert_close(queue.text_queue, io["text_queue"], **TOLERANCE)
    assert torch.equal(queue.queue_ptr, io["queue_ptr"]) and int(io["queue_ptr"]) != int(io["initial_queue_ptr"])


@pytest.mark.parametrize("flag, case", [("vqa_generation_attends_question_padding", "beam_search"),
                                        ("vqa_ranking_uses_label_smoothing", "answer_ranking")])
def test_the_released_vqa_quirks_are_what_reproduces_the_original(flag, case):
    """The converter sets both flags; turned off (the defaults for new models), the released numbers are not
    reproduced: generation ignores the padding of the 2nd and 3rd questions, ranking uses the plain likelihood."""
    model = convert("vqa")
    assert getattr(model.config, flag) is True
    setattr(model.config, flag, False)
    record = parity.read_record(RECORDS / "vqa")
    record.cases = [c for c in record.cases if c.name == case]
    record.config.pop(flag)
    failed = parity.failures(parity.check_record(model, record))
    assert failed and all(key.startswith(case) for key in failed)


# --------------------------------------------------------------------------------------------------
# What a converted model keeps
# --------------------------------------------------------------------------------------------------


def test_pretraining_conversion_ties_the_decoder_and_keeps_the_training_state():
    state = checkpoint("pretraining")
    model = convert("pretraining")
    encoder_layer, decoder_layer = model.text_encoder.encoder.layer[1], model.text_decoder.bert.encoder.layer[1]
    assert decoder_layer.crossattention.self.key.weight is encoder_layer.crossattention.self.key.weight
    assert decoder_layer.attention.self.key.weight is not encoder_layer.attention.self.key.weight
    assert torch.equal(decoder_layer.attention.self.key.weight,
                       state["text_decoder.bert.encoder.layer.1.attention.self.key.weight"])
    assert model.text_decoder.cls.predictions.decoder.weight is model.text_encoder.embeddings.word_embeddings.weight
    queue = model.feature_queue
    assert torch.equal(queue.image_queue, state["image_queue"]) and torch.equal(queue.queue_ptr, state["queue_ptr"])
    assert torch.equal(model.temperature, state["temp"])
    assert torch.equal(model.text_encoder_m.encoder.layer[0].output.dense.weight,
                       state["text_encoder_m.encoder.layer.0.output.dense.weight"])
    assert torch.equal(model.vision_model_m.embeddings.position_embedding, state["visual_encoder_m.pos_embed"])
    assert (model.config.vision_config.drop_path_rate, model.config.label_smoothing) == (0.0, 0.1)
    assert (model.config.bos_token_id, model.config.enc_token_id) == (200, 201)


def test_vqa_initialised_from_pretraining_interpolates_like_blip():
    """--head vqa: the 4x4 position grid becomes 6x6 by BLIP's bicubic interpolation (the [CLS] position kept), the
    decoder is an untied copy, and the released VQA config is set."""
    model = convert("pretraining_vqa")
    positions = checkpoint("pretraining")["visual_encoder.pos_embed"]
    grid = positions[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    embedding = model.vision_model.embeddings.position_embedding
    assert torch.equal(embedding[:, :1], positions[:, :1])
    torch.testing.assert_close(embedding[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 36, 32), rtol=0, atol=1e-6)
    layer = model.text_decoder.bert.encoder.layer[0]
    assert layer.crossattention.self.query.weight is not model.text_encoder.encoder.layer[0].crossattention.self.query.weight
    config = model.config
    assert (config.vision_config.image_size, config.vision_config.drop_path_rate) == (48, 0.1)
    assert config.vqa_generation_attends_question_padding and config.vqa_ranking_uses_label_smoothing


# --------------------------------------------------------------------------------------------------
# Bad checkpoints: clear errors
# --------------------------------------------------------------------------------------------------


def test_missing_and_unexpected_keys_are_named():
    state = checkpoint("vqa")
    del state["text_decoder.bert.encoder.layer.1.attention.output.LayerNorm.bias"]
    state["text_decoder.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match=r"missing keys \['text_decoder\.bert\.encoder\.layer\.1\.attention\."
                                              r"output\.LayerNorm\.bias'\], unexpected keys \['text_decoder\.extra"):
        convert("vqa", state)


def test_shape_mismatch_is_named():
    state = checkpoint("vqa")
    state["text_encoder.encoder.layer.0.crossattention.self.key.weight"] = torch.zeros(32, 16)
    with pytest.raises(CheckpointError, match=r"crossattention\.self\.key\.weight: \(32, 16\) \(expected \(32, 32\)\)"):
        convert("vqa", state)


@pytest.mark.parametrize("kind, record, message", [
    ("pretraining", "vqa", r"look like a pretraining checkpoint: pass --kind pretraining \(or --kind pretraining "
                           r"--head vqa"),
    ("vqa", "pretraining", r"look like a vqa checkpoint: pass --kind vqa"),
])
def test_a_checkpoint_of_the_wrong_kind_is_diagnosed(kind, record, message):
    with pytest.raises(CheckpointError, match=message):
        convert(record, checkpoint(kind))


def test_the_captioning_model_is_recognised():
    state = {k: v for k, v in checkpoint("vqa").items() if not k.startswith("text_encoder.")}
    with pytest.raises(CheckpointError, match="MISS_Decoder"):
        convert("vqa", state)


def test_a_decoder_that_differs_from_the_encoder_it_is_tied_to_is_refused():
    state = checkpoint("pretraining")
    key = "text_decoder.bert.encoder.layer.0.crossattention.self.query.weight"
    state[key] = state[key] + 1e-3
    with pytest.raises(CheckpointError, match=re.escape(f"['{key}'] should repeat the tensors of")):
        convert("pretraining", state)


def test_edited_position_ids_are_refused():
    state = checkpoint("vqa")
    state["text_decoder.bert.embeddings.position_ids"] = state["text_decoder.bert.embeddings.position_ids"].flip(-1)
    with pytest.raises(CheckpointError, match=r"position_ids'\] should count 0, 1, 2"):
        convert("vqa", state)


def test_a_grid_that_disagrees_with_the_image_size_is_refused():
    with pytest.raises(CheckpointError, match=r"6x6 grid of 8-pixel patches \(48 px images\), but --image_size is 480"
                                              r".*--kind pretraining --head vqa"):
        conv.convert_state_dict(checkpoint("vqa"), "vqa", BERT, image_size=480, vision_num_attention_heads=VISION_HEADS)


def test_a_vit_that_is_not_vit_b_needs_its_head_count():
    with pytest.raises(CheckpointError, match="--vision_num_attention_heads"):
        conv.convert_state_dict(checkpoint("vqa"), "vqa", BERT)


def test_config_json_must_match_the_weights():
    with pytest.raises(CheckpointError, match="num_hidden_layers=3 but the weights have 2"):
        conv.convert_state_dict(checkpoint("vqa"), "vqa", {**BERT, "num_hidden_layers": 3},
                                vision_num_attention_heads=VISION_HEADS)


def test_a_tokenizer_that_does_not_fill_the_word_table_is_refused(tmp_path):
    arguments = convert_arguments("vqa", tmp_path, tmp_path / "hf")
    arguments = arguments[: arguments.index("--tokenizer_dir")]  # the bundled bert-base-uncased: 30,524 tokens
    with pytest.raises(CheckpointError, match="word table has 202 rows.*--tokenizer_dir"):
        conv.main(arguments)
    assert not (tmp_path / "hf").exists()


# --------------------------------------------------------------------------------------------------
# Command line, saved folders, records, cards
# --------------------------------------------------------------------------------------------------


def test_cli_converts_a_blip_style_training_checkpoint(tmp_path):
    """train_rad.py/pretrain.py save {'model': state_dict, 'optimizer', 'config', 'epoch'}; `medvlp convert miss`
    reads the weights from it, and the folder holds the released preprocessing."""
    write_original_files("vqa", tmp_path)
    path = tmp_path / "checkpoint_149.pth"
    torch.save({"model": checkpoint("vqa"), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]},
                "config": {"image_size": 48, "inference": "generate"}, "epoch": 149}, path)
    out = tmp_path / "hf"
    status = cli.main(["convert", "miss", "--checkpoint", str(path), "--kind", "vqa", "--out", str(out),
                       "--config", str(tmp_path / "med_config.json"), "--vision_num_attention_heads", "2",
                       "--tokenizer_dir", str(tmp_path / "tokenizer")])
    assert status == 0
    loaded = AutoModelForVisualQuestionAnswering.from_pretrained(out).eval()
    for name, tensor in convert("vqa").state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    image_processor = AutoProcessor.from_pretrained(out).image_processor
    assert image_processor.rescale_twice_as_released and not image_processor.do_normalize
    assert image_processor.size["height"] == 48
    assert "python " not in parity.read_record(out).conversion["command"]
    assert "medvlp convert miss" in parity.read_record(out).conversion["command"]


@pytest.mark.parametrize("record_name", RECORD_HEADS)
def test_conversion_checks_the_harness_reference_and_medvlp_verify_reruns_it(tmp_path, record_name, capsys):
    out = conv.main(convert_arguments(record_name, tmp_path, tmp_path / "hf", "--reference",
                                      str(RECORDS / record_name)))
    record = parity.read_record(out)
    assert record.status == "passed" and record.reference["sha256"] == parity.record_sha256(RECORDS / record_name)
    assert max(result["max_abs_diff"] for result in record.results.values()) < TOLERANCE["atol"]
    card = (out / "README.md").read_text()
    assert "**Passed** (tolerance rtol 1e-05, atol 0.0001" in card and "TIMMY-CHAN/MISS@ac8b724" in card
    # the check ran the momentum update on the model in memory; the saved weights are the checkpoint's
    kind, _ = RECORD_HEADS[record_name]
    saved = load_file(out / "model.safetensors")
    state = checkpoint(kind)
    if record_name == "pretraining":
        assert torch.equal(saved["vision_model_m.embeddings.class_embedding"], state["visual_encoder_m.cls_token"])
        assert not any(key.startswith("text_decoder.bert.encoder.layer.0.crossattention") for key in saved)
    assert cli.main(["verify", str(out), "--require_original"]) == 0
    assert "the folder reproduces the original implementation's outputs" in capsys.readouterr().out


def test_a_reference_the_model_misses_stops_the_conversion(tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(RECORDS / "vqa", reference)
    record = parity.read_record(reference)
    record.tensors["expected.beam_search.sequences_scores.full"][1] += 1e-3
    parity.write_record(record, reference)
    with pytest.raises(parity.ParityMismatchError, match=r"beam_search\.sequences_scores\.full \(max \|diff\| 0\.001\)"):
        conv.main(convert_arguments("vqa", tmp_path, tmp_path / "hf", "--reference", str(reference)))
    assert not (tmp_path / "hf").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".hf")] == []


def test_a_reference_for_another_head_is_refused(tmp_path):
    with pytest.raises(parity.ParityRecordError, match="is for MISSForVQA, but --head pretraining converts to "
                                                       "MISSForPreTraining"):
        conv.main(convert_arguments("pretraining", tmp_path, tmp_path / "hf", "--reference",
                                    str(RECORDS / "pretraining_vqa")))


def test_without_a_reference_the_folder_verifies_against_itself(tmp_path, capsys):
    out = conv.main(convert_arguments("pretraining", tmp_path, tmp_path / "hf"))
    record = parity.read_record(out)
    assert record.status == "not verified"
    assert record.cases[0].prepare == ["momentum_step"]
    reloaded = AutoModelForPreTraining.from_pretrained(out).eval()
    results = parity.check_record(reloaded, record)
    assert results and all(result["passed"] and result["max_abs_diff"] == 0.0 for result in results.values())
    assert cli.main(["verify", str(out)]) == 0
    assert cli.main(["verify", str(out), "--require_original"]) == 1
    card = (out / "README.md").read_text()
    assert "**Not verified**" in card and "tiny random checkpoints" in card
    assert "`MISSImageProcessor.as_released`" in card and "CLIP mean/std" in card  # released vs default preprocessing


def test_key_table_matches_the_recorded_original_key_lists(data_dir):
    """original_keys/miss_{pretrain,vqa}_keys.txt: every key and shape of the default-size original classes (their
    queue is 64 long there, see that folder's README)."""
    lists = data_dir.parent / "reference" / "original_keys"
    if not lists.is_dir():
        pytest.skip(f"{lists} not found")
    base = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                max_position_embeddings=512, vision_hidden_size=768, vision_intermediate_size=3072,
                vision_num_hidden_layers=12, patch_size=16)
    for kind, name, grid, extra in [("pretraining", "pretrain", 14, {"projection_dim": 256, "queue_size": 64}),
                                    ("vqa", "vqa", 30, {})]:
        recorded = {}
        for line in (lists / f"miss_{name}_keys.txt").read_text().splitlines():
            if line and not line.startswith("#"):
                key, shape, _ = line.split("\t")
                recorded[key] = tuple(json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]")))
        table = {e.original: tuple(e.shape) for e in conv.original_key_table(kind, conv.Geometry(**base, grid_size=grid,
                                                                                                 **extra))}
        assert table == recorded, kind


# --------------------------------------------------------------------------------------------------
# The released geometry (slow)
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("record_name", RECORD_HEADS)
def test_released_geometry_matches_the_original(record_name):
    """ViT-B/16 (224 px pre-training, 480 px VQA) with BERT-base layers (2 of the 12; hidden 768, 12 heads), the
    30,524-token vocabulary and the 57,600-entry queue: weights and inputs regenerated from the seeds the harness used,
    the expected outputs the authors' code's (large outputs as argmax, top-5, logsumexp and every 97th entry)."""
    meta = json.loads((RELEASED_GEOMETRY / record_name / "reference.json").read_text())
    g = meta["geometry"]
    kind, head = RECORD_HEADS[record_name]
    bert, vision = g["bert"], g["vision"]
    pretraining = {"projection_dim": g["projection_dim"], "queue_size": g["queue_size"]} if kind == "pretraining" else {}
    geometry_ = conv.Geometry(
        vocab_size=30524, hidden_size=bert["hidden_size"], intermediate_size=bert["intermediate_size"],
        num_hidden_layers=bert["num_hidden_layers"], max_position_embeddings=bert["max_position_embeddings"],
        vision_hidden_size=vision["hidden_size"], vision_intermediate_size=vision["intermediate_size"],
        vision_num_hidden_layers=vision["num_hidden_layers"], patch_size=vision["patch_size"],
        grid_size=g["image_size"][kind] // vision["patch_size"], **pretraining)
    seeds = meta["reference"]
    state = conv.seeded_checkpoint(kind, geometry_, seeds["checkpoint"]["seeded_checkpoint"]["seed"])
    model = conv.convert_state_dict(state, kind, bert, head, g["image_size"][head])
    tokenizer = conv.build_processor(model.config).tokenizer
    inputs = conv.parity_inputs(head, model.config, tokenizer, seeds["inputs"]["parity_inputs"]["seed"])
    expected = load_file(RELEASED_GEOMETRY / record_name / "expected.safetensors")
    record = parity.ParityRecord("miss", meta["architecture"], conv.parity_cases(head, model.config),
                                 {**inputs, **expected}, meta["reference"], config=meta["config"],
                                 tolerance=meta["tolerance"])
    results = check(model, record)
    assert record.tolerance == TOLERANCE
    assert not parity.failures(results)
