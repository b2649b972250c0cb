"""Parity records made with the authors' code: the cases and inputs the converter defines (`parity_cases` /
`parity_inputs` of medvlp_hf/conversion/convert_m2i2_original_checkpoint.py), turned into the text their scripts
tokenise (with their tokenizer, checked to rebuild the record's ids) and the draws their forwards make (injected), run
through their model, and their outputs put in medvlp-hf's layout.
"""

import torch

import original
from medvlp_hf.conversion import convert_m2i2_original_checkpoint as converter
from medvlp_hf.conversion import parity


def words(vocabulary, ids):
    """The text of `[CLS] w.. [SEP]? [PAD]..` ids: the words, space-separated (special tokens dropped)."""
    return " ".join(vocabulary[i] for i in ids.tolist() if not vocabulary[i].startswith("["))


def original_outputs(head, model, inputs, vocabulary, config) -> dict:
    """{case name: {output name: tensor in medvlp-hf layout}} of their `head` model on the record inputs (argument
    names as the cases give them)."""
    pixel_values = inputs["pixel_values"].float()
    texts = [words(vocabulary, row) for row in inputs["input_ids"]]
    if head == "pretraining":
        return {"itc_itm_mlm_mim": _pretraining_outputs(model, inputs, pixel_values, texts, config)}
    candidates = [words(vocabulary, row) + "[SEP]" for row in inputs["answer_input_ids"]]
    outputs = {}
    for case in converter.parity_cases(head, config):
        if case.method == "rank_answers":
            k = min(case.kwargs["k"], len(candidates))  # their topk refuses k > candidates; the model takes all
            chosen, ranked, question, answer = original.vqa_rank(model, pixel_values, texts, candidates, k)
            check_ids(question, inputs["input_ids"], inputs["attention_mask"], "questions")
            check_ids(answer, inputs["answer_input_ids"], inputs["answer_attention_mask"], "candidate answers")
            outputs[case.name] = _ranking_outputs(chosen, ranked, len(candidates))
        else:
            labels = inputs["labels"]
            answers = [words(vocabulary, row[row != -100]) + "[SEP]" for row in labels]
            captured = original.vqa_training_forward(model, pixel_values, texts, answers, inputs["answer_weights"],
                                                     case.kwargs["alpha"])
            check_ids(captured["quesiton"], inputs["input_ids"], inputs["attention_mask"], "questions")
            answer = captured["answer"]
            expected_labels = answer.input_ids.masked_fill(answer.attention_mask == 0, -100).index_fill(
                1, torch.tensor([0]), -100)
            if not torch.equal(expected_labels, labels):
                raise AssertionError(f"their tokenizer built the answers {answer.input_ids.tolist()}, the record holds "
                                     f"the labels {labels.tolist()}")
            outputs[case.name] = {"loss": captured["loss"], "logits": captured["answer_output"].logits}
    return outputs


def _pretraining_outputs(model, inputs, pixel_values, captions, config):
    labels, masked_ids = inputs["labels"], inputs["mlm_input_ids"]
    bernoulli, randint = original.mlm_draws(labels != -100, masked_ids, config.mask_token_id)
    draws = {"rand": [inputs["patch_noise"], inputs["momentum_patch_noise"], inputs["mim_patch_noise"]],
             "bernoulli": bernoulli, "randint": randint,
             "multinomial": [*inputs["negative_image_indices"], *inputs["negative_text_indices"]]}
    captured = original.pretraining_forward(model, pixel_values, captions, config.alpha, draws)
    check_ids(captured["text"], inputs["input_ids"], inputs["attention_mask"], "captions")
    if not torch.equal(captured["input_ids"], masked_ids) or not torch.equal(captured["labels"], labels):
        raise AssertionError(f"their MLM masking built {captured['input_ids'].tolist()} / "
                             f"{captured['labels'].tolist()}, the record holds {masked_ids.tolist()} / "
                             f"{labels.tolist()}")
    mim = captured["vit_calls"][2]  # online ViT (ITC/ITM/MLM), momentum ViT, then the MIM call
    losses = {"itc_loss": captured["loss_ita"], "itm_loss": captured["loss_itm"], "mlm_loss": captured["loss_mlm"],
              "mim_loss": captured["loss_mim"]}
    return {"loss": sum(losses.values()), **losses, "itm_logits": captured["vl_output"],
            "mim_patch_mask": mim["mask"], "logits": captured["mlm_output"].logits, "mim_predictions": mim["pred"],
            "logits_per_image": captured["sim_i2t"], "logits_per_text": captured["sim_t2i"]}


def _ranking_outputs(chosen, ranked, candidates):
    """`rank_answers`' outputs from `rank_answer`'s locals: the candidates in first-token order are the re-ranked
    `topk_ids` put back by `rerank_id`; `log_probs_sum` are their scores (-inf for the others); `topk_probs` their
    probabilities (0 for the others)."""
    reranked, order = ranked["topk_ids"], ranked["rerank_id"]
    first_token_order = torch.empty_like(reranked).scatter_(1, order, reranked)
    scores = torch.full((len(reranked), candidates), float("-inf"))
    scores = scores.scatter(1, first_token_order, ranked["log_probs_sum"])
    probabilities = torch.zeros(len(reranked), candidates).scatter(1, reranked, ranked["topk_probs"])
    return {"scores": scores, "probabilities": probabilities, "top_k_indices": first_token_order,
            "answer_indices": chosen}


def check_ids(encoding, input_ids, attention_mask, what):
    """Their tokenizer must have built exactly the record's ids (else the comparison is meaningless)."""
    if not torch.equal(encoding.input_ids, input_ids) or not torch.equal(encoding.attention_mask, attention_mask):
        raise AssertionError(f"their tokenizer built the {what} {encoding.input_ids.tolist()}, the record holds "
                             f"{input_ids.tolist()}")


def case_inputs(head, config, tensors):
    """{keyword argument: tensor} of every case of the record (cases share tensors)."""
    return {argument: tensors[case.input_key(argument)] for case in converter.parity_cases(head, config)
            for argument in case.inputs}


def build_record(head, architecture, config, outputs, tensors, reference) -> parity.ParityRecord:
    """The record of `outputs` (from `original_outputs`) on `tensors`, reduced as the cases say."""
    expected = {}
    for case in converter.parity_cases(head, config):
        for name, spec in case.outputs.items():
            for reduction in spec["reduce"]:
                value = parity.reduce(outputs[case.name][name], reduction)
                expected[f"expected.{case.name}.{name}.{reduction}"] = value
    return parity.ParityRecord("m2i2", architecture, converter.parity_cases(head, config), {**tensors, **expected},
                               reference, config=converter.parity_config_fields(head, config))
