"""Negation and uncertainty of one observation mention, by rules over its sentence.

The CheXpert labeler decides this with NegBio Semgrex patterns over a dependency parse (BLLIP +
Stanford dependencies), which cannot run offline. These rules approximate the same three passes
with trigger phrases and a scope over the surface text (NegEx style), written for this project:

1. pre-negation uncertainty: "cannot exclude X", "X is not ruled out", "no new X" -> uncertain;
2. negation: "no X", "without X", "negative for X", "free/clear/history/resolution/removal of X",
   "rather than X", "normal X", "X is normal / within normal limits", "X has resolved / cleared /
   been removed", "X is no longer seen", "X is not seen/enlarged", "no ... to suggest X" -> negative;
3. post-negation uncertainty: "possible/probable/questionable/suspected X", "may/could/might ... X",
   "concern/suspicion for X", "question of X", "X versus Y", "X or Y", "secondary to X",
   "compatible with X", "borderline X", "X is not well visualized / not appreciated / obscured",
   "stable/unchanged (cardiac) silhouette/heart size", and the four mentions CheXpert always treats
   as uncertain (vascular/pulmonary congestion, indistinctness, vascular prominence) -> uncertain;
4. otherwise positive.

A trigger reaches a mention only within ``max_gap`` tokens and when no scope breaker (";", ":",
"but", "however", "although", "which", "except", "otherwise", ", and the/there" ...) lies between
them; forward negation also stops at a verb ("no effusion is seen and the heart is enlarged").
"""
import re
from dataclasses import dataclass

from medvlp_hf.metrics.chexpert_labels import NEGATIVE
from medvlp_hf.metrics.chexpert_labels import POSITIVE
from medvlp_hf.metrics.chexpert_labels import UNCERTAIN

BEFORE = "before"
AFTER = "after"

_CLAUSE_BREAK = (
    r"[;:]|\b(?:but|however|although|though|whereas|while|which|except|aside from|apart from|otherwise"
    r"|other than|with the exception of)\b|\band (?:the|there|this|these|it)\b"
)
_VERB_BREAK = r"\b(?:is|are|was|were|has|have|had|seen|noted|identified|present|demonstrated)\b"
_ADJECTIVE_BREAK = r",|\b(?:with|without|and there)\b"
_MODAL_BREAK = r"\b(?:may|might|could|would|can|reflect|represent|indicate|suggest)\b"
_COPULA_WORD = r"\b(?:is|are|was|were|appears?|remains?|looks?|seems?)\b"
_LONE_COMMA = r"\A(?!.*\b(?:and|or)\b)[^,]*,"


@dataclass(frozen=True)
class Trigger:
    """A cue phrase that changes the label of mentions on one side of it, within a token window."""

    name: str
    pattern: re.Pattern
    side: str
    max_gap: int
    breaks: re.Pattern

    def reaches(self, sentence: str, start: int, end: int) -> bool:
        """True when this trigger occurs in ``sentence`` in scope of the mention at [start, end).

        A trigger before the mention is blocked by a breaker in the gap or at the mention's start
        ("no effusion and the heart ..."), one after it by a breaker in the gap.
        """
        for match in self.pattern.finditer(sentence):
            if self.side == BEFORE and match.end() <= start:
                gap, scope = sentence[match.end() : start], sentence[match.end() : end]
            elif self.side == AFTER and match.start() >= end:
                gap = scope = sentence[end : match.start()]
            else:
                continue
            if len(gap.split()) <= self.max_gap and not self.breaks.search(scope):
                return True
        return False


def _trigger(name, regex, side, max_gap, *extra_breaks):
    breaks = re.compile("|".join((_CLAUSE_BREAK,) + extra_breaks))
    return Trigger(name, re.compile(regex), side, max_gap, breaks)


_EXCLUSION = r"(?:cannot|can not|could not|can't|not|may not|should not)\s+(?:be\s+)?(?:exclude[ds]?|ruled?\s+out)"
_COPULA = r"\b(?:is|are|was|were|appears?|remains?|looks?|seems?)\s+"
_FILLER = r"(?:(?!(?:and|or|but|is|are|was|were)\b)[^\s,;]+\s+){0,5}?"
_NO = r"\bno\b(?!\s+(?:\S+\s+)?(?:changes?|increase|decrease)\b)"

PRE_NEGATION_UNCERTAINTY = (
    _trigger("cannot exclude X", rf"\b{_EXCLUSION}\b", BEFORE, 6, _VERB_BREAK),
    _trigger("no evidence to rule out X", r"\bno evidence to rule out\b", BEFORE, 6),
    _trigger("X cannot be excluded", rf"\b{_EXCLUSION}\b", AFTER, 6),
    _trigger("no new X", r"\bno\s+new\b", BEFORE, 2, _VERB_BREAK, r",|\b(?:and|or)\b"),
)

NEGATION = (
    _trigger("no X", _NO, BEFORE, 10, _VERB_BREAK),
    _trigger("without X", r"\bwithout\b(?!\s+(?:\S+\s+)?changes?\b)", BEFORE, 10, _VERB_BREAK),
    _trigger(
        "negative/free/clear/history/resolution/removal of X",
        r"\b(?:negative for|free of|clear of|clearing of|resolution of|resolved|removal of|removed"
        r"|history of|disappearance of|drainage of|rather than|absence of|rule out|ruled out|to exclude"
        r"|no evidence of|without evidence of)\b",
        BEFORE,
        6,
        _VERB_BREAK,
    ),
    _trigger("no ... to suggest X", r"\bno\b[^;:]*?\bto\s+(?:suggest|explain|diagnose)\b", BEFORE, 4),
    _trigger("normal X", r"\b(?:normal|unremarkable)\b", BEFORE, 4, _ADJECTIVE_BREAK, _VERB_BREAK),
    _trigger("X normal", r"\b(?:within\s+)?(?:normal|unremarkable)\b", AFTER, 0),
    _trigger(
        "X is normal",
        rf"{_COPULA}{_FILLER}(?:normal|unremarkable)\b",
        AFTER,
        8,
        r"\b(?:with|without)\b",
        _COPULA_WORD,
        _LONE_COMMA,
    ),
    _trigger("X has resolved", r"\b(?:resolved|resolving|cleared|removed|withdrawn|resolution)\b", AFTER, 4, r","),
    _trigger("X is no longer seen", r"\bno longer\b", AFTER, 3),
    _trigger(
        "X is not seen",
        r"\bnot\s+(?:seen|identified|demonstrated|present|evident|detected|noted|enlarged|visible|apparent)\b",
        AFTER,
        3,
    ),
    _trigger("X is absent", r"\b(?:absent|excluded|ruled out)\b", AFTER, 2),
)

POST_NEGATION_UNCERTAINTY = (
    _trigger(
        "possible X",
        r"\b(?:possible|possibly|presumably|presumed|probable|questionable|suspect|suspected|suspicious"
        r"|question of|suggestion of|concern for|concerning for|suspicion for|suspicion of|worrisome for"
        r"|maybe|favor|favoring|considered|consider|differential diagnosis|secondary to|compatible with"
        r"|correlate clinically|clinical correlation|borderline|obscured|obscuring|versus|vs"
        r"|less likely)\b",
        BEFORE,
        6,
        _VERB_BREAK,
    ),
    _trigger("may ... X", r"\b(?:may|might|could|would|can)\b(?!\s+not\b)", BEFORE, 5),
    _trigger(
        "X is suspected",
        r"\b(?:suspected|questioned|versus|vs|less likely|obscured|poorly evaluated|incompletely evaluated"
        r"|not\s+(?:well\s+|clearly\s+)?(?:visualized|evaluated|assessed)|not clearly seen|not appreciated"
        r"|(?:may|might|could|can)\s+(?:also\s+)?(?:be present|appear|have this appearance))\b",
        AFTER,
        4,
    ),
    _trigger("X or Y", r"\bor\b", AFTER, 2, _VERB_BREAK, _MODAL_BREAK),
    _trigger("Y or X", r"\bor\b", BEFORE, 3),
)

_CARDIAC_WORDS = re.compile(
    r"\b(?:heart|size|silhouette|contour|contours|mediastinum|mediastinal|cardiomediastinum|cardiomediastinal"
    r"|shadow|configuration|pericardial)\b"
)
CARDIAC_STABILITY = (
    _trigger("stable silhouette", r"\b(?:stable|unchanged)\b", BEFORE, 3, _ADJECTIVE_BREAK, _VERB_BREAK),
    _trigger(
        "silhouette is stable",
        r"\b(?:stable|unchanged|not changed|no change|similar to (?:the\s+)?(?:prior|previous))\b",
        AFTER,
        4,
    ),
)
ALWAYS_UNCERTAIN_MENTIONS = frozenset({"vascular congestion", "pulmonary congestion", "indistinctness", "vascular prominence"})


def classify_mention(sentence: str, start: int, end: int):
    """``(label, rule name)`` for the mention ``sentence[start:end]``; the sentence is lower-cased.

    The span is first widened to whole words ("atelecta" -> "atelectasis") so gaps count real tokens.
    """
    while start > 0 and sentence[start - 1].isalnum() and sentence[start].isalnum():
        start -= 1
    while end < len(sentence) and sentence[end].isalnum() and sentence[end - 1].isalnum():
        end += 1
    for trigger in PRE_NEGATION_UNCERTAINTY:
        if trigger.reaches(sentence, start, end):
            return UNCERTAIN, trigger.name
    for trigger in NEGATION:
        if trigger.reaches(sentence, start, end):
            return NEGATIVE, trigger.name
    mention = sentence[start:end].strip()
    if mention in ALWAYS_UNCERTAIN_MENTIONS:
        return UNCERTAIN, "always-uncertain mention"
    if _CARDIAC_WORDS.search(mention):
        for trigger in CARDIAC_STABILITY:
            if trigger.reaches(sentence, start, end):
                return UNCERTAIN, trigger.name
    for trigger in POST_NEGATION_UNCERTAINTY:
        if trigger.reaches(sentence, start, end):
            return UNCERTAIN, trigger.name
    return POSITIVE, "mention"
