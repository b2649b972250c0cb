"""ROCO (Pelka et al. 2018): `<split>/<subset>/captions.txt` (`ROCO_00001\\t caption`) + `images/ROCO_00001.jpg`.

Splits are the release's `train`, `validation` (also `val`) and `test` folders; a folder that directly
holds `captions.txt` and `images/` loads as a single `train` split.
"""
from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict

from .errors import DataFormatError
from .records import ImageResolver, RecordCollector, build_dataset_dict, canonical_split, read_lines
from .schema import caption_features

SUBSETS = ("radiology", "non-radiology")
SPLIT_FOLDERS = ("train", "validation", "val", "test")
FEATURES = caption_features()


def load_roco(
    data_dir: str | os.PathLike,
    subset: str = "radiology",
    min_caption_words: int = 0,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load ROCO; `min_caption_words` drops shorter captions (PTUnifier keeps captions of >= 3 words)."""
    if subset not in SUBSETS:
        raise ValueError(f"subset={subset!r}; choose one of {SUBSETS}")
    root = Path(data_dir)
    if (root / "captions.txt").is_file():
        folders = {"train": root}
    else:
        folders = {
            canonical_split(name): root / name / subset
            for name in SPLIT_FOLDERS if (root / name / subset / "captions.txt").is_file()
        }
    if not folders:
        raise FileNotFoundError(
            f"no ROCO captions in {root}: expected <split>/{subset}/captions.txt or captions.txt + images/"
        )
    resolve = ImageResolver(verify=verify_images)
    splits = {}
    for split, folder in folders.items():
        collector = RecordCollector(folder / "captions.txt", on_error)
        for number, line in read_lines(folder / "captions.txt"):
            collector.add(
                f"line {number}", lambda line=line, folder=folder: _record(line, folder, min_caption_words, resolve)
            )
        splits[split] = collector.finish()
    return build_dataset_dict(splits, FEATURES)


def _record(line: str, folder: Path, min_caption_words: int, resolve) -> dict | None:
    image_id, tab, caption = line.partition("\t")
    image_id, caption = image_id.strip(), caption.strip()
    if not tab or not image_id or not caption:
        raise DataFormatError(f"expected '<ROCO id>\\t<caption>', got {line[:80]!r}")
    if len(caption.split()) < min_caption_words:
        return None
    return {"id": image_id, "image": resolve(folder / "images" / f"{image_id}.jpg"), "caption": caption}
