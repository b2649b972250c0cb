"""The `[{"image": <path>, "caption": str | [str, ...]}]` JSON that ALBEF-style pre-training (M2I2) reads.

A record with a caption list gives one row per caption (every (image, caption) pair is a sample).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from datasets import DatasetDict

from .errors import DataFormatError
from .records import ImageResolver, RecordCollector, build_dataset_dict, read_json_list, require, require_text
from .schema import caption_features

FEATURES = caption_features()


def load_image_caption_json(
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    image_root: str | os.PathLike,
    split: str = "train",
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load one JSON file as `split`, or a `{split: file}` mapping; images are relative to `image_root`."""
    files = dict(path) if isinstance(path, Mapping) else {split: path}
    resolve = ImageResolver(verify=verify_images)
    splits = {}
    for name, file in files.items():
        collector = RecordCollector(file, on_error)
        for index, raw in enumerate(read_json_list(Path(file))):
            collector.add(f"record {index}", lambda raw=raw: _records(raw, Path(image_root), resolve))
        splits[name] = collector.finish()
    return build_dataset_dict(splits, FEATURES)


def _records(raw, image_root: Path, resolve) -> list[dict]:
    image = require_text(raw, "image")
    captions = require(raw, "caption", (str, list))
    captions = [captions] if isinstance(captions, str) else captions
    if not captions or not all(isinstance(caption, str) and caption.strip() for caption in captions):
        raise DataFormatError(f"field 'caption' is {raw['caption']!r}, expected text or a list of texts")
    resolved = resolve(image_root / image)
    return [{"id": image, "image": resolved, "caption": caption.strip()} for caption in captions]
