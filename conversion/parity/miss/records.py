"""Parity records made with the authors' code: the cases and inputs the converter defines (`parity_cases` /
`parity_inputs` of medvlp_hf/conversion/convert_miss_original_checkpoint.py), turned back into the text their forwards
take (they tokenise it themselves; the harness checks they rebuild exactly the record's ids), run through their
model, and their outputs stored under the names of the medvlp-hf outputs they correspond to.
"""

import torch

import harness_common
import original
from medvlp_hf.conversion import convert_miss_original_checkpoint as converter
from medvlp_hf.conversion import parity

# Which candidates the ranking case scores must not hinge on rounding: the log first-token probabilities at the top-k
# boundary must differ by more than this (a relative difference of 0.1% of the probabilities).
MIN_RANKING_MARGIN = 1e-3


def texts(tokenizer, input_ids, attention_mask):
    """The text of each row (`[CLS] w.. [SEP]` -> `w..`), as their forwards take it."""
    return [tokenizer.decode(row[mask.bool()][1:-1]) for row, mask in zip(input_ids, attention_mask)]


def check_tokenisation(encoded, input_ids, attention_mask, what):
    """Their tokenisation (first token aside, which they overwrite with [ENC]/[DEC]) must be the record's."""
    if not (torch.equal(encoded.input_ids[:, 1:], input_ids[:, 1:]) and torch.equal(encoded.attention_mask, attention_mask)):
        raise AssertionError(f"their code tokenised the {what} as {encoded.input_ids.tolist()}, the record holds "
                             f"{input_ids.tolist()}")


def original_outputs(head, model, config, tensors, tokenizer) -> dict:
    """{case name: {output name: tensor}} of the authors' `model` (MISS_Pretrain for `head="pretraining"`, MISS_VQA
    for `"vqa"`) on the record inputs."""
    cases = converter.parity_cases(head, config)
    inputs = {name: tensors[case.input_key(argument)] for case in cases for argument, name in case.inputs.items()}
    pixel_values = inputs["pixel_values"].float()
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    questions = texts(tokenizer, input_ids, attention_mask)
    if head == "pretraining":
        run = original.pretraining_forward(model, pixel_values, questions, config.alpha,
                                           inputs["negative_image_indices"], inputs["negative_text_indices"])
        check_tokenisation(run["text"], input_ids, attention_mask, "captions")
        losses = {"itc_loss": run["loss_ita"], "itm_loss": run["loss_itm"], "lm_loss": run["loss_lm"]}
        return {"itc_itm_lm": {**losses, "loss": sum(losses.values()), "itm_logits": run["vl_output"],
                               "logits": run["decoder_output"].logits, "logits_per_image": run["sim_i2t"],
                               "logits_per_text": run["sim_t2i"]}}
    labels = inputs["answer_labels"]
    answer_ids, answer_mask = labels.clamp(min=0), (labels != -100).index_fill(1, torch.tensor([0]), True).long()
    training = original.vqa_training_forward(model, pixel_values, questions, texts(tokenizer, answer_ids, answer_mask))
    check_tokenisation(training["question"], input_ids, attention_mask, "questions")
    check_tokenisation(training["answer"], answer_ids, answer_mask, "answers")
    _, question, generated = original.vqa_generate(model, pixel_values, questions)
    check_tokenisation(question, input_ids, attention_mask, "questions")
    candidates = texts(tokenizer, inputs["candidate_ids"], inputs["candidate_mask"])
    chosen, question, ranking, answer = original.vqa_rank(model, pixel_values, questions, candidates,
                                                          converter.PARITY_RANK_K)
    check_tokenisation(question, input_ids, attention_mask, "questions")
    check_tokenisation(answer, inputs["candidate_ids"], inputs["candidate_mask"], "candidate answers")
    check_ranking_margin(ranking["prob_first_token"], converter.PARITY_RANK_K)
    top_k = ranking["topk_ids"]
    scores = torch.full((len(questions), len(candidates)), float("-inf"))
    scores.scatter_(1, top_k, ranking["log_probs_sum"].view(len(questions), -1))
    return {"answer_loss": {"loss": training["loss"], "logits": training["answer_output"].logits},
            "beam_search": {"sequences": generated.sequences, "sequences_scores": generated.sequences_scores},
            "answer_ranking": {"scores": scores, "top_k_indices": top_k, "answer_indices": chosen}}


def check_ranking_margin(first_token_probabilities, k):
    if first_token_probabilities.shape[1] <= k:
        return
    top = first_token_probabilities.double().topk(k + 1, dim=1).values.log()
    margin = float((top[:, k - 1] - top[:, k]).min())
    if margin <= MIN_RANKING_MARGIN:
        raise AssertionError(f"the k-th and (k+1)-th candidates are {margin:.2g} apart in log first-token probability: "
                             "which one is ranked depends on rounding; choose another input seed")


def build_record(head, architecture, config, outputs, tensors, reference) -> parity.ParityRecord:
    """The record of `outputs` (from `original_outputs`) on `tensors`, reduced as the cases say."""
    expected = {}
    for case in converter.parity_cases(head, config):
        for name, spec in case.outputs.items():
            for reduction in spec["reduce"]:
                expected[f"expected.{case.name}.{name}.{reduction}"] = parity.reduce(outputs[case.name][name], reduction)
    return parity.ParityRecord("miss", architecture, converter.parity_cases(head, config), {**tensors, **expected},
                               reference, config=converter.parity_config_fields(head, config))


def reference_provenance(producer, checkpoint_sha256):
    """Where a record's expected outputs come from: their repository and commit, this harness, the environment."""
    return harness_common.reference_provenance(converter.ORIGINAL_REPOSITORY, converter.ORIGINAL_COMMIT, producer,
                                               ("timm", "torchvision"), checkpoint_sha256)
