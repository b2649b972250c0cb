"""examples/run_retrieval.py end to end on a few synthetic demo rows: the tiny MedViLL preset (candidate groups) and
the tiny MISS and M2I2 presets (two-stage retrieval)."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoProcessor

from medvlp_hf import AutoModelForRetrieval, M2I2Config, M2I2ForRetrieval, MISSConfig, MISSForRetrieval
from medvlp_hf.auto import default_processor
from medvlp_hf.data import MatchedPairCollator, load_demo, retrieval_candidate_groups
from medvlp_hf.training.retrieval import ProcessedImages, image_groups, score_group
from medvlp_hf.training.two_stage_retrieval import two_stage_retrieval
from tests.test_examples_common import read_json, read_jsonl, run_example, run_example_distributed, weights

MISS = ("--model_type", "miss", "--config", "tiny")
M2I2 = ("--model_type", "m2i2", "--config", "tiny")
TWO_STAGE_MODELS = [(MISSConfig, MISSForRetrieval), (M2I2Config, M2I2ForRetrieval)]


def test_train_eval_ranks_candidate_groups_in_both_directions_and_reloads(tmp_path):
    out = tmp_path / "retrieval"
    run_example("retrieval", out, "--do_train", "--do_eval", "--max_steps", "3", "--num_candidates", "6")
    results = read_json(out / "eval_results.json")
    assert results["eval_num_candidates"] == 6
    rows = read_jsonl(out / "eval_predictions.jsonl")
    for direction in ("i2t", "t2i"):
        ranks = np.array([row["first_relevant_rank"] for row in rows if row["direction"] == direction])
        assert len(ranks) == results[f"eval_{direction}_num_queries"] == 8
        assert results[f"eval_{direction}_mrr"] == pytest.approx(float(np.mean(1.0 / ranks)))
        for k in (1, 5):
            assert results[f"eval_{direction}_hit@{k}"] == pytest.approx(float(np.mean(ranks <= k)))
        assert 0.0 <= results[f"eval_{direction}_map@5_trec"] <= results[f"eval_{direction}_map@5_hits"] <= 1.0

    demo = load_demo(num_train=0, num_test=8)["test"]
    group = retrieval_candidate_groups(demo["labels"], 6, seed=0)[0]
    model = AutoModelForRetrieval.from_pretrained(out).eval()
    scores = score_group(model, AutoProcessor.from_pretrained(out), demo, "report", group, "i2t")
    order = np.argsort(-scores, kind="stable")
    first = next(row for row in rows if row["direction"] == "i2t" and row["query_id"] == demo["qid"][group["query"]])
    assert first["top_candidates"] == [demo["qid"][group["candidates"][i]] for i in order]


@pytest.mark.parametrize("model", [(), MISS, M2I2], ids=["medvill", "miss", "m2i2"])
def test_two_process_evaluation_equals_one_process(tmp_path, model):
    """The candidate groups (MedViLL), or the images, texts and pairs of each stage (MISS, M2I2), are split over 2
    processes and gathered back in order."""
    arguments = ("--do_eval", "--num_candidates", "4", "--rerank_top_k", "3", *model)
    run_example_distributed("retrieval", tmp_path / "two", *arguments, dropout=bool(model))
    run_example("retrieval", tmp_path / "one", *arguments, dropout=bool(model))
    assert read_jsonl(tmp_path / "two" / "eval_predictions.jsonl") == read_jsonl(tmp_path / "one" / "eval_predictions.jsonl")
    two, one = read_json(tmp_path / "two" / "eval_results.json"), read_json(tmp_path / "one" / "eval_results.json")
    assert {k: v for k, v in two.items() if "runtime" not in k} == pytest.approx({k: v for k, v in one.items() if "runtime" not in k})


@pytest.mark.parametrize(("config_class", "model_class"), TWO_STAGE_MODELS, ids=["miss", "m2i2"])
def test_contrastive_model_fine_tunes_with_itc_and_itm_and_is_evaluated_in_two_stages(tmp_path, config_class,
                                                                                      model_class):
    out, start = tmp_path / "trained", tmp_path / "start"
    torch.manual_seed(0)
    config = config_class.from_preset("tiny")
    model_class(config).save_pretrained(start)
    default_processor(config).save_pretrained(start)
    run_example("retrieval", out, "--do_train", "--do_eval", "--max_steps", "4", "--rerank_top_k", "3",
                model=start, dropout=True)
    history = read_json(out / "trainer_state.json")["log_history"]
    assert all(np.isfinite(entry["loss"]) for entry in history if "loss" in entry)
    trained, initial = weights(out), weights(start)
    for name in ("itm_head.weight", "vision_proj.weight", "text_proj.weight", "temperature"):
        assert not torch.equal(trained[name], initial[name]), name

    results = read_json(out / "eval_results.json")
    demo = load_demo(num_train=0, num_test=8)["test"]
    model = AutoModelForRetrieval.from_pretrained(out)
    assert type(model) is model_class
    processor = AutoProcessor.from_pretrained(out)
    texts = processor(text=list(demo["report"]), padding="longest", truncation=True, return_tensors="pt")
    expected = two_stage_retrieval(model, ProcessedImages(demo, processor, list(range(8))), texts["input_ids"],
                                   texts["attention_mask"], k=3)
    assert results["eval_num_images"] == 8 and results["eval_rerank_top_k"] == 3
    assert {name: results[f"eval_{name}"] for name in expected.metrics} == pytest.approx(expected.metrics)
    rows = read_jsonl(out / "eval_predictions.jsonl")
    assert [row["top_candidates"] for row in rows if row["direction"] == "i2t"] == [
        [demo["qid"][text] for text in ranking] for ranking in expected.image_rankings.tolist()
    ]
    for row in rows:
        ranking = row["top_candidates"]
        assert row["first_relevant_rank"] == (ranking.index(row["query_id"]) + 1 if row["query_id"] in ranking else None)


def test_records_of_one_image_are_grouped_for_evaluation_and_training():
    records = Dataset.from_dict({"study": ["a", "b", "a", "c", "b"], "report": ["r0", "r1", "r2", "r3", "r4"]})
    assert image_groups(records, "study") == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert image_groups(records) == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="not a column"):
        image_groups(records, "image_id")
    demo = load_demo(num_train=0, num_test=4)["test"]
    processor = default_processor(MISSConfig.from_preset("tiny"))
    examples = [{**demo[row], "study": study} for row, study in enumerate(["x", "y", "x", "z"])]
    batch = MatchedPairCollator(processor, image_id_column="study")(examples)
    assert batch["return_loss"] is True and batch["image_ids"].tolist() == [0, 1, 0, 2]
    assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0] == 4
