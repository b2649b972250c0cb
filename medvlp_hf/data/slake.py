"""SLAKE 1.0 (Liu et al. 2021): `train.json`, `validate.json`, `test.json` + `imgs/<img_name>`.

The standard benchmark uses the English questions only (`q_lang == "en"`), which is the default.
"""
from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict, Sequence

from .errors import DataFormatError
from .records import ImageResolver, RecordCollector, build_dataset_dict, read_json_list, require, require_text
from .schema import INT, STRING, vqa_features

SPLIT_FILES = {"train": "train.json", "validation": "validate.json", "test": "test.json"}
LANGUAGES = ("en", "zh")
FEATURES = vqa_features(
    img_id=INT, image_name=STRING, q_lang=STRING, location=STRING, modality=STRING,
    base_type=STRING, content_type=STRING, triple=Sequence(STRING),
)


def load_slake(
    data_dir: str | os.PathLike,
    language: str | None = "en",
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load SLAKE as `train`/`validation`/`test`; `language` "en", "zh" or None for both."""
    if language is not None and language not in LANGUAGES:
        raise ValueError(f"language={language!r}; choose 'en', 'zh' or None (both)")
    root = Path(data_dir)
    resolve = ImageResolver(verify=verify_images)
    splits = {}
    for split, name in SPLIT_FILES.items():
        collector = RecordCollector(root / name, on_error)
        for index, raw in enumerate(read_json_list(root / name)):
            collector.add(f"record {index}", lambda raw=raw: _record(raw, root / "imgs", language, resolve))
        splits[split] = collector.finish()
    return build_dataset_dict(splits, FEATURES)


def _record(raw, image_root: Path, language, resolve) -> dict | None:
    q_lang = require_text(raw, "q_lang")
    if language is not None and q_lang != language:
        return None
    answer_type = require_text(raw, "answer_type").upper()
    if answer_type not in ("OPEN", "CLOSED"):
        raise DataFormatError(f"answer_type {raw['answer_type']!r} is not OPEN or CLOSED")
    triple = raw.get("triple") or []
    if not isinstance(triple, list) or not all(isinstance(part, str) for part in triple):
        raise DataFormatError(f"field 'triple' is {triple!r}, expected a list of strings")
    image_name = require_text(raw, "img_name")
    return {
        "image": resolve(image_root / image_name),
        "question": require_text(raw, "question"),
        "answer": str(require(raw, "answer", (str, int))).strip(),
        "answer_type": answer_type,
        "qid": require(raw, "qid", int),
        "img_id": require(raw, "img_id", int),
        "image_name": image_name,
        "q_lang": q_lang,
        "location": str(raw.get("location") or ""),
        "modality": str(raw.get("modality") or ""),
        "base_type": str(raw.get("base_type") or ""),
        "content_type": str(raw.get("content_type") or ""),
        "triple": triple,
    }
