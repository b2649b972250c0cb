"""CIDEr-D as pycocoevalcap 1.2 ``Cider`` computes it (what the papers call CIDEr).

TF-IDF vectors of 1..4-grams with IDF from the evaluated corpus's own references (document =
sample), clipped ``min(hyp, ref)`` cosine per order, a Gaussian length penalty with sigma 6 on the
difference of the two texts' *bigram* counts (pycocoevalcap's length), the mean over orders and
references, times 10, averaged over samples. IDF is a corpus statistic: a one-sample corpus scores 0,
so never compute CIDEr per batch.
"""
import math

import numpy as np

from medvlp_hf.metrics._text_pairs import ngram_counts
from medvlp_hf.metrics._text_pairs import prediction_reference_lists


def _tfidf(counts: dict, document_frequency: dict, log_corpus_size: float, n: int):
    """Per-order TF-IDF dicts, their norms, and the bigram count used as the text length."""
    vectors = [{} for _ in range(n)]
    squared_norms = [0.0] * n
    length = 0
    for gram, term_frequency in counts.items():
        order = len(gram) - 1
        weight = term_frequency * (log_corpus_size - math.log(max(1.0, document_frequency.get(gram, 0.0))))
        vectors[order][gram] = weight
        squared_norms[order] += weight**2
        if order == 1:
            length += term_frequency
    return vectors, [math.sqrt(s) for s in squared_norms], length


def _similarity(hypothesis, reference, n: int, sigma: float) -> np.ndarray:
    (hyp_vectors, hyp_norms, hyp_length), (ref_vectors, ref_norms, ref_length) = hypothesis, reference
    penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * sigma**2))
    values = np.zeros(n)
    for order in range(n):
        for gram, weight in hyp_vectors[order].items():
            ref_weight = ref_vectors[order].get(gram, 0.0)
            values[order] += min(weight, ref_weight) * ref_weight
        if hyp_norms[order] != 0 and ref_norms[order] != 0:
            values[order] /= hyp_norms[order] * ref_norms[order]
        values[order] *= penalty
    return values


def cider_d_samples(predictions, references, n: int = 4, sigma: float = 6.0) -> np.ndarray:
    """Per-sample CIDEr-D scores (IDF from all of ``references``)."""
    predictions, references = prediction_reference_lists(predictions, references)
    reference_counts = [[ngram_counts(r.split(), n) for r in refs] for refs in references]
    document_frequency = {}
    for counts_of_refs in reference_counts:
        for gram in {gram for counts in counts_of_refs for gram in counts}:
            document_frequency[gram] = document_frequency.get(gram, 0.0) + 1.0
    log_corpus_size = math.log(float(len(references)))
    scores = []
    for prediction, counts_of_refs in zip(predictions, reference_counts):
        hypothesis = _tfidf(ngram_counts(prediction.split(), n), document_frequency, log_corpus_size, n)
        total = np.zeros(n)
        for counts in counts_of_refs:
            total += _similarity(hypothesis, _tfidf(counts, document_frequency, log_corpus_size, n), n, sigma)
        scores.append(float(np.mean(total)) / len(counts_of_refs) * 10.0)
    return np.asarray(scores)


def cider_d(predictions, references, n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: the mean of the per-sample scores."""
    return float(np.mean(cider_d_samples(predictions, references, n=n, sigma=sigma)))
