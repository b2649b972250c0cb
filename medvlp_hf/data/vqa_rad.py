"""VQA-RAD (Lau et al. 2018): the MEVF split most papers use, or the official release JSON.

MEVF layout: `trainset.json`, `testset.json`, `images/<image_name>` (3,064 / 451 questions).
Official release: one JSON list (`VQA_RAD Dataset Public.json`, or MedViLL's copy
`vqa_rad_original_set.json`, 2,248 questions) whose `phrase_type` starting with `test_` marks the test
split; images in `VQA_RAD Image Folder/` (or `images/`) next to it.
Real quirks handled: `answer_type` "CLOSED " (trailing space), integer answers, a string qid, mixed case.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from datasets import DatasetDict

from .errors import DataFormatError
from .records import (
    ImageResolver, RecordCollector, build_dataset_dict, group_by_split, read_json_list, require, require_text,
)
from .schema import STRING, vqa_features

ORGANS = ("HEAD", "CHEST", "ABD")
ANSWER_TYPES = ("OPEN", "CLOSED")
OFFICIAL_FILE_NAMES = ("VQA_RAD Dataset Public.json", "vqa_rad_original_set.json")
OFFICIAL_IMAGE_DIRS = ("VQA_RAD Image Folder", "images")
FEATURES = vqa_features(question_type=STRING, image_organ=STRING, phrase_type=STRING, image_name=STRING)


def load_vqa_rad(
    data_dir: str | os.PathLike,
    organ: str | Iterable[str] | None = "all",
    image_dir: str | os.PathLike | None = None,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load VQA-RAD as `train`/`test`.

    Args:
        data_dir: the MEVF folder (with `trainset.json`), the folder of the official release JSON, or that
            JSON file itself.
        organ: keep only these `image_organ` values (`"CHEST"`, `["HEAD", "ABD"]`); `"all"`/None keeps all
            (the MedViLL paper reports ALL and CHEST).
        image_dir: where the images are, if not in the default place of the layout.
        verify_images: decode every image once now, so corrupt files fail (or are skipped) at load time.
        on_error: "raise" at the first bad record, or "skip" bad records and log how many.
    """
    organs = _organ_filter(organ)
    resolve = ImageResolver(verify=verify_images)
    path = Path(data_dir)
    if path.is_dir() and (path / "trainset.json").is_file():
        image_root = Path(image_dir) if image_dir is not None else path / "images"
        rows = [
            row
            for split in ("train", "test")
            for row in _collect(path / f"{split}set.json", image_root, organs, resolve, on_error, lambda raw: split)
        ]
        return build_dataset_dict(group_by_split(rows, ("train", "test")), FEATURES)
    official = path if path.is_file() else _find_official_file(path)
    image_root = Path(image_dir) if image_dir is not None else _find_official_image_dir(official.parent)
    rows = _collect(official, image_root, organs, resolve, on_error, _official_split)
    return build_dataset_dict(group_by_split(rows, ("train", "test")), FEATURES)


def _organ_filter(organ) -> frozenset[str] | None:
    if organ is None or (isinstance(organ, str) and organ.strip().lower() == "all"):
        return None
    names = [organ] if isinstance(organ, str) else list(organ)
    organs = frozenset(name.strip().upper() for name in names)
    unknown = sorted(organs - set(ORGANS))
    if unknown:
        raise ValueError(f"organ {unknown} unknown; VQA-RAD organs are {ORGANS} (or 'all')")
    return organs


def _find_official_file(folder: Path) -> Path:
    for name in OFFICIAL_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"no VQA-RAD data in {folder}: expected the MEVF split (trainset.json, testset.json, images/) "
        f"or the official release JSON ({' or '.join(OFFICIAL_FILE_NAMES)})"
    )


def _find_official_image_dir(folder: Path) -> Path:
    for name in OFFICIAL_IMAGE_DIRS:
        if (folder / name).is_dir():
            return folder / name
    raise FileNotFoundError(f"no VQA-RAD image folder ({' or '.join(OFFICIAL_IMAGE_DIRS)}) in {folder}")


def _official_split(raw) -> str:
    """The release marks test questions with phrase_type 'test_freeform' / 'test_para'."""
    return "test" if require_text(raw, "phrase_type").startswith("test_") else "train"


def _collect(file: Path, image_root: Path, organs, resolve, on_error, split_of) -> list[dict]:
    collector = RecordCollector(file, on_error)
    for index, raw in enumerate(read_json_list(file)):
        qid = raw.get("qid") if isinstance(raw, dict) else None
        collector.add(
            f"record {index} (qid {qid})",
            lambda raw=raw: _record(raw, image_root, organs, resolve, split_of(raw)),
        )
    return collector.finish()


def _record(raw, image_root: Path, organs, resolve, split: str) -> dict | None:
    organ = require_text(raw, "image_organ").upper()
    if organs is not None and organ not in organs:
        return None
    answer_type = require_text(raw, "answer_type").upper()
    if answer_type not in ANSWER_TYPES:
        raise DataFormatError(f"answer_type {raw['answer_type']!r} is not OPEN or CLOSED")
    answer = str(require(raw, "answer", (str, int))).strip()
    if not answer:
        raise DataFormatError("field 'answer' is empty")
    qid = require(raw, "qid", (int, str))
    if isinstance(qid, str) and not qid.strip().isdigit():
        raise DataFormatError(f"qid {qid!r} is not an integer")
    image_name = require_text(raw, "image_name")
    phrase_type = require_text(raw, "phrase_type")
    return {
        "image": resolve(image_root / image_name),
        "question": require_text(raw, "question"),
        "answer": answer,
        "answer_type": answer_type,
        "qid": int(qid),
        "question_type": require_text(raw, "question_type"),
        "image_organ": organ,
        "phrase_type": phrase_type.removeprefix("test_"),
        "image_name": image_name,
        "_split": split,
    }
