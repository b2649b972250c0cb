"""The converters' shared steps: reading checkpoints safely, unwrapping, key tables, filling a meta model, seeded
checkpoints, output folders."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from medvlp_hf.conversion import conversion_utils as utils
from medvlp_hf.conversion.conversion_utils import CheckpointError, KeyEntry

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE = {"encoder.weight": torch.arange(6.0).reshape(2, 3), "encoder.bias": torch.ones(2)}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_reads_safetensors_zip_and_legacy_pickles(tmp_path):
    save_file(STATE, tmp_path / "a.safetensors")
    torch.save(STATE, tmp_path / "b.bin")
    torch.save(STATE, tmp_path / "c.pt", _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    for name in ("a.safetensors", "b.bin", "c.pt"):
        loaded = utils.load_checkpoint(tmp_path / name)
        assert same(loaded.state_dict, STATE) and loaded.files == [tmp_path / name] and loaded.config is None


@pytest.mark.parametrize("container", [
    {"model": STATE, "optimizer": {"state": {}, "param_groups": []}, "config": {"lr": 1e-4}, "epoch": 29},  # ALBEF/BLIP
    {"epoch": 3, "state_dict": STATE, "best_metric": 0.5},  # MedViLL cls.py, Lightning
])
def test_unwraps_training_containers(tmp_path, container):
    torch.save(container, tmp_path / "checkpoint.pth")
    loaded = utils.load_checkpoint(tmp_path / "checkpoint.pth")
    assert same(loaded.state_dict, STATE) and loaded.training_config == container.get("config")


def test_a_container_without_weights_names_its_keys(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"state": {}}}, tmp_path / "checkpoint.pth")
    with pytest.raises(CheckpointError, match=r"top-level keys are \['epoch', 'optimizer'\]"):
        utils.load_checkpoint(tmp_path / "checkpoint.pth")


def test_pickled_objects_are_refused_not_executed(tmp_path):
    torch.save({"model": STATE, "args": argparse.Namespace(lr=1)}, tmp_path / "checkpoint.pth")
    with pytest.raises(CheckpointError, match=r"weights_only=True\) cannot read .*Unsupported global: GLOBAL "
                                              r"argparse\.Namespace.*save only the state dict"):
        utils.load_checkpoint(tmp_path / "checkpoint.pth")


def test_directories_plain_and_sharded(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save(STATE, plain / "pytorch_model.bin")
    (plain / "config.json").write_text(json.dumps({"hidden_size": 3}))
    loaded = utils.load_checkpoint(plain)
    assert same(loaded.state_dict, STATE) and loaded.config == {"hidden_size": 3}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"encoder.weight": STATE["encoder.weight"]}, sharded / "model-00001-of-00002.safetensors")
    save_file({"encoder.bias": STATE["encoder.bias"]}, sharded / "model-00002-of-00002.safetensors")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "encoder.weight": "model-00001-of-00002.safetensors", "encoder.bias": "model-00002-of-00002.safetensors"}}))
    loaded = utils.load_checkpoint(sharded)
    assert same(loaded.state_dict, STATE) and len(loaded.files) == 2
    assert utils.sha256_files(loaded.files) != utils.sha256_files(loaded.files[:1])


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        utils.load_checkpoint(tmp_path / "nothing.bin")
    with pytest.raises(FileNotFoundError, match=r"holds none of \['model.safetensors', 'pytorch_model.bin'"):
        utils.load_checkpoint(tmp_path)


TABLE = [*utils.linear_entries("enc.proj", "projection", 2, 3),
         *utils.layer_norm_entries("enc.norm", "norm", 2),
         KeyEntry("head.norm.weight", None, (2,), "shared", "enc.norm.weight", module="norm"),
         KeyEntry("enc.word.weight", "embeddings.weight", (5, 2), module="embedding"),
         KeyEntry("lm.decoder.weight", "lm.weight", (5, 2), "tied", "enc.word.weight", module="embedding"),
         KeyEntry("enc.position_ids", None, (1, 4), "optional", dtype=torch.int64, module="buffer"),
         *utils.batch_norm_entries("cnn.bn", "bn", 3)]


def test_key_table_errors_name_the_keys():
    state = utils.seeded_state_dict(TABLE, 0)
    utils.check_key_table(state, TABLE, "toy")
    utils.check_key_table({k: v for k, v in state.items() if k != "enc.position_ids"}, TABLE, "toy")  # optional
    with pytest.raises(CheckpointError, match=r"missing keys \['enc.proj.bias'\], unexpected keys \['extra'\]\.HINT"):
        utils.check_key_table({**{k: v for k, v in state.items() if k != "enc.proj.bias"}, "extra": torch.ones(1)},
                              TABLE, "toy", "HINT")
    with pytest.raises(CheckpointError, match=r"enc.proj.weight: \(3, 3\) \(expected \(2, 3\)\)"):
        utils.check_key_table({**state, "enc.proj.weight": torch.ones(3, 3)}, TABLE, "toy")
    with pytest.raises(CheckpointError, match=r"\['head.norm.weight'\] should repeat the tensors of \['enc.norm.weight'\]"):
        utils.check_key_table({**state, "head.norm.weight": state["head.norm.weight"] + 1}, TABLE, "toy")


def test_tied_entries_are_kept_only_when_they_differ():
    state = utils.seeded_state_dict(TABLE, 0)
    assert utils.tied_entries_match(state, TABLE)
    assert "lm.weight" not in utils.renamed_weights(state, TABLE, keep_tied=False)
    state["lm.decoder.weight"] = state["lm.decoder.weight"] + 1
    assert not utils.tied_entries_match(state, TABLE)
    renamed = utils.renamed_weights(state, TABLE, keep_tied=True)
    assert torch.equal(renamed["lm.weight"], state["lm.decoder.weight"]) and renamed["projection.weight"] is state["enc.proj.weight"]


def test_entries_must_be_consistent():
    with pytest.raises(ValueError, match="role 'copy'"):
        KeyEntry("a", "b", (1,), role="copy")
    with pytest.raises(ValueError, match="only\\) a source"):
        KeyEntry("a", None, (1,), role="shared")


def test_seeded_values_depend_on_the_key_and_seed_only():
    first = utils.seeded_state_dict(TABLE, 7)
    reordered = utils.seeded_state_dict(TABLE[::-1], 7)
    subset = utils.seeded_state_dict(TABLE[:2], 7)
    assert same(first, reordered) and torch.equal(subset["enc.proj.weight"], first["enc.proj.weight"])
    assert not torch.equal(utils.seeded_state_dict(TABLE, 8)["enc.proj.weight"], first["enc.proj.weight"])
    assert torch.equal(first["head.norm.weight"], first["enc.norm.weight"])
    assert torch.equal(first["lm.decoder.weight"], first["enc.word.weight"])
    assert first["enc.position_ids"].tolist() == [[0, 1, 2, 3]] and first["cnn.bn.num_batches_tracked"].dtype == torch.int64
    assert ((first["cnn.bn.running_var"] >= 0.5) & (first["cnn.bn.running_var"] < 1.5)).all()


def test_seeded_scales_follow_the_module_kind():
    table = [KeyEntry("linear.weight", "x", (512, 2048)), KeyEntry("emb.weight", "y", (4096, 64), module="embedding"),
             KeyEntry("norm.weight", "z", (4096,), module="norm"), KeyEntry("conv.weight", "w", (64, 32, 3, 3), module="conv")]
    state = utils.seeded_state_dict(table, 0)
    assert state["linear.weight"].std().item() == pytest.approx(2048**-0.5, rel=0.02)
    assert state["emb.weight"].std().item() == pytest.approx(1.0, rel=0.02)
    assert state["norm.weight"].mean().item() == pytest.approx(1.0, abs=0.01)
    assert state["conv.weight"].std().item() == pytest.approx((32 * 9) ** -0.5, rel=0.05)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.projection = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)

    def tie_weights(self):
        pass


def test_fill_model_assigns_the_tensors_and_refuses_gaps():
    weights = {"projection.weight": torch.ones(2, 3), "projection.bias": torch.zeros(2), "norm.weight": torch.ones(2),
               "norm.bias": torch.zeros(2)}
    with torch.device("meta"):
        model = Toy()
    filled = utils.fill_model(model, weights)
    assert filled.projection.weight.data_ptr() == weights["projection.weight"].data_ptr()  # no copy
    assert not filled.training
    with torch.device("meta"):
        model = Toy()
    with pytest.raises(RuntimeError, match=r"not filled \['norm.bias'\], unknown \['extra'\]\. FIX"):
        utils.fill_model(model, {**{k: v for k, v in weights.items() if k != "norm.bias"}, "extra": torch.ones(1)},
                         fix_hint=" FIX")


def test_built_on_meta_the_parameters_wait_for_the_checkpoint_and_unsaved_buffers_are_built():
    """Buffers a model does not save (BERT's `position_ids`) get their values; parameters stay on the meta device."""
    from transformers import AutoModel, BertConfig

    model = utils.build_on_meta(AutoModel, BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                                      intermediate_size=8, vocab_size=10, max_position_embeddings=6))
    assert all(parameter.is_meta for parameter in model.parameters())
    assert torch.equal(model.embeddings.position_ids, torch.arange(6)[None])


def test_output_folder_is_replaced_only_on_success(tmp_path):
    out = tmp_path / "out"
    with utils.output_folder(out) as staging:
        (staging / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(FileExistsError, match="--overwrite"):
        with utils.output_folder(out):
            pass
    with pytest.raises(RuntimeError, match="conversion failed"):
        with utils.output_folder(out, overwrite=True) as staging:
            (staging / "b.txt").write_text("half")
            raise RuntimeError("conversion failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "a.txt").exists()
    with utils.output_folder(out, overwrite=True) as staging:
        (staging / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]


def test_conversion_code_reaches_the_models_only_through_the_auto_classes():
    """DESIGN.md: conversion code imports no model folder (medvlp_hf.models.*), so a model's facts live on its classes."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [*(root / "medvlp_hf" / "conversion").glob("*.py"), *(root / "conversion").rglob("*.py")]
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(root)}: {name}" for name in names if name.startswith("medvlp_hf.models")]
    assert len(files) >= 10 and offenders == []


@pytest.mark.parametrize("model, options", [
    ("medvill", ()),
    ("miss", ("--head {pretraining,vqa}",)),
    ("m2i2", ("--kind {pretraining,vqa}", "--head {pretraining,vqa}")),
])
def test_the_checkout_script_runs_this_checkouts_converter(model, options):
    """conversion/convert_<model>_original_checkpoint.py runs this checkout's converter from any directory, with the
    output options every converter has (`add_output_arguments`) and a usage line of the command that ran it."""
    script = REPO_ROOT / "conversion" / f"convert_{model}_original_checkpoint.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300,
                            cwd="/")
    assert result.returncode == 0, result.stderr
    assert "python " in result.stdout.splitlines()[0]
    for option in ("--reference RECORD_DIR", "--push_to_hub REPO", *options):
        assert option in result.stdout, option
