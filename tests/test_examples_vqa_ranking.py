"""examples/run_vqa.py with an answer-ranking model (the tiny M2I2 preset) on synthetic demo rows: the answer decoder
trains on `[CLS] answer [SEP]`, and evaluation ranks the candidate answers (the training answers, or --answer_list)
with `M2I2ForVQA.rank_answers` on questions encoded with the processor's evaluation settings."""

import json

import pytest
import torch
from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

from medvlp_hf import M2I2ForVQA, MISSForVQA
from medvlp_hf.data import answer_vocabulary, load_demo
from medvlp_hf.metrics import normalize_vqa_answer, vqa_accuracy
from medvlp_hf.training.answer_ranking import ranks_answers
from tests.test_examples_common import example, read_json, read_jsonl, run_example
from tests.test_examples_vqa import eval_rows

M2I2 = {"model_type": "m2i2"}
LEARN = ("--max_steps", "40", "--learning_rate", "1e-2", "--warmup_steps", "0")


def training_answers():
    return answer_vocabulary(load_demo(num_train=16, num_test=0)["train"]["answer"])


def ranked(folder, rows, candidates, k=None):
    """The candidates `rank_answers` picks for `rows` with the model and the evaluation processor saved in `folder`."""
    model = AutoModelForVisualQuestionAnswering.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder).for_evaluation()
    inputs = processor(images=[row["image"] for row in rows], text=[row["question"] for row in rows],
                       text_kind="question")
    output = model.rank_answers(**inputs, **processor.encode_answer_candidates(candidates), k=k)
    return model, output, [candidates[int(index)] for index in output.answer_indices]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny M2I2 VQA model trained from scratch on 16 demo questions, evaluated on 8."""
    out = tmp_path_factory.mktemp("m2i2") / "vqa"
    metrics = run_example("vqa", out, "--do_train", "--do_eval", "--do_predict", *LEARN, **M2I2)
    return out, metrics


def test_evaluation_ranks_the_training_answers_with_rank_answers(trained):
    out, metrics = trained
    rows = read_jsonl(out / "eval_predictions.jsonl")
    model, output, answers = ranked(out, eval_rows(8), training_answers())
    assert isinstance(model, M2I2ForVQA) and ranks_answers(type(model)) and model.can_generate()
    assert not ranks_answers(MISSForVQA)  # it can rank, but its released evaluation writes the answers
    assert output.top_k_indices.shape == (8, len(training_answers()))  # k_test 128 > candidates: every one scored
    assert [row["prediction"] for row in rows] == answers
    assert sum(row["score"] for row in rows) > 0, "the trained model answers some questions right"
    assert {"eval_loss", "eval_yes_no_accuracy", "eval_baseline_closed_accuracy"} <= metrics.keys()
    assert read_json(out / "predict_results.json")["predict_samples"] == 8


def test_metrics_are_the_ranked_answers_scored_by_question_id(trained):
    out, _ = trained
    results = read_json(out / "eval_results.json")
    rows = read_jsonl(out / "eval_predictions.jsonl")
    references = eval_rows(8)
    expected = vqa_accuracy({row["qid"]: row["prediction"] for row in rows}, [row["answer"] for row in references],
                            [row["answer_type"] for row in references], question_ids=[row["qid"] for row in references])
    for name in ("closed", "open"):
        assert results[f"eval_{name}_accuracy"] == pytest.approx(expected[f"{name}_accuracy"])
    assert results["eval_overall_accuracy"] == pytest.approx(sum(row["score"] for row in rows) / 8)
    assert all(row["score"] == float(normalize_vqa_answer(row["prediction"]) == normalize_vqa_answer(row["answer"]))
               for row in rows)
    assert "eval_freeform_overall_accuracy" not in results  # the demo set has no freeform subset


def test_rank_top_k_scores_only_the_k_most_probable_first_tokens(tmp_path, trained):
    folder, _ = trained
    out = tmp_path / "top1"
    run_example("vqa", out, "--do_eval", "--rank_top_k", "1", model=folder, **M2I2)
    _, output, answers = ranked(folder, eval_rows(8), training_answers(), k=1)
    assert output.top_k_indices.shape == (8, 1)
    assert [row["prediction"] for row in read_jsonl(out / "eval_predictions.jsonl")] == answers


def test_answer_list_gives_the_candidates(tmp_path, trained):
    folder, _ = trained
    candidates = ["no", "yes", "left", "right", "pleural effusion"]
    answer_list = tmp_path / "answers.json"
    answer_list.write_text(json.dumps(candidates), encoding="utf-8")
    out = tmp_path / "listed"
    run_example("vqa", out, "--do_eval", "--answer_list", answer_list, model=folder, **M2I2)
    predictions = [row["prediction"] for row in read_jsonl(out / "eval_predictions.jsonl")]
    assert set(predictions) <= set(candidates)
    assert predictions == ranked(folder, eval_rows(8), candidates)[2]


def test_ranking_in_chunks_gives_the_scores_of_one_call(trained):
    """The trainer ranks a batch's questions a few at a time (memory: k candidates x answer length x vocabulary)."""
    folder, _ = trained
    model, whole, _ = ranked(folder, eval_rows(8), training_answers(), k=3)
    processor = AutoProcessor.from_pretrained(folder).for_evaluation()
    rows = eval_rows(8)
    inputs = processor(images=[row["image"] for row in rows], text=[row["question"] for row in rows],
                       text_kind="question")
    candidates = processor.encode_answer_candidates(training_answers())
    chunks = [model.rank_answers(**{name: tensor[i:i + 3] for name, tensor in inputs.items()}, **candidates, k=3)
              for i in (0, 3, 6)]
    torch.testing.assert_close(torch.cat([chunk.scores for chunk in chunks]), whole.scores)


def test_evaluation_without_candidates_names_the_fix(tmp_path, trained):
    folder, _ = trained
    args = ["--dataset", "demo", "--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "x"),
            "--do_eval", "--max_train_samples", "16", "--max_eval_samples", "8", "--min_answer_count", "17"]
    with pytest.raises(ValueError, match="--min_answer_count 17 times; lower it or pass --answer_list"):
        example("vqa").main(args)


# The examples/README.md record: M2I2 trained from scratch on VQA-RAD on 2 shared CPU cores, answers ranked over the
# training answers with the released k_test = 128.
VQA_RAD_RECIPE = ("--dataset", "vqa_rad", "--model_type", "m2i2", "--config", "tiny", "--config_overrides",
                  "vision_config.image_size=64", "--learning_rate", "2e-3", "--num_train_epochs", "10",
                  "--dataloader_num_workers", "1", "--do_train", "--do_eval", "--disable_tqdm", "true")


@pytest.mark.slow
@pytest.mark.real_data
def test_m2i2_from_scratch_beats_the_majority_answer_on_vqa_rad_closed_questions(tmp_path, data_dir):
    metrics = example("vqa").main([*VQA_RAD_RECIPE, "--data_dir", str(data_dir / "vqa_rad"),
                                   "--output_dir", str(tmp_path / "m2i2-vqa-rad")])
    assert (metrics["eval_closed_count"], metrics["eval_open_count"]) == (272, 179)
    assert (metrics["eval_freeform_closed_count"], metrics["eval_freeform_open_count"]) == (185, 123)
    assert metrics["eval_baseline_closed_accuracy"] == pytest.approx(133 / 272)  # always "no": 0.489
    assert metrics["eval_closed_accuracy"] > metrics["eval_baseline_closed_accuracy"]
