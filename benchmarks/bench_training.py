"""MedViLL VQA fine-tuning step with and without gradient checkpointing: samples/s, the memory held for
backward (activations), the peak of a whole step and the process's peak RSS, measured side by side in
one process.

A step is what Trainer does per batch: forward from pixel values (the ResNet frozen, as in the original
code), BCE on soft answer scores, backward, AdamW. Checkpointing is non-reentrant, on every encoder layer.
A comparison against the authors' implementation is not included (it needs their checkout, with the
patches listed in shared/reference/originals.md §1, outside this project).

    python benchmarks/bench_training.py                 # base size, batch 8, 20-token questions
    python benchmarks/bench_training.py --preset tiny --batch-size 2 --repeats 1
"""

from bench_utils import Trainee, base_parser, build, compare_checkpointing, describe_machine, setup

import torch  # after bench_utils, which sets the OpenMP wait policy
from medvlp_hf import MedViLLForVQA


def vqa_batch(config, args):
    """Questions `[SEP] w.. [SEP]`, random images and one soft answer score of 1.0 per question."""
    generator = torch.Generator().manual_seed(args.seed)
    words = torch.randint(1000, 2000, (args.batch_size, args.question_length - 2), generator=generator)
    sep = torch.full((args.batch_size, 1), config.sep_token_id)
    answers = torch.randint(0, config.num_labels, (args.batch_size, 1), generator=generator)
    size = config.image_size
    return {
        "input_ids": torch.cat([sep, words, sep], dim=1),
        "attention_mask": torch.ones(args.batch_size, args.question_length, dtype=torch.long),
        "pixel_values": torch.randn(args.batch_size, 3, size, size, generator=generator),
        "labels": torch.zeros(args.batch_size, config.num_labels).scatter_(1, answers, 1.0),
    }


def main():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--question-length", type=int, default=20, help="text-stream tokens ([SEP] .. [SEP])")
    parser.add_argument("--num-answers", type=int, default=458, help="answer classes (VQA-RAD in the original: 458)")
    args = parser.parse_args()
    setup(args)
    model = build(MedViLLForVQA, args, num_labels=args.num_answers)
    trainee = Trainee(model, vqa_batch(model.config, args))
    describe_machine()
    config = trainee.model.config
    length = 1 + config.num_image_tokens + args.question_length
    print(f"MedViLLForVQA preset={args.preset}, batch {args.batch_size} x {length} joint tokens, "
          f"{sum(p.numel() for p in trainee.model.parameters() if p.requires_grad) / 1e6:.1f}M trainable parameters")

    compare_checkpointing(trainee, args.batch_size, args.repeats, "VQA training step", activation_target=0.4)
    describe_machine()


if __name__ == "__main__":
    main()
