"""The tiny M2I2 parity fixtures (tests/fixtures/m2i2, made by conversion/parity/m2i2/make_fixtures.py): their
original-layout checkpoints, regenerated from the key table and seed the harness used, and how to convert them on the
command line."""

import json
from pathlib import Path

from safetensors.torch import save_file

from medvlp_hf.conversion import convert_m2i2_original_checkpoint as conv

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "m2i2"
RECORDS = FIXTURES / "records"
WEIGHT_SEED = 0  # make_fixtures.py WEIGHT_SEED
# record -> (checkpoint kind, head, VQA distillation), as make_fixtures.py RECORDS
RECORD_SPECS = {"pretraining": ("pretraining", "pretraining", False), "vqa": ("vqa", "vqa", True),
                "pretraining_vqa": ("pretraining", "vqa", True)}
# configs/config_bert.json of the tiny fixtures (its attention heads cannot be read off the weights)
BERT_CONFIG = {"vocab_size": 200, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "fusion_layer": 1,
               "max_position_embeddings": 64, "type_vocab_size": 2, "num_attention_heads": 2, "hidden_act": "gelu",
               "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12,
               "initializer_range": 0.02, "pad_token_id": 0, "encoder_width": 32}
ATTENTION_HEADS = {"vision_num_attention_heads": 2, "mim_decoder_num_attention_heads": 2}
PRETRAINING_IMAGE_SIZE, VQA_IMAGE_SIZE = 32, 48  # 8-pixel patches: 4x4 and 6x6 grids


def geometry(kind):
    text = {name: BERT_CONFIG[name] for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                 "fusion_layer", "max_position_embeddings", "type_vocab_size")}
    vision = dict(vision_hidden_size=32, vision_intermediate_size=64, vision_num_hidden_layers=2, patch_size=8)
    if kind == "pretraining":
        return conv.Geometry(**text, **vision, grid_size=4, projection_dim=16, queue_size=32, mim_hidden_size=16,
                             mim_intermediate_size=32, mim_num_hidden_layers=1)
    return conv.Geometry(**text, **vision, grid_size=6, distillation=True)


def checkpoint(kind):
    """The original-layout `kind` checkpoint the fixtures were computed from."""
    return conv.seeded_checkpoint(kind, geometry(kind), WEIGHT_SEED)


def vocabulary():
    return (FIXTURES / "vocab.txt").read_text(encoding="utf-8").splitlines()


def convert(name, state_dict=None):
    """The converted model of record `name` (from a fresh seeded checkpoint unless `state_dict` is given)."""
    kind, head, distill = RECORD_SPECS[name]
    state_dict = checkpoint(kind) if state_dict is None else state_dict
    image_size = VQA_IMAGE_SIZE if head != kind else None
    return conv.convert_state_dict(state_dict, kind, BERT_CONFIG, head, image_size, **ATTENTION_HEADS,
                                   vqa_distillation=distill and kind == "pretraining")


def write_original_files(kind, folder, state_dict=None):
    """The checkpoint as `<folder>/original/model.safetensors`, and the support files (`write_support_files`)."""
    folder = Path(folder)
    (folder / "original").mkdir(parents=True, exist_ok=True)
    save_file(checkpoint(kind) if state_dict is None else state_dict, folder / "original" / "model.safetensors")
    write_support_files(folder)
    return folder / "original" / "model.safetensors"


def write_support_files(folder):
    """`<folder>/config_bert.json` (the tiny BERT config) and `<folder>/tokenizer/vocab.txt` (the tiny vocabulary)."""
    folder = Path(folder)
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    (folder / "config_bert.json").write_text(json.dumps(BERT_CONFIG))
    (folder / "tokenizer" / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")


def convert_arguments(name, folder, out, *extra, checkpoint_file=None):
    """Command-line arguments converting the tiny checkpoint of record `name` (written into `folder` unless
    `checkpoint_file` is given) to `out`."""
    kind, head, distill = RECORD_SPECS[name]
    if checkpoint_file is None:
        checkpoint_file = write_original_files(kind, folder)
    else:
        write_support_files(folder)
    arguments = ["--checkpoint", str(checkpoint_file), "--kind", kind, "--head", head, "--out", str(out),
                 "--config", str(Path(folder) / "config_bert.json"), "--tokenizer_dir", str(Path(folder) / "tokenizer"),
                 "--vision_num_attention_heads", "2", "--mim_decoder_num_attention_heads", "2"]
    if head != kind:
        arguments += ["--image_size", str(VQA_IMAGE_SIZE)] + (["--vqa_distillation"] if distill else [])
    return [*arguments, *extra]
