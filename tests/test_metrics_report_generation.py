"""Report-generation metrics: equality with pycocoevalcap 1.2, MedViLL NLTK BLEU by hand, perplexity."""
import math
import random
import sys

import numpy as np
import pytest

from medvlp_hf.metrics import cider_d
from medvlp_hf.metrics import coco_bleu
from medvlp_hf.metrics import compute_report_generation_metrics
from medvlp_hf.metrics import medvill_bleu
from medvlp_hf.metrics import meteor_score
from medvlp_hf.metrics import meteor_unavailable_reason
from medvlp_hf.metrics import nltk_corpus_bleu
from medvlp_hf.metrics import perplexity
from medvlp_hf.metrics import rouge_l
from medvlp_hf.metrics import token_cross_entropy_sum

TOY_REFERENCES = [
    ["the heart is normal in size . the mediastinum is unremarkable . the lungs are clear ."],
    ["there is a small left pleural effusion . no pneumothorax is seen ."],
    ["the cardiomediastinal silhouette is within normal limits . no focal consolidation ."],
]
TOY_PREDICTIONS = [
    "the heart is normal in size . the lungs are clear .",
    "there is a left pleural effusion . no pneumothorax .",
    "heart size is normal . no focal consolidation is seen .",
]


def _random_corpus(rng, allow_empty_predictions):
    vocab = "a b c d e the of is no normal heart effusion .".split()
    n = rng.randint(1, 10)
    low = 0 if allow_empty_predictions else 1
    predictions = [" ".join(rng.choice(vocab) for _ in range(rng.randint(low, 14))) for _ in range(n)]
    references = [
        [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 14))) for _ in range(rng.randint(1, 3))]
        for _ in range(n)
    ]
    return predictions, references


def _coco_dicts(predictions, references):
    return {i: refs for i, refs in enumerate(references)}, {i: [p] for i, p in enumerate(predictions)}


def test_toy_corpus_matches_reference_values():
    assert coco_bleu(TOY_PREDICTIONS, TOY_REFERENCES) == pytest.approx([0.669022, 0.597100, 0.554939, 0.505028], abs=1e-6)
    assert rouge_l(TOY_PREDICTIONS, TOY_REFERENCES) == pytest.approx(0.752058, abs=1e-6)
    assert cider_d(TOY_PREDICTIONS, TOY_REFERENCES) == pytest.approx(4.462687, abs=1e-6)


def test_equal_to_pycocoevalcap_on_random_corpora():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    rng = random.Random(0)
    for trial in range(25):
        predictions, references = _random_corpus(rng, allow_empty_predictions=trial % 2 == 0)
        gts, res = _coco_dicts(predictions, references)
        expected_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        assert coco_bleu(predictions, references) == pytest.approx(expected_bleu, abs=1e-6)
        assert rouge_l(predictions, references) == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-6)
        assert cider_d(predictions, references) == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-6)
    gts, res = _coco_dicts(TOY_PREDICTIONS, TOY_REFERENCES)
    assert cider_d(TOY_PREDICTIONS, TOY_REFERENCES) == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-9)


def test_pycocoevalcap_quirks():
    identical = ["the lungs are clear and the heart is normal"] * 2
    # 2 x 9 tokens: 18/16/14/12 n-grams, all matched; the epsilons keep every factor just below 1
    precisions = [(g + 1e-15) / (g + 1e-9) for g in (18, 16, 14, 12)]
    penalty = math.exp(1 - (18 + 1e-9) / (18 + 1e-15))
    assert coco_bleu(identical, identical)[3] == pytest.approx(math.prod(precisions) ** 0.25 * penalty, abs=1e-15)
    assert coco_bleu(identical, identical)[3] < 1.0
    assert cider_d(["no effusion"], ["no effusion"]) == 0.0
    assert rouge_l(["a b"], [["c d", "a x b"]]) == pytest.approx((1 + 1.44) * 1.0 * (2 / 3) / (2 / 3 + 1.44 * 1.0))


def test_medvill_bleu_by_hand():
    scores = medvill_bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    # clipped precisions 5/6, 3/5, 1/4, 0/3; equal lengths so no brevity penalty
    assert scores[0] == pytest.approx(5 / 6)
    assert scores[1] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert scores[2] == pytest.approx(math.exp(0.33 * math.log(5 / 6 * 3 / 5 * 1 / 4)))
    assert scores[3] == pytest.approx(math.exp(0.25 * (math.log(5 / 6 * 3 / 5 * 1 / 4) + math.log(sys.float_info.min))))
    assert scores[3] < 1e-70 < coco_bleu(["the cat sat on the mat"], ["the cat is on the mat"])[3]


def test_nltk_bleu_brevity_penalty_and_short_hypotheses():
    # hypothesis of 2 tokens vs reference of 3: BP = exp(1 - 3/2); no trigram -> one empty trigram counted
    assert nltk_corpus_bleu(["the cat"], ["the cat sat"], (1.0,)) == pytest.approx(math.exp(1 - 3 / 2))
    assert nltk_corpus_bleu(["the cat"], ["the cat sat"], (0.5, 0.5, 0.0)) == pytest.approx(math.exp(1 - 3 / 2))
    assert nltk_corpus_bleu(["x y"], ["a b"], (1.0,)) == 0.0


def test_nltk_bleu_with_uniform_weights_equals_coco_bleu_up_to_epsilons():
    expected = coco_bleu(TOY_PREDICTIONS, TOY_REFERENCES)
    for n in range(1, 5):
        assert nltk_corpus_bleu(TOY_PREDICTIONS, TOY_REFERENCES, (1.0 / n,) * n) == pytest.approx(expected[n - 1], abs=1e-6)


def test_input_errors():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        coco_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one sample"):
        rouge_l([], [])
    with pytest.raises(TypeError, match="not a single string"):
        cider_d("a b", "a b")
    with pytest.raises(ValueError, match=r"references\[0\]"):
        coco_bleu(["a"], [[]])


def test_compute_report_generation_metrics_without_meteor():
    scores = compute_report_generation_metrics(TOY_PREDICTIONS, TOY_REFERENCES, meteor=False)
    assert scores["bleu_4"] == pytest.approx(0.505028, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(0.752058, abs=1e-6)
    assert scores["cider"] == pytest.approx(4.462687, abs=1e-6)
    assert scores["meteor"] is None and "meteor=False" in scores["meteor_note"]
    assert scores["medvill_bleu_3"] == pytest.approx(medvill_bleu(TOY_PREDICTIONS, TOY_REFERENCES)[2])
    assert scores["medvill_bleu_3"] != pytest.approx(scores["bleu_3"], abs=1e-4)


def test_meteor_reported_unavailable_without_java(monkeypatch):
    monkeypatch.setattr("medvlp_hf.metrics.meteor_java.shutil.which", lambda name: None)
    assert "java" in meteor_unavailable_reason()
    scores = compute_report_generation_metrics(TOY_PREDICTIONS, TOY_REFERENCES)
    assert scores["meteor"] is None and "java" in scores["meteor_note"]
    with pytest.raises(RuntimeError, match="java"):
        meteor_score(TOY_PREDICTIONS, TOY_REFERENCES)


@pytest.mark.slow
def test_meteor_equals_pycocoevalcap_java_meteor():
    reason = meteor_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from pycocoevalcap.meteor.meteor import Meteor

    scores = compute_report_generation_metrics(TOY_PREDICTIONS, TOY_REFERENCES)
    assert scores["meteor"] == pytest.approx(0.351675, abs=1e-6)
    gts, res = _coco_dicts(TOY_PREDICTIONS, TOY_REFERENCES)
    assert scores["meteor"] == pytest.approx(Meteor().compute_score(gts, res)[0], abs=1e-9)


def test_perplexity_equals_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    labels = torch.randint(0, 7, (2, 5), generator=generator)
    labels[1, 3:] = -100
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=-100)
    assert perplexity(logits, labels) == pytest.approx(math.exp(expected.item()), rel=1e-6)
    shifted = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert perplexity(logits, labels, shift=True) == pytest.approx(math.exp(shifted.item()), rel=1e-6)
    total, count = token_cross_entropy_sum(logits, labels)
    assert count == 8 and total == pytest.approx(expected.item() * 8, rel=1e-6)


def test_perplexity_of_uniform_logits_is_vocabulary_size():
    assert perplexity(np.zeros((1, 4, 11)), np.array([[1, 2, 3, 4]])) == pytest.approx(11.0)
    with pytest.raises(ValueError, match="no scored tokens"):
        perplexity(np.zeros((1, 2, 3)), np.full((1, 2), -100))
    with pytest.raises(ValueError, match="token ids"):
        perplexity(np.zeros((1, 2, 3)), np.array([[0, 5]]))
