"""examples/run_report_generation.py end to end on a few synthetic demo rows with the tiny MedViLL preset."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from medvlp_hf.data import load_demo
from medvlp_hf.metrics import compute_report_generation_metrics
from medvlp_hf.training.report_generation import normalize_reports
from tests.test_examples_common import read_json, read_jsonl, run_example

NLG_KEYS = ("eval_bleu_1", "eval_bleu_2", "eval_bleu_3", "eval_bleu_4", "eval_rouge_l", "eval_medvill_bleu_4")
CE_KEYS = ("eval_ce_f1_micro_14", "eval_ce_precision_macro_5", "eval_ce_recall_micro_5", "eval_ce_medvill_accuracy")


def test_train_eval_generates_scores_and_reloads(tmp_path):
    out = tmp_path / "reports"
    run_example("report_generation", out, "--do_train", "--do_eval", "--max_steps", "6", "--max_new_tokens", "12",
                "--learning_rate", "3e-3")
    results = read_json(out / "eval_results.json")
    for key in NLG_KEYS + CE_KEYS:
        assert 0.0 <= results[key] <= 1.0, key
    assert results["eval_cider"] >= 0.0 and results["eval_loss"] > 0.0 and results["eval_samples"] == 8
    assert "eval_meteor" not in results  # off unless --meteor

    rows = read_jsonl(out / "eval_predictions.jsonl")
    demo = load_demo(num_train=0, num_test=8)["test"]
    assert [row["reference"] for row in rows] == demo["report"]
    processor = AutoProcessor.from_pretrained(out)
    recomputed = compute_report_generation_metrics(
        [row["generated"] for row in rows], normalize_reports(processor.tokenizer, demo["report"]), meteor=False
    )
    for name in ("bleu_1", "bleu_4", "rouge_l", "cider"):
        assert results[f"eval_{name}"] == pytest.approx(recomputed[name]), name

    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    pixels = processor(images=list(demo["image"]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        generated = model.generate(pixel_values=pixels, max_new_tokens=12)
    assert processor.tokenizer.batch_decode(generated, skip_special_tokens=True) == [row["generated"] for row in rows]
