"""examples/run_retrieval.py end to end on a few synthetic demo rows with the tiny MedViLL preset."""

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from medvlp_hf import AutoModelForRetrieval
from medvlp_hf.data import load_demo, retrieval_candidate_groups
from medvlp_hf.training.retrieval import score_group
from tests.test_examples_common import read_json, read_jsonl, run_example, run_example_distributed


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


def test_two_process_evaluation_equals_one_process(tmp_path):
    """The candidate groups are split over 2 processes and gathered back in order."""
    run_example_distributed("retrieval", tmp_path / "two", "--do_eval", "--num_candidates", "4")
    run_example("retrieval", tmp_path / "one", "--do_eval", "--num_candidates", "4")
    assert read_jsonl(tmp_path / "two" / "eval_predictions.jsonl") == read_jsonl(tmp_path / "one" / "eval_predictions.jsonl")
    two, one = read_json(tmp_path / "two" / "eval_results.json"), read_json(tmp_path / "one" / "eval_results.json")
    assert {k: v for k, v in two.items() if "runtime" not in k} == pytest.approx({k: v for k, v in one.items() if "runtime" not in k})
