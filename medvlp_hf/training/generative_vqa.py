"""VQA scored on answer texts, as MISS evaluates it: every question answered by `generate()` (MISS) or by ranking a
candidate list (M2I2, `answer_ranking`), the answer scored as an exact match after the zoo's answer normalisation
(closed / open / overall, and on VQA-RAD the same over its freeform test questions) and with MISS's yes/no accuracy
(`ACC.py`), matched to its question by id; next to the majority-answer baseline."""

import numpy as np

from ..metrics.vqa import normalize_answer_types, vqa_accuracy
from ..metrics.vqa_normalization import normalize_vqa_answer
from .vqa import freeform_rows, majority_by_type, with_freeform

IGNORE_INDEX = -100
# What a generative VQA model's `generate()` reads from a batch: the question and its image.
GENERATION_INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values")


def generation_kwargs(vqa_args) -> dict:
    """--num_beams / --max_new_tokens where given; otherwise the model's own generation config decides (MISS: the
    released beam search, 3 beams, at most 10 tokens)."""
    chosen = {"num_beams": vqa_args.num_beams, "max_new_tokens": vqa_args.max_new_tokens}
    return {name: value for name, value in chosen.items() if value is not None}


def majority_answer_texts(train_dataset) -> dict:
    """{answer type: the most common training answer of that type}: the answers of a model that ignores the image
    and reads only whether the question is closed or open. Answers are counted by their normalised form and given as
    first written in the data (normalised as the metric does); ties go to the answer seen first. A type without
    training questions gets the most common answer of any type; a training set without answers gives {} (no
    baseline)."""
    written = {}

    def key(answer):
        normalised = normalize_vqa_answer(answer)
        written.setdefault(normalised, str(answer))
        return normalised

    majority = majority_by_type(train_dataset, key, lambda counts: counts.most_common(1)[0][0])
    return {answer_type: written[normalised] for answer_type, normalised in majority.items()}


def generated_answer_decoder(tokenizer):
    """predictions -> answers of `generate()`: ids (B, T), -100-padded across batches by Trainer, decoded without
    special tokens."""

    def decode(generated) -> list[str]:
        ids = np.where(np.asarray(generated) == IGNORE_INDEX, tokenizer.pad_token_id, np.asarray(generated))
        return [answer.strip() for answer in tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]

    return decode


def _scores(predictions: dict, columns: dict, rows=None) -> dict:
    """The VQA metrics of {qid: answer} against the split's references, matched by question id; with `rows`, of the
    questions at those positions only."""
    if rows is not None:
        columns = {name: [values[row] for row in rows] for name, values in columns.items()}
        predictions = {qid: predictions[qid] for qid in columns["qid"]}
    result = vqa_accuracy(predictions, columns["answer"], columns["answer_type"], question_ids=columns["qid"])
    return {
        "overall_accuracy": result["accuracy"],
        "closed_accuracy": result["closed_accuracy"],
        "open_accuracy": result["open_accuracy"],
        "closed_count": result["closed_count"],
        "open_count": result["open_count"],
        "yes_no_accuracy": result["yes_no_accuracy"],
        "yes_no_count": result["yes_no_count"],
        "open_recall": result["open_recall"],
    }


def generative_vqa_metrics(dataset, decode, baseline=None):
    """compute_metrics for `dataset` (in order): the answers `decode(predictions)` gives (one string per question, see
    `generated_answer_decoder`, `answer_ranking.ranked_answer_decoder`) are scored against the references by
    question id (`vqa_accuracy`), on VQA-RAD also over its freeform questions (`freeform_*`), and with `baseline`
    ({answer type: answer}, see `majority_answer_texts`) the accuracies of always giving that answer (`baseline_*`)."""
    columns = dataset.select_columns(["qid", "answer", "answer_type"]).to_dict()
    freeform = freeform_rows(dataset)

    def scores(predictions):
        return with_freeform(lambda rows: _scores(predictions, columns, rows), freeform)

    def compute_metrics(prediction):
        answers = decode(prediction.predictions)
        metrics = scores(dict(zip(columns["qid"], answers, strict=True)))
        if baseline:
            types = normalize_answer_types(columns["answer_type"], len(columns["qid"]))
            always = {qid: baseline[answer_type] for qid, answer_type in zip(columns["qid"], types)}
            metrics.update({f"baseline_{name}": value for name, value in scores(always).items()
                            if name.endswith("accuracy")})
        return metrics

    return compute_metrics


def generative_vqa_prediction_rows(decode):
    """One row per question: the reference, the model's answer (`decode(predictions)`), and its score (exact match
    after normalisation)."""

    def rows(output, dataset):
        answers = decode(output.predictions)
        columns = dataset.select_columns(["qid", "question", "answer", "answer_type"]).to_dict()
        for i, prediction in enumerate(answers):
            yield {
                "qid": columns["qid"][i],
                "question": columns["question"][i],
                "answer": columns["answer"][i],
                "answer_type": columns["answer_type"][i],
                "prediction": prediction,
                "score": float(normalize_vqa_answer(prediction) == normalize_vqa_answer(columns["answer"][i])),
            }

    return rows
