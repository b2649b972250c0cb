"""examples/run_classification.py end to end on a few synthetic demo rows with the tiny MedViLL preset."""

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from medvlp_hf import AutoModelForImageTextClassification, MedViLLForImageTextClassification
from medvlp_hf.data import CHEXPERT_LABELS, ClassificationCollator, load_demo
from medvlp_hf.metrics import classification_metrics
from tests.test_examples_common import read_json, read_jsonl, run_example


def test_train_eval_writes_auroc_f1_and_reloads(tmp_path):
    out = tmp_path / "classification"
    run_example("classification", out, "--do_train", "--do_eval", "--max_steps", "4", "--pos_weight", evaluate=16)
    results = read_json(out / "eval_results.json")
    for key in ("eval_auroc_micro", "eval_auroc_macro", "eval_f1_micro", "eval_f1_macro"):
        assert 0.0 <= results[key] <= 1.0, key

    rows = read_jsonl(out / "eval_predictions.jsonl")
    demo = load_demo(num_train=16, num_test=16)
    labels = np.array(demo["test"]["labels"])
    assert [row["labels"] for row in rows] == [[n for n, v in zip(CHEXPERT_LABELS, r) if v] for r in labels]
    probabilities = np.array([[row["probabilities"][name] for name in CHEXPERT_LABELS] for row in rows])
    scores = classification_metrics(probabilities, labels)
    assert results["eval_auroc_micro"] == pytest.approx(scores["auroc_micro"])
    assert results["eval_f1_macro"] == pytest.approx(scores["f1_macro"])

    model = AutoModelForImageTextClassification.from_pretrained(out).eval()
    assert type(model) is MedViLLForImageTextClassification
    positives = np.array(demo["train"]["labels"]).sum(0)
    expected_weights = np.where(positives > 0, (16 - positives) / np.maximum(positives, 1), 1.0)
    assert model.config.classification_pos_weight == pytest.approx(expected_weights.tolist())
    assert model.config.id2label[0] == CHEXPERT_LABELS[0] and model.config.num_labels == 14
    batch = ClassificationCollator(AutoProcessor.from_pretrained(out))([demo["test"][i] for i in range(16)])
    batch.pop("labels")
    with torch.no_grad():
        reloaded = model(**batch).probabilities.double().numpy()
    np.testing.assert_allclose(reloaded, probabilities, atol=1e-6)
