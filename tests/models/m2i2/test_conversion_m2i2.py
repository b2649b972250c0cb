"""Parity of the M2I2 checkpoint converter with the authors' code.

The fixtures (tests/fixtures/m2i2, see its README) hold the outputs the original classes computed from tiny random
checkpoints in the original layout, which `conversion_fixtures` regenerates from the key table and the harness's seed:
pre-training (ITC, ITM, MLM, MIM with injected image masks, MLM masks and hard negatives, after the momentum update),
a VQA checkpoint trained with distillation (answer ranking with k as coded and beyond the candidates, training loss),
and a VQA model that train_rad.py's own code initialises from the pre-training checkpoint. Each test converts a
checkpoint and requires the medvlp-hf outputs to match within rtol 1e-5 / atol 1e-4 with identical argmax and chosen
answers.
"""
import argparse
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForPreTraining, AutoModelForVisualQuestionAnswering, BertTokenizer

import medvlp_hf
from medvlp_hf.conversion import conversion_utils, parity
from medvlp_hf.conversion import convert_m2i2_original_checkpoint as conv
from medvlp_hf.conversion.conversion_utils import CheckpointError
from medvlp_hf.models.m2i2 import mask_caption_tokens, sincos_position_table

from .conversion_fixtures import (
    BERT_CONFIG,
    FIXTURES,
    RECORD_SPECS,
    RECORDS,
    checkpoint,
    convert,
    convert_arguments,
    vocabulary,
    write_original_files,
)

TOLERANCE = {"rtol": 1e-5, "atol": 1e-4}


def check(model, name):
    """The record's results on `model` (the model's momentum copies are updated, as the original's forward does)."""
    results = parity.check_record(model, parity.read_record(RECORDS / name))
    for key, result in results.items():
        print(f"{name} {key}: {result['compare']} max |diff| {result['max_abs_diff']:.3g}")
    return results


@pytest.mark.parametrize("name", list(RECORD_SPECS))
def test_converted_models_reproduce_the_original(name):
    results = check(convert(name), name)
    assert results and not parity.failures(results)


@pytest.mark.parametrize("name", list(RECORD_SPECS))
def test_the_command_line_conversion_checks_and_keeps_the_original_reference(name, tmp_path):
    out = conv.main(convert_arguments(name, tmp_path, tmp_path / "hf", "--reference", str(RECORDS / name)))
    record = parity.read_record(out)
    assert record.status == "passed" and record.reference["implementation"] == "original"
    assert record.reference["name"] == name and record.reference["sha256"] == parity.record_sha256(RECORDS / name)
    assert max(result["max_abs_diff"] for result in record.results.values()) < TOLERANCE["atol"]
    card = (out / "README.md").read_text()
    assert "**Passed** (tolerance rtol 1e-05, atol 0.0001" in card and "pengfeiliHEU/M2I2@807326d" in card
    config = json.loads((out / "config.json").read_text())
    kind, head, distill = RECORD_SPECS[name]
    assert config["architectures"] == [record.architecture] and config["model_type"] == "m2i2"
    if head == "vqa":
        assert config["vqa_ranking_double_counts_first_token"] and config["vqa_distillation"] == distill
        assert config["vision_config"]["position_embedding_type"] == "learned"
        reloaded = AutoModelForVisualQuestionAnswering.from_pretrained(out).eval()
    else:
        assert config["vision_config"]["position_embedding_type"] == "sincos"
        reloaded = AutoModelForPreTraining.from_pretrained(out).eval()
    assert not parity.failures(parity.check_record(reloaded, parity.read_record(out)))  # what `medvlp verify` does


def test_the_records_pin_the_momentum_update_the_ranking_rule_and_the_chosen_answers():
    """Without the momentum update the original runs first, or with the ranking's released double count off, the
    records fail; the chosen answers differ between questions, and k as coded changes one from the exhaustive ranking
    (so both are pinned)."""
    momentum_dependent = {"pretraining": {"loss", "itc_loss", "mlm_loss", "logits_per_image", "logits_per_text"},
                          "vqa": {"loss"}}  # ITC and the MLM / answer distillation read the momentum copies
    for name, outputs in momentum_dependent.items():
        record = parity.read_record(RECORDS / name)
        for case in record.cases:
            case.prepare = []
        results = parity.check_record(convert(name), record)
        assert {key.split(".")[1] for key, result in results.items() if not result["passed"]} == outputs
    model = convert("vqa")
    model.config.vqa_ranking_double_counts_first_token = False
    record = parity.read_record(RECORDS / "vqa")
    record.config.pop("vqa_ranking_double_counts_first_token")
    assert {key.split(".")[0] for key in parity.failures(parity.check_record(model, record))} == {
        "answer_ranking", "exhaustive_ranking"}
    for name in ("vqa", "pretraining_vqa"):
        record = parity.read_record(RECORDS / name)
        chosen = record.expected("answer_ranking.answer_indices.full")
        assert len(set(chosen.tolist())) > 1
        assert not torch.equal(chosen, record.expected("exhaustive_ranking.answer_indices.full"))


def test_a_vqa_checkpoint_without_momentum_copies_converts_without_distillation():
    """SLAKE/PathVQA train without `distill`: the same checkpoint minus its `_m` weights converts to a model without
    momentum copies, whose answer ranking (online weights only) is the original's."""
    state = {key: value for key, value in checkpoint("vqa").items() if "_m." not in key}
    model = convert("vqa", state)
    assert not model.config.vqa_distillation and not hasattr(model, "text_decoder_m")
    record = parity.read_record(RECORDS / "vqa")
    record.cases = [case for case in record.cases if case.method == "rank_answers"]
    record.config["vqa_distillation"] = False
    assert not parity.failures(parity.check_record(model, record))


def test_the_released_checkpoint_container_loads_with_weights_only(tmp_path):
    """training_container.pth: the optimizer, scheduler, YAML settings and epoch as pretrain_med.py saves them (made by
    their factories); with the weights added it converts, and the settings it saved become the config's."""
    container = torch.load(FIXTURES / "training_container.pth", weights_only=True)
    assert sorted(container) == ["config", "epoch", "lr_scheduler", "optimizer"]
    container["config"]["alpha"] = 0.3
    container["model"] = checkpoint("pretraining")
    torch.save(container, tmp_path / "med_pretrain_29.pth")
    loaded = conversion_utils.load_checkpoint(tmp_path / "med_pretrain_29.pth")
    assert loaded.training_config["queue_size"] == 65536 and loaded.training_config["momentum"] == 0.995
    out = conv.main(convert_arguments("pretraining", tmp_path, tmp_path / "hf",
                                      checkpoint_file=tmp_path / "med_pretrain_29.pth"))
    config = AutoConfig.from_pretrained(out)
    assert (config.alpha, config.momentum, config.mlm_probability) == (0.3, 0.995, 0.15)


def test_a_saved_object_weights_only_refuses_is_named_with_the_fix(tmp_path):
    torch.save({"model": checkpoint("pretraining"), "config": argparse.Namespace(alpha=0.4)}, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError, match=r"argparse\.Namespace.*torch\.save\(checkpoint\['model'\]"):
        conv.main(convert_arguments("pretraining", tmp_path, tmp_path / "hf", checkpoint_file=tmp_path / "ckpt.pth"))
    assert not (tmp_path / "hf").exists()


def test_key_table_matches_the_recorded_original_key_lists(data_dir):
    """original_keys/m2i2_{pretrain,vqa}_keys.txt: every key and shape of the default-size original classes (queues
    64 wide there; the VQA model of RAD.yaml, with momentum copies)."""
    lists = data_dir.parent / "reference" / "original_keys"
    if not lists.is_dir():
        pytest.skip(f"{lists} not found")
    base = dict(vocab_size=30522, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, fusion_layer=6,
                max_position_embeddings=512, type_vocab_size=2, vision_hidden_size=768, vision_intermediate_size=3072,
                vision_num_hidden_layers=12, patch_size=16)
    geometries = {"pretrain": ("pretraining", conv.Geometry(**base, grid_size=16, projection_dim=256, queue_size=64,
                                                             mim_hidden_size=512, mim_intermediate_size=2048,
                                                             mim_num_hidden_layers=8)),
                  "vqa": ("vqa", conv.Geometry(**base, grid_size=24, distillation=True))}
    for name, (kind, base_geometry) in geometries.items():
        recorded = {}
        for line in (lists / f"m2i2_{name}_keys.txt").read_text().splitlines():
            if line and not line.startswith("#"):
                key, shape, _ = line.split("\t")
                recorded[key] = tuple(json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]")))
        table = {e.original: tuple(e.shape) for e in conv.original_key_table(kind, base_geometry)}
        assert table == recorded, kind


def test_released_sizes_need_no_options():
    """A released-width checkpoint converts with the defaults (BERT-base heads, ViT-B/16's 12, MAE decoder's 16)."""
    base = conv.Geometry(vocab_size=200, hidden_size=768, intermediate_size=64, num_hidden_layers=2, fusion_layer=1,
                         max_position_embeddings=16, type_vocab_size=2, vision_hidden_size=768,
                         vision_intermediate_size=64, vision_num_hidden_layers=1, patch_size=16, grid_size=2,
                         projection_dim=8, queue_size=8, mim_hidden_size=512, mim_intermediate_size=32,
                         mim_num_hidden_layers=1)
    config = conv.build_config("pretraining", base)
    assert (config.text_config.num_attention_heads, config.vision_config.num_attention_heads,
            config.mim_decoder_config.num_attention_heads) == (12, 12, 16)


# --------------------------------------------------------------------------------------------------
# What the model shares with the original outside a forward
# --------------------------------------------------------------------------------------------------


def test_sincos_tables_are_maes():
    """MAE's get_2d_sincos_pos_embed (fixtures: tiny tables in full, ViT-B/16's every 7th row and 5th column)."""
    meta = json.loads((FIXTURES / "original_functions" / "meta.json").read_text())
    reference = load_file(FIXTURES / "original_functions" / "reference.safetensors")
    for name, table in meta["sincos"].items():
        ours = sincos_position_table(table["width"], table["grid"])
        if "stride" in table:
            ours = ours[:: table["stride"][0], :: table["stride"][1]]
        torch.testing.assert_close(ours, reference[f"sincos.{name}"], rtol=0, atol=1e-6)


def test_mlm_masking_draws_as_the_original_under_the_same_seed():
    """ALBEF's `M2I2.mask` under torch.manual_seed(s) == mask_caption_tokens with a generator seeded s."""
    meta = json.loads((FIXTURES / "original_functions" / "meta.json").read_text())["masking"]
    reference = load_file(FIXTURES / "original_functions" / "reference.safetensors")
    config = convert("pretraining").config
    assert config.mlm_probability == meta["mlm_probability"] and config.text_config.vocab_size == meta["vocab_size"]
    for seed in meta["seeds"]:
        masked, labels = mask_caption_tokens(reference["masking.input_ids"], config,
                                             torch.Generator().manual_seed(seed))
        assert torch.equal(masked, reference[f"masking.seed{seed}.input_ids"])
        assert torch.equal(labels, reference[f"masking.seed{seed}.labels"])
        assert (labels != -100).any()


def test_albef_tokenization_is_bert_wordpiece_without_the_closing_sep():
    """Their tokenizer (models/tokenization_bert.py) on real text with bert-base-uncased: a stock BERT tokenizer's ids
    without the final [SEP] (numbers and hyphens split alike); answers keep their literal [SEP] exactly once."""
    meta = json.loads((FIXTURES / "original_functions" / "meta.json").read_text())["tokenizer"]
    reference = load_file(FIXTURES / "original_functions" / "reference.safetensors")
    stock = BertTokenizer(str(medvlp_hf.bert_base_uncased_vocab_file()))
    for kind, texts in meta.items():
        ids, mask = reference[f"tokenizer.{kind}.input_ids"], reference[f"tokenizer.{kind}.attention_mask"]
        for row, text in enumerate(texts):
            theirs = ids[row][mask[row].bool()].tolist()
            assert theirs == stock(text)["input_ids"][:-1]
            assert theirs[0] == 101 and theirs.count(102) == (1 if kind == "answers" else 0)


# --------------------------------------------------------------------------------------------------
# Errors and the command line
# --------------------------------------------------------------------------------------------------


def test_a_reference_the_model_misses_stops_the_conversion(tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(RECORDS / "vqa", reference)
    record = parity.read_record(reference)
    chosen = record.tensors["expected.answer_ranking.answer_indices.full"]
    chosen[0] = (chosen[0] + 1) % 5
    parity.write_record(record, reference)
    with pytest.raises(parity.ParityMismatchError, match=r"answer_ranking\.answer_indices\.full \(max \|diff\| [14]\)"):
        conv.main(convert_arguments("vqa", tmp_path, tmp_path / "hf", "--reference", str(reference)))
    assert not (tmp_path / "hf").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".hf")] == []


def test_a_reference_made_on_another_checkpoint_or_head_is_refused(tmp_path):
    state = checkpoint("vqa")
    state["text_decoder.cls.predictions.transform.dense.bias"] += 1e-3
    arguments = convert_arguments("vqa", tmp_path, tmp_path / "hf", "--reference", str(RECORDS / "vqa"))
    write_original_files("vqa", tmp_path, state)
    with pytest.raises(parity.ParityRecordError, match="made on a checkpoint with sha256"):
        conv.main(arguments)
    arguments = convert_arguments("pretraining_vqa", tmp_path, tmp_path / "hf", "--reference",
                                  str(RECORDS / "pretraining"))
    with pytest.raises(parity.ParityRecordError,
                       match=r"is for M2I2ForPreTraining, but --head vqa converts to M2I2ForVQA"):
        conv.main(arguments)


def test_without_a_reference_the_card_says_parity_is_not_verified(tmp_path):
    out = conv.main(convert_arguments("pretraining", tmp_path, tmp_path / "hf"))
    record = parity.read_record(out)
    assert record.status == "not verified" and record.reference["implementation"] == "converted"
    reloaded = AutoModelForPreTraining.from_pretrained(out).eval()
    results = parity.check_record(reloaded, record)  # the saved folder (before the momentum update) gives them back
    assert results and all(result["passed"] and result["max_abs_diff"] == 0.0 for result in results.values())
    card = (out / "README.md").read_text()
    assert "**Not verified**" in card and "tiny random checkpoints" in card


def test_missing_unexpected_and_misshaped_keys_are_named():
    state = checkpoint("pretraining")
    del state["text_encoder.bert.encoder.layer.1.crossattention.output.LayerNorm.bias"]
    state["visual_encoder.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match=r"missing keys \['text_encoder\.bert\.encoder\.layer\.1\."
                                              r"crossattention\.output\.LayerNorm\.bias'\], unexpected keys "
                                              r"\['visual_encoder\.extra"):
        convert("pretraining", state)
    state = checkpoint("pretraining")
    state["itm_head.weight"] = torch.zeros(3, 32)
    with pytest.raises(CheckpointError, match=r"itm_head\.weight: \(3, 32\) \(expected \(2, 32\)\)"):
        convert("pretraining", state)


def test_shared_and_fixed_tensors_must_agree():
    state = checkpoint("pretraining")
    state["text_encoder_m.cls.predictions.decoder.bias"] = state["text_encoder_m.cls.predictions.decoder.bias"] + 1
    with pytest.raises(CheckpointError, match=r"text_encoder_m\.cls\.predictions\.decoder\.bias.*differ"):
        convert("pretraining", state)
    state = checkpoint("pretraining")
    state["visual_encoder_m.pos_embed"] = state["visual_encoder_m.pos_embed"] + 1e-3
    with pytest.raises(CheckpointError, match=r"pos_embed differ by up to 0\.001"):
        convert("pretraining", state)
    state = checkpoint("vqa")
    state["text_encoder.embeddings.position_ids"] = state["text_encoder.embeddings.position_ids"].flip(-1)
    with pytest.raises(CheckpointError, match=r"position_ids'\] should count 0, 1, 2"):
        convert("vqa", state)


def test_the_momentum_mae_decoder_is_dropped_and_the_queues_kept():
    model = convert("pretraining")
    state = checkpoint("pretraining")
    assert not any(name.startswith("vision_model_m.") and "decoder" in name for name in model.state_dict())
    assert torch.equal(model.feature_queue.text_queue, state["text_queue"])
    assert int(model.feature_queue.queue_ptr) == int(state["queue_ptr"])
    assert torch.equal(model.temperature, state["temp"])
    assert model.mlm_head_m.predictions.decoder.weight is model.text_encoder_m.embeddings.word_embeddings.weight
    assert torch.equal(model.text_encoder.embeddings.position_ids, torch.arange(64)[None])  # built, not left on meta


def test_wrong_kind_head_and_grid_are_diagnosed():
    with pytest.raises(CheckpointError, match="look like an M2I2 vqa checkpoint: pass --kind vqa"):
        conv.convert_state_dict(checkpoint("vqa"), "pretraining", BERT_CONFIG)
    with pytest.raises(CheckpointError, match=r"pretraining checkpoint: pass --kind pretraining \(or --kind "
                                              r"pretraining --head vqa"):
        conv.convert_state_dict(checkpoint("pretraining"), "vqa", BERT_CONFIG)
    with pytest.raises(ValueError, match=r"converts to the heads \('vqa',\), not 'pretraining'"):
        conv.convert_state_dict(checkpoint("vqa"), "vqa", BERT_CONFIG, head="pretraining")
    with pytest.raises(CheckpointError, match=r"4x4 grid of 8-pixel patches \(32 px images\), but --image_size is 48"):
        conv.convert_state_dict(checkpoint("pretraining"), "pretraining", BERT_CONFIG, image_size=48,
                                vision_num_attention_heads=2, mim_decoder_num_attention_heads=2)
    with pytest.raises(CheckpointError, match="config_bert.json says fusion_layer=6 but the weights have 1"):
        conv.convert_state_dict(checkpoint("vqa"), "vqa", {**BERT_CONFIG, "fusion_layer": 6})
    with pytest.raises(CheckpointError, match="pass --vision_num_attention_heads"):
        conv.convert_state_dict(checkpoint("vqa"), "vqa", BERT_CONFIG)
    with pytest.raises(CheckpointError, match="pass the original configs/config_bert.json with --config"):
        conv.convert_state_dict(checkpoint("vqa"), "vqa")


def test_an_existing_output_folder_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier conversion")
    with pytest.raises(FileExistsError, match="--overwrite"):
        conv.main(convert_arguments("vqa", tmp_path, out))
    conv.main(convert_arguments("vqa", tmp_path, out, "--overwrite"))
    assert not (out / "stale.txt").exists() and (out / "parity.json").exists()


def test_a_vocabulary_that_does_not_fill_the_word_table_is_refused(tmp_path):
    arguments = convert_arguments("vqa", tmp_path, tmp_path / "hf")
    (tmp_path / "tokenizer" / "vocab.txt").write_text("\n".join(vocabulary()[:150]) + "\n")
    with pytest.raises(CheckpointError, match="vocabulary has 150 tokens but the checkpoint's word table has 200"):
        conv.main(arguments)


# --------------------------------------------------------------------------------------------------
# The released geometry
# --------------------------------------------------------------------------------------------------

RELEASED_GEOMETRY = FIXTURES / "released_geometry"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECORD_SPECS))
def test_released_geometry_matches_the_original(name):
    """ViT-B/16 (12 blocks) at 256 px with MAE's 512-wide 8-block decoder, and at 384 px for VQA; BERT-base layers (2 of
    the 12, fusion from the second; hidden 768, 12 heads, vocabulary 30,522); ITC queues of 65,536. The weights and
    inputs are regenerated from the seeds the harness used; the expected outputs are the authors' code's (large ones
    reduced to argmax, top-5, logsumexp and every 97th entry). Bound: rtol 1e-5, atol 1e-4, argmax and chosen answers
    identical."""
    meta = json.loads((RELEASED_GEOMETRY / name / "reference.json").read_text())
    kind, head, distill = meta["record"]
    g = meta["geometry"]
    text = {key: value for key, value in g["text"].items() if key != "num_attention_heads"}
    vision = {key: value for key, value in g["vision"].items() if key != "num_attention_heads"}
    if kind == "pretraining":
        mim = {key: value for key, value in g["mim"].items() if key != "num_attention_heads"}
        released = conv.Geometry(**text, **vision, **mim, grid_size=g["pretraining_grid"],
                                 projection_dim=g["projection_dim"], queue_size=g["queue_size"])
    else:
        released = conv.Geometry(**text, **vision, grid_size=g["vqa_grid"], distillation=distill)
    seeds = meta["reference"]
    state = conv.seeded_checkpoint(kind, released, seeds["checkpoint"]["seeded_checkpoint"]["seed"])
    image_size = g["vqa_grid"] * g["vision"]["patch_size"] if head != kind else None
    model = conv.convert_state_dict(state, kind, {**g["text"], "encoder_width": 768}, head, image_size,
                                    vqa_distillation=distill and kind == "pretraining")
    words = medvlp_hf.bert_base_uncased_vocab_file().read_text(encoding="utf-8").splitlines()
    inputs = conv.parity_inputs(head, model.config, words, seeds["inputs"]["parity_inputs"]["seed"])
    expected = load_file(RELEASED_GEOMETRY / name / "expected.safetensors")
    record = parity.ParityRecord("m2i2", meta["architecture"], conv.parity_cases(head, model.config),
                                 {**inputs, **expected}, meta["reference"], config=meta["config"],
                                 tolerance=meta["tolerance"])
    results = parity.check_record(model, record)
    for key, result in results.items():
        print(f"{name} {key}: {result['compare']} max |diff| {result['max_abs_diff']:.3g}")
    assert record.tolerance == TOLERANCE
    assert not parity.failures(results)
