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

import statistics

from bench_utils import (
    base_parser, build, describe_machine, peak_memory_mb, print_table, ratio, release_free_heap, report_ratio,
    rss_mb, seconds, setup, time_rounds,
)

import torch  # after bench_utils, which sets the OpenMP wait policy
from medvlp_hf import MedViLLForVQA

MODES = {"no checkpointing": False, "gradient checkpointing": True}


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


class Trainee:
    """A model, its optimizer and one batch; `step(checkpointing)` runs one training step in that mode."""

    def __init__(self, args):
        self.model = build(MedViLLForVQA, args, num_labels=args.num_answers).train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=3e-5)
        self.batch = vqa_batch(self.model.config, args)

    def set_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.activation_checkpointing_disable()

    def step(self, checkpointing: bool) -> None:
        self.set_checkpointing(checkpointing)
        self.optimizer.zero_grad(set_to_none=True)
        self.model(**self.batch).loss.backward()
        self.optimizer.step()

    def activation_mb(self, checkpointing: bool) -> float:
        """RSS growth from before the forward to after it: what the autograd graph keeps for backward."""
        self.set_checkpointing(checkpointing)
        self.optimizer.zero_grad(set_to_none=True)
        release_free_heap()
        before = rss_mb()
        loss = self.model(**self.batch).loss
        release_free_heap()
        held = rss_mb() - before
        loss.backward()
        return held


def main():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--question-length", type=int, default=20, help="text-stream tokens ([SEP] .. [SEP])")
    parser.add_argument("--num-answers", type=int, default=458, help="answer classes (VQA-RAD in the original: 458)")
    args = parser.parse_args()
    setup(args)
    trainee = Trainee(args)
    describe_machine()
    config = trainee.model.config
    length = 1 + config.num_image_tokens + args.question_length
    print(f"MedViLLForVQA preset={args.preset}, batch {args.batch_size} x {length} joint tokens, "
          f"{sum(p.numel() for p in trainee.model.parameters() if p.requires_grad) / 1e6:.1f}M trainable parameters")

    cases = {name: (lambda enabled=enabled: trainee.step(enabled)) for name, enabled in MODES.items()}
    for run in cases.values():
        run()
    times = time_rounds(cases, args.repeats)
    activations = {name: trainee.activation_mb(enabled) for name, enabled in MODES.items()}
    memory = {name: peak_memory_mb(run) for name, run in cases.items()}

    print(f"\n== VQA training step, {args.repeats} round(s) ==")
    print_table(
        ["mode", "seconds median (min..max)", "samples/s", "activations MB", "step +MB", "peak RSS MB"],
        [
            [
                name,
                seconds(times[name]),
                f"{args.batch_size / statistics.median(times[name]):.2f}",
                f"{activations[name]:.0f}",
                f"{memory[name]['added_mb']:.0f}",
                f"{memory[name]['peak_mb']:.0f}",
            ]
            for name in MODES
        ],
    )
    plain, checkpointed = (activations[name] for name in MODES)
    report_ratio("checkpointing / plain samples/s", ratio(times["no checkpointing"], times["gradient checkpointing"]))
    if plain > 0:
        report_ratio("activation memory cut by checkpointing", 1 - checkpointed / plain, target=0.4)
    else:
        print("activation memory cut by checkpointing: n/a (no measurable activation memory at this size)")
    describe_machine()


if __name__ == "__main__":
    main()
