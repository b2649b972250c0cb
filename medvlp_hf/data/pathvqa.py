"""PathVQA official split in the LXMERT format: `pvqa_{train,val,test}.json` + `images/{split}/{img_id}.jpg`.

Each item holds one image and parallel lists `sentf.pvqa` (questions) and `labelf.pvqa`
(`{answer: score}` dicts). Yes/no answers are the closed questions, all others open.
"""
from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict

from .answers import normalize_answer
from .errors import DataFormatError
from .records import ImageResolver, RecordCollector, build_dataset_dict, read_json_list, require, require_text
from .schema import STRING, vqa_features

SPLITS = {"train": "train", "validation": "val", "test": "test"}
CLOSED_ANSWERS = frozenset({"yes", "no"})
FEATURES = vqa_features(img_id=STRING)


def load_pathvqa(
    data_dir: str | os.PathLike,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load PathVQA as `train`/`validation`/`test`; `qid` numbers the questions of a split in file order.

    The JSON files are looked up in `data_dir` and then `data_dir/qas`.
    """
    root = Path(data_dir)
    resolve = ImageResolver(verify=verify_images)
    splits = {}
    for split, short in SPLITS.items():
        file = _find(root, f"pvqa_{short}.json")
        collector = RecordCollector(file, on_error)
        for index, raw in enumerate(read_json_list(file)):
            collector.add(
                f"item {index}",
                lambda raw=raw: _item_records(raw, root / "images" / short, resolve),
            )
        rows = collector.finish()
        for qid, row in enumerate(rows):
            row["qid"] = qid
        splits[split] = rows
    return build_dataset_dict(splits, FEATURES)


def _find(root: Path, name: str) -> Path:
    for folder in (root, root / "qas"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"PathVQA file {name} not found in {root} or {root / 'qas'}")


def _item_records(raw, image_root: Path, resolve) -> list[dict]:
    img_id = require_text(raw, "img_id")
    questions = require(require(raw, "sentf", dict), "pvqa", list)
    labels = require(require(raw, "labelf", dict), "pvqa", list)
    if len(questions) != len(labels):
        raise DataFormatError(f"{len(questions)} questions but {len(labels)} answer dicts for {img_id}")
    image = resolve(image_root / f"{img_id}.jpg")
    rows = []
    for position, (question, scores) in enumerate(zip(questions, labels)):
        if not isinstance(question, str) or not question.strip():
            raise DataFormatError(f"question {position} of {img_id} is {question!r}")
        if not isinstance(scores, dict) or not scores:
            raise DataFormatError(f"answer {position} of {img_id} is {scores!r}, expected {{answer: score}}")
        answer = str(max(scores, key=lambda key: scores[key])).strip()
        rows.append({
            "image": image,
            "question": question.strip(),
            "answer": answer,
            "answer_type": "CLOSED" if normalize_answer(answer) in CLOSED_ANSWERS else "OPEN",
            "img_id": img_id,
        })
    return rows
