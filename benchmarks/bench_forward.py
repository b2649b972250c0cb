"""MedViLL joint-transformer forward at the 512-token sequence (`[CLS]` + 256 image cells + 255 text-stream
tokens at base size): eager against SDPA attention, the achieved GFLOP/s against this machine's fp32 matmul
rate, and peak memory of one forward. Then the ResNet on its own: contiguous against channels-last input.

The matmul reference is the model's largest product (batch*length x hidden @ hidden x intermediate, the FFN)
timed by `torch.mm` in every round next to the forwards, so load on the shared machine hits both alike.
The transformer figures leave the ResNet out (random grid features are given).

    python benchmarks/bench_forward.py                  # base size, batch 4, s2s mask
    python benchmarks/bench_forward.py --preset tiny --text-length 11 --batch-size 2 --repeats 1
"""

import statistics

from bench_utils import (
    base_parser, build, describe_machine, peak_memory_mb, print_table, ratio, report_ratio, seconds, setup,
    time_rounds,
)

import torch  # after bench_utils, which sets the OpenMP wait policy
from torch.utils.flop_counter import FlopCounterMode
from medvlp_hf import MedViLLModel

IMPLEMENTATIONS = ("eager", "sdpa")
MATMULS_PER_ROUND = 5


def joint_inputs(model, args):
    """Text stream `[SEP] w.. [SEP]` of `--text-length` real tokens and random ResNet grid features."""
    config = model.config
    generator = torch.Generator().manual_seed(args.seed)
    words = torch.randint(1000, 2000, (args.batch_size, args.text_length - 2), generator=generator)
    sep = torch.full((args.batch_size, 1), config.sep_token_id)
    return {
        "input_ids": torch.cat([sep, words, sep], dim=1),
        "attention_mask": torch.ones(args.batch_size, args.text_length, dtype=torch.long),
        "image_features": torch.randn(
            args.batch_size, config.num_image_tokens, config.image_feature_size, generator=generator
        ),
        "attention_mask_type": args.mask_type,
    }


def bench_image_encoder(model, args):
    """The ResNet fed contiguous (NCHW) pixels (the default) against channels-last pixels
    (`config.resnet_channels_last=True`), both through `get_image_features`."""
    size = model.config.image_size
    pixel_values = torch.randn(args.image_batch_size, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    outputs = {}

    def encode(name):
        def run():
            model.config.resnet_channels_last = name == "channels-last"
            outputs[name] = model.get_image_features(pixel_values)

        return run

    cases = {name: encode(name) for name in ("contiguous", "channels-last")}
    for run in cases.values():
        run()
    times = time_rounds(cases, args.repeats)
    print(f"\n== ResNet: batch {args.image_batch_size} x {size}x{size}, {args.repeats} round(s) ==")
    print_table(
        ["input layout", "seconds median (min..max)", "s / image"],
        [[name, seconds(t), f"{statistics.median(t) / args.image_batch_size:.3f}"] for name, t in times.items()],
    )
    reference = outputs["contiguous"]
    difference = ((outputs["channels-last"] - reference).abs().max() / reference.abs().max()).item()
    print(f"max |channels-last - contiguous| / max |features|: {difference:.1e}")
    report_ratio("channels-last / contiguous ResNet speed", ratio(times["contiguous"], times["channels-last"]))


def main():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--text-length", type=int, default=255, help="text-stream tokens ([SEP] .. [SEP])")
    parser.add_argument("--mask-type", default="s2s", choices=["s2s", "bidirectional", "bar"])
    parser.add_argument("--image-batch-size", type=int, default=2, help="images per ResNet call")
    args = parser.parse_args()
    setup(args)

    model = build(MedViLLModel, args).eval()
    inputs = joint_inputs(model, args)
    config = model.config
    length = 1 + config.num_image_tokens + args.text_length
    describe_machine()
    print(f"MedViLLModel preset={args.preset}, batch {args.batch_size} x {length} joint tokens, {args.mask_type} mask")

    outputs = {}

    def forward(implementation):
        def run():
            model.set_attn_implementation(implementation)
            outputs[implementation] = model(**inputs).last_hidden_state

        return run

    rows = args.batch_size * length
    left, right = torch.randn(rows, config.hidden_size), torch.randn(config.hidden_size, config.intermediate_size)

    def matmul():
        for _ in range(MATMULS_PER_ROUND):
            torch.mm(left, right)

    with torch.no_grad():
        model.set_attn_implementation("eager")
        with FlopCounterMode(display=False) as counter:
            model(**inputs)
        forward_flops = counter.get_total_flops()
        flops = {
            "eager": forward_flops,
            "sdpa": forward_flops,
            "matmul": MATMULS_PER_ROUND * 2 * rows * config.hidden_size * config.intermediate_size,
        }
        cases = {**{name: forward(name) for name in IMPLEMENTATIONS}, "matmul": matmul}
        for run in cases.values():
            run()
        times = time_rounds(cases, args.repeats)
        memory = {name: peak_memory_mb(cases[name]) for name in IMPLEMENTATIONS}
    rates = {name: [flops[name] / t / 1e9 for t in values] for name, values in times.items()}

    print(f"\n== Forward: {forward_flops / 1e9:.1f} GFLOP per forward (matmuls, counted by FlopCounterMode), "
          f"{args.repeats} round(s) ==")
    print_table(
        ["attention", "seconds median (min..max)", "GFLOP/s", "% of matmul rate", "peak RSS MB", "forward +MB"],
        [
            [
                name,
                seconds(times[name]),
                f"{statistics.median(rates[name]):.1f}",
                f"{100 * ratio(rates[name], rates['matmul']):.0f}%",
                f"{memory[name]['peak_mb']:.0f}",
                f"{memory[name]['added_mb']:.0f}",
            ]
            for name in IMPLEMENTATIONS
        ],
    )
    print(f"fp32 matmul {rows}x{config.hidden_size} @ {config.hidden_size}x{config.intermediate_size} (the FFN "
          f"product): median {statistics.median(rates['matmul']):.1f} GFLOP/s, best {max(rates['matmul']):.1f}")
    difference = (outputs["eager"] - outputs["sdpa"]).abs().max().item()
    print(f"max |eager - sdpa| of the last hidden state: {difference:.2e}")
    report_ratio("sdpa / eager speed", ratio(times["eager"], times["sdpa"]), target=1.2)
    report_ratio("transformer FLOP rate (sdpa) / matmul rate", ratio(rates["sdpa"], rates["matmul"]), target=0.5)
    if memory["eager"]["added_mb"] > 0:
        report_ratio("sdpa / eager forward memory", memory["sdpa"]["added_mb"] / memory["eager"]["added_mb"])
    with torch.no_grad():
        bench_image_encoder(model, args)
    describe_machine()


if __name__ == "__main__":
    main()
