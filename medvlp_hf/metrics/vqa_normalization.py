"""VQA-v2 answer normalisation (punctuation, number words, articles, contractions).

Reproduces what the official VQA evaluation (and the ALBEF/M2I2 copy of it) does to an answer
before exact matching, written from its documented behaviour:

1. newlines/tabs become spaces, the answer is stripped;
2. each punctuation mark in ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when the raw
   answer has it next to a space (or contains a digit,digit group), otherwise replaced by a space;
   a period is deleted unless a digit follows it (so "1.5" survives, "yes." becomes "yes");
3. lower-case, split on whitespace, map number words ("none"/"zero" -> "0" ... "ten" -> "10"), drop
   the articles a/an/the, restore the apostrophe of known contractions ("dont" -> "don't").

The official contraction table keys the first-person forms with a capital "I" ("Im", "Ive"), which
never match the lower-cased words, so those forms are left out here as well.
"""
import itertools
import re

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_CONTRACTIONS_WITH_APOSTROPHES = (
    "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't", "don't",
    "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd", "how'll", "how's",
    "isn't", "it'd", "it'd've", "it'll", "let's", "ma'am", "mightn't", "mightn't've", "might've",
    "mustn't", "must've", "needn't", "not've", "o'clock", "oughtn't", "'ow's'at", "shan't", "she'd've",
    "she's", "should've", "shouldn't", "shouldn't've", "somebody'd", "somebody'd've", "somebody'll",
    "somebody's", "someone'd", "someone'd've", "someone'll", "someone's", "something'd",
    "something'd've", "something'll", "that's", "there'd", "there'd've", "there're", "there's",
    "they'd", "they'd've", "they'll", "they're", "they've", "'twas", "wasn't", "we'd've", "we've",
    "weren't", "what'll", "what're", "what's", "what've", "when's", "where'd", "where's", "where've",
    "who'd", "who'd've", "who'll", "who's", "who've", "why'll", "why're", "why's", "won't",
    "would've", "wouldn't", "wouldn't've", "y'all", "y'all'll", "y'all'd've", "you'd", "you'd've",
    "you'll", "you're", "you've",
)


def _spellings_without_apostrophes(word: str):
    """Every way of writing ``word`` with one or more of its apostrophes left out."""
    pieces = word.split("'")
    for kept in itertools.product((True, False), repeat=len(pieces) - 1):
        if all(kept):
            continue
        text = pieces[0]
        for keep, piece in zip(kept, pieces[1:]):
            text += ("'" if keep else "") + piece
        yield text


CONTRACTIONS = {
    spelling: word
    for word in _CONTRACTIONS_WITH_APOSTROPHES
    for spelling in _spellings_without_apostrophes(word)
}


def process_punctuation(text: str) -> str:
    """Step 2 above: delete or space out punctuation, strip periods not followed by a digit."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        if delete_all or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def process_digits_articles(text: str) -> str:
    """Step 3 above: lower-case, number words to digits, drop articles, restore contractions."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES]
    return " ".join(words)


def normalize_vqa_answer(answer) -> str:
    """Normalise one answer (string or number, as VQA-RAD stores some answers) for exact matching."""
    text = str(answer).replace("\n", " ").replace("\t", " ").strip()
    return process_digits_articles(process_punctuation(text))
