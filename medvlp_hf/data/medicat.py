"""MedICaT (Subramanian et al. 2020): figure captions from PubMed Central papers.

`release/s2_full_figures_oa_nonroco_combined_medical_top4_public.jsonl` with one figure per line
(`pdf_hash`, `fig_uri`, `s2_caption`, `radiology`, ...), images `release/figures/<pdf_hash>_<fig_uri>`.
There is no official split; PTUnifier holds out 2,000 random figures for validation and 1,000 for test,
which are the defaults here (drawn with `seed`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from .records import (
    ImageResolver, RecordCollector, build_dataset_dict, parse_json_line, read_lines, require, require_text,
)
from .schema import caption_features

FILE_NAME = "s2_full_figures_oa_nonroco_combined_medical_top4_public.jsonl"
FEATURES = caption_features()


def load_medicat(
    data_dir: str | os.PathLike,
    radiology_only: bool = True,
    validation_size: int = 2000,
    test_size: int = 1000,
    seed: int = 0,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load MedICaT (radiology figures only by default) as `train`/`validation`/`test`.

    `data_dir` is the folder holding `release/` (or the `release` folder itself).
    """
    root = Path(data_dir)
    release = root / "release" if (root / "release" / FILE_NAME).is_file() else root
    file = release / FILE_NAME
    resolve = ImageResolver(verify=verify_images)
    collector = RecordCollector(file, on_error)
    for number, line in read_lines(file):
        collector.add(f"line {number}", lambda line=line: _record(line, release / "figures", radiology_only, resolve))
    rows = collector.finish()
    held_out = validation_size + test_size
    if min(validation_size, test_size) < 0 or held_out > len(rows):
        raise ValueError(
            f"validation_size={validation_size} + test_size={test_size} must be >= 0 and at most the "
            f"{len(rows)} figures loaded from {file}"
        )
    order = np.random.default_rng(seed).permutation(len(rows))
    splits = {"train": _in_file_order(rows, order[held_out:])}
    if validation_size:
        splits["validation"] = _in_file_order(rows, order[:validation_size])
    if test_size:
        splits["test"] = _in_file_order(rows, order[validation_size:held_out])
    return build_dataset_dict(splits, FEATURES)


def _in_file_order(rows: list[dict], positions) -> list[dict]:
    return [rows[i] for i in sorted(positions)]


def _record(line: str, figure_root: Path, radiology_only: bool, resolve) -> dict | None:
    raw = parse_json_line(line)
    if radiology_only and not require(raw, "radiology", bool):
        return None
    pdf_hash, fig_uri = require_text(raw, "pdf_hash"), require_text(raw, "fig_uri")
    figure = f"{pdf_hash}_{fig_uri}"
    return {"id": figure, "image": resolve(figure_root / figure), "caption": require_text(raw, "s2_caption")}
