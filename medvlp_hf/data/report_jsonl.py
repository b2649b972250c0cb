"""MedViLL's report JSONL: one `{"id", ["split"], "label", "text", "img"}` object per line.

`label` is a string of quoted CheXpert names ("'Cardiomegaly', 'Edema'"; none is '' or "''"), parsed to
the 14-vector of `chexpert.CHEXPERT_LABELS`. The released files are `data/{mimic,openi}/{Train,Valid,
Test}.jsonl`, with `img` paths relative to the repository root.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from datasets import DatasetDict

from .chexpert import parse_label_string
from .records import (
    ImageResolver, RecordCollector, build_dataset_dict, canonical_split, parse_json_line, read_lines, require,
    require_text,
)
from .schema import LABELS, report_features

FEATURES = report_features(labels=LABELS)


def load_report_jsonl(
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    image_root: str | os.PathLike | None = None,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load MedViLL report JSONL files.

    Args:
        path: one `.jsonl` file (its split comes from the name: Train/Valid/Test), a folder of them, or a
            `{split: file}` mapping.
        image_root: the folder `img` paths are relative to (default: the JSONL file's folder).
    """
    files = _split_files(path)
    resolve = ImageResolver(verify=verify_images)
    splits = {}
    for split, file in files.items():
        root = Path(image_root) if image_root is not None else file.parent
        collector = RecordCollector(file, on_error)
        for number, line in read_lines(file):
            collector.add(f"line {number}", lambda line=line: _record(line, root, resolve))
        splits[split] = collector.finish()
    return build_dataset_dict(splits, FEATURES)


def _split_files(path) -> dict[str, Path]:
    if isinstance(path, Mapping):
        return {canonical_split(split): Path(file) for split, file in path.items()}
    path = Path(path)
    if path.is_dir():
        files = {canonical_split(file.stem): file for file in sorted(path.glob("*.jsonl"))}
        if not files:
            raise FileNotFoundError(f"no .jsonl files in {path}")
        return files
    return {canonical_split(path.stem): path}


def _record(line: str, image_root: Path, resolve) -> dict:
    raw = parse_json_line(line)
    return {
        "id": str(require(raw, "id", (str, int))),
        "image": resolve(image_root / require_text(raw, "img")),
        "report": require_text(raw, "text"),
        "labels": parse_label_string(require(raw, "label", str)),
    }
