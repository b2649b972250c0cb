#!/usr/bin/env python
"""Make the parity reference of a real MISS checkpoint with the authors' code, for `medvlp convert miss --reference`
(see README.md in this folder for the environment).

    python conversion/parity/miss/make_reference.py --original /path/to/MISS --kind vqa \
        --checkpoint output/rad/checkpoint_149.pth --out reference_vqa
    medvlp convert miss --kind vqa --checkpoint output/rad/checkpoint_149.pth --reference reference_vqa --out miss-vqa

The record holds the converter's parity inputs for the head (seeded), the original model's outputs on them, and the
checkpoint's sha256, so the converter accepts it only for the same file. Pass the options that decide the converted
model (--head, --image_size, --config, --vision_num_attention_heads, --tokenizer_dir) exactly as you will to the
converter.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[2])]

import shims  # noqa: E402

shims.prepare()  # before timm and transformers' image processing import torchvision

import original  # noqa: E402
import records  # noqa: E402
from medvlp_hf.conversion import conversion_utils, parity  # noqa: E402
from medvlp_hf.conversion import convert_miss_original_checkpoint as converter  # noqa: E402
from medvlp_hf.resources import bert_base_uncased_vocab_file  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="checkout of TIMMY-CHAN/MISS at ac8b724")
    parser.add_argument("--checkpoint", required=True, help="the original checkpoint file")
    parser.add_argument("--kind", required=True, choices=converter.KINDS)
    parser.add_argument("--head", choices=converter.KINDS, help="default: the kind's own")
    parser.add_argument("--out", required=True, help="folder for the record (parity.json + parity.safetensors)")
    parser.add_argument("--image_size", type=int)
    parser.add_argument("--config", help="the original BERT config.json (default BERT-base)")
    parser.add_argument("--vision_num_attention_heads", type=int)
    parser.add_argument("--tokenizer_dir", help="folder of the WordPiece vocab.txt (default: bert-base-uncased)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    head = args.head or args.kind
    loaded = conversion_utils.load_checkpoint(args.checkpoint)
    bert = json.loads(Path(args.config).read_text()) if args.config else loaded.config
    model = converter.convert_state_dict(loaded.state_dict, args.kind, bert, head, args.image_size,
                                         args.vision_num_attention_heads)
    vocab = Path(args.tokenizer_dir) if args.tokenizer_dir else bert_base_uncased_vocab_file().parent
    tokenizer = converter.build_processor(model.config, args.tokenizer_dir).tokenizer
    tensors = converter.parity_inputs(head, model.config, tokenizer)
    original.enter(args.original, vocab, original.vit_sizes(model.config.vision_config))
    with tempfile.TemporaryDirectory(prefix="miss-harness-") as workdir:
        original_model = original.model_for(args.kind, head, loaded.state_dict, model.config, workdir)
        outputs = records.original_outputs(head, original_model, model.config, tensors, tokenizer)
    producer = f"conversion/parity/miss/make_reference.py --kind {args.kind} --head {head}"
    reference = records.reference_provenance(producer, conversion_utils.sha256_files(loaded.files))
    reference["inputs"] = {"parity_inputs": {"head": head, "seed": 0}}
    record = records.build_record(head, type(model).__name__, model.config, outputs, tensors, reference)
    print(f"wrote {parity.write_record(record, args.out)}")


if __name__ == "__main__":
    main()
