"""Shared input check for the report-generation metrics: one prediction, one or more references each."""


def prediction_reference_lists(predictions, references):
    """``(predictions, references)`` as a list of strings and a list of non-empty lists of strings."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be lists (one entry per sample), not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if len(predictions) == 0:
        raise ValueError("no predictions given: corpus-level text metrics need at least one sample")
    reference_lists = []
    for index, refs in enumerate(references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references[{index}] must be a string or a non-empty list of strings, got {refs!r}")
        reference_lists.append(refs)
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise ValueError(f"predictions[{index}] must be a string, got {type(prediction).__name__}")
    return list(predictions), reference_lists


def ngram_counts(tokens, n: int) -> dict:
    """Counts of every 1..n-gram (as tuples) in ``tokens``."""
    counts = {}
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            gram = tuple(tokens[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts
