"""Medical VQA accuracy: closed / open / overall, as the five papers' evaluation code defines it.

* ``vqa_accuracy``: exact match after VQA-v2 normalisation (M2I2; generative models), split by
  ``answer_type``. Every closed question is counted: a wrong or unparseable yes/no answer stays in
  the denominator (unlike LLaVA-Med's closed metric, which drops some). Also reports the generative
  token-overlap scores: open recall (share of reference tokens found in the prediction) and token F1,
  and MISS's yes/no accuracy (``ACC.py``: closed questions whose reference is yes or no). Predictions can be
  matched to the references by question id instead of list position.
* ``vqa_soft_score``: MedViLL / PTUnifier / M3AE ``VQARADScore``: the soft target value of the
  arg-max answer, averaged; with one-hot targets this is plain accuracy.
"""
from collections import Counter

import numpy as np

from medvlp_hf.metrics._arrays import as_numpy
from medvlp_hf.metrics.vqa_normalization import normalize_vqa_answer

CLOSED = "CLOSED"
OPEN = "OPEN"


def normalize_answer_types(answer_types, n: int):
    """Upper-cased, stripped answer types (VQA-RAD has ``"CLOSED "``); ``None`` when not given."""
    if answer_types is None:
        return None
    if len(answer_types) != n:
        raise ValueError(f"got {len(answer_types)} answer_types for {n} questions; give one per question")
    types = [str(t).strip().upper() for t in answer_types]
    for index, answer_type in enumerate(types):
        if answer_type not in (CLOSED, OPEN):
            raise ValueError(
                f"answer_types[{index}] is {answer_types[index]!r}; expected 'OPEN' or 'CLOSED' "
                "(map other schemes, e.g. PathVQA yes/no, to these two first)"
            )
    return types


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _split_by_type(scores, types) -> dict:
    """Overall, closed and open means of per-question ``scores`` (NaN where a split is empty)."""
    result = {"accuracy": _mean(scores), "count": len(scores)}
    if types is not None:
        for answer_type in (CLOSED, OPEN):
            subset = [s for s, t in zip(scores, types) if t == answer_type]
            result[f"{answer_type.lower()}_accuracy"] = _mean(subset)
            result[f"{answer_type.lower()}_count"] = len(subset)
    return result


def token_recall_f1(predicted: str, expected: str):
    """(recall, F1) of the token overlap of two normalised answers; a token counts at most as often as in both."""
    predicted, expected = predicted.split(), expected.split()
    if not predicted or not expected:
        return 0.0, 0.0
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0, 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return recall, 2 * precision * recall / (precision + recall)


def predictions_by_question_id(predictions, question_ids) -> list:
    """The prediction of each question in ``question_ids`` from ``predictions``, a mapping {question id: answer}.

    Raises ValueError naming the questions without a prediction, predictions of questions that are not
    there, and repeated question ids (each would pair with whichever prediction came last)."""
    ids = list(question_ids)
    repeated = sorted({str(qid) for qid, count in Counter(ids).items() if count > 1})
    if repeated:
        raise ValueError(f"question ids {repeated[:5]} occur more than once among the references; ids must be unique")
    known = set(ids)
    missing = [qid for qid in ids if qid not in predictions]
    unknown = [qid for qid in predictions if qid not in known]
    if missing or unknown:
        raise ValueError(
            f"predictions and references must be about the same questions: {len(missing)} reference(s) without a "
            f"prediction (e.g. {missing[:3]}), {len(unknown)} prediction(s) of unknown questions (e.g. {unknown[:3]})"
        )
    return [predictions[qid] for qid in ids]


def vqa_accuracy(predictions, references, answer_types=None, question_ids=None) -> dict:
    """Exact-match accuracy after VQA-v2 normalisation, plus open recall / token F1 and yes/no accuracy.

    ``predictions`` and ``references`` are answer strings (numbers are accepted); ``answer_types``
    holds ``"OPEN"``/``"CLOSED"`` per question. With ``question_ids`` (the id of each reference),
    ``predictions`` is a mapping {question id: answer} matched to the references by id (MISS's
    ``ACC.py`` pairs the test file and the result file by line, which silently misaligns when
    either is reordered or loses a line). Returns ``accuracy``, ``closed_accuracy``,
    ``open_accuracy`` with their counts, ``open_recall`` and ``open_token_f1`` (means over open
    questions), ``token_f1`` (over all), and ``yes_no_accuracy`` with ``yes_no_count`` (``ACC.py``:
    the closed questions whose reference is yes or no, right when the prediction is the same word).
    """
    if question_ids is not None:
        predictions = predictions_by_question_id(predictions, question_ids)
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    types = normalize_answer_types(answer_types, len(references))
    predicted = [normalize_vqa_answer(p) for p in predictions]
    expected = [normalize_vqa_answer(r) for r in references]
    exact = [float(p == r) for p, r in zip(predicted, expected)]
    result = _split_by_type(exact, types)
    overlaps = [token_recall_f1(p, r) for p, r in zip(predicted, expected)]
    result["token_f1"] = _mean([f1 for _, f1 in overlaps])
    open_rows = range(len(exact)) if types is None else [i for i, t in enumerate(types) if t == OPEN]
    result["open_recall"] = _mean([overlaps[i][0] for i in open_rows])
    result["open_token_f1"] = _mean([overlaps[i][1] for i in open_rows])
    yes_no = [
        exact[i]
        for i in range(len(exact))
        if expected[i] in ("yes", "no") and (types is None or types[i] == CLOSED)
    ]
    result["yes_no_accuracy"] = _mean(yes_no)
    result["yes_no_count"] = len(yes_no)
    return result


def vqa_soft_score(logits, targets, answer_types=None) -> dict:
    """Mean soft-target value of the arg-max answer (``VQARADScore``), overall and per answer type.

    ``logits``: (N, A) answer scores; ``targets``: (N, A) soft targets (one-hot for VQA-RAD/SLAKE).
    """
    logits, targets = as_numpy(logits, np.float64), as_numpy(targets, np.float64)
    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(f"logits {logits.shape} and targets {targets.shape} must both be (questions, answers)")
    types = normalize_answer_types(answer_types, len(logits))
    scores = targets[np.arange(len(logits)), logits.argmax(axis=1)].tolist()
    return _split_by_type(scores, types)
