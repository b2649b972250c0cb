"""R2Gen-style `annotation.json` (IU X-ray and MIMIC-CXR report generation).

`{"train": [...], "val": [...], "test": [...]}` with items `{"id", "report", "image_path": [...], "split"}`;
image paths are relative to the image folder (`images/` next to the file by default). Items are put in
the split their own `split` field names (falling back to the key they are listed under), so files with
unexpected top-level keys still load into `train`/`validation`/`test`.
"""
from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict, Sequence

from .errors import DataFormatError
from .records import (
    ImageResolver, RecordCollector, build_dataset_dict, canonical_split, group_by_split, read_json, require,
    require_text,
)
from .schema import STRING, report_features

FEATURES = report_features(image_paths=Sequence(STRING))


def load_r2gen_annotation(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    per_image: bool = False,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """One row per study (`image` = its first image, `image_paths` = all), or per image with `per_image`."""
    path = Path(annotation_file)
    image_root = Path(image_dir) if image_dir is not None else path.parent / "images"
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(items, list) for items in data.values()):
        raise DataFormatError(f"{path} must map split names to lists of items, e.g. {{'train': [...]}}")
    resolve = ImageResolver(verify=verify_images)
    collector = RecordCollector(path, on_error)
    for key, items in data.items():
        for index, raw in enumerate(items):
            collector.add(
                f"{key}[{index}]", lambda raw=raw, key=key: _records(raw, key, image_root, resolve, per_image)
            )
    return build_dataset_dict(group_by_split(collector.finish()), FEATURES)


def _records(raw, key: str, image_root: Path, resolve, per_image: bool) -> list[dict]:
    study_id = str(require(raw, "id", (str, int))).strip()
    report = require_text(raw, "report")
    relative_paths = require(raw, "image_path", list)
    if not relative_paths or not all(isinstance(item, str) and item.strip() for item in relative_paths):
        raise DataFormatError(f"field 'image_path' is {relative_paths!r}, expected a non-empty list of paths")
    split = canonical_split(raw.get("split") or key)
    images = [resolve(image_root / item) for item in relative_paths]
    paths = [str(image_root / item) for item in relative_paths]
    chosen = range(len(images)) if per_image else [0]
    return [
        {"id": study_id, "image": images[i], "report": report, "image_paths": paths, "_split": split}
        for i in chosen
    ]
