"""One cached MedViLL decoding step: transformers' stock building blocks against MedViLL's fast paths.

A step feeds two rows per sample (the new token and the [MASK]) through the encoder, with the image block and
the earlier words in the cache. Variants: "stock" (`nn.Linear` products, `DynamicCache`), "+ linear"
(`MedViLLLinear`'s product for 2-3 rows), "+ cache" (`MedViLLDecodingCache`'s in-place append), and "both",
which is what `generate()` uses. Each round, every variant prefills the same images and decodes the same
greedy steps; only the steps are timed (ResNet and prefill are the same code in every variant).

    python benchmarks/bench_decoding_step.py                  # base size, 100 steps, batch 1 and 16
    python benchmarks/bench_decoding_step.py --preset tiny --steps 4 --batch-sizes 1 2 --repeats 1
"""

import contextlib
import statistics
import time

from bench_utils import (
    base_parser, build, describe_machine, never_end_report, print_table, ratio, report_ratio, seconds, setup,
)

import torch  # after bench_utils, which sets the OpenMP wait policy
from torch import nn
from transformers import DynamicCache

from medvlp_hf import MedViLLDecodingCache, MedViLLForReportGeneration
from medvlp_hf.models.medvill.modeling_medvill import MedViLLLinear

VARIANTS = {"stock": (False, False), "+ linear": (True, False), "+ cache": (False, True), "both": (True, True)}


@contextlib.contextmanager
def linear_products(fast: bool):
    """Run MedViLLLinear layers with their own forward (fast) or with plain `nn.Linear.forward`."""
    MedViLLLinear.forward, original = (MedViLLLinear.forward if fast else nn.Linear.forward), MedViLLLinear.forward
    try:
        yield
    finally:
        MedViLLLinear.forward = original


def decode(model, image_features, fast_cache: bool, steps: int):
    """Prefill `[CLS] v [SEP] [MASK]`, then time `steps` greedy steps; returns (seconds, tokens)."""
    batch_size = image_features.shape[0]
    cache = MedViLLDecodingCache() if fast_cache else DynamicCache(config=model.config)
    input_ids = torch.full((batch_size, 1), model.config.sep_token_id)
    attention_mask = torch.ones_like(input_ids)
    output = model(input_ids=input_ids, image_features=image_features, cache=cache, use_cache=True,
                   next_token_prediction=True)
    tokens = []
    start = time.perf_counter()
    for _ in range(steps):
        next_tokens = output.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(next_tokens)
        attention_mask = torch.cat([attention_mask, torch.ones_like(next_tokens)], dim=1)
        output = model(input_ids=next_tokens, attention_mask=attention_mask, cache=cache,
                       use_cache=True, next_token_prediction=True)
    return time.perf_counter() - start, torch.cat(tokens, dim=1)


def bench_batch(model, args, batch_size, generator):
    image_features = model.medvill.get_image_features(
        torch.randn(batch_size, 3, model.config.image_size, model.config.image_size, generator=generator)
    )
    times = {name: [] for name in VARIANTS}
    tokens = {}
    for round_index in range(args.repeats + 1):
        for name, (fast_linear, fast_cache) in VARIANTS.items():
            with linear_products(fast_linear):
                seconds_taken, tokens[name] = decode(model, image_features, fast_cache, args.steps)
            if round_index:
                times[name].append(seconds_taken / args.steps)
    print(f"\n== batch {batch_size}: {args.steps} cached steps from the image block, {args.repeats} round(s) ==")
    print_table(
        ["variant", "ms per step median (min..max)", "ms per sample and step", "speed / stock", "tokens = stock"],
        [
            [name, seconds([1e3 * t for t in times[name]]), f"{1e3 * statistics.median(times[name]) / batch_size:.1f}",
             f"{ratio(times['stock'], times[name]):.2f}", torch.equal(tokens[name], tokens["stock"])]
            for name in VARIANTS
        ],
    )
    print(f"tokens identical in every variant: {all(torch.equal(t, tokens['stock']) for t in tokens.values())}")
    report_ratio(f"batch {batch_size} step speed, both fast paths / stock", ratio(times["stock"], times["both"]))


def main():
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    setup(args)
    model = build(MedViLLForReportGeneration, args).eval()
    never_end_report(model)
    generator = torch.Generator().manual_seed(args.seed)
    describe_machine()
    print(f"MedViLLForReportGeneration preset={args.preset} ({model.num_parameters() / 1e6:.1f}M parameters)")
    with torch.no_grad():
        for batch_size in args.batch_sizes:
            bench_batch(model, args, batch_size, generator)
    describe_machine()


if __name__ == "__main__":
    main()
