"""VQA metrics: VQA-v2 normalisation, closed/open/overall accuracy, token scores, soft score."""
import math

import numpy as np
import pytest

from medvlp_hf.metrics import normalize_vqa_answer
from medvlp_hf.metrics import vqa_accuracy
from medvlp_hf.metrics import vqa_soft_score


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes.", "yes"),
        ("The Liver", "liver"),
        ("two", "2"),
        ("None", "0"),
        ("an  MRI\n", "mri"),
        ("dont know", "don't know"),
        ("1.5 cm", "1.5 cm"),
        ("left-sided", "left sided"),
        ("x - ray", "x ray"),
        ("1,000", "1000"),
        ("yes, it is", "yes it is"),
        ("(CT)", "ct"),
        (12, "12"),
    ],
)
def test_normalize_vqa_answer(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_closed_accuracy_counts_every_closed_question():
    result = vqa_accuracy(
        predictions=["yes", "no", "maybe", "Liver.", "kidney"],
        references=["yes", "yes", "no", "the liver", "spleen"],
        answer_types=["CLOSED", "CLOSED", "CLOSED ", "OPEN", "open"],
    )
    assert result["closed_accuracy"] == pytest.approx(1 / 3)
    assert result["closed_count"] == 3
    assert result["open_accuracy"] == pytest.approx(1 / 2)
    assert result["open_count"] == 2
    assert result["accuracy"] == pytest.approx(2 / 5)
    assert result["yes_no_accuracy"] == pytest.approx(1 / 3)
    assert result["yes_no_count"] == 3


def acc_py(test_rows, result_rows):
    """MISS's ACC.py on lists of {"answer": ...}: closed yes/no questions, paired by list position."""
    yes, no = ("yes", "Yes"), ("No", "no")
    classes = lambda answer: 0 if answer in yes else 1 if answer in no else None  # noqa: E731
    scored = [(test["answer"], result["answer"]) for test, result in zip(test_rows, result_rows)
              if test["answer"] in yes + no]
    return sum(classes(a) == classes(b) for a, b in scored) / len(scored), len(scored)


def test_yes_no_accuracy_is_acc_py_matched_by_question_id():
    tests = [{"qid": 7, "answer": "yes"}, {"qid": 3, "answer": "No"}, {"qid": 1, "answer": "no"},
             {"qid": 4, "answer": "Yes"}, {"qid": 9, "answer": "left"}]
    results = {7: "yes", 3: "no", 1: "yes", 4: "maybe", 9: "left"}
    in_order = [{"answer": results[row["qid"]]} for row in tests]
    accuracy, count = acc_py(tests, in_order)
    expected = vqa_accuracy([results[row["qid"]] for row in tests], [row["answer"] for row in tests],
                            ["CLOSED"] * 4 + ["OPEN"])
    shuffled = dict(reversed(list(results.items())))  # a result file in another order: ACC.py would misalign it
    by_id = vqa_accuracy(shuffled, [row["answer"] for row in tests], ["CLOSED"] * 4 + ["OPEN"],
                         question_ids=[row["qid"] for row in tests])
    assert (by_id["yes_no_accuracy"], by_id["yes_no_count"]) == (accuracy, count) == (0.5, 4)
    assert by_id == expected
    assert acc_py(tests, [{"answer": answer} for answer in shuffled.values()])[0] != accuracy


def test_matching_by_question_id_refuses_missing_unknown_and_repeated_questions():
    with pytest.raises(ValueError, match=r"1 reference\(s\) without a prediction \(e.g. \[2\]\), 1 prediction\(s\) of "
                                         r"unknown questions \(e.g. \[5\]\)"):
        vqa_accuracy({1: "yes", 5: "no"}, ["yes", "no"], question_ids=[1, 2])
    with pytest.raises(ValueError, match=r"question ids \['1'\] occur more than once"):
        vqa_accuracy({1: "yes"}, ["yes", "no"], question_ids=[1, 1])


def test_open_recall_and_token_f1_by_hand():
    result = vqa_accuracy(["left lung lobe", "no"], ["the left lobe", "yes"], ["OPEN", "CLOSED"])
    # open: overlap {left, lobe} = 2; recall 2/2, precision 2/3, F1 0.8
    assert result["open_recall"] == pytest.approx(1.0)
    assert result["open_token_f1"] == pytest.approx(0.8)
    assert result["token_f1"] == pytest.approx((0.8 + 0.0) / 2)
    assert result["open_accuracy"] == 0.0


def test_integer_answers_and_missing_answer_types():
    result = vqa_accuracy(["two", "3"], [2, 4])
    assert result["accuracy"] == 0.5
    assert "closed_accuracy" not in result
    assert math.isnan(vqa_accuracy(["a"], ["a"], ["OPEN"])["closed_accuracy"])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"answer_types\[1\]"):
        vqa_accuracy(["a", "b"], ["a", "b"], ["OPEN", "yes/no"])
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        vqa_accuracy(["a", "b"], ["a"])


def test_soft_score_takes_target_of_argmax():
    logits = np.array([[0.1, 2.0, 0.3], [1.0, 0.0, 0.5], [0.0, 0.2, 0.1]])
    targets = np.array([[0.0, 1.0, 0.0], [0.3, 0.0, 1.0], [0.0, 0.6, 0.0]])
    result = vqa_soft_score(logits, targets, ["CLOSED", "OPEN", "OPEN"])
    assert result["closed_accuracy"] == pytest.approx(1.0)
    assert result["open_accuracy"] == pytest.approx((0.3 + 0.6) / 2)
    assert result["accuracy"] == pytest.approx((1.0 + 0.3 + 0.6) / 3)


def test_soft_score_accepts_torch_and_checks_shapes():
    torch = pytest.importorskip("torch")
    result = vqa_soft_score(torch.tensor([[0.0, 1.0]], requires_grad=True), torch.tensor([[0.0, 1.0]]))
    assert result["accuracy"] == 1.0
    with pytest.raises(ValueError, match="must both be"):
        vqa_soft_score(np.zeros((2, 3)), np.zeros((2, 4)))
