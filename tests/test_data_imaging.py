"""Image decoding: PIL modes and bit depths kept, DICOM through pydicom's modality and VOI transforms, named errors."""
import io
import struct
import warnings
import zlib

import numpy as np
import PIL.Image
import pytest
from datasets import Dataset, Features, Image

from medvlp_hf.data import ImageDecodingError, load_image, to_pil_image
from medvlp_hf.data.imaging import is_dicom
from tests.test_data_support import write_dicom, write_image, write_truncated_jpeg


@pytest.mark.parametrize(
    "mode, suffix, expected_mode",
    [("L", "png", "L"), ("RGB", "png", "RGB"), ("RGBA", "png", "RGBA"), ("P", "png", "P"),
     ("I;16", "png", "I;16"), ("I", "tif", "I")],
)
def test_pil_modes_and_bit_depths_are_kept(tmp_path, mode, suffix, expected_mode):
    path = tmp_path / f"image.{suffix}"
    pixels = write_image(path, mode=mode)
    image = load_image(path)
    assert image.mode == expected_mode
    np.testing.assert_array_equal(np.array(image), pixels)


def test_sixteen_bit_png_keeps_full_range_like_datasets_image_column(tmp_path):
    path = tmp_path / "x16.png"
    pixels = write_image(path, mode="I;16", size=(16, 16))
    assert pixels.max() > 255
    column = Dataset.from_dict({"image": [str(path)]}, features=Features({"image": Image()}))
    from_datasets = column[0]["image"]
    ours = load_image(path)
    assert from_datasets.mode == ours.mode == "I;16"
    np.testing.assert_array_equal(np.array(from_datasets), np.array(ours))


def test_jpeg_decodes(tmp_path):
    write_image(tmp_path / "a.jpg", mode="RGB", size=(20, 10))
    image = load_image(tmp_path / "a.jpg")
    assert (image.mode, image.size) == ("RGB", (20, 10))


def write_sixteen_bit_png(path, samples):
    """A PNG with 16-bit samples (PIL cannot write them): (H, W, 3) RGB or (H, W, 2) gray+alpha."""
    height, width, channels = samples.shape
    colour_type = {3: 2, 2: 4}[channels]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("channels, expected_mode", [(3, "RGB"), (2, "RGBA")])
def test_sixteen_bit_colour_png_is_reduced_to_its_high_byte_by_pil(tmp_path, channels, expected_mode):
    samples16 = np.random.default_rng(0).integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    image = load_image(write_sixteen_bit_png(tmp_path / "colour16.png", samples16))
    assert image.mode == expected_mode
    high_byte = (samples16 >> 8).astype(np.uint8)
    expected = high_byte if channels == 3 else np.dstack([high_byte[..., :1]] * 3 + [high_byte[..., 1:]])
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_truncated_jpeg_raises_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    write_truncated_jpeg(path)
    with pytest.raises(ImageDecodingError, match="cut.jpg"):
        load_image(path)


def test_not_an_image_raises_error_naming_the_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image")
    with pytest.raises(ImageDecodingError, match="notes.png"):
        load_image(path)
    assert issubclass(ImageDecodingError, ValueError)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.png"):
        load_image(tmp_path / "absent.png")


# --- DICOM: a 12-bit DX ramp through pydicom's modality and VOI transforms ---------------------------------------

RAMP = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # every 12-bit stored value once
SAMPLES = np.s_[::520]  # 8 values of the flattened ramp: 0, 520, ..., 3640
# An 8-bit VOI LUT of 1000 entries from stored value 1000 on: 0..255 across 1000..1999.
LUT_FIRST, LUT_ENTRIES = 1000, 1000
LUT_8_BIT = np.round(np.arange(LUT_ENTRIES) * 255 / (LUT_ENTRIES - 1)).astype(np.int64)
LUT_SAMPLES = [0, 0, 10, 143, 255, 255, 255, 255]  # the LUT at the 8 samples
MIN_MAX_SAMPLES = [0, 32, 65, 97, 130, 162, 194, 227]  # 8-bit min-max of the same samples
# Window centers with a quarter fraction: no window output lands exactly on .5 before rounding.
CENTER, WIDTH = 2047.75, 1000


def voi_lut_item(data, bits, vr="US"):
    """A VOI LUT Sequence item; LUT Data as US values or as OW bytes (one little-endian 16-bit word an entry)."""
    from pydicom import Dataset

    item = Dataset()
    item.add_new("LUTDescriptor", "US", [LUT_ENTRIES, LUT_FIRST, bits])
    data = np.asarray(data, dtype=np.int64)
    item.add_new("LUTData", vr, data.astype("<u2").tobytes() if vr == "OW" else [int(value) for value in data])
    return item


def write_ramp(path, raw=RAMP, **elements):
    """The ramp as a 12-bit DX file (Bits Allocated 16, Bits Stored 12)."""
    return write_dicom(path, raw, bits_stored=12, **elements)


def samples(image):
    return np.asarray(image).ravel()[SAMPLES].tolist()


def window_reference(values, function, center=CENTER, width=WIDTH):
    """PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID) onto 0..255."""
    values = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        unit = 1 / (1 + np.exp(-4 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        unit = (values - center) / width + 0.5
    else:
        unit = (values - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(np.round(unit * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("vr", ["US", "OW"])
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_dicom_voi_lut_sequence_is_applied(tmp_path, bits, vr):
    from pydicom import dcmread
    from pydicom.pixels import apply_voi_lut

    full_scale = 2**bits - 1
    data = np.round(LUT_8_BIT * full_scale / 255)
    path = write_ramp(tmp_path / "lut.dcm", VOILUTSequence=[voi_lut_item(data, bits, vr)])
    image = load_image(path)
    assert image.mode == "L"
    # the LUT's output range is 0..2**bits - 1 (its descriptor), so every declared depth gives the same image
    assert samples(image) == LUT_SAMPLES
    # pydicom's apply_voi_lut, on a twin declared 16-bit (pydicom 3.0 wraps the index of 8-bit LUTs past 256 entries)
    twin = dcmread(path)
    twin.VOILUTSequence[0].LUTDescriptor = [LUT_ENTRIES, LUT_FIRST, 16]
    reference = apply_voi_lut(twin.pixel_array, twin)
    if bits == 8:
        assert samples(reference) == LUT_SAMPLES
    np.testing.assert_array_equal(np.asarray(image), np.round(reference / full_scale * 255))


def test_dicom_voi_lut_is_preferred_to_a_window_and_takes_integral_rescaled_values(tmp_path):
    lut = [voi_lut_item(LUT_8_BIT, 8)]
    plain = load_image(write_ramp(tmp_path / "plain.dcm", VOILUTSequence=lut))
    path = write_ramp(
        tmp_path / "both.dcm", VOILUTSequence=lut, WindowCenter=500, WindowWidth=100, RescaleSlope=1,
        RescaleIntercept=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "VOI LUT on a float input" warning for slope 1, intercept 0
        both = load_image(path)
    np.testing.assert_array_equal(np.asarray(both), np.asarray(plain))


def test_dicom_without_voi_is_min_max_scaled(tmp_path):
    image = load_image(write_ramp(tmp_path / "plain.dcm"))
    assert samples(image) == MIN_MAX_SAMPLES
    np.testing.assert_array_equal(np.asarray(image), np.round(RAMP / 4095 * 255))


@pytest.mark.parametrize("function", [None, "LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_dicom_window_functions(tmp_path, function):
    elements = {"WindowCenter": CENTER, "WindowWidth": WIDTH}
    if function is not None:
        elements["VOILUTFunction"] = function
    image = load_image(write_ramp(tmp_path / "window.dcm", **elements))
    np.testing.assert_array_equal(np.asarray(image), window_reference(RAMP, function or "LINEAR"))


def test_dicom_multivalued_window_uses_the_first(tmp_path):
    path = write_ramp(tmp_path / "multi.dcm", WindowCenter=[CENTER, 300], WindowWidth=[WIDTH, 40])
    np.testing.assert_array_equal(np.asarray(load_image(path)), window_reference(RAMP, "LINEAR"))


def test_dicom_rescale_slope_and_intercept_come_before_the_window(tmp_path):
    path = write_ramp(tmp_path / "ct.dcm", RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=CENTER, WindowWidth=WIDTH)
    np.testing.assert_array_equal(np.asarray(load_image(path)), window_reference(RAMP * 2.0 - 1024, "LINEAR"))


@pytest.mark.parametrize("voi", ["window", "lut", "none"])
def test_dicom_monochrome1_is_inverted(tmp_path, voi):
    elements = {
        "window": {"WindowCenter": CENTER, "WindowWidth": WIDTH},
        "lut": {"VOILUTSequence": [voi_lut_item(LUT_8_BIT, 8)]},
        "none": {},
    }[voi]
    mono2 = load_image(write_ramp(tmp_path / "m2.dcm", **elements))
    mono1 = load_image(write_ramp(tmp_path / "m1.dcm", photometric="MONOCHROME1", **elements))
    np.testing.assert_array_equal(np.asarray(mono1), 255 - np.asarray(mono2))


def test_dicom_signed_pixel_representation(tmp_path):
    signed = (RAMP.astype(np.int16) - 2048)  # -2048..2047, the full signed 12-bit range
    plain = load_image(write_ramp(tmp_path / "signed.dcm", signed))
    np.testing.assert_array_equal(np.asarray(plain), np.round((signed + 2048) / 4095 * 255))
    window = load_image(write_ramp(tmp_path / "signed_window.dcm", signed, WindowCenter=0.25, WindowWidth=WIDTH))
    np.testing.assert_array_equal(np.asarray(window), window_reference(signed, "LINEAR", center=0.25))


@pytest.mark.parametrize("syntax", ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian", "ExplicitVRBigEndian"])
def test_dicom_transfer_syntaxes_give_the_same_image(tmp_path, syntax):
    import pydicom.uid

    path = write_ramp(
        tmp_path / "ts.dcm", transfer_syntax=getattr(pydicom.uid, syntax), WindowCenter=CENTER, WindowWidth=WIDTH
    )
    np.testing.assert_array_equal(np.asarray(load_image(path)), window_reference(RAMP, "LINEAR"))


def test_colour_dicom_keeps_its_bit_depth_scale(tmp_path):
    rgb8 = np.random.default_rng(0).integers(10, 200, (6, 5, 3), dtype=np.uint8)  # not stretched to 0..255
    image = load_image(write_dicom(tmp_path / "rgb8.dcm", rgb8, photometric="RGB"))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), rgb8)
    rgb16 = np.random.default_rng(1).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    image = load_image(write_dicom(tmp_path / "rgb16.dcm", rgb16, photometric="RGB"))
    np.testing.assert_array_equal(np.asarray(image), np.round(rgb16 / 65535 * 255))


def test_ybr_full_dicom_is_converted_to_rgb(tmp_path):
    from pydicom.pixels import convert_color_space

    ybr = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    image = load_image(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL"))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), convert_color_space(ybr, "YBR_FULL", "RGB"))


def test_palette_colour_dicom_is_looked_up(tmp_path):
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 65536, (3, 256), dtype=np.uint16)
    indices = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    tables = {}
    for channel, table in zip(("Red", "Green", "Blue"), palette):
        tables[f"{channel}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        tables[f"{channel}PaletteColorLookupTableData"] = table.astype("<u2").tobytes()
    image = load_image(write_dicom(tmp_path / "palette.dcm", indices, photometric="PALETTE COLOR", **tables))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), np.round(palette.T[indices] / 65535 * 255))


def test_dicom_is_recognised_by_its_marker_without_extension(tmp_path):
    path = write_dicom(tmp_path / "IM0001", np.array([[0, 4095]], dtype=np.uint16), bits_stored=12)
    assert is_dicom(path)
    np.testing.assert_array_equal(np.asarray(load_image(path)), [[0, 255]])


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("truncated.dcm", "truncate", "cannot decode DICOM file"),
        ("text.dcm", "text", "cannot decode DICOM file"),
        ("frames.dcm", "frames", "holds 2 frames; only single-frame images are supported"),
        ("zero_width.dcm", "zero_width", "Window Width must be greater than or equal to 1"),
        ("hsv.dcm", "hsv", "Photometric Interpretation 'HSV'"),
    ],
)
def test_bad_dicom_raises_error_naming_the_file(tmp_path, name, damage, message):
    path = tmp_path / name
    if damage == "frames":
        write_dicom(path, np.zeros((2, 4, 4), dtype=np.uint16), NumberOfFrames=2)
    elif damage == "zero_width":
        write_ramp(path, WindowCenter=100, WindowWidth=0)
    elif damage == "hsv":
        write_dicom(path, np.zeros((4, 4, 3), dtype=np.uint8), photometric="RGB")
        from pydicom import dcmread

        dataset = dcmread(path)
        dataset.PhotometricInterpretation = "HSV"
        dataset.save_as(path)
    else:
        write_dicom(path, np.zeros((4, 4), dtype=np.uint16))
        path.write_bytes(path.read_bytes()[:-20] if damage == "truncate" else b"not a DICOM file")
    with pytest.raises(ImageDecodingError, match=name) as raised:
        load_image(path)
    assert message in str(raised.value)


def test_to_pil_image_accepts_pil_paths_and_undecoded_dicts(tmp_path):
    pixels = write_image(tmp_path / "a.png")
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    for value in (PIL.Image.fromarray(pixels), str(tmp_path / "a.png"), {"path": None, "bytes": buffer.getvalue()},
                  {"path": str(tmp_path / "a.png"), "bytes": None}):
        np.testing.assert_array_equal(np.array(to_pil_image(value)), pixels)
    with pytest.raises(ImageDecodingError):
        to_pil_image({"path": "x.png", "bytes": b"garbage"})
