"""TransCap's built-in phrasings: short sentences stating one attribute value of a medical image, with no model.

Each attribute has sentence frames with a `{value}` slot (`{a_value}`: with its article, `{Value}`: capitalised);
a known value fills them with several surface forms ("posteroanterior", "PA", "frontal posteroanterior"), an unknown
one with its own text, so any dataset's values get grammatical phrasings. A normal study ("no finding") has its own
sentences. The same tables give the words a phrasing must contain to state a value (`value_keywords`), which is how
rephrasings from a language model are checked.
"""
from __future__ import annotations

import re

NORMAL_VALUES = frozenset({"no finding", "normal"})

FRAMES = {
    "modality": (
        "This is {a_value} image.",
        "The imaging modality is {value}.",
        "The image was obtained by {value} imaging.",
        "{A_value} image is shown.",
    ),
    "plane": (
        "This is {a_value} view.",
        "The image was taken in {a_value} projection.",
        "The view is {value}.",
        "The projection is {value}.",
    ),
    "shape": (
        "The lesion is {value} in shape.",
        "The abnormality has {a_value} shape.",
        "Its shape is {value}.",
    ),
    "size": (
        "The lesion is {value} in size.",
        "The size of the abnormality is {value}.",
        "The abnormality is {value}.",
    ),
    "organ": (
        "The image shows the {value}.",
        "This is an image of the {value}.",
        "The {value} is imaged.",
        "The examined region is the {value}.",
    ),
    "location": (
        "The abnormality is located in the {value}.",
        "It is found in the {value}.",
        "The finding lies in the {value}.",
    ),
    "pathology": (
        "There is {value}.",
        "The image shows {value}.",
        "Findings are consistent with {value}.",
        "{Value} is seen.",
    ),
    "age": (
        "The patient is {value} years old.",
        "The patient's age is {value} years.",
        "This is {a_value}-year-old patient.",
    ),
    "sex": (
        "The patient is {value}.",
        "The patient's sex is {value}.",
        "The image is from {a_value} patient.",
    ),
}

SURFACE_FORMS = {
    "plane": {
        "posteroanterior": ("posteroanterior", "PA", "frontal posteroanterior", "posteroanterior (PA)"),
        "anteroposterior": ("anteroposterior", "AP", "frontal anteroposterior", "anteroposterior (AP)"),
    },
    "organ": {"chest": ("chest", "thorax")},
    "pathology": {
        "atelectasis": ("atelectasis", "partial collapse of the lung"),
        "cardiomegaly": ("cardiomegaly", "an enlarged heart", "enlargement of the cardiac silhouette"),
        "effusion": ("a pleural effusion", "an effusion", "fluid in the pleural space"),
        "infiltration": ("infiltration", "a pulmonary infiltrate", "an infiltrate"),
        "mass": ("a mass", "a pulmonary mass", "a mass lesion"),
        "nodule": ("a nodule", "a pulmonary nodule", "a lung nodule"),
        "pneumonia": ("pneumonia", "a pulmonary infection"),
        "pneumothorax": ("a pneumothorax", "pneumothorax", "air in the pleural space"),
        "consolidation": ("consolidation", "airspace consolidation"),
        "edema": ("edema", "pulmonary edema", "fluid in the lung tissue"),
        "emphysema": ("emphysema", "pulmonary emphysema"),
        "fibrosis": ("fibrosis", "pulmonary fibrosis", "fibrotic change"),
        "pleural thickening": ("pleural thickening", "thickening of the pleura"),
        "hernia": ("a hernia", "herniation"),
    },
}

# Whole sentences for values no frame fits, or that read better than the frames alone.
SENTENCES = {
    ("modality", "X-ray"): ("This is a radiograph.", "The image is a plain radiograph."),
    ("pathology", "no finding"): (
        "No abnormality is seen.",
        "There are no abnormal findings.",
        "The study shows no finding.",
        "This is a normal study.",
        "Nothing abnormal is detected.",
    ),
    ("pathology", "normal"): (
        "No abnormality is seen.",
        "There are no abnormal findings.",
        "This is a normal study.",
        "Nothing abnormal is detected.",
    ),
}

NORMAL_KEYWORDS = ("normal", "no abnormal", "no abnormality", "no abnormalities", "no finding", "no findings",
                   "nothing abnormal", "unremarkable")
EXTRA_KEYWORDS = {("modality", "X-ray"): ("radiograph", "radiography", "x ray", "xray")}
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)
_VOWEL_SOUND_INITIALS = "AEFHILMNORSX"  # letters whose names start with a vowel sound: "an MRI", "an X-ray"


def indefinite_article(text: str) -> str:
    """'a' or 'an' for `text` as spoken: "an X-ray", "an MRI", "an 80-year-old", "a CT", "a frontal"."""
    first_word = text.split()[0] if text.split() else text
    digits = re.match(r"\d+", first_word)
    if digits:
        number = digits.group()
        vowel = number.startswith("8") or number in ("11", "18")
    elif re.match(r"^[A-Z]{2,}\b|^[A-Z]-", first_word):
        vowel = first_word[0] in _VOWEL_SOUND_INITIALS
    else:
        vowel = first_word[:1].lower() in "aeiou"
    return "an" if vowel else "a"


def _fill(frame: str, form: str) -> str:
    article_form = f"{indefinite_article(form)} {form}"
    sentence = frame.format(value=form, a_value=article_form, Value=form[:1].upper() + form[1:],
                            A_value=article_form[:1].upper() + article_form[1:])
    return sentence[:1].upper() + sentence[1:]


def template_phrasings(attribute: str, value: str) -> tuple[str, ...]:
    """Every built-in sentence stating `attribute` = `value` (frames x surface forms, plus whole sentences)."""
    if attribute not in FRAMES:
        raise ValueError(f"no built-in phrasings for the attribute {attribute!r}; known: {sorted(FRAMES)}")
    sentences = list(SENTENCES.get((attribute, value), ()))
    if not (attribute == "pathology" and value in NORMAL_VALUES):
        forms = SURFACE_FORMS.get(attribute, {}).get(value, (value,))
        sentences += [_fill(frame, form) for frame in FRAMES[attribute] for form in forms]
    return tuple(dict.fromkeys(sentences))


def is_normal(attribute: str, value: str) -> bool:
    """True for the value of a study without findings, whose phrasings are negative statements."""
    return attribute == "pathology" and value in NORMAL_VALUES


def value_keywords(attribute: str, value: str) -> tuple[str, ...]:
    """Words of which a sentence stating `attribute` = `value` must contain at least one (lower case)."""
    if is_normal(attribute, value):
        return NORMAL_KEYWORDS
    forms = SURFACE_FORMS.get(attribute, {}).get(value, ())
    words = [value, *(_ARTICLE.sub("", form) for form in forms), *EXTRA_KEYWORDS.get((attribute, value), ())]
    return tuple(dict.fromkeys(re.sub(r"[()]", "", word).lower() for word in words))
