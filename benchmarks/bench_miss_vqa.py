"""MISS VQA generation speed: `generate()` with the KV cache against the same model decoding without it (what the
released code does under current transformers: the whole decoder re-runs at every step), and MISS against
transformers' own `BlipForQuestionAnswering` built with the same geometry and weights (eager attention) at batch 1
and a batch of 16.

Random weights with a fixed seed; the [SEP] logit is pushed down so every answer runs the full `--new-tokens` (a
random model would stop anywhere). Both models answer with the released settings, beam 3 and 9 new tokens after
[DEC] (`max_length=10`), and every time includes the image tower and the question encoder. The default geometry is
base widths (ViT-B/16 at 224 px, BERT-base) with 4 layers per stack, which a CPU runs in minutes; `--layers 12` is
the released depth, `--image-size 480` its VQA resolution.

    python benchmarks/bench_miss_vqa.py                                  # base widths, 4 layers, 224 px
    python benchmarks/bench_miss_vqa.py --layers 12 --image-size 480     # the released VQA geometry
    python benchmarks/bench_miss_vqa.py --preset tiny --layers 2 --new-tokens 3 --batch-size 3 --repeats 1
"""

import argparse
import statistics

from bench_utils import base_parser, describe_machine, print_table, ratio, report_ratio, seconds, setup, time_rounds

import torch  # after bench_utils, which sets the OpenMP wait policy
from transformers import BlipConfig, BlipForQuestionAnswering

from medvlp_hf import MISSConfig, MISSForVQA

BLIP_VISION_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                      "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout", "initializer_range")
BLIP_TEXT_FIELDS = ("vocab_size", "hidden_size", "encoder_hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps",
                    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range")


def build_miss(args) -> MISSForVQA:
    """MISSForVQA of the chosen geometry that attends the question's padding when answering, as the released inference
    (and BLIP's `generate`) does, and never ends an answer early."""
    vision = {"num_hidden_layers": args.layers}
    if args.image_size:
        vision["image_size"] = args.image_size
    config = MISSConfig.from_preset(
        args.preset, vision_config=vision, text_config={"num_hidden_layers": args.layers},
        vqa_generation_attends_question_padding=True,
    )
    torch.manual_seed(args.seed)
    model = MISSForVQA(config).eval()
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[config.sep_token_id] = -1e4
    return model


def blip_twin(model: MISSForVQA) -> BlipForQuestionAnswering:
    """transformers' BlipForQuestionAnswering with MISS's geometry and MISS's weights: the module names are BLIP's, so
    the state dict loads as it is (strictly: no weight missing or left over)."""
    config = model.config
    blip_config = BlipConfig(
        vision_config={name: getattr(config.vision_config, name) for name in BLIP_VISION_FIELDS},
        text_config={
            **{name: getattr(config.text_config, name) for name in BLIP_TEXT_FIELDS},
            "pad_token_id": config.pad_token_id,
            "bos_token_id": config.bos_token_id,
            "sep_token_id": config.sep_token_id,
        },
    )
    blip = BlipForQuestionAnswering(blip_config).eval()
    blip.load_state_dict(model.state_dict(), strict=True)
    return blip


def questions(config, batch_size, generator, first_token):
    """`first w_1..w_n [SEP]` with 3 to 12 random words, right-padded to the longest (on the CPU, as a processor
    returns them)."""
    rows = [
        [first_token] + torch.randint(1000, 2000, (3 + (i * 5) % 10,), generator=generator).tolist()
        + [config.sep_token_id]
        for i in range(batch_size)
    ]
    width = max(map(len, rows))
    input_ids = torch.tensor([row + [config.pad_token_id] * (width - len(row)) for row in rows])
    return input_ids, (input_ids != config.pad_token_id).long()


def pixels(config, batch_size, generator):
    size = config.vision_config.image_size
    return torch.randn(batch_size, 3, size, size, generator=generator)


def answer(model, inputs, args, **options):
    """The answers (B, 1 + new tokens) on the CPU, after the device has finished (the copy waits for it)."""
    inputs = {name: value.to(model.device) for name, value in inputs.items()}
    return model.generate(**inputs, num_beams=args.num_beams, max_new_tokens=args.new_tokens, do_sample=False,
                          **options).cpu()


def bench_cache(model, args, generator):
    config = model.config
    input_ids, attention_mask = questions(config, 1, generator, config.enc_token_id)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixels(config, 1, generator)}
    outputs = {}
    cases = {
        "uncached": lambda: outputs.__setitem__("uncached", answer(model, inputs, args, use_cache=False)),
        "cached": lambda: outputs.__setitem__("cached", answer(model, inputs, args)),
    }
    for run in cases.values():
        run()
    times = time_rounds(cases, args.repeats)
    print(f"\n== KV cache: batch 1, beam {args.num_beams}, {args.new_tokens} new tokens, {args.repeats} round(s) ==")
    print_table(
        ["case", "seconds median (min..max)"],
        [["generate(use_cache=False): the decoder re-runs every step", seconds(times["uncached"])],
         ["generate() with the KV cache", seconds(times["cached"])]],
    )
    print(f"new tokens per run: {outputs['cached'].shape[1] - 1}")
    print(f"cached and uncached tokens identical: {torch.equal(outputs['cached'], outputs['uncached'])}")
    report_ratio("cached / uncached speedup", ratio(times["uncached"], times["cached"]))


def bench_blip(model, blip, args, generator):
    """Both models answer the same [ENC]-first questions; "first token only" runs (one new token) split a run into
    the per-sample cost of the image tower, the question encoder and the prefill, and the cost of each further token."""
    config = model.config
    rows, identical, speedups = [], {}, {}
    for batch_size in (1, args.batch_size):
        input_ids, attention_mask = questions(config, batch_size, generator, config.enc_token_id)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "pixel_values": pixels(config, batch_size, generator)}
        outputs = {}

        def case(name, answerer, new_tokens):
            run_args = argparse.Namespace(**{**vars(args), "new_tokens": new_tokens})
            return lambda: outputs.__setitem__((name, new_tokens), answer(answerer, inputs, run_args))

        cases = {(name, tokens): case(name, answerer, tokens)
                 for tokens in (1, args.new_tokens) for name, answerer in (("MISS", model), ("BLIP", blip))}
        for run in cases.values():
            run()
        times = time_rounds(cases, args.repeats)
        per_sample = {key: statistics.median(values) / batch_size for key, values in times.items()}
        identical[batch_size] = torch.equal(outputs["MISS", args.new_tokens], outputs["BLIP", args.new_tokens])
        speedups[batch_size] = ratio(times["BLIP", args.new_tokens], times["MISS", args.new_tokens])
        for name in ("MISS", "BLIP"):
            first, full = per_sample[name, 1], per_sample[name, args.new_tokens]
            rows.append([f"{name}, batch {batch_size}", seconds(times[name, args.new_tokens]), f"{full:.3f}",
                         f"{1 / full:.2f}", f"{first:.3f}", f"{1e3 * (full - first) / max(args.new_tokens - 1, 1):.1f}"])
        if batch_size > 1:
            cls_first = inputs | {"input_ids": input_ids.masked_fill(input_ids == config.enc_token_id,
                                                                      config.cls_token_id)}
            differing = (answer(blip, cls_first, args) != outputs["MISS", args.new_tokens]).any(-1).sum().item()
    print(f"\n== MISS (SDPA, cache) vs transformers' BlipForQuestionAnswering (eager, cache), same weights: beam "
          f"{args.num_beams}, {args.new_tokens} new tokens, {args.repeats} round(s) ==")
    print_table(["case", "seconds median (min..max)", "s / sample", "samples/s", "first token s / sample",
                 "ms / sample per further token"], rows)
    for batch_size in (1, args.batch_size):
        print(f"batch {batch_size}: identical answers: {identical[batch_size]}")
    print(f"questions with [CLS] first (BlipProcessor's layout) instead of [ENC]: {differing} of {args.batch_size} "
          "BLIP answers differ from MISS's (MISS writes [ENC] over the first token as the original does; BLIP's "
          "generate encodes the ids as given)")
    for batch_size in (1, args.batch_size):
        report_ratio(f"batch {batch_size} per-sample throughput, MISS / BLIP", speedups[batch_size], target=1.0)


def main():
    parser = base_parser(__doc__.split("\n\n")[0], model="MISS")
    parser.add_argument("--layers", type=int, default=4, help="layers of the ViT and of each text stack (released: 12)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the preset's (released VQA: 480)")
    parser.add_argument("--new-tokens", type=int, default=9, help="answer tokens after [DEC] (released: 9)")
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="e.g. cuda (the inputs start on the CPU, as a batch does)")
    args = parser.parse_args()
    setup(args)
    model = build_miss(args)
    blip = blip_twin(model).to(args.device)
    model.to(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    describe_machine()
    vision, text = model.config.vision_config, model.config.text_config
    print(f"MISSForVQA preset={args.preset}: ViT {vision.hidden_size} wide x {vision.num_hidden_layers} layers at "
          f"{vision.image_size} px, text stacks {text.hidden_size} wide x {text.num_hidden_layers} layers "
          f"({model.num_parameters() / 1e6:.1f}M parameters), attention={model.config._attn_implementation}; "
          f"BLIP attention={blip.config._attn_implementation}; device {args.device}")
    with torch.no_grad():
        bench_cache(model, args, generator)
        bench_blip(model, blip, args, generator)
    describe_machine()


if __name__ == "__main__":
    main()
