"""A small synthetic chest X-ray VQA / report / label set that needs no files (the README's main job).

Each row is one freshly drawn image (see `demo_drawing`) with one question about it, a short templated
report and CheXpert labels, all describing the same drawn findings, so a small CNN + transformer can
learn every question from the pixels. Closed questions are answered yes/no half of the time each;
open questions ask for a side or for the single abnormality shown.
"""
from __future__ import annotations

import numpy as np
import PIL.Image
from datasets import DatasetDict

from .chexpert import labels_from_names
from .demo_drawing import SIDES, DemoFindings, draw_chest_xray
from .records import build_dataset_dict
from .schema import LABELS, STRING, vqa_features

DEMO_ANSWERS = (
    "yes", "no", "left", "right", "cardiomegaly", "pleural effusion", "pneumothorax", "nodule", "none",
)
_PATHOLOGY_FIELDS = {
    "cardiomegaly": "cardiomegaly", "pleural effusion": "effusion", "pneumothorax": "pneumothorax", "nodule": "nodule",
}
_CLOSED_QUESTIONS = {
    "Is the heart enlarged?": "cardiomegaly",
    "Is there a pleural effusion?": "pleural effusion",
    "Is there a pneumothorax?": "pneumothorax",
    "Is there a lung nodule?": "nodule",
    "Is there a support device?": "support device",
    "Is there any abnormality?": "any",
}
_SIDE_QUESTIONS = {
    "Which side is the pleural effusion on?": "pleural effusion",
    "Which side is the pneumothorax on?": "pneumothorax",
    "Which lung has the nodule?": "nodule",
}
_MAIN_FINDING_QUESTION = "What is the main abnormality?"
_QUESTIONS = (*_CLOSED_QUESTIONS, *_SIDE_QUESTIONS, _MAIN_FINDING_QUESTION)
FEATURES = vqa_features(report=STRING, labels=LABELS, image_organ=STRING)


def demo_answers() -> list[str]:
    """Every answer the demo set can have (the VQA label vocabulary)."""
    return list(DEMO_ANSWERS)


def load_demo(num_train: int = 512, num_test: int = 128, image_size: int = 128, seed: int = 0) -> DatasetDict:
    """`train`/`test` splits of synthetic chest X-ray rows; the same arguments give the same data."""
    if min(num_train, num_test) < 0 or image_size < 32:
        raise ValueError("num_train and num_test must be >= 0 and image_size >= 32")
    splits = {}
    for index, (split, count) in enumerate((("train", num_train), ("test", num_test))):
        rng = np.random.default_rng([seed, index])
        splits[split] = [_row(qid, rng, image_size) for qid in range(count)]
    return build_dataset_dict(splits, FEATURES)


def _finding_value(field: str, present: bool, rng: np.random.Generator):
    """DemoFindings value of one pathology: a bool for the heart, a random side (or None) otherwise."""
    if field == "cardiomegaly":
        return present
    return str(rng.choice(SIDES)) if present else None


def _random_findings(rng: np.random.Generator, **forced) -> DemoFindings:
    """Each finding present with p=0.25 (random side) unless `forced` fixes it."""
    drawn = {field: _finding_value(field, rng.random() < 0.25, rng) for field in _PATHOLOGY_FIELDS.values()}
    drawn["support_device"] = bool(rng.random() < 0.25)
    return DemoFindings(**{**drawn, **forced})


def _question_and_findings(question: str, rng: np.random.Generator) -> tuple[str, str, DemoFindings]:
    """Answer, answer type and findings for `question`, balanced over the question's answers."""
    if question in _SIDE_QUESTIONS:
        side = str(rng.choice(SIDES))
        return side, "OPEN", _random_findings(rng, **{_PATHOLOGY_FIELDS[_SIDE_QUESTIONS[question]]: side})
    if question == _MAIN_FINDING_QUESTION:
        main = str(rng.choice(["none", *_PATHOLOGY_FIELDS]))
        only = {field: _finding_value(field, name == main, rng) for name, field in _PATHOLOGY_FIELDS.items()}
        return main, "OPEN", _random_findings(rng, **only)
    target, present = _CLOSED_QUESTIONS[question], bool(rng.random() < 0.5)
    if target == "support device":
        forced = {"support_device": present}
    elif target != "any":
        field = _PATHOLOGY_FIELDS[target]
        forced = {field: _finding_value(field, present, rng)}
    elif present:
        field = _PATHOLOGY_FIELDS[str(rng.choice(list(_PATHOLOGY_FIELDS)))]
        forced = {field: _finding_value(field, True, rng)}
    else:
        forced = {field: _finding_value(field, False, rng) for field in _PATHOLOGY_FIELDS.values()}
    return ("yes" if present else "no"), "CLOSED", _random_findings(rng, **forced)


def _row(qid: int, rng: np.random.Generator, image_size: int) -> dict:
    question = str(rng.choice(_QUESTIONS))
    answer, answer_type, findings = _question_and_findings(question, rng)
    pixels = draw_chest_xray(findings, image_size, rng)
    return {
        "image": PIL.Image.fromarray(pixels),
        "question": question,
        "answer": answer,
        "answer_type": answer_type,
        "qid": qid,
        "report": demo_report(findings),
        "labels": demo_labels(findings),
        "image_organ": "CHEST",
    }


def demo_report(findings: DemoFindings) -> str:
    """A short templated report stating every drawn finding (and the normal ones)."""
    sentences = ["A support tube is in place."] if findings.support_device else []
    sentences.append("The heart is enlarged." if findings.cardiomegaly else "The heart size is normal.")
    sentences.append(
        f"There is a {findings.effusion} pleural effusion." if findings.effusion else "There is no pleural effusion."
    )
    sentences.append(
        f"There is a {findings.pneumothorax} pneumothorax." if findings.pneumothorax else "There is no pneumothorax."
    )
    if findings.nodule:
        sentences.append(f"A nodule is seen in the {findings.nodule} lung.")
    if not findings.pathologies:
        sentences.append("No acute cardiopulmonary abnormality.")
    return " ".join(sentences)


def demo_labels(findings: DemoFindings) -> list[float]:
    """CheXpert 14-vector: Cardiomegaly, Pleural Effusion, Pneumothorax, Lung Lesion, Support Devices, No Finding."""
    names = {
        "Cardiomegaly": findings.cardiomegaly, "Pleural Effusion": findings.effusion,
        "Pneumothorax": findings.pneumothorax, "Lung Lesion": findings.nodule,
        "Support Devices": findings.support_device, "No Finding": not findings.pathologies,
    }
    return labels_from_names(name for name, present in names.items() if present)
