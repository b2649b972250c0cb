#!/usr/bin/env python
"""Regenerate M2I2's parity fixtures by running the authors' code (see README.md in this folder).

    python conversion/parity/m2i2/make_fixtures.py --original /path/to/M2I2 --out tests/fixtures/m2i2
    python conversion/parity/m2i2/make_fixtures.py --original /path/to/M2I2 --geometry released \
        --out tests/fixtures/m2i2/released_geometry

`tiny` writes one parity record per conversion (`records/<name>/`: a pre-training checkpoint, a VQA checkpoint trained
with distillation, and a VQA model initialised from the pre-training checkpoint by train_rad.py's own code), the tiny
vocabulary, the functions whose numbers the models share with theirs (`original_functions/`: MAE's sin-cos tables,
ALBEF's MLM masking under a seed, their tokenizer on real text) and a checkpoint container as their training scripts
save it (`training_container.pth`, without the weights). `released` (ViT-B/16 at 256 / 384 px with MAE's 8-block
decoder, BERT-base layers, but 2 of them) writes the expected outputs of the same records only, since the tests
regenerate the weights and the inputs from their seeds. The weights are `seeded_checkpoint(kind, geometry, seed)` of
the converter, built from its key table alone.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
sys.path[:0] = [str(HERE), str(HERE.parent), str(REPO_ROOT)]

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import harness_common  # noqa: E402
import shims  # noqa: E402

shims.prepare()  # before anything imports torchvision (transformers' image processing does)

REPOSITORY, COMMIT = "pengfeiliHEU/M2I2", "807326d"
WEIGHT_SEED = 0
# parity_inputs seed of each geometry. Tiny: the first under which both VQA records choose different answers for
# different questions (the chosen answers are compared exactly; one answer for every question would pin less).
INPUT_SEEDS = {"tiny": 33, "released": 0}
TINY_VOCABULARY = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                   *[f"w{i}" for i in range(104, 200)]]
# name -> (checkpoint kind, head, VQA distillation)
RECORDS = {"pretraining": ("pretraining", "pretraining", False), "vqa": ("vqa", "vqa", True),
           "pretraining_vqa": ("pretraining", "vqa", True)}
GEOMETRIES = {
    "tiny": {"text": {"vocab_size": 200, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                      "fusion_layer": 1, "max_position_embeddings": 64, "type_vocab_size": 2, "num_attention_heads": 2},
             "vision": {"vision_hidden_size": 32, "vision_intermediate_size": 64, "vision_num_hidden_layers": 2,
                        "patch_size": 8, "num_attention_heads": 2},
             "mim": {"mim_hidden_size": 16, "mim_intermediate_size": 32, "mim_num_hidden_layers": 1,
                     "num_attention_heads": 2},
             "pretraining_grid": 4, "vqa_grid": 6, "projection_dim": 16, "queue_size": 32},
    "released": {"text": {"vocab_size": 30522, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 2,
                          "fusion_layer": 1, "max_position_embeddings": 512, "type_vocab_size": 2,
                          "num_attention_heads": 12},
                 "vision": {"vision_hidden_size": 768, "vision_intermediate_size": 3072, "vision_num_hidden_layers": 12,
                            "patch_size": 16, "num_attention_heads": 12},
                 "mim": {"mim_hidden_size": 512, "mim_intermediate_size": 2048, "mim_num_hidden_layers": 8,
                         "num_attention_heads": 16},
                 "pretraining_grid": 16, "vqa_grid": 24, "projection_dim": 256, "queue_size": 65536},
}
SINCOS_TABLES = {"tiny_vision": (32, 4), "tiny_mim": (16, 4), "base_vision": (768, 16)}  # (width, grid)
SINCOS_STRIDE = (7, 5)  # rows, columns kept of tables larger than the tiny ones
MASKING_SEEDS = (0, 1, 2)
TOKENIZER_TEXTS = {"captions": ["chest x-ray showing a 2.5 cm nodule in the right upper lobe",
                                "ct of the abdomen, axial view (contrast-enhanced)"],
                   "questions": ["is there evidence of an aortic aneurysm", "how many lesions are seen",
                                 "what organ system is shown in this image"],
                   "answers": ["yes[SEP]", "2[SEP]", "right lower lobe[SEP]", "x-ray[SEP]"]}


def bert_config(geometry):
    text = GEOMETRIES[geometry]["text"]
    return {**{name: value for name, value in text.items()}, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12, "initializer_range": 0.02,
            "pad_token_id": 0, "encoder_width": GEOMETRIES[geometry]["vision"]["vision_hidden_size"]}


def key_table_geometry(geometry, kind):
    from medvlp_hf.conversion.convert_m2i2_original_checkpoint import Geometry

    g = GEOMETRIES[geometry]
    text = {name: value for name, value in g["text"].items() if name != "num_attention_heads"}
    vision = {name: value for name, value in g["vision"].items() if name != "num_attention_heads"}
    if kind == "pretraining":
        mim = {name: value for name, value in g["mim"].items() if name != "num_attention_heads"}
        return Geometry(**text, **vision, **mim, grid_size=g["pretraining_grid"], projection_dim=g["projection_dim"],
                        queue_size=g["queue_size"])
    return Geometry(**text, **vision, grid_size=g["vqa_grid"], distillation=True)


def checkpoint(geometry, kind):
    from medvlp_hf.conversion.convert_m2i2_original_checkpoint import seeded_checkpoint

    return seeded_checkpoint(kind, key_table_geometry(geometry, kind), WEIGHT_SEED)


def converted(geometry, name):
    """The converted model of record `name` (its config sets the record's cases and inputs) and its checkpoint, whose
    tensors the model holds (running the model's momentum update changes them)."""
    from medvlp_hf.conversion.convert_m2i2_original_checkpoint import convert_state_dict

    kind, head, distill = RECORDS[name]
    g = GEOMETRIES[geometry]
    state_dict = checkpoint(geometry, kind)
    image_size = g["vqa_grid"] * g["vision"]["patch_size"] if head != kind else None
    model = convert_state_dict(state_dict, kind, bert_config(geometry), head, image_size,
                               vision_num_attention_heads=g["vision"]["num_attention_heads"],
                               mim_decoder_num_attention_heads=g["mim"]["num_attention_heads"],
                               vqa_distillation=distill and kind == "pretraining")
    return model, state_dict


def vocabulary(geometry):
    if geometry == "tiny":
        return TINY_VOCABULARY
    from medvlp_hf.resources import bert_base_uncased_vocab_file

    return bert_base_uncased_vocab_file().read_text(encoding="utf-8").splitlines()


def reference_provenance(producer, checkpoint_sha256=None):
    """Where a record's expected outputs come from: their repository and commit, this harness, the environment."""
    return harness_common.reference_provenance(REPOSITORY, COMMIT, producer, ("timm",), checkpoint_sha256)


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


def write_record(name, geometry, out, workdir):
    import original
    import records
    from medvlp_hf.conversion import parity
    from medvlp_hf.conversion.convert_m2i2_original_checkpoint import parity_inputs

    kind, head, _ = RECORDS[name]
    model, state_dict = converted(geometry, name)
    config, words = model.config, vocabulary(geometry)
    tensors = parity_inputs(head, config, words, INPUT_SEEDS[geometry])
    their_model = original.model_for(kind, head, RECORDS[name][2], config, state_dict, Path(workdir) / "vocab.txt",
                                     workdir)
    outputs = records.original_outputs(head, their_model, records.case_inputs(head, config, tensors), words, config)
    producer = f"conversion/parity/m2i2/make_fixtures.py --geometry {geometry}"
    reference = reference_provenance(producer, harness_common.state_dict_sha256(state_dict))
    reference["checkpoint"] = {"seeded_checkpoint": {"kind": kind, "geometry": geometry, "seed": WEIGHT_SEED}}
    reference["inputs"] = {"parity_inputs": {"seed": INPUT_SEEDS[geometry]}}
    record = records.build_record(head, type(model).__name__, config, outputs, tensors, reference)
    if geometry == "tiny":
        parity.write_record(record, out / "records" / name)
    else:
        harness_common.write_expected_outputs(record, out / name, geometry=GEOMETRIES[geometry], record=RECORDS[name])


# --------------------------------------------------------------------------------------------------
# What the models share with theirs outside a forward (tiny fixtures only)
# --------------------------------------------------------------------------------------------------


def write_original_functions(out, workdir, data_vocab_file):
    """MAE's sin-cos tables, ALBEF's MLM masking of seeded draws, their tokenizer on real text (bert-base-uncased)."""
    import original
    from models.mae import get_2d_sincos_pos_embed
    from models.model_pretrain import M2I2

    folder = out / "original_functions"
    folder.mkdir(parents=True, exist_ok=True)
    tensors, meta = {}, {"sincos": {}, "masking": {}, "tokenizer": TOKENIZER_TEXTS}
    for name, (width, grid) in SINCOS_TABLES.items():
        table = torch.from_numpy(get_2d_sincos_pos_embed(width, grid, cls_token=True)).float()
        if width > 32:
            table = table[:: SINCOS_STRIDE[0], :: SINCOS_STRIDE[1]]
            meta["sincos"][name] = {"width": width, "grid": grid, "stride": SINCOS_STRIDE}
        else:
            meta["sincos"][name] = {"width": width, "grid": grid}
        tensors[f"sincos.{name}"] = table.contiguous()
    # their M2I2.mask as pretrain's forward calls it, on tiny captions, under torch's global generator
    tiny = original.tokenizer(Path(workdir) / "vocab.txt")
    captions = ["w120 w121 w150 w199 w104 w130 w131", "w140 w141 w142", "w150 w151 w152 w153 w154"]
    text = tiny(captions, padding="longest", return_tensors="pt")
    holder = type("Masking", (), {"tokenizer": tiny, "mask": M2I2.mask})()
    tensors["masking.input_ids"] = text.input_ids
    for seed in MASKING_SEEDS:
        torch.manual_seed(seed)
        ids = text.input_ids.clone()
        masked, labels = holder.mask(ids, len(TINY_VOCABULARY), "cpu", targets=ids.clone(),
                                     probability_matrix=torch.full(ids.shape, 0.15))
        tensors[f"masking.seed{seed}.input_ids"], tensors[f"masking.seed{seed}.labels"] = masked, labels
    meta["masking"] = {"captions": captions, "seeds": list(MASKING_SEEDS), "mlm_probability": 0.15,
                       "vocab_size": len(TINY_VOCABULARY),
                       "generator": "torch.manual_seed(seed) (global CPU generator)"}
    real = original.tokenizer(data_vocab_file)
    for kind, texts in TOKENIZER_TEXTS.items():
        encoded = real(texts, padding="longest", return_tensors="pt")
        tensors[f"tokenizer.{kind}.input_ids"] = encoded.input_ids
        tensors[f"tokenizer.{kind}.attention_mask"] = encoded.attention_mask
    save_file(tensors, folder / "reference.safetensors")
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def write_training_container(out, workdir, config_file):
    """What `pretrain_med.py` saves beside the weights (`optimizer`, `lr_scheduler`, `config`, `epoch`), made by their
    optimizer and scheduler factories over a tiny pre-training model with configs/Pretrain.yaml (read as their
    `ruamel_yaml.safe_load` reads it: YAML 1.2, plain dicts, lists, numbers and strings), after one optimizer step of
    their own forward; the weights (`model`) are left out (the tests add a seeded checkpoint), and of the optimizer's
    per-parameter state only two entries are kept (plain tensors, as every other). Checked to load with
    `torch.load(weights_only=True)`."""
    from ruamel.yaml import YAML

    import original
    import utils
    from optim import create_optimizer
    from scheduler import create_scheduler

    settings = YAML(typ="safe", pure=True).load(Path(config_file).read_text())
    model, _ = converted("tiny", "pretraining")
    their = original.model_for("pretraining", "pretraining", False, model.config, checkpoint("tiny", "pretraining"),
                               Path(workdir) / "vocab.txt", workdir)
    optimizer = create_optimizer(utils.AttrDict(settings["optimizer"]), their)
    scheduler, _ = create_scheduler(utils.AttrDict(settings["schedular"]), optimizer)
    captions = ["w120 w121 w150", "w140 w141 w142 w143", "w150 w151", "w160 w161 w162"]
    text = their.tokenizer(captions, padding="longest", return_tensors="pt")
    size = model.config.vision_config.image_size
    torch.manual_seed(0)
    losses = their(torch.randn(4, 3, size, size), text, alpha=settings["alpha"])
    sum(losses).backward()
    optimizer.step()
    scheduler.step(1)
    container = {"optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(), "config": settings,
                 "epoch": 29}
    state = container["optimizer"]["state"]
    container["optimizer"]["state"] = {index: state[index] for index in sorted(state)[:2]}
    path = out / "training_container.pth"
    torch.save(container, path)
    torch.load(path, weights_only=True)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def run(args):
    """The whole geometry in this process (their modules are imported once, at the geometry's sizes)."""
    import original

    model, _ = converted(args.geometry, "pretraining")
    original.enter(args.original, original.vision_sizes(model.config))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.records or list(RECORDS)
    with tempfile.TemporaryDirectory(prefix="m2i2-harness-") as workdir:
        (Path(workdir) / "vocab.txt").write_text("\n".join(vocabulary(args.geometry)) + "\n")
        if args.geometry == "tiny":
            (out / "vocab.txt").write_text("\n".join(TINY_VOCABULARY) + "\n")
            write_original_functions(out, workdir, args.vocab_file)
            write_training_container(out, workdir, Path(args.original) / "configs" / "Pretrain.yaml")
        for name in names:
            print(f"record {name} ({args.geometry})", flush=True)
            write_record(name, args.geometry, out, workdir)


def parse_args(argv=None):
    from medvlp_hf.resources import bert_base_uncased_vocab_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="checkout of pengfeiliHEU/M2I2 at 807326d")
    parser.add_argument("--out", required=True, help="fixture folder to (re)write")
    parser.add_argument("--geometry", choices=tuple(GEOMETRIES), default="tiny")
    parser.add_argument("--records", nargs="+", choices=tuple(RECORDS), help="default: all")
    parser.add_argument("--vocab_file", default=str(bert_base_uncased_vocab_file()),
                        help="bert-base-uncased vocab.txt for the tokenizer fixture")
    parser.add_argument("--separate", action="store_true", help="each record in its own process (less memory)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.separate:
        run(args)
        return
    for name in args.records or RECORDS:
        command = [sys.executable, __file__, "--original", args.original, "--out", args.out, "--geometry",
                   args.geometry, "--records", name, "--vocab_file", args.vocab_file]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
