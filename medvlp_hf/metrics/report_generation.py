"""All report-generation (NLG) scores in one call, under the names the package reports them.

Texts are scored as given (no PTB tokenizer, no lower-casing), like R2Gen and MedUnifier feed
pycocoevalcap: clean both sides the same way before calling.
"""
from medvlp_hf.metrics.bleu import coco_bleu
from medvlp_hf.metrics.bleu import medvill_bleu
from medvlp_hf.metrics.cider import cider_d
from medvlp_hf.metrics.meteor_java import meteor_score
from medvlp_hf.metrics.meteor_java import meteor_unavailable_reason
from medvlp_hf.metrics.rouge import rouge_l


def compute_report_generation_metrics(predictions, references, meteor: bool = True) -> dict:
    """Corpus scores of generated reports against references (a string or a list of strings each).

    Keys: ``bleu_1``..``bleu_4``, ``rouge_l``, ``cider`` (CIDEr-D), ``meteor`` (pycocoevalcap
    conventions, equal to pycocoevalcap 1.2), and ``medvill_bleu_1``..``medvill_bleu_4`` (MedViLL's
    NLTK corpus BLEU). ``meteor`` is ``None`` with a ``meteor_note`` when Java METEOR-1.5 cannot run
    here or ``meteor=False`` was asked (it costs ~10 s to start).
    """
    scores = {f"bleu_{n}": value for n, value in enumerate(coco_bleu(predictions, references), start=1)}
    scores["rouge_l"] = rouge_l(predictions, references)
    scores["cider"] = cider_d(predictions, references)
    reason = meteor_unavailable_reason() if meteor else "METEOR not computed: meteor=False was passed"
    scores["meteor"] = meteor_score(predictions, references) if reason is None else None
    if reason is not None:
        scores["meteor_note"] = reason
    scores.update(
        {f"medvill_bleu_{n}": value for n, value in enumerate(medvill_bleu(predictions, references), start=1)}
    )
    return scores
