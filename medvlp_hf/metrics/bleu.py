"""Corpus BLEU in the two conventions the papers use.

* ``coco_bleu``: pycocoevalcap 1.2 ``Bleu(4)`` (R2Gen family, PTUnifier, MedUnifier): whitespace
  tokens, clipped n-gram counts, the reference length closest to each hypothesis (ties: the shorter),
  corpus sums, the tiny/small epsilons (1e-15 / 1e-9) pycocoevalcap adds, so an identical corpus
  scores 0.99999999948 rather than 1 and a corpus with no 4-gram match scores a small positive BLEU-4.
* ``medvill_bleu``: MedViLL's ``bleu.py``: NLTK ``corpus_bleu`` on ``str.split(" ")`` tokens with
  weights (1,0,0,0), (.5,.5,0,0), (.33,.33,.33,0), (.25,.25,.25,.25), no smoothing: an n-gram order
  with no match contributes ``log(sys.float_info.min)`` (so BLEU-4 is ~0), hypotheses shorter than n
  count one n-gram in the denominator, and BLEU-3's weights sum to 0.99.
"""
import math
import sys
from fractions import Fraction

from medvlp_hf.metrics._text_pairs import ngram_counts
from medvlp_hf.metrics._text_pairs import prediction_reference_lists

MEDVILL_BLEU_WEIGHTS = ((1.0, 0.0, 0.0, 0.0), (0.5, 0.5, 0.0, 0.0), (0.33, 0.33, 0.33, 0.0), (0.25, 0.25, 0.25, 0.25))
_TINY = 1e-15
_SMALL = 1e-9


def _clipped_matches(hypothesis_counts: dict, reference_token_lists, n: int):
    """Per-order sums of hypothesis n-gram counts clipped by their maximum count in any reference."""
    max_reference_counts = {}
    for tokens in reference_token_lists:
        for gram, count in ngram_counts(tokens, n).items():
            max_reference_counts[gram] = max(max_reference_counts.get(gram, 0), count)
    matches = [0] * n
    for gram, count in hypothesis_counts.items():
        matches[len(gram) - 1] += min(count, max_reference_counts.get(gram, 0))
    return matches


def _closest_reference_length(reference_token_lists, hypothesis_length: int) -> int:
    return min((abs(len(r) - hypothesis_length), len(r)) for r in reference_token_lists)[1]


def coco_bleu(predictions, references, n: int = 4) -> list:
    """BLEU-1..n as pycocoevalcap ``Bleu(n).compute_score`` returns them (corpus level)."""
    predictions, references = prediction_reference_lists(predictions, references)
    matches, guesses = [0] * n, [0] * n
    hypothesis_total = reference_total = 0
    for prediction, refs in zip(predictions, references):
        tokens = prediction.split()
        reference_tokens = [r.split() for r in refs]
        for k, count in enumerate(_clipped_matches(ngram_counts(tokens, n), reference_tokens, n)):
            matches[k] += count
            guesses[k] += max(0, len(tokens) - k)
        hypothesis_total += len(tokens)
        reference_total += _closest_reference_length(reference_tokens, len(tokens))
    ratio = (hypothesis_total + _TINY) / (reference_total + _SMALL)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for k in range(n):
        product *= (matches[k] + _TINY) / (guesses[k] + _SMALL)
        scores.append(product ** (1.0 / (k + 1)) * penalty)
    return scores


def nltk_corpus_bleu(predictions, references, weights) -> float:
    """NLTK ``corpus_bleu`` (no smoothing) on ``str.split(" ")`` tokens with the given n-gram weights."""
    predictions, references = prediction_reference_lists(predictions, references)
    n = len(weights)
    numerators, denominators = [0] * n, [0] * n
    hypothesis_total = reference_total = 0
    for prediction, refs in zip(predictions, references):
        tokens = prediction.split(" ")
        reference_tokens = [r.split(" ") for r in refs]
        for k, count in enumerate(_clipped_matches(ngram_counts(tokens, n), reference_tokens, n)):
            numerators[k] += count
            denominators[k] += max(1, len(tokens) - k)
        hypothesis_total += len(tokens)
        reference_total += _closest_reference_length(reference_tokens, len(tokens))
    if numerators[0] == 0:
        return 0.0
    if hypothesis_total > reference_total:
        penalty = 1.0
    else:
        penalty = math.exp(1 - reference_total / hypothesis_total)
    precisions = [
        Fraction(num, den) if num else sys.float_info.min for num, den in zip(numerators, denominators)
    ]
    return penalty * math.exp(math.fsum(w * math.log(p) for w, p in zip(weights, precisions)))


def medvill_bleu(predictions, references) -> list:
    """MedViLL's BLEU-1..4 (NLTK corpus BLEU with its four weight vectors)."""
    return [nltk_corpus_bleu(predictions, references, weights) for weights in MEDVILL_BLEU_WEIGHTS]
