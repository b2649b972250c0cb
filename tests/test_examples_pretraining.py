"""examples/run_pretraining.py end to end on a few synthetic demo rows, and a downstream run starting from it."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForPreTraining, AutoModelForVisualQuestionAnswering

from tests.test_examples_common import read_json, read_jsonl, run_example, weights


def test_pretrain_then_fine_tune_vqa_from_the_checkpoint(tmp_path):
    pretrained = tmp_path / "pretrained"
    run_example("pretraining", pretrained, "--do_train", "--do_eval", "--max_steps", "3",
                "--config_overrides", "attention_mask_type=bi_s2s")
    results = read_json(pretrained / "eval_results.json")
    rows = read_jsonl(pretrained / "eval_predictions.jsonl")
    assert len(rows) == results["eval_samples"] == 8
    assert results["eval_masked_tokens"] == sum(row["masked_tokens"] for row in rows) > 0
    assert results["eval_mlm_accuracy"] == pytest.approx(
        sum(row["masked_correct"] for row in rows) / results["eval_masked_tokens"]
    )
    matched = np.array([row["match_probability"] > 0.5 for row in rows]) == np.array([row["itm_label"] for row in rows])
    assert results["eval_itm_accuracy"] == pytest.approx(matched.mean())
    assert {row["itm_label"] for row in rows} <= {0, 1}

    model = AutoModelForPreTraining.from_pretrained(pretrained)
    assert model.config.attention_mask_type == "bi_s2s"

    vqa = tmp_path / "vqa"
    run_example("vqa", vqa, "--do_train", "--do_eval", "--max_steps", "1", "--learning_rate", "1e-9", model=pretrained)
    fine_tuned = AutoModelForVisualQuestionAnswering.from_pretrained(vqa)
    assert fine_tuned.config.num_labels == 9
    encoder = {name: tensor for name, tensor in weights(pretrained).items() if name.startswith("medvill.encoder.")}
    for name, tensor in encoder.items():
        torch.testing.assert_close(weights(vqa)[name], tensor, atol=1e-6, rtol=0, msg=name)
    assert read_json(vqa / "eval_results.json")["eval_samples"] == 8
