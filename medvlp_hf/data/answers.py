"""Closed-set VQA answer keys: the normalisation that maps an answer onto its label, and answer vocabularies.

MEVF built the VQA-RAD answer list (`answer_all_list.json`, 458 answers) with the VQA-v2 answer
normalisation (punctuation, number words, articles, contractions; `medvlp_hf.metrics` owns it) followed by
removing commas; that list also writes "x ray" as "xray". Keys and answers both go through
`normalize_answer`, so "Yes", "yes" and "yes." share one label.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from medvlp_hf.metrics.vqa_normalization import normalize_vqa_answer

_X_RAY = re.compile(r"\bx ray")


def normalize_answer(answer) -> str:
    """Label key of an answer (any type; VQA-RAD's integer answers such as `4` become '4')."""
    return _X_RAY.sub("xray", normalize_vqa_answer(answer).replace(",", ""))


def answer_vocabulary(answers: Iterable, min_count: int = 1) -> list[str]:
    """Normalised answers seen at least `min_count` times, most frequent first (ties alphabetical)."""
    counts = Counter(normalize_answer(answer) for answer in answers)
    kept = [answer for answer, count in counts.items() if count >= min_count and answer]
    return sorted(kept, key=lambda answer: (-counts[answer], answer))
