#!/usr/bin/env python
"""Regenerate MedViLL's parity fixtures by running the authors' code (see README.md in this folder).

    python conversion/parity/medvill/make_fixtures.py --original /path/to/MedViLL --out tests/fixtures/medvill
    python conversion/parity/medvill/make_fixtures.py --original /path/to/MedViLL --geometry released \
        --out tests/fixtures/medvill/released_geometry

`tiny` writes the detailed fixtures (`<kind>/reference_io.safetensors`, meta.json, config.json, preprocessing/) and
one parity record per kind (`records/<kind>/`). `released` (ResNet-50, 512x512 images, BERT-base layers, but 2 of
them) writes one compact record per kind: the expected outputs only, since the tests regenerate the weights and the
inputs from their seeds. The weights are `seeded_checkpoint(kind, geometry, seed)` of the converter, built from the
key table alone; `--weights_from DIR` reads the original-layout checkpoints an older fixture folder committed
instead (to check this harness against fixtures it did not make).

Each family of the authors' code runs in its own process (their folders reuse module names).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
sys.path[:0] = [str(HERE), str(HERE.parent), str(REPO_ROOT)]

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import harness_common  # noqa: E402

FAMILIES = ("pretraining", "downstream", "retrieval", "classification", "preprocessing")
FAMILY_KINDS = {"pretraining": ["pretraining"], "downstream": ["vqa", "report_generation"], "retrieval": ["retrieval"],
                "classification": ["classification"], "preprocessing": []}
TINY_TOKENS = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]",
               *[f"w{i}" for i in range(104, 200)]]
GEOMETRIES = {
    "tiny": {"bert": {"vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 64},
             "resnet": {"stem": 8, "widths": [4, 8, 16, 32], "depths": [1, 1, 1, 1]},
             "image_size": 64, "pretraining_image_tokens": 3, "num_answers": 7, "num_classes": 5},
    "released": {"bert": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 12,
                          "intermediate_size": 3072},
                 "resnet": None, "image_size": 512, "pretraining_image_tokens": 180, "num_answers": 458,
                 "num_classes": 15},
}
BERT_DEFAULTS = {"hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                 "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02,
                 "layer_norm_eps": 1e-12, "pad_token_id": 0}
WEIGHT_SEED = 0
INPUT_SEED = 0
COMMON_PIXEL_SEED = 1234
REPOSITORY, COMMIT = "SuperSupermoon/MedViLL", "dd51e72"
PREPROCESSING_IMAGES = {"cxr0": "cxr_samples/00000001_000.png", "cxr1": "cxr_samples/00027426_000.png",
                        "vqarad": "vqa_rad/images/synpic100228.jpg"}


def bert_config(geometry):
    return {**BERT_DEFAULTS, **GEOMETRIES[geometry]["bert"]}


def key_table_geometry(geometry, kind):
    from medvlp_hf.conversion.convert_medvill_original_checkpoint import Geometry

    g = GEOMETRIES[geometry]
    resnet = g["resnet"] or {"stem": 64, "widths": [64, 128, 256, 512], "depths": [3, 4, 6, 3]}
    num_labels = {"vqa": g["num_answers"], "classification": g["num_classes"]}.get(kind)
    b = bert_config(geometry)
    return Geometry(b["vocab_size"], b["hidden_size"], b["max_position_embeddings"], b["type_vocab_size"],
                    b["intermediate_size"], b["num_hidden_layers"], resnet["stem"], tuple(resnet["widths"]),
                    tuple(resnet["depths"]), num_labels)


def checkpoint(geometry, kind, weights_from=None):
    """The original-layout checkpoint of `kind`: seeded from the key table, or an older fixture folder's."""
    from medvlp_hf.conversion.convert_medvill_original_checkpoint import seeded_checkpoint

    if weights_from is None:
        return seeded_checkpoint(kind, key_table_geometry(geometry, kind), WEIGHT_SEED)
    folder = Path(weights_from)
    if kind in ("pretraining", "vqa", "report_generation"):
        return load_file(folder / kind / "original_checkpoint.safetensors")
    pretraining = load_file(folder / "pretraining" / "original_checkpoint.safetensors")
    if kind == "retrieval":
        return {k: v for k, v in pretraining.items() if k.startswith(("enc.", "itm.")) and not k.endswith("position_ids")}
    state = {k: v for k, v in pretraining.items() if k.startswith("enc.") and not k.endswith("position_ids")}
    state["enc.img_embeddings.word_embeddings.weight"] = state["enc.txt_embeddings.word_embeddings.weight"]
    return {**state, **load_file(folder / "classification" / "head_weights.safetensors")}


def tokens(geometry):
    if geometry == "tiny":
        return TINY_TOKENS
    from medvlp_hf.resources import bert_base_uncased_vocab_file

    return bert_base_uncased_vocab_file().read_text(encoding="utf-8").splitlines()


def converted_config(geometry, kind, state_dict):
    """The converted model's config (the record's cases and inputs depend on it) and head class name."""
    from medvlp_hf.conversion.convert_medvill_original_checkpoint import convert_state_dict

    g = GEOMETRIES[geometry]
    model = convert_state_dict(state_dict, kind, bert_config(geometry), image_size=g["image_size"],
                               num_pretraining_image_tokens=g["pretraining_image_tokens"])
    return model.config, type(model).__name__


def reference_provenance(producer, checkpoint_sha256=None):
    """Where a record's expected outputs come from: their repository and commit, this harness, the environment."""
    return harness_common.reference_provenance(REPOSITORY, COMMIT, producer, ("torchvision",), checkpoint_sha256)


# --------------------------------------------------------------------------------------------------
# One family, in its own process
# --------------------------------------------------------------------------------------------------


def run_family(args):
    import shims

    g = GEOMETRIES[args.geometry]
    shims.install(bert_config(args.geometry), g["resnet"])
    import original

    original.enter_family(args.original, args.family if args.family != "preprocessing" else "downstream")
    resnet = g["resnet"]
    feature_size = 4 * (resnet["widths"][-1] if resnet else 512)
    run = original.Run(bert_config(args.geometry), feature_size, tokens(args.geometry))
    out = Path(args.out)
    if args.family == "preprocessing":
        write_preprocessing(run, out / "preprocessing", Path(args.data_dir))
        return
    for kind in FAMILY_KINDS[args.family]:
        state_dict = checkpoint(args.geometry, kind, args.weights_from)
        if args.geometry == "tiny":
            write_detailed(kind, run, state_dict, out)
        if args.weights_from is None:
            write_record(kind, run, state_dict, args.geometry, out)


def write_detailed(kind, run, state_dict, out):
    import fixtures

    fixtures.seed_everything()
    pixel_values = load_file(out / "common_inputs.safetensors")["pixel_values"]
    g = GEOMETRIES["tiny"]
    tensors, meta = {
        "pretraining": lambda: fixtures.pretraining(run, state_dict, pixel_values),
        "vqa": lambda: fixtures.vqa(run, state_dict, pixel_values, g["num_answers"]),
        "report_generation": lambda: fixtures.report_generation(run, state_dict, pixel_values),
        "retrieval": lambda: fixtures.retrieval(run, state_dict, pixel_values),
        "classification": lambda: fixtures.classification(run, state_dict, pixel_values),
    }[kind]()
    folder = out / kind
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, folder / "reference_io.safetensors")
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    if kind in ("pretraining", "vqa", "report_generation"):
        config = {"architectures": ["CXRBERT"], "model_type": "bert", **bert_config("tiny")}
        (folder / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=1) + "\n")


def write_record(kind, run, state_dict, geometry, out):
    import records
    from medvlp_hf.conversion import parity
    from medvlp_hf.conversion.convert_medvill_original_checkpoint import parity_inputs

    config, architecture = converted_config(geometry, kind, state_dict)
    tensors = parity_inputs(kind, config, INPUT_SEED)
    outputs = records.original_outputs(kind, run, state_dict, config, tensors)
    producer = f"conversion/parity/medvill/make_fixtures.py --geometry {geometry}"
    reference = reference_provenance(producer, harness_common.state_dict_sha256(state_dict))
    reference["checkpoint"] = {"seeded_checkpoint": {"kind": kind, "geometry": geometry, "seed": WEIGHT_SEED}}
    reference["inputs"] = {"parity_inputs": {"seed": INPUT_SEED}}
    record = records.build_record(kind, architecture, config, outputs, tensors, reference)
    if geometry == "tiny":
        parity.write_record(record, out / "records" / kind)
    else:
        harness_common.write_expected_outputs(record, out / kind, geometry=GEOMETRIES[geometry])


def write_preprocessing(run, folder, data_dir):
    """Their VQA and report-generation image transforms (Preprocess4Seq2seq's own __call__) on three public images."""
    import original

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for task, len_vis_input in (("vqa", 256), ("report_generation", 256)):
        pipeline = original.seq2seq_pipeline(run, task, "bi" if task == "vqa" else "s2s", len_vis_input, 8)
        for name, relative in PREPROCESSING_IMAGES.items():
            path = data_dir / relative
            if task == "report_generation" and original.Image.open(path).size != (512, 512):
                continue  # the report-generation code does not resize: 512x512 inputs only
            pixels = pipeline((str(path), ["w104"], None, None, None))[7]
            tensors.update({f"{task}.{name}.shape": torch.tensor(pixels.shape),
                            f"{task}.{name}.channel_sums": pixels.double().sum(dim=(1, 2)),
                            f"{task}.{name}.crop_c0": pixels[0, 224:288, 200:264].contiguous(),
                            f"{task}.{name}.strided_c2": pixels[2, ::16, ::16].contiguous()})
    save_file(tensors, folder / "reference_pixels.safetensors")
    meta = {"images": PREPROCESSING_IMAGES, "crop_rows_cols": [[224, 288], [200, 264]], "stride": 16}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="checkout of SuperSupermoon/MedViLL at dd51e72")
    parser.add_argument("--out", required=True, help="fixture folder to (re)write")
    parser.add_argument("--geometry", choices=tuple(GEOMETRIES), default="tiny")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=None,
                        help="default: all (tiny) / the model families (released)")
    parser.add_argument("--weights_from", help="an older fixture folder whose original_checkpoint.safetensors files to "
                                               "use instead of the seeded weights (no records are written)")
    parser.add_argument("--data_dir", default=str(REPO_ROOT.parent / "shared" / "data"),
                        help="folder with cxr_samples/ and vqa_rad/ (preprocessing fixture)")
    parser.add_argument("--family", choices=FAMILIES, help=argparse.SUPPRESS)  # one family, in this process
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.family:
        run_family(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    families = args.families or (FAMILIES if args.geometry == "tiny" else FAMILIES[:-1])
    if args.geometry == "tiny" and not (out / "common_inputs.safetensors").exists():
        generator = torch.Generator().manual_seed(COMMON_PIXEL_SEED)
        save_file({"pixel_values": torch.randn(2, 3, 64, 64, generator=generator)}, out / "common_inputs.safetensors")
    for family in families:
        command = [sys.executable, __file__, "--family", family, *sys.argv[1:]] if argv is None else \
            [sys.executable, __file__, "--family", family, *argv]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
