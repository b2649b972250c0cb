"""The tiny MISS parity fixtures (tests/fixtures/miss, made by conversion/parity/miss/make_fixtures.py): their
original-layout checkpoints, regenerated from the key table and seed the harness used, and how to convert them on the
command line."""

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from medvlp_hf.conversion import convert_miss_original_checkpoint as conv

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "miss"
RECORDS = FIXTURES / "records"
RELEASED_GEOMETRY = FIXTURES / "released_geometry"
# record name -> (checkpoint kind, head): make_fixtures.py RECORDS
RECORD_HEADS = {"pretraining": ("pretraining", "pretraining"), "vqa": ("vqa", "vqa"),
                "pretraining_vqa": ("pretraining", "vqa")}
WEIGHT_SEED = 0  # make_fixtures.py WEIGHT_SEED
IMAGE_SIZE = {"pretraining": 32, "vqa": 48}  # 4x4 and 6x6 grids of 8-pixel patches
VISION_HEADS = 2
# the BERT config.json (their configs/med_config.json format) of the tiny fixtures
BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64, "vocab_size": 202, "encoder_width": 32, "add_cross_attention": True,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "model_type": "bert"}
TINY_TOKENS = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]",
               *[f"w{i}" for i in range(104, 200)]]


def geometry(kind, image_size=None):
    pretraining = {"projection_dim": 16, "queue_size": 12} if kind == "pretraining" else {}
    return conv.Geometry(vocab_size=202, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         max_position_embeddings=64, vision_hidden_size=32, vision_intermediate_size=64,
                         vision_num_hidden_layers=2, patch_size=8, grid_size=(image_size or IMAGE_SIZE[kind]) // 8,
                         **pretraining)


def checkpoint(kind):
    """The original-layout `kind` checkpoint the fixtures were computed from."""
    return conv.seeded_checkpoint(kind, geometry(kind), WEIGHT_SEED)


def convert(record, state_dict=None, **config_overrides):
    """The converted model of a record: its checkpoint (or `state_dict`) through the converter, as the CLI would."""
    kind, head = RECORD_HEADS[record]
    state_dict = checkpoint(kind) if state_dict is None else state_dict
    return conv.convert_state_dict(state_dict, kind, {**BERT, **config_overrides}, head, IMAGE_SIZE[head],
                                   VISION_HEADS)


def fixture(name):
    return load_file(FIXTURES / name / "reference_io.safetensors"), json.loads((FIXTURES / name / "meta.json").read_text())


def write_original_files(kind, folder, state_dict=None):
    """The checkpoint as `<folder>/original/model.safetensors`, their BERT config.json and a tiny vocab.txt folder."""
    folder = Path(folder)
    (folder / "original").mkdir(parents=True, exist_ok=True)
    path = folder / "original" / "model.safetensors"
    save_file(checkpoint(kind) if state_dict is None else state_dict, path)
    (folder / "med_config.json").write_text(json.dumps(BERT))
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "vocab.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    return path


def convert_arguments(record, folder, out, *extra):
    """Command-line arguments converting the tiny checkpoint of `record`, written into `folder`, to `out`."""
    kind, head = RECORD_HEADS[record]
    path = write_original_files(kind, folder)
    return ["--checkpoint", str(path), "--kind", kind, "--head", head, "--out", str(out), "--image_size",
            str(IMAGE_SIZE[head]), "--config", str(Path(folder) / "med_config.json"), "--vision_num_attention_heads",
            str(VISION_HEADS), "--tokenizer_dir", str(Path(folder) / "tokenizer"), *extra]
