"""examples/run_vqa.py end to end on a few synthetic demo rows with the tiny MedViLL preset."""

import json
from collections import Counter

import pytest
import torch
from transformers import AutoConfig, AutoModelForVisualQuestionAnswering, AutoProcessor

from medvlp_hf.data import VQACollator, demo_answers, load_demo
from tests.test_examples_common import (
    read_json, read_jsonl, run_example, run_example_distributed, step_losses, weights,
)


def eval_rows(count):
    """The demo rows the scripts evaluate with --max_eval_samples count (load_demo is deterministic)."""
    return [load_demo(num_train=0, num_test=count)["test"][i] for i in range(count)]


def vqa_batch(folder, config, rows):
    """Model inputs for `rows`, built with the processor saved in `folder` and the answers of `config`."""
    answers = [config.id2label[i] for i in range(config.num_labels)]
    batch = VQACollator(AutoProcessor.from_pretrained(folder), answers)(rows)
    batch.pop("labels")
    return batch


def reload_logits(folder, rows):
    model = AutoModelForVisualQuestionAnswering.from_pretrained(folder).eval()
    with torch.no_grad():
        return model, model(**vqa_batch(folder, model.config, rows)).logits


def test_train_eval_predict_writes_metrics_predictions_and_a_reloadable_model(tmp_path):
    out = tmp_path / "vqa"
    metrics = run_example("vqa", out, "--do_train", "--do_eval", "--do_predict")

    results = read_json(out / "eval_results.json")
    for key in ("eval_closed_accuracy", "eval_open_accuracy", "eval_overall_accuracy", "eval_loss"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["eval_closed_count"] + results["eval_open_count"] == results["eval_samples"] == 8
    assert read_json(out / "predict_results.json")["predict_samples"] == 8
    assert metrics["eval_overall_accuracy"] == results["eval_overall_accuracy"]

    rows = read_jsonl(out / "eval_predictions.jsonl")
    assert len(rows) == 8
    closed = [row["score"] for row in rows if row["answer_type"] == "CLOSED"]
    open_ = [row["score"] for row in rows if row["answer_type"] == "OPEN"]
    assert results["eval_overall_accuracy"] == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    assert results["eval_closed_accuracy"] == pytest.approx(sum(closed) / len(closed))
    assert results["eval_open_accuracy"] == pytest.approx(sum(open_) / len(open_))
    assert all(row["score"] == float(row["prediction"] == row["answer"]) for row in rows)
    # the baseline: the most common answer of each answer type among the 16 training questions, on the 8 evaluated
    train = load_demo(num_train=16, num_test=0)["train"]
    for answer_type, kind in (("CLOSED", "closed"), ("OPEN", "open")):
        counts = Counter(a for a, t in zip(train["answer"], train["answer_type"]) if t == answer_type)
        majority = min(counts, key=lambda answer: (-counts[answer], demo_answers().index(answer)))
        expected = [row["answer"] == majority for row in rows if row["answer_type"] == answer_type]
        assert results[f"eval_baseline_{kind}_accuracy"] == pytest.approx(sum(expected) / len(expected)), kind

    model, logits = reload_logits(out, eval_rows(8))
    assert [model.config.id2label[i] for i in range(model.config.num_labels)] == demo_answers()
    assert [model.config.id2label[int(i)] for i in logits.argmax(-1)] == [row["prediction"] for row in rows]
    torch.testing.assert_close(
        torch.sigmoid(logits.max(-1).values).double(), torch.tensor([row["probability"] for row in rows]).double(),
        atol=1e-5, rtol=1e-5,
    )


def test_resume_from_checkpoint_ends_like_an_uninterrupted_run(tmp_path):
    schedule = ("--do_train", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2")
    run_example("vqa", tmp_path / "full", *schedule, dropout=True)
    run_example("vqa", tmp_path / "resumed", *schedule, "--resume_from_checkpoint", tmp_path / "full" / "checkpoint-2",
                dropout=True)
    # the resumed history holds steps 1-2 from the checkpoint's trainer_state.json and 3-4 trained after resuming
    assert sorted(step_losses(tmp_path / "full" / "checkpoint-2")) == [1, 2]
    assert step_losses(tmp_path / "resumed") == step_losses(tmp_path / "full")
    for name, tensor in weights(tmp_path / "full").items():
        torch.testing.assert_close(weights(tmp_path / "resumed")[name], tensor, rtol=0, atol=0, msg=name)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    metrics = run_example("vqa", tmp_path / "bf16", "--do_train", "--do_eval", "--max_steps", "2", "--bf16")
    assert 0.0 < metrics["train_loss"] < 10.0 and 0.0 <= metrics["eval_overall_accuracy"] <= 1.0


def test_gradient_accumulation_and_checkpointing_give_the_same_run(tmp_path):
    """With frozen BatchNorm statistics (batch statistics depend on the micro-batch by design), 2 x 2 accumulated
    micro-batches train exactly like batches of 4, and gradient checkpointing changes nothing."""
    common = ("--do_train", "--do_eval", "--max_steps", "3", "--freeze_batch_norm")
    run_example("vqa", tmp_path / "batch4", *common, batch_size=4)
    run_example("vqa", tmp_path / "accumulated", *common, "--gradient_accumulation_steps", "2", batch_size=2)
    run_example("vqa", tmp_path / "checkpointed", *common, "--gradient_checkpointing", batch_size=4)
    reference = step_losses(tmp_path / "batch4")
    reference_weights = weights(tmp_path / "batch4")
    for run in ("accumulated", "checkpointed"):
        assert step_losses(tmp_path / run) == pytest.approx(reference, rel=1e-5), run
        for name, tensor in weights(tmp_path / run).items():
            if name.endswith("attention.key.bias"):
                continue  # softmax ignores it: its gradient is rounding noise, which Adam scales up to lr-sized steps
            torch.testing.assert_close(tensor, reference_weights[name], rtol=1e-4, atol=1e-6, msg=f"{run}: {name}")
        assert read_json(tmp_path / run / "eval_results.json")["eval_loss"] == pytest.approx(
            read_json(tmp_path / "batch4" / "eval_results.json")["eval_loss"], rel=1e-5
        )


@pytest.mark.parametrize("launcher", ["torchrun", pytest.param("accelerate", marks=pytest.mark.slow)])
def test_two_processes_train_and_evaluate_like_one_process_on_the_same_global_batch(tmp_path, launcher):
    """2 processes x batch 2 (gloo on CPU) = 1 process x batch 4: same losses, same predictions."""
    common = ("--do_train", "--do_eval", "--max_steps", "3", "--freeze_batch_norm")
    run_example_distributed("vqa", tmp_path / "two", *common, launcher=launcher, batch_size=2)
    run_example("vqa", tmp_path / "one", *common, batch_size=4)
    assert step_losses(tmp_path / "two") == pytest.approx(step_losses(tmp_path / "one"), rel=1e-5)
    two, one = (read_json(tmp_path / run / "eval_results.json") for run in ("two", "one"))
    assert two["eval_samples"] == one["eval_samples"] == 8
    for key in ("eval_loss", "eval_overall_accuracy", "eval_closed_accuracy", "eval_open_accuracy"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    two_rows, one_rows = (read_jsonl(tmp_path / run / "eval_predictions.jsonl") for run in ("two", "one"))
    assert [row["qid"] for row in two_rows] == [row["qid"] for row in one_rows]
    assert [row["prediction"] for row in two_rows] == [row["prediction"] for row in one_rows]
    assert [row["probability"] for row in two_rows] == pytest.approx([row["probability"] for row in one_rows], abs=1e-6)


@pytest.mark.real_data
def test_vqa_rad_uses_the_mevf_answer_list_and_the_organ_filter(tmp_path, data_dir):
    out = tmp_path / "vqa_rad"
    run_example("vqa", out, "--dataset", "vqa_rad", "--data_dir", data_dir / "vqa_rad", "--organ", "CHEST",
                "--do_train", "--do_eval", "--max_steps", "1", train=8, evaluate=8)
    answers = json.loads((data_dir / "vqa_rad" / "answer_all_list.json").read_text())
    config = AutoConfig.from_pretrained(out)
    assert config.num_labels == len(answers) == 458
    assert [config.id2label[i] for i in range(3)] == answers[:3]
    chest = {row["qid"] for row in json.loads((data_dir / "vqa_rad" / "testset.json").read_text())
             if row["image_organ"] == "CHEST"}
    rows = read_jsonl(out / "eval_predictions.jsonl")
    assert len(rows) == 8 and {row["qid"] for row in rows} <= chest
    results = read_json(out / "eval_results.json")
    assert results["eval_closed_count"] + results["eval_open_count"] == 8


def write_slake(folder):
    """A SLAKE-layout folder: English and Chinese questions about two images in each split."""
    import PIL.Image

    for index, shade in enumerate((40, 200)):
        image_dir = folder / "imgs" / f"xmlab{index}"
        image_dir.mkdir(parents=True)
        PIL.Image.new("L", (48, 40), shade).save(image_dir / "source.jpg")
    qid = 0
    for split, file in (("train", "train.json"), ("validation", "validate.json"), ("test", "test.json")):
        records = []
        for index in range(6):
            for language, question in (("en", "Is this image bright?"), ("zh", "这张图亮吗?")):
                records.append({"img_id": index % 2, "img_name": f"xmlab{index % 2}/source.jpg", "question": question,
                                "answer": ["No", "Yes"][index % 2] if index < 4 else "CT", "q_lang": language,
                                "answer_type": "CLOSED" if index < 4 else "OPEN", "qid": qid, "location": "Abdomen",
                                "modality": "CT", "base_type": "vqa", "content_type": "Color", "triple": []})
                qid += 1
        (folder / file).write_text(json.dumps(records), encoding="utf-8")


def test_slake_trains_on_english_questions_with_the_training_answers_and_evaluates_on_validation(tmp_path):
    write_slake(tmp_path / "slake")
    out = tmp_path / "out"
    run_example("vqa", out, "--dataset", "slake", "--data_dir", tmp_path / "slake", "--do_train", "--do_eval",
                "--do_predict", "--max_steps", "1")
    assert sorted(AutoConfig.from_pretrained(out).id2label.values()) == ["ct", "no", "yes"]
    rows = read_jsonl(out / "eval_predictions.jsonl")
    assert len(rows) == 6 and {row["question"] for row in rows} == {"Is this image bright?"}
    assert [row["qid"] for row in rows] == list(range(12, 24, 2))  # the validation split, English only
    assert read_json(out / "predict_results.json")["predict_samples"] == 6
