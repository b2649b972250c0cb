"""Image decoding: PIL modes and bit depths kept, DICOM windowing/inversion, named errors."""
import io

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


def test_dicom_monochrome1_with_rescale_and_window(tmp_path):
    raw = np.array([[0, 50, 300], [550, 1000, 2000]], dtype=np.uint16)
    path = tmp_path / "scan.dcm"
    write_dicom(path, raw, photometric="MONOCHROME1", window=(500, 1000), slope=2, intercept=-100)
    image = load_image(path)
    assert image.mode == "L"
    # modality values -100, 0, 500, 1000, 1900, 3900; window [0, 999] -> 0, 0, 128, 255, 255, 255; inverted
    np.testing.assert_array_equal(np.array(image), [[255, 255, 127], [0, 0, 0]])


def test_dicom_multivalued_window_uses_the_first(tmp_path):
    raw = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    path = tmp_path / "multi.dcm"
    write_dicom(path, raw, window=([100, 5000], [101, 9000]))
    # center 100 width 101: lower 49.5 - 50 = -0.5, upper 99.5 + 50 = 149.5
    expected = np.clip(np.round(((raw - 99.5) / 100 + 0.5) * 255), 0, 255)
    np.testing.assert_array_equal(np.array(load_image(path)), expected)


def test_dicom_without_window_is_min_max_scaled(tmp_path):
    raw = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    path = tmp_path / "plain.dcm"
    write_dicom(path, raw)
    np.testing.assert_array_equal(np.array(load_image(path)), np.round((raw - 10) / 40 * 255))


def test_colour_dicom_is_rgb(tmp_path):
    raw = np.array([[[0, 10, 20], [30, 40, 255]]], dtype=np.uint8)
    write_dicom(tmp_path / "colour.dcm", raw)
    image = load_image(tmp_path / "colour.dcm")
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.array(image), np.round(raw / 255.0 * 255))


def test_dicom_is_recognised_by_its_marker_without_extension(tmp_path):
    raw = np.array([[0, 4095]], dtype=np.uint16)
    path = tmp_path / "IM0001"
    write_dicom(path, raw)
    assert is_dicom(path)
    np.testing.assert_array_equal(np.array(load_image(path)), [[0, 255]])


def test_corrupt_dicom_raises_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.dcm"
    write_dicom(path, np.zeros((4, 4), dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ImageDecodingError, match="broken.dcm"):
        load_image(path)


def test_to_pil_image_accepts_pil_paths_and_undecoded_dicts(tmp_path):
    pixels = write_image(tmp_path / "a.png")
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    for value in (PIL.Image.fromarray(pixels), str(tmp_path / "a.png"), {"path": None, "bytes": buffer.getvalue()},
                  {"path": str(tmp_path / "a.png"), "bytes": None}):
        np.testing.assert_array_equal(np.array(to_pil_image(value)), pixels)
    with pytest.raises(ImageDecodingError):
        to_pil_image({"path": "x.png", "bytes": b"garbage"})
