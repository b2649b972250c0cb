"""MedViLL report generation speed: the paper's uncached loop against `generate()` with the KV cache,
greedy against beam search, and batch 1 against a left-padded batch.

Random weights with a fixed seed; the [SEP] logit is pushed down so every run decodes exactly
`--new-tokens` tokens (a random model would otherwise stop at arbitrary lengths and the times would not
compare). Every time includes the ResNet, as a user calling `generate(pixel_values=...)` pays it.

    python benchmarks/bench_generation.py                      # base size, 100 tokens, batch 16
    python benchmarks/bench_generation.py --preset tiny --new-tokens 8 --batch-size 4 --repeats 1
"""

import statistics

from bench_utils import (
    base_parser, build, describe_machine, never_end_report, print_table, ratio, report_ratio, seconds, setup,
    time_rounds,
)

import torch  # after bench_utils, which sets the OpenMP wait policy
from medvlp_hf import MedViLLForReportGeneration


def left_padded_prompts(config, batch_size, generator):
    """`[SEP] w_1..w_k` prompts with k = 0..5 random words, left-padded to the longest."""
    prompts = [
        [config.sep_token_id] + torch.randint(1000, 2000, (i % 6,), generator=generator).tolist()
        for i in range(batch_size)
    ]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[config.pad_token_id] * (width - len(p)) + p for p in prompts])
    attention_mask = (input_ids != config.pad_token_id).long()
    return prompts, input_ids, attention_mask


def bench_cache(model, args, generator):
    size = model.config.image_size
    pixel_values = torch.randn(1, 3, size, size, generator=generator)
    outputs = {}

    def decode(name, **options):
        def run(new_tokens=args.new_tokens):
            if name == "uncached":
                outputs[name] = model.generate_without_cache(pixel_values, max_new_tokens=new_tokens)
            else:
                outputs[name] = model.generate(
                    pixel_values=pixel_values, max_new_tokens=new_tokens, do_sample=False, **options
                )

        return run

    cases = {
        "uncached": decode("uncached"),
        "greedy": decode("greedy"),
        f"beam {args.num_beams}": decode("beam", num_beams=args.num_beams),
    }
    for run in cases.values():
        run(new_tokens=2)
    times = time_rounds(cases, args.repeats)
    labels = {
        "uncached": "uncached loop (re-encode every step)",
        "greedy": "generate() greedy + KV cache",
        f"beam {args.num_beams}": f"generate() beam {args.num_beams} + KV cache",
    }
    print(f"\n== KV cache: batch 1, {args.new_tokens} new tokens, {args.repeats} round(s) ==")
    print_table(
        ["case", "seconds median (min..max)", "tokens/s"],
        [[labels[n], seconds(t), f"{args.new_tokens / statistics.median(t):.1f}"] for n, t in times.items()],
    )
    identical = torch.equal(outputs["uncached"], outputs["greedy"])
    lengths = {name: output.shape[1] - 1 for name, output in outputs.items()}
    print(f"new tokens per run: {lengths}")
    print(f"identical tokens: {identical}")
    report_ratio("cached / uncached speedup", ratio(times["uncached"], times["greedy"]), target=10)
    report_ratio(f"beam {args.num_beams} / greedy time", ratio(times[f"beam {args.num_beams}"], times["greedy"]))


def bench_batching(model, args, generator):
    size = model.config.image_size
    prompts, input_ids, attention_mask = left_padded_prompts(model.config, args.batch_size, generator)
    pixel_values = torch.randn(args.batch_size, 3, size, size, generator=generator)
    singles = range(min(args.single_samples, args.batch_size))
    outputs = {}

    def one_by_one(new_tokens):
        def run():
            outputs["single", new_tokens] = [
                model.generate(
                    input_ids=torch.tensor([prompts[i]]),
                    pixel_values=pixel_values[i : i + 1],
                    max_new_tokens=new_tokens,
                    do_sample=False,
                )[0]
                for i in singles
            ]

        return run

    def batched(new_tokens):
        def run():
            outputs["batch", new_tokens] = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                max_new_tokens=new_tokens,
                do_sample=False,
            )

        return run

    cases = {
        "single, 1 token": one_by_one(1),
        "batch, 1 token": batched(1),
        "single": one_by_one(args.new_tokens),
        "batch": batched(args.new_tokens),
    }
    cases["single, 1 token"]()
    cases["batch, 1 token"]()
    times = time_rounds(cases, args.repeats)
    per_sample = {
        name: [t / (len(singles) if name.startswith("single") else args.batch_size) for t in values]
        for name, values in times.items()
    }
    labels = {
        "single, 1 token": f"batch 1 x {len(singles)} prompts, first token only",
        "batch, 1 token": f"batch {args.batch_size}, first token only",
        "single": f"batch 1 x {len(singles)} prompts, {args.new_tokens} tokens",
        "batch": f"batch {args.batch_size} left-padded, {args.new_tokens} tokens",
    }
    print(f"\n== Batching: left-padded prompts, {args.repeats} round(s) ==")
    print_table(
        ["case", "seconds median (min..max)", "seconds / sample", "samples/s"],
        [
            [labels[name], seconds(times[name]), f"{statistics.median(per_sample[name]):.3f}",
             f"{1 / statistics.median(per_sample[name]):.3f}"]
            for name in cases
        ],
    )
    steps = args.new_tokens - 1
    for kind, label in (("single", "batch 1"), ("batch", f"batch {args.batch_size}")):
        first = statistics.median(per_sample[f"{kind}, 1 token"])
        step = (statistics.median(per_sample[kind]) - first) / max(steps, 1)
        print(f"{label}, per sample: {first:.3f} s to the first token (ResNet + prefill), then {1e3 * step:.1f} ms "
              "per token")
    matches = [
        outputs["batch", args.new_tokens][i, -len(single) :].tolist() == single.tolist()
        for i, single in zip(singles, outputs["single", args.new_tokens])
    ]
    print(f"left-padded batch rows equal one-by-one decoding: {all(matches)}")
    report_ratio(
        f"batch {args.batch_size} / batch 1 per-sample throughput",
        ratio(per_sample["single"], per_sample["batch"]),
        target=6,
    )
    report_ratio(
        "  ceiling if decoding steps were free (batch 1 total / batch first-token cost)",
        ratio(per_sample["single"], per_sample["batch, 1 token"]),
    )


def main():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--single-samples", type=int, default=2, help="prompts decoded one by one for batch 1")
    parser.add_argument("--num-beams", type=int, default=3)
    args = parser.parse_args()
    setup(args)
    model = build(MedViLLForReportGeneration, args).eval()
    never_end_report(model)
    generator = torch.Generator().manual_seed(args.seed)
    describe_machine()
    print(f"MedViLLForReportGeneration preset={args.preset} ({model.num_parameters() / 1e6:.1f}M parameters), "
          f"attention={model.config._attn_implementation}")
    with torch.no_grad():
        bench_cache(model, args, generator)
        bench_batching(model, args, generator)
    describe_machine()


if __name__ == "__main__":
    main()
