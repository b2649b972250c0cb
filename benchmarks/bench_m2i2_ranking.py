"""M2I2 closed-set VQA answer ranking: `M2I2ForVQA.rank_answers`, which encodes each question once and shares its states
across its k candidates (the decoder's cross-attention projects them to keys and values once per question), against
two references written here from the model's public pieces: the naive port, which re-encodes the question (ViT and
text encoder) for every candidate, as calling the model on each (question, candidate) pair does; and the released
code's way (ALBEF's `rank_answer`), which encodes the question once but copies its states k times, so the decoder
projects them once per candidate. Same scores, throughput and peak memory, for k = 16, 64, 128 at batch 16.

Random weights with a fixed seed. Every case ranks the same way (the first-token pass picks the k candidates, which
are scored in full, teacher-forced) over the same 458 candidates (VQA-RAD's answer list in the released code: 1-5
random words, `[CLS] a_1..a_n [SEP]`); questions are `[CLS] q_1..q_n` with 4-15 random words, right-padded. Times
include the ViT. The default geometry is hidden 384 with 6 ViT and 6 text layers (a 3-layer answer decoder) at 224 px,
where the naive port's k = 128 run (2,048 images through the ViT) takes about a minute on two cores; `--geometry
base` is the released widths at the released VQA resolution (384 px). One warm-up at the smallest k, then per k one
timed round (the default; the re-encoding ratios are far from 1) and one run per case for its peak memory.

    python benchmarks/bench_m2i2_ranking.py                        # cpu geometry, batch 16, k = 16, 64, 128
    python benchmarks/bench_m2i2_ranking.py --geometry base        # the released VQA geometry (slow on a CPU)
    python benchmarks/bench_m2i2_ranking.py --ks 64 --repeats 5 --references tiled   # shared vs tiled alone
    python benchmarks/bench_m2i2_ranking.py --geometry tiny --batch-size 3 --ks 2 5 --candidates 6
"""

import statistics

from bench_utils import (
    base_parser, describe_machine, m2i2_config, peak_memory_mb, print_table, ratio, report_ratio, seconds, setup,
    time_rounds,
)

import torch  # after bench_utils, which sets the OpenMP wait policy

from medvlp_hf import M2I2ForVQA

CASES = {
    "shared": "rank_answers (states shared)",
    "tiled": "released (states copied per candidate)",
    "re-encoded": "naive (question re-encoded per candidate)",
}


def texts(config, lengths, generator, end=None):
    """`[CLS] w_1..w_n [end]` with the given numbers of random words, right-padded to the longest: (ids, mask)."""
    closing = [] if end is None else [end]
    rows = [[config.bos_token_id] + torch.randint(1000, 2000, (n,), generator=generator).tolist() + closing
            for n in lengths]
    width = max(map(len, rows))
    input_ids = torch.tensor([row + [config.pad_token_id] * (width - len(row)) for row in rows])
    return input_ids, (input_ids != config.pad_token_id).long()


def question_batch(config, batch_size, generator):
    input_ids, attention_mask = texts(config, [4 + (i * 7) % 12 for i in range(batch_size)], generator)
    size = config.vision_config.image_size
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "pixel_values": torch.randn(batch_size, 3, size, size, generator=generator)}


def candidate_answers(config, count, generator):
    return texts(config, [1 + (i * 3) % 5 for i in range(count)], generator, end=config.sep_token_id)


def rank_with_copied_states(model, questions, answer_ids, answer_mask, k, re_encode):
    """ALBEF's ranking with every candidate row reading its own copy of its question's states: the first-token pass
    picks the top k candidates of each question, then each is scored by its teacher-forced log-likelihood. The copies
    are re-encoded from the question and image (`re_encode`) or the once-encoded states repeated k times.
    Returns (top-k candidate indices (B, k), their scores (B, k))."""
    input_ids, attention_mask, pixels = questions["input_ids"], questions["attention_mask"], questions["pixel_values"]
    batch_size = input_ids.shape[0]
    states = model.encode_question(input_ids, pixels, attention_mask).last_hidden_state
    start = torch.full((batch_size, 1), model.config.bos_token_id)
    _, first_logits = model.text_decoder(start, None, states, attention_mask)
    top_k = first_logits[:, 0].float().log_softmax(-1)[:, answer_ids[:, 1]].topk(k, dim=1).indices
    rows = torch.arange(batch_size).repeat_interleave(k)
    if re_encode:
        states = model.encode_question(input_ids[rows], pixels[rows], attention_mask[rows]).last_hidden_state
    else:
        states = states[rows]
    chosen_ids, chosen_mask = answer_ids[top_k.flatten()], answer_mask[top_k.flatten()]
    _, logits = model.text_decoder(chosen_ids, chosen_mask, states, attention_mask[rows])
    log_probs = logits[:, :-1].float().log_softmax(-1).gather(-1, chosen_ids[:, 1:, None])[..., 0]
    return top_k, (log_probs * chosen_mask[:, 1:]).sum(-1).view(batch_size, k)


def ranking_cases(model, questions, answer_ids, answer_mask, k, outputs) -> dict:
    """The three ways to rank at this k, each a function that leaves (top-k indices, their scores) in `outputs`."""

    def shared():
        ranking = model.rank_answers(questions["input_ids"], questions["pixel_values"], answer_ids,
                                     questions["attention_mask"], answer_mask, k=k)
        outputs["shared"] = ranking.top_k_indices, ranking.scores.gather(1, ranking.top_k_indices)

    def copied(name, re_encode):
        return lambda: outputs.__setitem__(
            name, rank_with_copied_states(model, questions, answer_ids, answer_mask, k, re_encode)
        )

    return {"shared": shared, "tiled": copied("tiled", False), "re-encoded": copied("re-encoded", True)}


def bench_k(model, questions, answer_ids, answer_mask, k, args) -> None:
    """Times `rank_answers` and the chosen references at one k round by round, then measures each one's peak memory;
    prints the table, the equality checks against `rank_answers` and the ratios."""
    outputs = {}
    cases = {name: run for name, run in ranking_cases(model, questions, answer_ids, answer_mask, k, outputs).items()
             if name in args.cases}
    times = time_rounds(cases, args.repeats)
    memory = {name: peak_memory_mb(run) for name, run in cases.items()}
    batch_size = questions["input_ids"].shape[0]
    print(f"\n== k={k}: {batch_size * k} candidate rows, {args.repeats} round(s) ==")
    print_table(
        ["case", "seconds median (min..max)", "questions/s", "ranking +MB", "peak RSS MB"],
        [[f"{name}: {CASES[name]}", seconds(times[name]), f"{batch_size / statistics.median(times[name]):.2f}",
          f"{memory[name]['added_mb']:.0f}", f"{memory[name]['peak_mb']:.0f}"] for name in cases],
    )
    top_k, scores = outputs["shared"]
    for name in [name for name in ("tiled", "re-encoded") if name in cases]:
        reference_top_k, reference_scores = outputs[name]
        same_candidates = torch.equal(top_k, reference_top_k)
        difference = (scores - reference_scores).abs().max().item() if same_candidates else float("inf")
        same_answers = same_candidates and torch.equal(scores.argmax(-1), reference_scores.argmax(-1))
        print(f"k={k}: shared vs {name}: same top-k candidates: {same_candidates}, same answers: {same_answers}, "
              f"scores equal within 1e-4: {difference <= 1e-4} (max |difference| {difference:.1e})")
    references = [name for name in ("re-encoded", "tiled") if name in cases]
    for name in references:
        report_ratio(f"k={k} throughput, shared / {name}", ratio(times[name], times["shared"]))
    for name in references if memory["shared"]["added_mb"] > 0 else []:
        report_ratio(f"k={k} ranking +MB, {name} / shared", memory[name]["added_mb"] / memory["shared"]["added_mb"])


def main():
    parser = base_parser(__doc__.split("\n\n")[0], model="M2I2", geometries=("cpu", "base", "tiny"))
    parser.set_defaults(repeats=1)
    parser.add_argument("--image-size", type=int, default=None, help="default: 224 (cpu), 384 (base, released VQA)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ks", type=int, nargs="+", default=[16, 64, 128], help="candidates scored in full")
    parser.add_argument("--candidates", type=int, default=458, help="answer list size (VQA-RAD, released: 458)")
    parser.add_argument("--references", nargs="*", default=["tiled", "re-encoded"], choices=["tiled", "re-encoded"],
                        help="the references rank_answers is compared with")
    args = parser.parse_args()
    if max(args.ks) > args.candidates:
        parser.error(f"k={max(args.ks)} is more than the {args.candidates} candidates; pass a larger --candidates.")
    setup(args)
    args.cases = ["shared", *args.references]
    image_size = args.image_size or {"cpu": 224, "base": 384}.get(args.geometry)
    config = m2i2_config(args.geometry, vision_config={"image_size": image_size} if image_size else None)
    torch.manual_seed(args.seed)
    model = M2I2ForVQA(config).eval()
    generator = torch.Generator().manual_seed(args.seed)
    questions = question_batch(config, args.batch_size, generator)
    answer_ids, answer_mask = candidate_answers(config, args.candidates, generator)
    describe_machine()
    vision, text = config.vision_config, config.text_config
    print(f"M2I2ForVQA geometry={args.geometry}: ViT {vision.hidden_size} wide x {vision.num_hidden_layers} layers at "
          f"{vision.image_size} px, text encoder {text.hidden_size} wide x {text.num_hidden_layers} layers, answer "
          f"decoder {text.num_fusion_layers} layers ({model.num_parameters() / 1e6:.1f}M parameters); batch "
          f"{args.batch_size} questions of {questions['input_ids'].shape[1]} tokens, {args.candidates} candidates of "
          f"{answer_ids.shape[1]} tokens")
    with torch.no_grad():
        for name, run in ranking_cases(model, questions, answer_ids, answer_mask, min(args.ks), {}).items():
            if name in args.cases:
                run()
        for k in args.ks:
            bench_k(model, questions, answer_ids, answer_mask, k, args)
    describe_machine()


if __name__ == "__main__":
    main()
