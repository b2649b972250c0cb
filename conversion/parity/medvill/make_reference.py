#!/usr/bin/env python
"""Make the parity reference of a real MedViLL checkpoint with the authors' code, for `medvlp convert medvill
--reference` (see README.md in this folder for the environment).

    python conversion/parity/medvill/make_reference.py --original /path/to/MedViLL --kind vqa \
        --checkpoint pt_model/model.50.bin --config pt_model/config.json --out reference_vqa
    medvlp convert medvill --kind vqa --checkpoint pt_model/model.50.bin --config pt_model/config.json \
        --reference reference_vqa --out medvill-vqa

The record holds the converter's parity inputs for this kind (seeded), the original model's outputs on them, and the
checkpoint's sha256, so the converter accepts it only for the same file. Pass the options that change the converted
model's numerics (--image_size, --num_pretraining_image_tokens, --attention_mask_type) exactly as you will to the
converter; the converter checks those the record depends on.
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[2])]

import shims  # noqa: E402

shims.prepare()  # before transformers' image processing imports torchvision

import make_fixtures  # noqa: E402
import records  # noqa: E402
from medvlp_hf.conversion import conversion_utils, parity  # noqa: E402
from medvlp_hf.conversion import convert_medvill_original_checkpoint as converter  # noqa: E402
from medvlp_hf.resources import bert_base_uncased_vocab_file  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="checkout of SuperSupermoon/MedViLL at dd51e72")
    parser.add_argument("--checkpoint", required=True, help="the original weights file or its directory")
    parser.add_argument("--kind", required=True, choices=converter.KINDS)
    parser.add_argument("--out", required=True, help="folder for the record (parity.json + parity.safetensors)")
    parser.add_argument("--config", help="the original BERT config.json (default: next to the weights, else BERT-base)")
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--num_pretraining_image_tokens", type=int)
    parser.add_argument("--attention_mask_type", default="bar", choices=sorted(records.original.PRETRAINING_MASK_FLAGS))
    parser.add_argument("--vocab_file", default=str(bert_base_uncased_vocab_file()), help="WordPiece vocab.txt")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    loaded = conversion_utils.load_checkpoint(args.checkpoint)
    bert = json.loads(Path(args.config).read_text()) if args.config else loaded.config
    model = converter.convert_state_dict(loaded.state_dict, args.kind, bert, args.image_size,
                                         args.num_pretraining_image_tokens, args.attention_mask_type)
    config = model.config
    bert = {**converter.BERT_BASE, **(bert or {}), **{name: getattr(config, name) for name in converter.SHAPE_FIELDS}}
    standard = list(config.resnet_widths) == [64, 128, 256, 512] and list(config.resnet_depths) == [3, 4, 6, 3]
    resnet = None if standard and config.resnet_stem_width == 64 else {
        "stem": config.resnet_stem_width, "widths": list(config.resnet_widths), "depths": list(config.resnet_depths)}
    shims.configure(bert, resnet)
    original = records.original
    original.enter_family(args.original, records.KIND_FAMILY[args.kind])
    run = original.Run(bert, config.image_feature_size, Path(args.vocab_file).read_text(encoding="utf-8").splitlines())
    tensors = converter.parity_inputs(args.kind, config)
    outputs = records.original_outputs(args.kind, run, loaded.state_dict, config, tensors)
    reference = make_fixtures.reference_provenance(f"conversion/parity/medvill/make_reference.py --kind {args.kind}",
                                                   conversion_utils.sha256_files(loaded.files))
    reference["inputs"] = {"parity_inputs": {"seed": 0}}
    record = records.build_record(args.kind, type(model).__name__, config, outputs, tensors, reference)
    print(f"wrote {parity.write_record(record, args.out)}")


if __name__ == "__main__":
    main()
