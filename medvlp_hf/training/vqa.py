"""VQA arguments, and closed-set VQA as MedViLL evaluates it: an answer vocabulary, soft-score targets, and accuracy
of the arg-max answer, split by answer type (closed = yes/no style, open = the rest), on VQA-RAD also over its freeform
test questions. Generative VQA (the model writes its answers) is `generative_vqa`, answer ranking `answer_ranking`."""

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import answer_vocabulary, build_label2id, demo_answers, normalize_answer
from ..metrics.vqa import CLOSED, OPEN, normalize_answer_types, vqa_soft_score

# MEVF's VQA-RAD answer list (train + test answers, 458), which MedViLL's classifier predicts over.
VQA_RAD_ANSWER_LIST = "answer_all_list.json"
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")
# VQA-RAD's test questions as the clinicians wrote them (phrase_type 'freeform': 308 of 451, 185 closed and 123 open)
# rather than paraphrased ('para'); M2I2's released evaluation (`vqaRadEval.py`, `VQA(..., freeform=True)`) scores
# only these, so every VQA-RAD evaluation also reports the accuracies over them, prefixed `freeform_`.
PHRASE_TYPE_COLUMN, FREEFORM = "phrase_type", "freeform"


@dataclass
class VQAArguments:
    answer_list: str | None = field(
        default=None,
        metadata={"help": "JSON list of candidate answers. Default: the checkpoint's answers for a trained VQA model, "
                  f"else {VQA_RAD_ANSWER_LIST} for VQA-RAD (MedViLL/MEVF protocol), else the training answers."},
    )
    min_answer_count: int = field(
        default=1, metadata={"help": "Keep training answers seen at least this often (when built from the data)."}
    )
    num_beams: int | None = field(
        default=None,
        metadata={"help": "Generative models (MISS): beams of generate(); default the model's generation config (MISS: "
                  "3, as the released inference)."},
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Generative models: longest answer in tokens; default the model's generation config (MISS: "
                  "9 after [DEC], the released max_length=10)."},
    )
    max_answer_length: int = field(
        default=32, metadata={"help": "Generative models: training answers are truncated to this many tokens."}
    )
    rank_top_k: int | None = field(
        default=None,
        metadata={"help": "Answer-ranking models (M2I2): candidates scored in full per question after the first-token "
                  "pre-selection; default the model's config (M2I2: 128, the released k_test)."},
    )

    def __post_init__(self):
        for name in ("num_beams", "max_new_tokens", "max_answer_length", "rank_top_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}.")


def checkpoint_answers(config):
    """The answers of a trained VQA head (its id2label), or None when the config has default labels."""
    labels = [config.id2label[i] for i in range(len(config.id2label))] if config.id2label else []
    if not labels or all(_DEFAULT_LABEL.fullmatch(str(label)) for label in labels):
        return None
    return labels


def resolve_answers(config, model_args, data_args, vqa_args, dataset_dict):
    """The answer vocabulary of the run, in this order: --answer_list; the checkpoint's own answers (unless
    --ignore_mismatched_sizes asks for a new head); VQA-RAD's answer_all_list.json; the demo answers; every
    training answer seen --min_answer_count times."""
    if vqa_args.answer_list is not None:
        return read_answer_list(Path(vqa_args.answer_list))
    trained = checkpoint_answers(config)
    if trained is not None and not model_args.ignore_mismatched_sizes:
        return trained
    if data_args.dataset == "vqa_rad" and data_args.data_dir is not None:
        listed = Path(data_args.data_dir) / VQA_RAD_ANSWER_LIST
        if listed.is_file():
            return read_answer_list(listed)
    if data_args.dataset == "demo":
        return demo_answers()
    if "train" not in dataset_dict:
        raise ValueError("no answer vocabulary: pass --answer_list, a trained VQA checkpoint, or a dataset with a "
                         "train split.")
    return answer_vocabulary(dataset_dict["train"]["answer"], min_count=vqa_args.min_answer_count)


def read_answer_list(path):
    answers = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(answers, list) or not answers or not all(isinstance(a, (str, int)) for a in answers):
        raise ValueError(f"{path} must hold a non-empty JSON list of answers.")
    return [str(answer) for answer in answers]


def answer_head_is_new(model_args, checkpoint_config, answers):
    """Whether the run starts a new answer classifier: from scratch, or the checkpoint has no head for `answers`."""
    return model_args.model_name_or_path is None or checkpoint_answers(checkpoint_config) != list(answers)


def start_answer_logits_at_uniform_prior(model):
    """Set the bias of the answer classifier's output layer to logit(1 / num_answers).

    With per-answer BCE over hundreds of answers (VQA-RAD: 458), zero-initialised logits first receive a large,
    input-independent push towards "no answer is right"; on a randomly initialised model it kills the ReLU
    units of the classifier and collapses every question to the same prediction (measured: the small preset
    cannot fit 64 VQA-RAD questions in 60 steps from 0, fits 86% from the prior).
    """
    outputs = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.config.num_labels]
    if not outputs:
        raise ValueError(f"{type(model).__name__} has no Linear layer with num_labels={model.config.num_labels} outputs.")
    with torch.no_grad():
        outputs[-1].bias.fill_(-math.log(model.config.num_labels - 1))


def set_answers(config, answers):
    config.id2label = dict(enumerate(answers))
    config.label2id = {answer: index for index, answer in enumerate(answers)}


def majority_answers(train_dataset, answers) -> dict:
    """{answer type: label id of the most common training answer of that type}, counting only the answers the
    classifier can give (`answers`, the run's vocabulary). These are the answers of a model that ignores the image
    and reads only whether the question is closed or open: the baseline a trained model has to beat. Ties go to
    the lower label id; a type without a known training answer gets the most common one of any type, and a training
    set without any known answer gives {} (no baseline)."""
    label2id = build_label2id(answers)
    return majority_by_type(train_dataset, lambda answer: label2id.get(normalize_answer(answer)), _lowest_most_common)


def majority_by_type(train_dataset, key, most_common) -> dict:
    """{answer type: `most_common(counter)` of the `key(answer)`s of that type's training answers} (answers whose key is
    None are not counted); a type without counted answers gets the pick over every type, and a training set without
    any gives {}. The counting both majority baselines share (`majority_answers`, `generative_vqa`'s texts)."""
    types = normalize_answer_types(train_dataset["answer_type"], len(train_dataset))
    counts = {CLOSED: Counter(), OPEN: Counter()}
    for answer, answer_type in zip(train_dataset["answer"], types):
        value = key(answer)
        if value is not None:
            counts[answer_type][value] += 1
    overall = counts[CLOSED] + counts[OPEN]
    if not overall:
        return {}
    return {answer_type: most_common(counts[answer_type] or overall) for answer_type in counts}


def _lowest_most_common(counts):
    return min(counts, key=lambda label: (-counts[label], label))


def freeform_rows(dataset) -> list[int] | None:
    """The positions of VQA-RAD's freeform questions in `dataset` (see `FREEFORM`), or None when it has none (other
    datasets, VQA-RAD's training split)."""
    if PHRASE_TYPE_COLUMN not in dataset.column_names:
        return None
    rows = [row for row, phrase_type in enumerate(dataset[PHRASE_TYPE_COLUMN]) if phrase_type == FREEFORM]
    return rows or None


def with_freeform(score, freeform) -> dict:
    """`score(None)`, the metrics of every question, and with `freeform` rows (`freeform_rows`) `score(freeform)`, the
    same metrics of those questions, named `freeform_<metric>`."""
    metrics = score(None)
    if freeform is not None:
        metrics.update({f"freeform_{name}": value for name, value in score(freeform).items()})
    return metrics


def vqa_metrics(dataset, baseline=None):
    """compute_metrics for `dataset` (in order): soft-score accuracy overall and per answer type (on VQA-RAD also over
    its freeform questions, `freeform_*`), and with `baseline` ({answer type: label id}, see `majority_answers`) the
    accuracies of always giving that answer (`baseline_closed_accuracy`, `baseline_open_accuracy`,
    `baseline_overall_accuracy`, ...) on the same targets."""
    answer_types = list(dataset["answer_type"])
    freeform = freeform_rows(dataset)

    def accuracies(logits, targets):
        def score(rows):
            if rows is None:
                return _accuracies(logits, targets, answer_types)
            return _accuracies(logits[rows], targets[rows], [answer_types[row] for row in rows])

        return with_freeform(score, freeform)

    def compute_metrics(prediction):
        metrics = accuracies(np.asarray(prediction.predictions), np.asarray(prediction.label_ids))
        if baseline:
            always = np.zeros(prediction.label_ids.shape)
            for row, answer_type in enumerate(normalize_answer_types(answer_types, len(answer_types))):
                always[row, baseline[answer_type]] = 1.0
            baseline_metrics = accuracies(always, np.asarray(prediction.label_ids))
            metrics.update({f"baseline_{name}": value for name, value in baseline_metrics.items()
                            if name.endswith("accuracy")})
        return metrics

    return compute_metrics


def accuracy_summary(metrics, prefix, split, baseline_answers) -> str:
    """The run's VQA accuracies for the log (and MISS's yes/no accuracy when the metrics have it), each beside the
    majority baseline's; `baseline_answers` is {answer type: the baseline's answer}, empty without a baseline."""
    header = f"VQA accuracy on {metrics[f'{prefix}_samples']} {split} questions (share answered right)"
    if baseline_answers:
        header += (", next to a baseline that ignores the image and always gives the most common training answer of "
                   "the question's type")
    lines = [header + ":"]
    kinds = [("closed", CLOSED), ("open", OPEN), ("overall", None)]
    if f"{prefix}_yes_no_accuracy" in metrics:
        kinds.append(("yes/no", None))
    freeform = f"{prefix}_freeform_overall_accuracy" in metrics
    if freeform:
        kinds += [(f"freeform {kind}", answer_type) for kind, answer_type in kinds if kind != "yes/no"]
    width = max(len(kind) for kind, _ in kinds) + 1
    for kind, answer_type in kinds:
        name = kind.replace("/", "_").replace(" ", "_")
        line = f"  {kind:<{width}}{metrics[f'{prefix}_{name}_accuracy']:.3f}"
        if baseline_answers:
            line += f"   baseline {metrics[f'{prefix}_baseline_{name}_accuracy']:.3f}"
            if answer_type is not None:
                line += f" (always {baseline_answers[answer_type]!r})"
        lines.append(line)
    if freeform:
        count = metrics[f"{prefix}_freeform_closed_count"] + metrics[f"{prefix}_freeform_open_count"]
        lines.append(f"  (freeform: the {count} questions of VQA-RAD's freeform test subset, as M2I2's evaluation "
                     "reports it)")
    return "\n".join(lines)


def _accuracies(logits, targets, answer_types):
    scores = vqa_soft_score(logits, targets, answer_types)
    return {
        "overall_accuracy": scores["accuracy"],
        "closed_accuracy": scores["closed_accuracy"],
        "open_accuracy": scores["open_accuracy"],
        "closed_count": scores["closed_count"],
        "open_count": scores["open_count"],
    }


def vqa_prediction_rows(id2label):
    """One row per question: the reference, the predicted answer, its probability and its soft score."""

    def rows(output, dataset):
        logits = np.asarray(output.predictions, dtype=np.float64)
        best = logits.argmax(axis=1)
        probabilities = 1.0 / (1.0 + np.exp(-logits[np.arange(len(best)), best]))
        scores = np.asarray(output.label_ids)[np.arange(len(best)), best]
        columns = dataset.select_columns(["qid", "question", "answer", "answer_type"]).to_dict()
        for i, label in enumerate(best):
            yield {
                "qid": columns["qid"][i],
                "question": columns["question"][i],
                "answer": columns["answer"][i],
                "answer_type": columns["answer_type"][i],
                "prediction": id2label[int(label)],
                "probability": float(probabilities[i]),
                "score": float(scores[i]),
            }

    return rows
