"""Perplexity from teacher-forced logits, as MedViLL reports it: exp(mean token cross-entropy)."""
import numpy as np

from medvlp_hf.metrics._arrays import as_numpy


def token_cross_entropy_sum(logits, labels, ignore_index: int = -100, shift: bool = False):
    """``(sum of token cross-entropies, number of scored tokens)``, so batches can be accumulated.

    ``logits``: (batch, length, vocab); ``labels``: (batch, length) token ids, ``ignore_index`` where
    nothing is scored. ``shift=True`` scores ``logits[:, t]`` against ``labels[:, t + 1]`` (causal-LM
    layout); with ``shift=False`` the two are already aligned.
    """
    logits, labels = as_numpy(logits, np.float64), as_numpy(labels).astype(np.int64)
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"logits {logits.shape} must be (batch, length, vocab) and labels {labels.shape} (batch, length)")
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != ignore_index
    scored_logits, targets = logits[keep], labels[keep]
    if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[-1]):
        raise ValueError(f"labels must be token ids in [0, {logits.shape[-1]}) or {ignore_index}")
    peak = scored_logits.max(axis=-1, keepdims=True)
    log_normaliser = np.log(np.exp(scored_logits - peak).sum(axis=-1)) + peak[:, 0]
    losses = log_normaliser - scored_logits[np.arange(len(targets)), targets]
    return float(losses.sum()), int(targets.size)


def perplexity(logits, labels, ignore_index: int = -100, shift: bool = False) -> float:
    """exp of the mean cross-entropy over all scored tokens (see ``token_cross_entropy_sum``)."""
    total, count = token_cross_entropy_sum(logits, labels, ignore_index=ignore_index, shift=shift)
    if count == 0:
        raise ValueError(f"no scored tokens: every label equals ignore_index={ignore_index}")
    return float(np.exp(total / count))
