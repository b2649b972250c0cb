"""The tiny MedViLL parity fixtures (tests/fixtures/medvill, made by conversion/parity/medvill/make_fixtures.py):
their original-layout checkpoints, regenerated from the key table and seed the harness used, and how to convert
them on the command line."""

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from medvlp_hf.conversion import convert_medvill_original_checkpoint as conv

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "medvill"
RECORDS = FIXTURES / "records"
KINDS = conv.KINDS
WEIGHT_SEED = 0  # make_fixtures.py WEIGHT_SEED
IMAGE_SIZE = 64  # 2x2 grid
PRETRAINING_IMAGE_TOKENS = 3
NUM_LABELS = {"vqa": 7, "classification": 5}
TINY_TOKENS = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]",
               *[f"w{i}" for i in range(104, 200)]]


def geometry(kind):
    return conv.Geometry(vocab_size=200, hidden_size=32, max_position_embeddings=512, type_vocab_size=2,
                         intermediate_size=64, num_hidden_layers=2, resnet_stem_width=8, resnet_widths=(4, 8, 16, 32),
                         resnet_depths=(1, 1, 1, 1), num_labels=NUM_LABELS.get(kind))


def checkpoint(kind):
    """The original-layout `kind` checkpoint the fixtures were computed from."""
    return conv.seeded_checkpoint(kind, geometry(kind), WEIGHT_SEED)


def original_config():
    """The BERT config.json (the repository's format) of the tiny fixtures."""
    return json.loads((FIXTURES / "pretraining" / "config.json").read_text())


def fixture(kind, name="reference_io.safetensors"):
    return load_file(FIXTURES / kind / name)


def pixel_values():
    return fixture(".", "common_inputs.safetensors")["pixel_values"]


def write_original_files(kind, folder):
    """The checkpoint as `<folder>/original/model.safetensors` + config.json, and a tiny vocab.txt folder."""
    original = Path(folder) / "original"
    original.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint(kind), original / "model.safetensors")
    (original / "config.json").write_text(json.dumps(original_config()))
    tokenizer = Path(folder) / "tokenizer"
    tokenizer.mkdir(exist_ok=True)
    (tokenizer / "vocab.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    return original, tokenizer


def convert_arguments(kind, folder, out, *extra):
    """Command-line arguments converting the tiny `kind` checkpoint written into `folder` to `out`."""
    original, tokenizer = write_original_files(kind, folder)
    return ["--checkpoint", str(original), "--kind", kind, "--out", str(out), "--image_size", str(IMAGE_SIZE),
            "--num_pretraining_image_tokens", str(PRETRAINING_IMAGE_TOKENS), "--tokenizer_dir", str(tokenizer), *extra]
