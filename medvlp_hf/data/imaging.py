"""Decode medical image files into PIL images: raster files as stored (every PIL mode and bit depth), DICOM
through its modality and VOI transforms to 8 bits.

PIL-readable files keep their mode and bit depth: mode conversion and bit-depth rescaling belong to the
image processors, which must see the full 16-bit range. The decoding matches what a `datasets.Image()`
column does (open, load every pixel, apply the EXIF orientation), so a loader's lazily decoded column and
`load_image` give the same pixels. DICOM pixel data is not an image PIL can show, so `load_dicom` maps it to
an 8-bit 'L' or 'RGB' image the way a DICOM viewer displays it (see there).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
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
    """Fully decode the image file at `path`: DICOM (by suffix or its 'DICM' marker) with `load_dicom`, anything
    else with PIL in its stored mode (16-bit grayscale PNG/TIFF stay 'I;16'/'I'). PIL itself reduces 16-bit
    colour and 16-bit gray+alpha PNGs to 8 bits per sample (mode 'RGB'/'RGBA', the high byte of each sample).

    A missing file raises FileNotFoundError, an unreadable one ImageDecodingError naming the file.
    """
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
    """Decode a single-frame DICOM file to an 8-bit PIL image, mode 'L' (grayscale) or 'RGB' (colour).

    Grayscale (MONOCHROME1/2) follows the DICOM grayscale pipeline (PS3.3 C.11) with pydicom's own functions:
    1. Modality LUT Sequence or Rescale Slope/Intercept: `pydicom.pixels.apply_modality_lut`.
    2. VOI, chosen as `pydicom.pixels.apply_voi_lut` chooses (the VOI LUT Sequence when present, else the
       window), always the first view when several are given:
       - VOI LUT Sequence: `apply_voi`; its output range is 0..2**n - 1 with n the third LUT Descriptor value
         (bits per entry; PS3.3 C.11.2.1.1 and the Presentation LUT notes of C.11.6.1).
       - Window Center/Width with VOI LUT Function LINEAR (default), LINEAR_EXACT or SIGMOID: `apply_windowing`;
         its output range is the [y_min, y_max] pydicom maps the values below/above the window to (the
         modality output range), read off `apply_windowing` itself at -inf and +inf.
       - Neither (documented fallback, not a DICOM rule): min-max of the modality values.
    3. Linear scaling of that range onto 0..255, rounded.
    4. MONOCHROME1 (minimum = white) inverted, so 0 is black for every file.
    Colour: RGB (and YBR_*, which pydicom converts to RGB) and PALETTE COLOR (`apply_color_lut`) are scaled
    from their bit depth (Bits Stored, or the palette's bits per entry) onto 0..255.

    Raises ImageDecodingError naming the file when it is not valid DICOM, its pixel data cannot be decoded
    (e.g. a compressed transfer syntax without the pydicom plugin), it holds several frames, its Photometric
    Interpretation is not one of the above, or its VOI attributes are invalid (e.g. Window Width < 1 for LINEAR).
    """
    try:
        import pydicom
        from pydicom.pixels import apply_color_lut
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"reading the DICOM file {path} needs pydicom >= 3: pip install 'medvlp-hf[dicom]'"
        ) from error
    with _named_dicom_errors(path):
        dataset = pydicom.dcmread(path)
        frames = int(dataset.get("NumberOfFrames") or 1)
        if frames > 1:
            raise ImageDecodingError(
                f"DICOM file {path} holds {frames} frames; only single-frame images are supported "
                "(pick a frame with pydicom: dcmread(path).pixel_array[index])."
            )
        photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
        pixels = dataset.pixel_array
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            gray = _monochrome_to_uint8(pixels, dataset)
            return PIL.Image.fromarray(255 - gray if photometric == "MONOCHROME1" else gray)
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(pixels, dataset)[..., :3]
            return PIL.Image.fromarray(_bit_depth_to_uint8(rgb, dataset.RedPaletteColorLookupTableDescriptor[2]))
        if photometric == "RGB" or photometric.startswith("YBR"):
            return PIL.Image.fromarray(_bit_depth_to_uint8(pixels, dataset.BitsStored))
        raise ImageDecodingError(
            f"DICOM file {path} has Photometric Interpretation {photometric!r}; supported: MONOCHROME1, "
            "MONOCHROME2, RGB, YBR_*, PALETTE COLOR."
        )


@contextlib.contextmanager
def _named_dicom_errors(path):
    """Turn pydicom's many error types (bad file, missing decoder plugin, invalid VOI) into one that names the file."""
    try:
        yield
    except ImageDecodingError:
        raise
    except Exception as error:
        raise ImageDecodingError(f"cannot decode DICOM file {path}: {error}") from error


def _monochrome_to_uint8(pixels: np.ndarray, dataset) -> np.ndarray:
    """Stored values -> modality values -> VOI output -> 0..255 over the VOI output range (see `load_dicom`);
    MONOCHROME1 is not inverted yet."""
    from pydicom.pixels import apply_modality_lut, apply_windowing

    values = apply_modality_lut(pixels, dataset)
    if _has_voi_lut_sequence(dataset):
        display = _apply_voi_lut_sequence(values, dataset)
        black, white = 0, 2 ** int(dataset.VOILUTSequence[0].LUTDescriptor[2]) - 1
    elif dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None:
        display = apply_windowing(values, dataset)
        black, white = apply_windowing(np.array([-np.inf, np.inf]), dataset)
    else:
        display, black, white = values, values.min(), values.max()
    return _scale_to_uint8(display, black, white)


def _has_voi_lut_sequence(dataset) -> bool:
    """The test `pydicom.pixels.apply_voi_lut` uses: a first item with both LUT Descriptor and LUT Data."""
    sequence = dataset.get("VOILUTSequence")
    return bool(sequence) and None not in (sequence[0].get("LUTDescriptor"), sequence[0].get("LUTData"))


def _apply_voi_lut_sequence(values: np.ndarray, dataset) -> np.ndarray:
    """`pydicom.pixels.apply_voi` on the first VOI LUT, with two input fixes that leave its mapping unchanged.

    Integral float modality values (a rescale with integer slope/intercept) are passed as integers, which
    avoids pydicom's "float input" warning on every such file. pydicom 3.0 indexes a LUT of 8-bit entries
    through a uint8 array, so input values more than 255 entries past the first one wrap around; for such a
    LUT the entries are declared 16-bit in a copy, which changes only that index type (the entries, and the
    output range taken from the file's own descriptor, stay 8-bit).
    """
    from pydicom import Dataset
    from pydicom.pixels import apply_voi

    if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
        values = values.astype(np.int64)
    item = dataset.VOILUTSequence[0]
    entries, first_mapped, bits = (int(value) for value in item.LUTDescriptor)
    if bits != 8 or 0 < entries <= 256:
        return apply_voi(values, dataset)
    widened = copy.deepcopy(item)
    widened.LUTDescriptor = [entries, first_mapped, 16]
    lut_only = Dataset()
    lut_only.file_meta = dataset.file_meta
    lut_only.VOILUTSequence = [widened]
    return apply_voi(values, lut_only)


def _bit_depth_to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned `bits`-bit samples onto 0..255 (8-bit data unchanged)."""
    return _scale_to_uint8(values, 0, 2 ** int(bits) - 1)


def _scale_to_uint8(values: np.ndarray, black: float, white: float) -> np.ndarray:
    """Map `black` to 0 and `white` to 255 linearly, rounded and clipped (`black == white` gives 0)."""
    if white == black:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.asarray(values, dtype=np.float64) - black) / (float(white) - float(black)) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


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
