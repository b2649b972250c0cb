"""A rule-based CheXpert labeler that runs offline: the labeler's phrase lists plus this project's rules.

Stages follow the CheXpert labeler (stanfordmlgroup/chexpert-labeler):

* clean: lower-case, "and/or" -> "or", "a/b" -> "a or b", a space after every "," and every "."
  not inside a number ("2.5 cm" stays whole);
* split into sentences (at ". " except after "vs.", "? ", "! " and line breaks);
* extract: every occurrence of a mention phrase (substring match, "_" in the lists meaning a space),
  skipped where it overlaps an unmention phrase of the same observation (the shipped lists plus the
  labeler's generated "over the / in the (left|right|superior) heart ..." phrases);
* classify each mention with ``chexpert_rules.classify_mention``;
* aggregate per report as CheXpert does: several labels for one observation resolve to uncertain when
  negative and uncertain both occur, else positive when positive occurs; a positive or uncertain
  "chf"/"heart failure" makes Cardiomegaly uncertain when Cardiomegaly is not mentioned itself;
  "No Finding" is 1 when no observation other than Support Devices (the "No Finding" list names other
  findings) is positive or uncertain, and NaN otherwise.
"""
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvlp_hf.metrics.chexpert_labels import CHEXPERT_OBSERVATIONS
from medvlp_hf.metrics.chexpert_labels import NEGATIVE
from medvlp_hf.metrics.chexpert_labels import POSITIVE
from medvlp_hf.metrics.chexpert_labels import UNCERTAIN
from medvlp_hf.metrics.chexpert_rules import classify_mention

PHRASES_DIR = Path(__file__).resolve().parent / "chexpert_phrases" / "phrases"
NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
_HEART_FAILURE_MENTIONS = ("chf", "heart failure")
_SENTENCE_END = re.compile(r"(?<=[.?!])(?<!\bvs\.)\s+|\n+")


@dataclass(frozen=True)
class Mention:
    """One labelled mention: where it is, which phrase found it, and which rule decided its label."""

    observation: str
    phrase: str
    sentence: str
    start: int
    end: int
    label: float
    rule: str


def clean_report(text: str) -> str:
    """The CheXpert loader's cleaning, keeping line breaks as sentence boundaries and decimals whole."""
    text = text.lower().replace("and/or", "or")
    text = re.sub(r"(?<=[a-z])/(?=[a-z])", " or ", text)
    text = re.sub(r"\.(?!\d)", ". ", text.replace("..", ".")).replace(",", ", ")
    lines = (" ".join(line.split()) for line in text.splitlines())
    text = "\n".join(line for line in lines if line)
    return re.sub(r"\.\s+\.", ".", text)


def split_sentences(text: str):
    """Sentences of a cleaned report."""
    return [sentence.strip() for sentence in _SENTENCE_END.split(text) if sentence.strip()]


def _observation_name(path: Path) -> str:
    return path.stem.replace("_", " ").title()


def _read_phrases(folder: Path) -> dict:
    """``{observation: [phrase, ...]}`` from one ``<observation>.txt`` per observation."""
    phrases = {}
    for path in sorted(folder.glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        phrases[_observation_name(path)] = [line.strip().replace("_", " ") for line in lines if line.strip()]
    return phrases


def _positional_unmentions(mentions, drop_article: bool):
    """The labeler's generated unmentions, e.g. "over the left heart" (a device over the heart)."""
    places = [f"{lead}{side}" for lead in ("over the", "overly the", "in the") for side in ("", " superior", " left", " right")]
    return [f"{place} {m.replace('the ', '') if drop_article else m}" for place in places for m in mentions]


class CheXpertRuleLabeler:
    """``labeler(texts) -> (N, 14)`` CheXpert labels (1, 0, -1, NaN) with no parser and no download."""

    def __init__(self, phrases_dir=None):
        phrases_dir = Path(phrases_dir) if phrases_dir is not None else PHRASES_DIR
        mention_dir, unmention_dir = phrases_dir / "mention", phrases_dir / "unmention"
        if not mention_dir.is_dir():
            raise FileNotFoundError(
                f"no CheXpert mention phrase folder at {mention_dir}; "
                "pass phrases_dir=<folder with mention/ and unmention/>"
            )
        self.mentions = _read_phrases(mention_dir)
        unknown = set(self.mentions) - set(CHEXPERT_OBSERVATIONS)
        if unknown:
            raise ValueError(f"phrase files for unknown observations {sorted(unknown)} in {mention_dir}")
        self.unmentions = _read_phrases(unmention_dir) if unmention_dir.is_dir() else {}
        cardiomegaly = [m for m in self.mentions.get("Cardiomegaly", []) if m not in ("cardiomegaly", "cardiac enlargement")]
        self.unmentions["Cardiomegaly"] = _positional_unmentions(cardiomegaly, drop_article=True)
        self.unmentions["Enlarged Cardiomediastinum"] = _positional_unmentions(
            self.mentions.get("Enlarged Cardiomediastinum", []), drop_article=False
        )

    def _unmentioned_spans(self, sentence: str, observation: str):
        return [m.span() for u in self.unmentions.get(observation, []) for m in re.finditer(re.escape(u), sentence)]

    def annotate(self, text: str):
        """Every mention in ``text`` with its label and the deciding rule (for inspection and tests)."""
        found = []
        for sentence in split_sentences(clean_report(text)):
            for observation, phrases in self.mentions.items():
                blocked = self._unmentioned_spans(sentence, observation)
                for phrase in phrases:
                    for match in re.finditer(re.escape(phrase), sentence):
                        start, end = match.span()
                        if any(start < u_end and end > u_start for u_start, u_end in blocked):
                            continue
                        label, rule = classify_mention(sentence, start, end)
                        found.append(Mention(observation, phrase, sentence, start, end, label, rule))
        return found

    def label(self, text: str) -> np.ndarray:
        """The 14 labels of one report."""
        votes = {}
        finding = False
        heart_failure = False
        for mention in self.annotate(text):
            positive_or_uncertain = mention.label in (POSITIVE, UNCERTAIN)
            finding |= positive_or_uncertain and mention.observation != SUPPORT_DEVICES
            heart_failure |= positive_or_uncertain and mention.phrase in _HEART_FAILURE_MENTIONS
            if mention.observation != NO_FINDING:
                votes.setdefault(mention.observation, set()).add(mention.label)
        if heart_failure and "Cardiomegaly" not in votes:
            votes["Cardiomegaly"] = {UNCERTAIN}
        if not finding:
            votes[NO_FINDING] = {POSITIVE}
        return np.array([_resolve(votes.get(name)) for name in CHEXPERT_OBSERVATIONS], dtype=np.float64)

    def __call__(self, texts) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a list of report texts, not a single string")
        return np.stack([self.label(text) for text in texts]) if len(texts) else np.zeros((0, len(CHEXPERT_OBSERVATIONS)))


def _resolve(labels) -> float:
    """CheXpert's rule for several labels of one observation in one report."""
    if not labels:
        return float("nan")
    if NEGATIVE in labels and UNCERTAIN in labels:
        return UNCERTAIN
    if POSITIVE in labels:
        return POSITIVE
    return next(iter(labels))
