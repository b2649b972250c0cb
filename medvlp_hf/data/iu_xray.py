"""IU X-ray (Demner-Fushman et al. 2016) in either of its two common layouts.

`data_dir/annotation.json` + `images/` (R2Gen preprocessing, with train/val/test) or
`data_dir/ecgen-radiology/*.xml` + PNG images (the Open-I release, one `train` split).
"""
from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict

from .openi import load_openi_xml
from .r2gen import load_r2gen_annotation

LAYOUTS = ("auto", "r2gen", "openi")
OPENI_IMAGE_DIRS = ("images", "NLMCXR_png")


def load_iu_xray(
    data_dir: str | os.PathLike,
    layout: str = "auto",
    image_dir: str | os.PathLike | None = None,
    section: str = "longer",
    per_image: bool = False,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load IU X-ray; `layout` "auto" picks R2Gen when `annotation.json` exists, else the Open-I XML.

    `section` applies to the Open-I XML (R2Gen's `report` is already one text).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; choose one of {LAYOUTS}")
    root = Path(data_dir)
    if layout == "r2gen" or (layout == "auto" and (root / "annotation.json").is_file()):
        return load_r2gen_annotation(
            root / "annotation.json", image_dir=image_dir, per_image=per_image,
            verify_images=verify_images, on_error=on_error,
        )
    if layout == "auto" and not (root / "ecgen-radiology").is_dir():
        raise FileNotFoundError(
            f"no IU X-ray data in {root}: expected annotation.json + images/ (R2Gen) or ecgen-radiology/ (Open-I)"
        )
    return load_openi_xml(
        root / "ecgen-radiology", image_dir=image_dir or _openi_image_dir(root), section=section,
        per_image=per_image, verify_images=verify_images, on_error=on_error,
    )


def _openi_image_dir(root: Path) -> Path:
    for name in OPENI_IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"no Open-I image folder ({' or '.join(OPENI_IMAGE_DIRS)}) in {root}")
