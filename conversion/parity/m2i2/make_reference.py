#!/usr/bin/env python
"""Make the parity reference of a real M2I2 checkpoint with the authors' code, for `medvlp convert m2i2 --reference`
(see README.md in this folder for the environment).

    python conversion/parity/m2i2/make_reference.py --original /path/to/M2I2 --kind pretraining \
        --checkpoint med_pretrain_29.pth --out reference_pretraining
    medvlp convert m2i2 --kind pretraining --checkpoint med_pretrain_29.pth --reference reference_pretraining \
        --out m2i2-pretraining

The record holds the converter's parity inputs for this head (seeded), the original model's outputs on them, and the
checkpoint's sha256, so the converter accepts it only for the same file. Pass the options that change the converted
model (--head, --image_size, --vqa_distillation, --config and the attention heads) exactly as you will to the
converter; the converter checks the config fields the record depends on.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[2])]

import shims  # noqa: E402

shims.prepare()  # before anything imports torchvision (transformers' image processing does)

import make_fixtures  # noqa: E402
import original  # noqa: E402
import records  # noqa: E402
from medvlp_hf.conversion import conversion_utils, parity  # noqa: E402
from medvlp_hf.conversion import convert_m2i2_original_checkpoint as converter  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="checkout of pengfeiliHEU/M2I2 at 807326d")
    parser.add_argument("--kind", required=True, choices=converter.KINDS)
    parser.add_argument("--head", choices=converter.KINDS)
    parser.add_argument("--checkpoint", required=True, help="the original .pth (or state dict) to convert")
    parser.add_argument("--out", required=True, help="folder for the record (parity.json + parity.safetensors)")
    parser.add_argument("--image_size", type=int)
    parser.add_argument("--vqa_distillation", action="store_true")
    parser.add_argument("--config", help="the original configs/config_bert.json (default BERT-base, fusion layer 6)")
    parser.add_argument("--vision_num_attention_heads", type=int)
    parser.add_argument("--mim_decoder_num_attention_heads", type=int)
    parser.add_argument("--tokenizer_dir", help="folder with the vocab.txt (default: the bundled bert-base-uncased)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    head = args.head or args.kind
    loaded = conversion_utils.load_checkpoint(args.checkpoint)
    bert = json.loads(Path(args.config).read_text()) if args.config else None
    model = converter.convert_state_dict(loaded.state_dict, args.kind, bert, head, args.image_size,
                                         loaded.training_config, args.vision_num_attention_heads,
                                         args.mim_decoder_num_attention_heads, args.vqa_distillation)
    config = model.config
    vocabulary = converter.read_vocabulary(args.tokenizer_dir)
    original.enter(args.original, original.vision_sizes(config))
    tensors = converter.parity_inputs(head, config, vocabulary)
    with tempfile.TemporaryDirectory(prefix="m2i2-reference-") as workdir:
        vocab_file = Path(workdir) / "vocab.txt"
        vocab_file.write_text("\n".join(vocabulary) + "\n")
        distill = args.vqa_distillation if args.kind == "pretraining" else config.vqa_distillation
        their_model = original.model_for(args.kind, head, distill, config, loaded.state_dict, vocab_file, workdir)
        outputs = records.original_outputs(head, their_model, records.case_inputs(head, config, tensors), vocabulary,
                                           config)
    reference = make_fixtures.reference_provenance(f"conversion/parity/m2i2/make_reference.py --kind {args.kind} "
                                                   f"--head {head}", conversion_utils.sha256_files(loaded.files))
    reference["inputs"] = {"parity_inputs": {"seed": 0}}
    record = records.build_record(head, type(model).__name__, config, outputs, tensors, reference)
    print(f"wrote {parity.write_record(record, args.out)}")


if __name__ == "__main__":
    main()
