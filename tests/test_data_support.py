"""Helpers shared by the tests/test_data_*.py files: tiny on-disk fixtures and the MedViLL processor.

Holds no tests itself.
"""
import json
from pathlib import Path

import numpy as np
import PIL.Image


def write_image(path, mode="L", size=(8, 8), seed=0, format=None):
    """A small random image file in `mode`; returns its pixel array."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0])
    if mode == "I;16":
        pixels = rng.integers(0, 65536, shape, dtype=np.uint16)
    elif mode == "I":
        pixels = rng.integers(-5, 70000, shape, dtype=np.int32)
    elif mode in ("RGB", "RGBA"):
        pixels = rng.integers(0, 256, (*shape, len(mode)), dtype=np.uint8)
    else:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    image = PIL.Image.fromarray(pixels)
    if mode == "P":
        image = image.convert("P")
        pixels = np.array(image)
    image.save(path, format=format)
    return pixels


def write_truncated_jpeg(path, keep_fraction=0.5):
    """A JPEG of noise cut after `keep_fraction` of its bytes."""
    write_image(path, mode="RGB", size=(64, 64))
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path, records):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [record if isinstance(record, str) else json.dumps(record) for record in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_dicom(path, raw, photometric="MONOCHROME2", window=None, slope=None, intercept=None):
    """A single-frame DICOM file: 16-bit grayscale for a 2-D `raw`, 8-bit RGB for an (H, W, 3) one."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns = raw.shape[:2]
    colour = raw.ndim == 3
    dataset.SamplesPerPixel = 3 if colour else 1
    dataset.PhotometricInterpretation = "RGB" if colour else photometric
    bits = 8 if colour else 16
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = bits, bits, bits - 1
    dataset.PixelRepresentation = 0
    if colour:
        dataset.PlanarConfiguration = 0
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if slope is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    dataset.PixelData = np.asarray(raw, dtype="u1" if colour else "<u2").tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(str(path), enforce_file_format=True)


def medvill_processor(image_size=32):
    """The real MedViLL processor on the shipped bert-base-uncased vocab, with small images."""
    from medvlp_hf.models.medvill.processing_medvill import MedViLLProcessor
    from medvlp_hf.resources import bert_base_uncased_vocab_file

    return MedViLLProcessor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=image_size)
