"""METEOR through pycocoevalcap's Java METEOR-1.5, or nothing.

The papers' METEOR is the METEOR-1.5 jar (``-l en -norm``) that pycocoevalcap ships; NLTK's
``meteor_score`` gives very different numbers (0.658 vs 0.352 on the toy corpus in the reference
notes), so no substitute is ever reported under this name. The jar needs ``java`` on PATH and costs
about 10 s to start (it loads a paraphrase table); it runs offline and writes nothing.
"""
import importlib.util
import shutil

from medvlp_hf.metrics._text_pairs import prediction_reference_lists


def meteor_unavailable_reason():
    """``None`` when METEOR-1.5 can run here, else a sentence saying what is missing and how to fix it."""
    if importlib.util.find_spec("pycocoevalcap") is None:
        return "METEOR unavailable: pycocoevalcap is not installed (pip install pycocoevalcap)"
    if shutil.which("java") is None:
        return "METEOR unavailable: no `java` on PATH (install a Java runtime, e.g. OpenJDK 17)"
    return None


def _one_line(text: str) -> str:
    """The jar reads one line per request, so line breaks inside a text become spaces."""
    return " ".join(text.splitlines())


def meteor_score(predictions, references) -> float:
    """Corpus METEOR-1.5 exactly as pycocoevalcap ``Meteor().compute_score`` returns it."""
    reason = meteor_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    from pycocoevalcap.meteor.meteor import Meteor

    predictions, references = prediction_reference_lists(predictions, references)
    references_by_id = {i: [_one_line(r) for r in refs] for i, refs in enumerate(references)}
    predictions_by_id = {i: [_one_line(p)] for i, p in enumerate(predictions)}
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(references_by_id, predictions_by_id)
    finally:
        del scorer
    return float(score)
