"""ROUGE-L as pycocoevalcap 1.2 ``Rouge`` computes it: LCS F-measure with beta 1.2, averaged over samples.

Tokens are ``str.split(" ")`` (not ``split()``), precision and recall are the best over the
references separately, and a sample scores 0 when either is 0.
"""
import numpy as np

from medvlp_hf.metrics._text_pairs import prediction_reference_lists

ROUGE_L_BETA = 1.2


def lcs_length(a, b) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_sample(prediction: str, references) -> float:
    """ROUGE-L of one prediction against its references."""
    candidate = prediction.split(" ")
    precision = recall = 0.0
    for reference in references:
        tokens = reference.split(" ")
        common = lcs_length(tokens, candidate)
        precision = max(precision, common / len(candidate))
        recall = max(recall, common / len(tokens))
    if precision == 0 or recall == 0:
        return 0.0
    beta2 = ROUGE_L_BETA**2
    return (1 + beta2) * precision * recall / (recall + beta2 * precision)


def rouge_l(predictions, references) -> float:
    """Corpus ROUGE-L: the mean of the per-sample scores."""
    predictions, references = prediction_reference_lists(predictions, references)
    return float(np.mean([rouge_l_sample(p, r) for p, r in zip(predictions, references)]))
