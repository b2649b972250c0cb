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


def write_dicom(path, raw, photometric="MONOCHROME2", bits_stored=None, transfer_syntax=None, **elements):
    """A DICOM Part 10 file (DX, uncompressed) whose pixel data are the stored values `raw`: (H, W) for one sample
    per pixel, (H, W, 3) for RGB/YBR_FULL, (frames, H, W) with NumberOfFrames=frames. The dtype sets Bits
    Allocated and Pixel Representation (signed for int dtypes); `bits_stored` defaults to all allocated bits.
    `transfer_syntax` is a pydicom UID (Explicit VR Little Endian by default; big endian is byte-swapped here).
    Other keyword arguments become data elements, e.g. WindowCenter=40, VOILUTSequence=[item]. Returns `path`."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    transfer_syntax = transfer_syntax or ExplicitVRLittleEndian
    raw = np.asarray(raw)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    colour = photometric in ("RGB", "YBR_FULL")
    dataset.SamplesPerPixel = 3 if colour else 1
    dataset.PhotometricInterpretation = photometric
    dataset.Rows, dataset.Columns = raw.shape[-3:-1] if colour else raw.shape[-2:]
    bits_allocated = raw.dtype.itemsize * 8
    bits_stored = bits_stored or bits_allocated
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = bits_allocated, bits_stored, bits_stored - 1
    dataset.PixelRepresentation = int(raw.dtype.kind == "i")
    if colour:
        dataset.PlanarConfiguration = 0
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    byte_order = "<" if transfer_syntax.is_little_endian else ">"
    dataset.PixelData = raw.astype(raw.dtype.newbyteorder(byte_order)).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(str(path), dataset, enforce_file_format=True)
    return path


def medvill_processor(image_size=32):
    """The real MedViLL processor on the shipped bert-base-uncased vocab, with small images."""
    from medvlp_hf.models.medvill.processing_medvill import MedViLLProcessor
    from medvlp_hf.resources import bert_base_uncased_vocab_file

    return MedViLLProcessor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=image_size)
