"""The packaged evaluate modules load offline from their paths and give the functions' numbers."""
import importlib
import os
from pathlib import Path

import numpy as np
import pytest

evaluate = pytest.importorskip("evaluate")

from medvlp_hf import metrics  # noqa: E402
from medvlp_hf.metrics.loading import MODULE_FILES  # noqa: E402

REPORTS = ["no pleural effusion . mild cardiomegaly .", "possible pneumonia in the left lower lobe ."]
REFERENCE_REPORTS = ["small left pleural effusion . cardiomegaly .", "left lower lobe pneumonia ."]


def test_offline_flags_are_set():
    assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("name", sorted(MODULE_FILES))
def test_module_imports_pass_the_evaluate_scanner(name):
    imports = evaluate.loading.get_imports(str(metrics.module_path(name)))
    libraries = {library for kind, library, _, _ in imports if kind == "library"}
    assert all(kind == "library" for kind, _, _, _ in imports)
    assert libraries <= {"datasets", "evaluate", "medvlp_hf", "numpy"}
    for library in libraries:
        importlib.import_module(library)


def test_vqa_module_both_configs():
    exact = metrics.load("vqa")
    kwargs = dict(predictions=["Yes", "the liver", "no"], references=["yes", "Liver.", "yes"], answer_types=["CLOSED", "OPEN", "CLOSED"])
    assert exact.compute(**kwargs) == metrics.vqa_accuracy(kwargs["predictions"], kwargs["references"], kwargs["answer_types"])
    soft = metrics.load("vqa", "soft")
    logits, targets = [[0.2, 0.8], [0.9, 0.1]], [[0.0, 1.0], [0.0, 0.3]]
    soft.add_batch(predictions=logits[:1], references=targets[:1], answer_types=["CLOSED"])
    soft.add_batch(predictions=logits[1:], references=targets[1:], answer_types=["OPEN"])
    assert soft.compute() == metrics.vqa_soft_score(logits, targets, ["CLOSED", "OPEN"])


def test_report_generation_module_accepts_one_or_many_references():
    module = metrics.load("report_generation")
    single = module.compute(predictions=REPORTS, references=REFERENCE_REPORTS, meteor=False)
    expected = metrics.compute_report_generation_metrics(REPORTS, REFERENCE_REPORTS, meteor=False)
    assert single == expected
    many = metrics.load("report_generation").compute(predictions=REPORTS, references=[[r, r] for r in REFERENCE_REPORTS], meteor=False)
    assert many["bleu_4"] == pytest.approx(expected["bleu_4"])


def test_clinical_efficacy_module():
    result = metrics.load("clinical_efficacy").compute(predictions=REPORTS, references=REFERENCE_REPORTS, uncertain="negative")
    assert result == metrics.compute_clinical_efficacy(REPORTS, REFERENCE_REPORTS, uncertain="negative")
    assert result["per_observation"]["Cardiomegaly"]["f1"] == 1.0


def test_retrieval_module_both_configs():
    scores = np.random.default_rng(0).normal(size=(4, 10)).round(3)
    relevance = metrics.relevance_from_labels([0, 1, 2, 0], [0, 1, 2, 0, 1, 2, 0, 1, 2, 3]).astype(int)
    ranking = metrics.load("retrieval").compute(predictions=scores.tolist(), references=relevance.tolist(), ks=(1, 5))
    assert ranking == metrics.retrieval_metrics(scores, relevance, ks=(1, 5))
    similarity = np.array([[0.1, 0.9, 0.0], [0.8, 0.2, 0.1], [0.3, 0.1, 0.2]])
    paired_text = [1, 0, 2]
    cross = metrics.load("retrieval", "cross_modal").compute(predictions=similarity.tolist(), references=paired_text, ks=(1,))
    assert cross == metrics.cross_modal_recall_at_k(similarity, ks=(1,), text_to_image=[1, 0, 2])
    # image 2 ranks text 0 first; every text ranks its own image first
    assert cross == {"i2t_r@1": pytest.approx(2 / 3), "t2i_r@1": 1.0}


def test_classification_module():
    rng = np.random.default_rng(0)
    scores, labels = rng.random((20, 3)), (rng.random((20, 3)) < 0.5).astype(int)
    result = metrics.load("classification").compute(predictions=scores.tolist(), references=labels.tolist(), threshold=0.4)
    assert result == metrics.classification_metrics(scores, labels, threshold=0.4)


def test_plain_evaluate_load_writes_only_under_hf_home():
    home = Path(os.environ["HF_HOME"])
    module = evaluate.load(str(metrics.module_path("vqa")), keep_in_memory=True)
    assert module.compute(predictions=["a"], references=["a"], answer_types=["OPEN"])["accuracy"] == 1.0
    assert (home / "modules" / "evaluate_modules" / "metrics").is_dir()
    assert not (home / "metrics" / "medvlp_vqa").exists()


def test_modules_also_work_without_the_loader():
    from medvlp_hf.metrics.evaluate_modules.medvlp_retrieval import MedVLPRetrieval

    result = MedVLPRetrieval(keep_in_memory=True).compute(predictions=[[0.1, 0.9]], references=[[0, 1]], ks=(1,))
    assert result["hit@1"] == 1.0


def test_unknown_metric_name():
    with pytest.raises(KeyError, match="available"):
        metrics.load("bleu")
