"""Column types shared by the loaders, so every VQA, report and caption dataset has the same core columns."""
from __future__ import annotations

from datasets import Features, Image, Sequence, Value

from .chexpert import NUM_CHEXPERT_LABELS

STRING = Value("string")
INT = Value("int64")
LABELS = Sequence(Value("float32"), length=NUM_CHEXPERT_LABELS)


def vqa_features(**extra) -> Features:
    """image, question, answer (str), answer_type ('OPEN'/'CLOSED'), qid, then dataset-specific columns."""
    return Features(
        {"image": Image(), "question": STRING, "answer": STRING, "answer_type": STRING, "qid": INT, **extra}
    )


def report_features(**extra) -> Features:
    """id, image, report text, then dataset-specific columns (labels, sections, ids)."""
    return Features({"id": STRING, "image": Image(), "report": STRING, **extra})


def caption_features(**extra) -> Features:
    """id, image, caption, then dataset-specific columns."""
    return Features({"id": STRING, "image": Image(), "caption": STRING, **extra})
