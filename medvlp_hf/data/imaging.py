"""Decode medical images into PIL images: JPEG/PNG as stored (8/16-bit, L/RGB/RGBA/P/I), DICOM windowed to 8 bit.

PIL-readable files keep their mode and bit depth: mode conversion and bit-depth rescaling belong to the
image processors, which must see the full 16-bit range. The decoding matches what a `datasets.Image()`
column does (open, load every pixel, apply the EXIF orientation), so a loader's lazily decoded column and
`load_image` give the same pixels. DICOM pixel data is not an image PIL can show, so it is mapped to an
8-bit 'L' image here: modality rescale, VOI window (or min-max), MONOCHROME1 inverted.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from .errors import ImageDecodingError

DICOM_SUFFIXES = (".dcm", ".dicom")
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a `.dcm`/`.dicom` name, or a file without a raster-image suffix that carries the DICOM
    Part 10 'DICM' marker at byte 128 (DICOM files are often stored without any suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or suffix in RASTER_SUFFIXES:
        return suffix in DICOM_SUFFIXES
    with open(path, "rb") as handle:
        header = handle.read(132)
    return len(header) == 132 and header[128:132] == b"DICM"


def load_image(path: str | os.PathLike) -> PIL.Image.Image:
    """Fully decode the image at `path`; a missing file raises FileNotFoundError, a bad one ImageDecodingError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if is_dicom(path):
        return load_dicom(path)
    try:
        with PIL.Image.open(path) as opened:
            opened.load()
            image = opened
            if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
                image = PIL.ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodingError(f"cannot decode image file {path}: {error}") from error
    return image


def load_dicom(path: str | os.PathLike) -> PIL.Image.Image:
    """Decode a DICOM file to an 8-bit PIL image ('L' for grayscale, 'RGB' for colour pixel data)."""
    try:
        import pydicom
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"reading the DICOM file {path} needs pydicom: pip install 'medvlp-hf[dicom]'"
        ) from error
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many unrelated types for bad or unsupported files
        raise ImageDecodingError(f"cannot decode DICOM file {path}: {error}") from error
    samples_per_pixel = int(dataset.get("SamplesPerPixel", 1))
    if samples_per_pixel == 3:
        return PIL.Image.fromarray(_scale_to_uint8(pixels.astype(np.float64)))
    if pixels.ndim != 2:
        raise ImageDecodingError(
            f"DICOM file {path} holds {pixels.shape[0]} frames; only single-frame images are supported"
        )
    values = pixels.astype(np.float64) * float(dataset.get("RescaleSlope", 1.0)) + float(
        dataset.get("RescaleIntercept", 0.0)
    )
    center, width = _first_value(dataset.get("WindowCenter")), _first_value(dataset.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        display = _apply_linear_window(values, center, width)
    else:
        display = _scale_to_uint8(values)
    if str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        display = 255 - display
    return PIL.Image.fromarray(display)


def _first_value(element) -> float | None:
    """Window center/width may be multi-valued (several presets); the first one is the default view."""
    if element is None:
        return None
    if isinstance(element, Sequence) and not isinstance(element, (str, bytes)):
        if len(element) == 0:
            return None
        element = element[0]
    return float(element)


def _apply_linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 LINEAR VOI function onto 0..255."""
    if width <= 1:
        return np.where(values > center - 0.5, 255, 0).astype(np.uint8)
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scale to 0..255 (a constant image maps to 0)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) / (high - low) * 255.0).astype(np.uint8)


def to_pil_image(value) -> PIL.Image.Image:
    """An example's image as PIL: decoded `datasets.Image()` values pass through; paths and undecoded
    `{"path", "bytes"}` values (an `Image(decode=False)` column) are decoded with `load_image` rules."""
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        return load_image(value)
    if isinstance(value, dict) and value.get("bytes") is not None:
        try:
            image = PIL.Image.open(io.BytesIO(value["bytes"]))
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageDecodingError(f"cannot decode the image bytes of {value.get('path')}: {error}") from error
        return image
    if isinstance(value, dict) and value.get("path") is not None:
        return load_image(value["path"])
    raise TypeError(f"expected a PIL image, a path or an undecoded image dict, got {type(value).__name__}")
