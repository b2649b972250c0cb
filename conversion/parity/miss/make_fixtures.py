#!/usr/bin/env python
"""Regenerate MISS's parity fixtures by running the authors' code (see README.md in this folder).

    python conversion/parity/miss/make_fixtures.py --original /path/to/MISS --out tests/fixtures/miss
    python conversion/parity/miss/make_fixtures.py --original /path/to/MISS --geometry released \
        --out tests/fixtures/miss/released_geometry

Three records, each the converter's cases and seeded inputs run through the authors' model:
- `pretraining`: MISS_Pretrain on a pre-training checkpoint (ITC, ITM, LM: logits and losses);
- `vqa`: MISS_VQA on a VQA checkpoint (training loss and logits, beam search, answer ranking);
- `pretraining_vqa`: MISS_VQA initialised from the pre-training checkpoint by their `load_checkpoint` at the VQA image
  size (position embeddings interpolated), against `--kind pretraining --head vqa`.
`tiny` writes the records (`records/<name>/`) and a detailed pre-training fixture (`pretraining/`: two consecutive
forwards, so the queue and the momentum encoders move as in training). `released` (ViT-B/16 at 224 and 480 px,
BERT-base layers, 2 of them, the bert-base-uncased vocabulary, a 57,600-entry queue) writes the expected outputs only,
since the tests regenerate the weights and the inputs from their seeds. The weights are `seeded_checkpoint(kind,
geometry, seed)` of the converter, built from its key table alone.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
sys.path[:0] = [str(HERE), str(HERE.parent), str(REPO_ROOT)]

import shims  # noqa: E402

shims.prepare()  # before timm and transformers' image processing import torchvision

from safetensors.torch import save_file  # noqa: E402

import harness_common  # noqa: E402
import original  # noqa: E402
import records  # noqa: E402
from medvlp_hf.conversion import parity  # noqa: E402
from medvlp_hf.conversion import convert_miss_original_checkpoint as converter  # noqa: E402

TINY_TOKENS = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]",
               *[f"w{i}" for i in range(104, 200)]]
GEOMETRIES = {
    "tiny": {"bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                      "max_position_embeddings": 64},
             "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "patch_size": 8},
             "image_size": {"pretraining": 32, "vqa": 48}, "projection_dim": 16, "queue_size": 12},
    "released": {"bert": {"hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 12,
                          "intermediate_size": 3072, "max_position_embeddings": 512},
                 "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                            "num_attention_heads": 12, "patch_size": 16},
                 "image_size": {"pretraining": 224, "vqa": 480}, "projection_dim": 256,
                 "queue_size": converter.QUEUE_SIZE},
}
RECORDS = {"pretraining": ("pretraining", "pretraining"), "vqa": ("vqa", "vqa"), "pretraining_vqa": ("pretraining", "vqa")}
WEIGHT_SEED = 0
INPUT_SEED = 0
ALPHA = 0.4  # configs/pretrain.yaml, after the ramp


def vocab_dir(geometry, folder):
    """The WordPiece vocabulary folder: a 200-token one for `tiny`, the bundled bert-base-uncased otherwise."""
    if geometry != "tiny":
        from medvlp_hf.resources import bert_base_uncased_vocab_file

        return bert_base_uncased_vocab_file().parent
    (Path(folder) / "vocab.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    return Path(folder)


def key_table_geometry(geometry, kind, word_count):
    g = GEOMETRIES[geometry]
    b, v = g["bert"], g["vision"]
    pretraining = {"projection_dim": g["projection_dim"], "queue_size": g["queue_size"]} if kind == "pretraining" else {}
    return converter.Geometry(
        vocab_size=word_count + 2, hidden_size=b["hidden_size"], intermediate_size=b["intermediate_size"],
        num_hidden_layers=b["num_hidden_layers"], max_position_embeddings=b["max_position_embeddings"],
        vision_hidden_size=v["hidden_size"], vision_intermediate_size=v["intermediate_size"],
        vision_num_hidden_layers=v["num_hidden_layers"], patch_size=v["patch_size"],
        grid_size=g["image_size"][kind] // v["patch_size"], **pretraining)


def checkpoint(geometry, kind, word_count):
    return converter.seeded_checkpoint(kind, key_table_geometry(geometry, kind, word_count), WEIGHT_SEED)


def convert(geometry, kind, head, state_dict):
    """The converted model (the record's cases and inputs depend on its config)."""
    g = GEOMETRIES[geometry]
    return converter.convert_state_dict(state_dict, kind, g["bert"], head, g["image_size"][head],
                                        g["vision"]["num_attention_heads"])


class Harness:
    """Their code at one geometry: its vocabulary, and the original model of each record."""

    def __init__(self, original_root, geometry, workdir):
        self.geometry, self.workdir = geometry, Path(workdir)
        self.vocab = vocab_dir(geometry, self.workdir)
        self.word_count = len((self.vocab / "vocab.txt").read_text(encoding="utf-8").splitlines())
        original.enter(original_root, self.vocab, GEOMETRIES[geometry]["vision"] if geometry == "tiny" else None)

    def setup(self, name):
        """(checkpoint, converted model, tokenizer, record inputs, their model) of record `name`."""
        kind, head = RECORDS[name]
        state_dict = checkpoint(self.geometry, kind, self.word_count)
        model = convert(self.geometry, kind, head, state_dict)
        tokenizer = converter.build_processor(model.config, self.vocab).tokenizer
        tensors = converter.parity_inputs(head, model.config, tokenizer, INPUT_SEED)
        return state_dict, model, tokenizer, tensors, original.model_for(kind, head, state_dict, model.config,
                                                                         self.workdir)

    def record(self, name, producer):
        kind, head = RECORDS[name]
        state_dict, model, tokenizer, tensors, original_model = self.setup(name)
        outputs = records.original_outputs(head, original_model, model.config, tensors, tokenizer)
        reference = records.reference_provenance(producer, harness_common.state_dict_sha256(state_dict))
        reference["checkpoint"] = {"seeded_checkpoint": {"kind": kind, "geometry": self.geometry, "seed": WEIGHT_SEED}}
        reference["inputs"] = {"parity_inputs": {"head": head, "seed": INPUT_SEED}}
        return records.build_record(head, type(model).__name__, model.config, outputs, tensors, reference)


def write_detailed_pretraining(harness, folder):
    """Two consecutive forwards of their pre-training model on the record's inputs: the second sees the queue after
    the first enqueued its momentum features and the momentum encoders after two EMA steps. Kept: the second forward's
    ITC logits and losses and the queues and pointer after both."""
    state_dict, model, tokenizer, tensors, original_model = harness.setup("pretraining")
    case = converter.parity_cases("pretraining", model.config)[0]
    inputs = {name: tensors[case.input_key(argument)] for argument, name in case.inputs.items()}
    captions = records.texts(tokenizer, inputs["input_ids"], inputs["attention_mask"])
    runs = [original.pretraining_forward(original_model, inputs["pixel_values"].float(), captions, ALPHA,
                                         inputs["negative_image_indices"], inputs["negative_text_indices"])
            for _ in range(2)]
    second = runs[1]
    outputs = {"second.logits_per_image": second["sim_i2t"], "second.logits_per_text": second["sim_t2i"],
               "second.itc_loss": second["loss_ita"], "second.itm_loss": second["loss_itm"],
               "second.lm_loss": second["loss_lm"], "image_queue": original_model.image_queue,
               "text_queue": original_model.text_queue, "queue_ptr": original_model.queue_ptr,
               "initial_queue_ptr": state_dict["queue_ptr"]}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in {**inputs, **outputs}.items()},
              folder / "reference_io.safetensors")
    meta = {"checkpoint": {"seeded_checkpoint": {"kind": "pretraining", "geometry": harness.geometry,
                                                 "seed": WEIGHT_SEED}},
            "inputs": {"parity_inputs": {"head": "pretraining", "seed": INPUT_SEED}}, "alpha": ALPHA,
            "captions": captions, "forwards": 2}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="checkout of TIMMY-CHAN/MISS at ac8b724")
    parser.add_argument("--out", required=True, help="fixture folder to (re)write")
    parser.add_argument("--geometry", choices=tuple(GEOMETRIES), default="tiny")
    parser.add_argument("--records", nargs="+", choices=tuple(RECORDS), default=tuple(RECORDS))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    producer = f"conversion/parity/miss/make_fixtures.py --geometry {args.geometry}"
    with tempfile.TemporaryDirectory(prefix="miss-harness-") as workdir:
        harness = Harness(args.original, args.geometry, workdir)
        for name in args.records:
            record = harness.record(name, producer)
            if args.geometry == "tiny":
                print(f"wrote {parity.write_record(record, out / 'records' / name)}", flush=True)
            else:
                harness_common.write_expected_outputs(record, out / name, geometry=GEOMETRIES[args.geometry])
                print(f"wrote {out / name}", flush=True)
        if args.geometry == "tiny":
            write_detailed_pretraining(harness, out / "pretraining")


if __name__ == "__main__":
    main()
