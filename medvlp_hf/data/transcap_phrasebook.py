"""TransCap's phrasebook: several phrasings (short sentences) per attribute value, from a local language model or
from the built-in templates.

MISS (Chen et al. 2024, §3.4 and appendix A.3) gives each attribute value of a labelled image to an LLM and asks it
for several ways of expressing it; captions are then composed from these phrasings at training time. Here a local
`transformers` text-generation pipeline rewrites a template sentence for every value, once, up front. What it returns
is cleaned (first sentence of the first line, no bullets or quotes) and checked: it must state the value (contain one
of its keywords), mention no other value a row may not have, carry no negation or hedge (except for a normal study),
and read as prose. Values for which no generated phrasing passes keep the template phrasings, and a warning names
them. Save the phrasebook (`save`/`load`) to reuse the generated phrasings without the model.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .errors import DataFormatError
from .transcap_templates import FRAMES, is_normal, template_phrasings, value_keywords

logger = logging.getLogger("medvlp_hf.data")

REPHRASE_PROMPT = (
    "Rewrite the following sentence about a medical image in different words. Keep its exact meaning and add "
    "nothing. Answer with one sentence.\nSentence: {sentence}\nRewritten sentence:"
)
PHRASEBOOK_FORM = ('a phrasebook file is {"phrasings": {attribute: {value: [sentence, ...]}}} as Phrasebook.save '
                   'writes it, or that inner {attribute: {value: [sentence, ...]}} mapping alone')
MIN_WORDS, MAX_WORDS, MIN_LETTER_SHARE = 3, 40, 0.85
_LEADING_MARKS = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019 "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_PROMPT_ECHO = re.compile(r"\b(?:rewrit\w*|rephras\w*|sentence)\b")
_NEGATION_OR_HEDGE = re.compile(
    r"\b(?:no|not|none|without|absent|absence|negative|free of|ruled? out|normal|unremarkable|cannot|may|might|"
    r"possibl[ey]|suspect\w*|question\w*)\b|n't|\?"
)


def _mentions(text: str, keyword: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(keyword)}(?![a-z0-9])", text) is not None


def clean_phrasing(text: str) -> str:
    """A generated text as one sentence: its first non-blank line without bullet, numbering or quotes, cut after
    the first sentence, spaces collapsed, capitalised and ending with a full stop ('' when nothing is left)."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = _LEADING_MARKS.sub("", line).strip(_QUOTES)
    sentence = " ".join(_SENTENCE_END.split(line, maxsplit=1)[0].split()).strip(_QUOTES)
    if sentence and sentence[-1] not in ".!?":
        sentence += "."
    return sentence[:1].upper() + sentence[1:]


def rejection_reason(sentence: str, attribute: str, value: str, conflicting: Iterable[str] = ()) -> str | None:
    """Why `sentence` cannot serve as a phrasing of `attribute` = `value`, or None when it can.

    `conflicting`: keywords of values some rows do not have (other values of the attribute, values of attributes
    that vary across the dataset); a phrasing that mentions one would be wrong for those rows.
    """
    lower = sentence.lower()
    words = re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", lower)
    if len(words) < MIN_WORDS:
        return f"fewer than {MIN_WORDS} words"
    if len(words) > MAX_WORDS:
        return f"more than {MAX_WORDS} words"
    if sum(char.isalpha() or char.isspace() for char in sentence) < MIN_LETTER_SHARE * len(sentence):
        return "not prose (too many digits or symbols)"
    if len(words) >= 6 and len(set(words)) < len(words) / 2:
        return "repetitive"
    if _PROMPT_ECHO.search(lower):
        return "echoes the prompt"
    own = value_keywords(attribute, value)
    if not any(_mentions(lower, keyword) for keyword in own):
        return f"does not state {value!r} (none of {list(own)})"
    other = next((keyword for keyword in conflicting if keyword not in own and _mentions(lower, keyword)), None)
    if other is not None:
        return f"mentions {other!r}, which not every row has"
    if not is_normal(attribute, value) and _NEGATION_OR_HEDGE.search(lower):
        return "negates or hedges the value"
    return None


class Phrasebook:
    """Phrasings for every (attribute, value) of a dataset: `phrasings(attribute, value)` -> tuple of sentences.

    Build it with `from_templates`, `from_pipeline` (both via `build_phrasebook`), `load`, or directly from a mapping
    {attribute: {value: [sentence, ...]}} of your own phrasings. `llm_fallbacks` lists the (attribute, value) pairs
    for which the language model gave no usable phrasing, so the templates were used. `source` names the file a
    loaded phrasebook came from (None otherwise), for error messages.

    Raises ValueError naming the entry (`phrasings['plane']['posteroanterior']`) when an attribute is not a TransCap
    attribute, an attribute does not map values to sentences, or a value has no non-empty sentence.
    """

    def __init__(self, phrasings: Mapping[str, Mapping[str, Sequence[str]]],
                 llm_fallbacks: Iterable[tuple[str, str]] = (), source: str | None = None):
        if not isinstance(phrasings, Mapping):
            raise ValueError(f"phrasings must map attributes to {{value: [sentences]}}, got {type(phrasings).__name__}")
        self._phrasings = {}
        for attribute, by_value in phrasings.items():
            where = f"phrasings[{attribute!r}]"
            if attribute not in FRAMES:
                raise ValueError(f"{where}: {attribute!r} is not a TransCap attribute; use one of {list(FRAMES)}")
            if not isinstance(by_value, Mapping):
                raise ValueError(f"{where} must map each value to a list of sentences ({{value: [sentences]}}), got "
                                 f"{type(by_value).__name__} {_shorten(by_value)}")
            for value, sentences in by_value.items():
                if isinstance(sentences, str) or not isinstance(sentences, Sequence) or not sentences or not all(
                    isinstance(sentence, str) and sentence.strip() for sentence in sentences
                ):
                    raise ValueError(f"{where}[{value!r}] must be a non-empty list of non-empty sentences, got "
                                     f"{_shorten(sentences)}")
                self._phrasings.setdefault(attribute, {})[value] = tuple(sentence.strip() for sentence in sentences)
        self.llm_fallbacks = tuple(_pairs(llm_fallbacks))
        self.source = source

    def phrasings(self, attribute: str, value: str) -> tuple[str, ...]:
        try:
            return self._phrasings[attribute][value]
        except KeyError:
            raise KeyError(
                f"the phrasebook{self._named()} has no phrasings for {attribute}={value!r}; build it from the "
                f"attribute values of every split (`attribute_values(dataset_dict)`)"
            ) from None

    def missing(self, values: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
        """The (attribute, value) pairs of `values` this phrasebook has no phrasings for."""
        return [(attribute, value) for attribute, items in values.items() for value in items
                if value not in self._phrasings.get(attribute, {})]

    def check_covers(self, values: Mapping[str, Iterable[str]]) -> None:
        """Raise ValueError listing the (attribute, value) pairs of `values` without phrasings, and how to add them."""
        missing = self.missing(values)
        if missing:
            listed = ", ".join(f"phrasings[{attribute!r}][{value!r}]" for attribute, value in missing[:10])
            raise ValueError(
                f"the phrasebook{self._named()} has no phrasings for {len(missing)} attribute value(s) of the dataset: "
                f"{listed}{' ...' if len(missing) > 10 else ''}; add a list of sentences for each, or build the "
                f"phrasebook from `attribute_values` of every split"
            )

    def _named(self) -> str:
        return f" {self.source}" if self.source else ""

    def to_dict(self) -> dict:
        return {"phrasings": {attribute: {value: list(sentences) for value, sentences in by_value.items()}
                              for attribute, by_value in self._phrasings.items()},
                "llm_fallbacks": [list(pair) for pair in self.llm_fallbacks]}

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Phrasebook:
        """A phrasebook file: `save`'s {"phrasings": {attribute: {value: [sentences]}}, "llm_fallbacks": [...]}, or
        the bare {attribute: {value: [sentences]}} mapping (e.g. written by your own generation script).

        Raises FileNotFoundError, and DataFormatError naming the file, the offending entry and the expected form.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"phrasebook file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataFormatError(f"{path} is not a JSON file ({error}); {PHRASEBOOK_FORM}") from None
        if not isinstance(data, dict):
            raise DataFormatError(f"{path} holds a JSON {type(data).__name__}, not an object; {PHRASEBOOK_FORM}")
        wrapped = "phrasings" in data
        unexpected = sorted(set(data) - {"phrasings", "llm_fallbacks"}) if wrapped else []
        if unexpected:
            raise DataFormatError(f"{path} has unknown top-level key(s) {unexpected}; {PHRASEBOOK_FORM}")
        try:
            return cls(data["phrasings"] if wrapped else data, data.get("llm_fallbacks", ()) if wrapped else (),
                       source=str(path))
        except ValueError as error:
            raise DataFormatError(f"{path}: {error}; {PHRASEBOOK_FORM}") from None

    @classmethod
    def from_templates(cls, values: Mapping[str, Iterable[str]]) -> Phrasebook:
        """The built-in template phrasings of every value (see `transcap_templates`)."""
        return cls({attribute: {value: template_phrasings(attribute, value) for value in items}
                    for attribute, items in values.items()})

    @classmethod
    def from_pipeline(cls, pipeline, values: Mapping[str, Iterable[str]], num_variants: int = 5,
                      max_new_tokens: int = 48, **generate_kwargs) -> Phrasebook:
        """`num_variants` rewritings of a template sentence per value by a local text-generation pipeline.

        The pipeline is called once for all values (sampling by default: `do_sample=True`; `generate_kwargs` go to
        the pipeline call, e.g. `temperature`). A chat model (its tokenizer has a chat template) gets the prompt as
        a user message. Seed it with `transformers.set_seed` for reproducible phrasings, or save the phrasebook.
        """
        from transformers import TextGenerationPipeline

        if not isinstance(pipeline, TextGenerationPipeline):
            raise TypeError(
                f"expected a transformers text-generation pipeline (pipeline('text-generation', model=...)), got "
                f"{type(pipeline).__name__}"
            )
        if num_variants < 1:
            raise ValueError(f"num_variants={num_variants}; ask for at least one phrasing per value")
        pairs = [(attribute, value) for attribute, items in values.items() for value in dict.fromkeys(items)]
        prompts = [REPHRASE_PROMPT.format(sentence=template_phrasings(*pair)[0]) for pair in pairs]
        if getattr(pipeline.tokenizer, "chat_template", None):
            prompts = [[{"role": "user", "content": prompt}] for prompt in prompts]
        call_kwargs = {"do_sample": True, "max_new_tokens": max_new_tokens, **generate_kwargs,
                       "num_return_sequences": num_variants, "return_full_text": False}
        outputs = pipeline(prompts, **call_kwargs) if prompts else []
        conflicts = _conflicting_keywords(values)
        phrasings, fallbacks, reasons = {}, [], {}
        for (attribute, value), candidates in zip(pairs, outputs, strict=True):
            accepted = []
            for candidate in candidates:
                sentence = clean_phrasing(candidate["generated_text"])
                reason = rejection_reason(sentence, attribute, value, conflicts[attribute, value])
                if reason is None:
                    accepted.append(sentence)
                else:
                    reasons.setdefault((attribute, value), (sentence, reason))
            accepted = list(dict.fromkeys(accepted))
            if not accepted:
                fallbacks.append((attribute, value))
                accepted = list(template_phrasings(attribute, value))
            phrasings.setdefault(attribute, {})[value] = accepted
        if fallbacks:
            examples = "; ".join(f"{a}={v!r}: {reasons[a, v][0]!r} ({reasons[a, v][1]})" for a, v in fallbacks[:5])
            logger.warning(
                "TransCap: the text-generation pipeline gave no usable phrasing for %d of %d attribute value(s), which "
                "keep the built-in template phrasings. First rejections: %s", len(fallbacks), len(pairs), examples,
            )
        return cls(phrasings, fallbacks)


def _pairs(llm_fallbacks) -> list[tuple[str, str]]:
    """The (attribute, value) pairs of `llm_fallbacks`; ValueError unless it is a list of 2-item lists."""
    listed = isinstance(llm_fallbacks, Iterable) and not isinstance(llm_fallbacks, (str, Mapping))
    pairs = list(llm_fallbacks) if listed else None
    if pairs is None or not all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in pairs):
        raise ValueError(f"llm_fallbacks must be a list of [attribute, value] pairs, got {_shorten(llm_fallbacks)}")
    return [(str(attribute), str(value)) for attribute, value in pairs]


def _shorten(item, limit: int = 80) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _conflicting_keywords(values: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], tuple[str, ...]]:
    """For each (attribute, value): keywords of the values a row with it may lack (the attribute's other values, and
    the values of every other attribute that takes more than one value in the dataset)."""
    values = {attribute: list(dict.fromkeys(items)) for attribute, items in values.items()}
    keywords = {(a, v): value_keywords(a, v) for a, items in values.items() for v in items}
    return {
        (attribute, value): tuple(dict.fromkeys(
            keyword for (other_attribute, other), words in keywords.items()
            if (other_attribute == attribute and other != value)
            or (other_attribute != attribute and len(values[other_attribute]) > 1)
            for keyword in words
        ))
        for attribute, value in keywords
    }


def build_phrasebook(values: Mapping[str, Iterable[str]], pipeline=None, num_variants: int = 5,
                     **generate_kwargs) -> Phrasebook:
    """Phrasings of every value in `values` ({attribute: values}, e.g. `attribute_values(dataset_dict)`): from the
    text-generation `pipeline` when one is given (templates where it fails), else from the built-in templates."""
    if pipeline is None:
        if generate_kwargs:
            raise ValueError(f"generation arguments {sorted(generate_kwargs)} need a pipeline")
        return Phrasebook.from_templates(values)
    return Phrasebook.from_pipeline(pipeline, values, num_variants=num_variants, **generate_kwargs)
