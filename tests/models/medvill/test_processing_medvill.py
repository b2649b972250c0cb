"""MedViLL image processor and processor on the shared processor checks (tests/common), plus what is special to
MedViLL: pixel parity with the original torchvision pipeline, input rules for other encodings, the `[SEP] text [SEP]`
stream, question cleaning, and save/load through the Auto classes."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

import medvlp_hf  # noqa: F401  (registers the Auto classes)
from medvlp_hf.models.medvill.configuration_medvill import MedViLLConfig
from medvlp_hf.models.medvill.image_processing_medvill import MedViLLImageProcessor
from medvlp_hf.models.medvill.processing_medvill import MedViLLProcessor
from medvlp_hf.resources import bert_base_uncased_vocab_file
from tests.common.processor_tester import ProcessorTester, ProcessorTesterMixin

XRAYS = ("00000001_000.png", "00027426_000.png")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
SEP, PAD = 102, 0
# One 8-bit level after normalisation by the smallest std: the float path (no uint8 rounding) may differ by this.
ONE_LEVEL = 1.0 / 255 / 0.224


class MedViLLProcessorTester(ProcessorTester):
    processor_class = MedViLLProcessor
    vocab_size = 30522

    def get_model_config(self):
        return MedViLLConfig.from_preset("tiny")


class TestMedViLLProcessor(ProcessorTesterMixin):
    tester = MedViLLProcessorTester()


def torchvision_reference(image: Image.Image, height: int, width: int, grayscale: bool = True) -> torch.Tensor:
    """Grayscale(3) -> Resize([h, w]) -> ToTensor -> Normalize(ImageNet) as torchvision runs them on a PIL image."""
    if grayscale:
        luma = np.array(image.convert("L"), dtype=np.uint8)
        image = Image.fromarray(np.dstack([luma, luma, luma]))
    else:
        image = image.convert("RGB")
    image = image.resize((width, height), Image.BILINEAR)
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous().float().div(255)
    return tensor.sub_(MEAN).div_(STD)


def pixels(image, **kwargs) -> torch.Tensor:
    return MedViLLImageProcessor(**kwargs)(image)["pixel_values"]


@pytest.fixture(scope="module")
def xray(data_dir):
    return Image.open(data_dir / "cxr_samples" / XRAYS[0]).copy()


@pytest.fixture(scope="module")
def colour_image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def processor():
    return MedViLLProcessor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=32)


# --- image processor: parity with the original pipeline -------------------------------------------------------


@pytest.mark.parametrize("name", XRAYS)
def test_real_xrays_match_torchvision_pipeline(data_dir, name):
    image = Image.open(data_dir / "cxr_samples" / name)
    out = MedViLLImageProcessor()(image)["pixel_values"]
    assert out.shape == (1, 3, 512, 512) and out.dtype == torch.float32
    assert torch.equal(out[0], torchvision_reference(image, 512, 512))


@pytest.mark.parametrize("size", [{"height": 96, "width": 128}, 64])
def test_non_square_resize_matches_reference(xray, size):
    crop = xray.crop((40, 0, 440, 300))
    height, width = (size, size) if isinstance(size, int) else (size["height"], size["width"])
    out = pixels(crop, size=size)[0]
    assert out.shape == (3, height, width)
    assert torch.equal(out, torchvision_reference(crop, height, width))


def test_colour_image_matches_reference(colour_image):
    assert torch.equal(pixels(colour_image, size=32)[0], torchvision_reference(colour_image, 32, 32))
    rgb = pixels(colour_image, size=32, do_grayscale=False)[0]
    assert torch.equal(rgb, torchvision_reference(colour_image, 32, 32, grayscale=False))
    assert not torch.equal(rgb[0], rgb[1])


def test_no_normalize_gives_unit_range(xray):
    out = pixels(xray, size=64, do_normalize=False)[0]
    expected = torchvision_reference(xray, 64, 64) * STD + MEAN
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


# --- image processor: input encodings --------------------------------------------------------------------------


def test_gray_inputs_in_every_container_agree(xray):
    crop = xray.crop((0, 0, 200, 150))
    gray = np.asarray(crop)
    expected = pixels(crop, size=48)
    variants = [
        crop.convert("RGB"),
        gray,
        gray[:, :, None],
        np.dstack([gray] * 3),
        torch.from_numpy(gray.copy())[None],
        torch.from_numpy(gray.copy())[:, :, None],
        torch.from_numpy(np.dstack([gray] * 3)).permute(2, 0, 1),
    ]
    for variant in variants:
        assert torch.equal(pixels(variant, size=48), expected)


def test_numpy_and_torch_colour_match_pil(colour_image):
    array = np.asarray(colour_image)
    expected = pixels(colour_image, size=32)
    assert torch.equal(pixels(array, size=32), expected)
    assert torch.equal(pixels(torch.from_numpy(array.copy()).permute(2, 0, 1), size=32), expected)
    ambiguous = np.asarray(colour_image.crop((0, 0, 3, 4)))  # 4x3x3: a channel-sized axis at both ends
    channels_first = np.ascontiguousarray(ambiguous.transpose(2, 0, 1))  # 3x4x3
    assert torch.equal(
        pixels(channels_first, size=8, input_data_format="channels_first"), pixels(ambiguous, size=8)
    )


def test_rgba_drops_alpha(colour_image):
    rgb = np.asarray(colour_image)
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    rgba = np.dstack([rgb, alpha])
    expected = pixels(colour_image, size=32)
    assert torch.equal(pixels(Image.fromarray(rgba), size=32), expected)
    assert torch.equal(pixels(rgba, size=32), expected)


EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV")


@pytest.mark.parametrize("mode", EIGHT_BIT_MODES)
def test_every_eight_bit_pil_mode_follows_pil_convert(colour_image, mode):
    image = colour_image.convert("RGBA").convert(mode) if mode == "PA" else colour_image.convert(mode)
    assert image.mode == mode
    assert torch.equal(pixels(image, size=32)[0], torchvision_reference(image, 32, 32))
    rgb = pixels(image, size=32, do_grayscale=False)[0]
    assert torch.equal(rgb, torchvision_reference(image, 32, 32, grayscale=False))


@pytest.mark.parametrize("value", [0, 257, 32768, 65535])
def test_sixteen_bit_is_scaled_by_bit_depth(value):
    expected = ((value / 65535) - MEAN) / STD
    image16 = np.full((20, 30), value, dtype=np.uint16)
    inputs = [
        Image.fromarray(image16),
        Image.fromarray(image16.astype(np.int32)),
        image16,
        torch.from_numpy(image16.astype(np.int32)).to(torch.uint16),
    ]
    for image in inputs:
        out = pixels(image, size=16)[0]
        torch.testing.assert_close(out, expected.expand(3, 16, 16), rtol=0, atol=1e-6)


# The image of the public bug report: 16-bit values 0, 16, ..., 65520 on a 64x64 grid.
GRADIENT16 = (np.arange(4096, dtype=np.uint16) * 16).reshape(64, 64)
# Every non-8-bit dtype with a bit-depth convention, holding the gradient in the range its rule reads.
WIDE_DTYPES = {
    "uint16": GRADIENT16,
    "int32": GRADIENT16.astype(np.int32),
    "float16": (GRADIENT16 / 65535).astype(np.float16),
    "float32": (GRADIENT16 / 65535).astype(np.float32),
    "float64": GRADIENT16 / 65535,
}
# A single image and every batch container (numpy stacking returns native order: swap after building).
LAYOUTS = {
    "HxW": lambda a: a,
    "1xHxW": lambda a: a[None],
    "HxWx3": lambda a: np.dstack([a, a[::-1], a.T]),
    "list": lambda a: [a, a.T],
    "4-D batch": lambda a: np.stack([a, a.T])[..., None],
}


def unit_pixels(image, **kwargs) -> torch.Tensor:
    """Pixel values in [0, 1] at the input size (no resize, no normalisation)."""
    return pixels(image, do_resize=False, do_normalize=False, **kwargs)


def test_big_endian_sixteen_bit_pil_image_equals_native():
    big_endian = Image.frombytes("I;16B", (64, 64), GRADIENT16.astype(">u2").tobytes())
    assert torch.equal(pixels(big_endian, size=32), pixels(Image.fromarray(GRADIENT16), size=32))
    expected = torch.from_numpy((GRADIENT16 / 65535).astype(np.float32)).expand(1, 3, 64, 64)
    assert torch.equal(unit_pixels(big_endian), expected)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("byte_order", [">", "<", "="])
@pytest.mark.parametrize("dtype", list(WIDE_DTYPES))
def test_numpy_byte_orders_equal_native(dtype, byte_order, layout):
    native = LAYOUTS[layout](WIDE_DTYPES[dtype])
    ordered_dtype = WIDE_DTYPES[dtype].dtype.newbyteorder(byte_order)
    images = [image.astype(ordered_dtype) for image in native] if layout == "list" else native.astype(ordered_dtype)
    assert all(image.dtype.str == ordered_dtype.str for image in (images if layout == "list" else [images]))
    expected = pixels(native, size=32)
    assert expected.shape[0] == (2 if layout in ("list", "4-D batch") else 1)
    assert torch.equal(pixels(images, size=32), expected)


@pytest.mark.parametrize(
    "mode, raw_mode, stored",
    [
        ("I;16", "I;16", GRADIENT16.astype("<u2")),
        ("I;16L", "I;16L", GRADIENT16.astype("<u2")),
        ("I;16B", "I;16B", GRADIENT16.astype(">u2")),
        ("I;16N", "I;16N", GRADIENT16.astype("=u2")),
        ("I", "I;32", GRADIENT16.astype("<i4")),
        ("I", "I;32B", GRADIENT16.astype(">i4")),
        ("I", "I;32N", GRADIENT16.astype("=i4")),
        ("F", "F;32F", WIDE_DTYPES["float32"].astype("<f4")),
        ("F", "F;32BF", WIDE_DTYPES["float32"].astype(">f4")),
        ("F", "F;32NF", WIDE_DTYPES["float32"].astype("=f4")),
    ],
)
def test_wide_pil_modes_from_every_byte_order_equal_native(mode, raw_mode, stored):
    image = Image.frombytes(mode, (64, 64), stored.tobytes(), "raw", raw_mode)
    assert image.mode == mode
    native = stored.astype(stored.dtype.newbyteorder("="))
    assert torch.equal(pixels(image, size=32), pixels(native, size=32))
    assert torch.equal(pixels([image, image], size=32), pixels(np.stack([native, native])[..., None], size=32))
    assert torch.equal(unit_pixels(image)[0, 0], torch.from_numpy((GRADIENT16 / 65535).astype(np.float32)))


@pytest.mark.parametrize("dtype", [torch.uint16, torch.int32, torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_dtypes_equal_numpy(dtype):
    tensor = torch.from_numpy(WIDE_DTYPES["float64"] if dtype.is_floating_point else GRADIENT16.astype(np.int32)).to(dtype)
    as_numpy = tensor.float().numpy() if dtype == torch.bfloat16 else tensor.numpy()
    assert torch.equal(pixels(tensor, size=32), pixels(as_numpy, size=32))
    batch = torch.stack([tensor, tensor.T])[:, None]
    assert torch.equal(pixels(batch, size=32), pixels([as_numpy, as_numpy.T], size=32))


@pytest.mark.parametrize("width", [1, 3, 5, 63])
def test_sixteen_bit_pil_images_with_odd_widths(width):
    values = np.random.default_rng(width).integers(0, 65536, (7, width), dtype=np.uint16)
    expected = torch.from_numpy((values / 65535).astype(np.float32))
    for mode, stored in (("I;16", values.astype("<u2")), ("I;16B", values.astype(">u2"))):
        image = Image.frombytes(mode, (width, 7), stored.tobytes())
        assert torch.equal(unit_pixels(image)[0, 0], expected)
        assert torch.equal(pixels(image, size=8), pixels(values, size=8))


def test_non_contiguous_arrays_and_tensors_equal_their_copies(colour_image):
    colour = np.array(colour_image)
    views = [
        GRADIENT16[::-1],
        GRADIENT16[:, ::3],
        GRADIENT16.T,
        GRADIENT16.astype(">u2")[::2, ::-1],
        np.broadcast_to(GRADIENT16[:1], (20, 64)),
        colour[:, ::-1],
        colour.transpose(1, 0, 2),
        colour[::2, :, ::-1],
    ]
    for view in views:
        assert not view.flags.c_contiguous
        assert torch.equal(pixels(view, size=24), pixels(np.ascontiguousarray(view), size=24))
    tensor16 = torch.from_numpy(GRADIENT16.astype(np.int32)).to(torch.uint16)
    tensor_views = [
        tensor16.T,
        tensor16[:, ::2],
        tensor16[None].expand(3, -1, -1),
        torch.from_numpy(colour).permute(2, 0, 1),
        torch.from_numpy(colour)[:, ::3].permute(2, 0, 1),
    ]
    for view in tensor_views:
        assert not view.is_contiguous()
        assert torch.equal(pixels(view, size=24), pixels(view.contiguous(), size=24))


def test_bool_arrays_and_tensors_are_black_and_white():
    mask = np.random.default_rng(4).random((20, 30)) > 0.5
    expected = pixels(mask.astype(np.uint8) * 255, size=16)
    for image in (mask, torch.from_numpy(mask), torch.from_numpy(mask)[None], Image.fromarray(mask)):
        assert torch.equal(pixels(image, size=16), expected)


def test_sixteen_bit_xray_matches_eight_bit(xray):
    crop = xray.crop((0, 0, 300, 200))
    image16 = Image.fromarray(np.asarray(crop).astype(np.uint16) * 257)  # v * 257 / 65535 = v / 255
    torch.testing.assert_close(pixels(image16, do_resize=False), pixels(crop, do_resize=False), rtol=0, atol=1e-6)
    # resized in float, not rounded to 8 bits: within one 8-bit level of the uint8 pipeline, but not identical
    resized16, resized8 = pixels(image16, size=64), pixels(crop, size=64)
    assert (resized16 - resized8).abs().max() <= ONE_LEVEL
    assert not torch.equal(resized16, resized8)


def test_float_inputs(xray):
    crop = xray.crop((0, 0, 120, 90))
    gray = np.asarray(crop)
    expected = pixels(crop, do_resize=False)
    unit = gray.astype(np.float32) / 255
    for image, kwargs in [
        (unit, {}),
        (torch.from_numpy(unit).half()[None], {}),
        (gray.astype(np.float64), {"float_max_value": 255}),
        (Image.fromarray(gray.astype(np.float32)), {"float_max_value": 255.0}),
    ]:
        out = pixels(image, do_resize=False, **kwargs)
        torch.testing.assert_close(out, expected, rtol=0, atol=5e-3 if isinstance(image, torch.Tensor) else 1e-6)
    colour = np.random.default_rng(2).random((10, 12, 3))
    luma = colour @ np.array([0.299, 0.587, 0.114])
    torch.testing.assert_close(
        pixels(colour, do_resize=False)[0], ((torch.from_numpy(luma).float() - MEAN) / STD), rtol=0, atol=1e-5
    )
    assert (pixels(unit, size=32) - pixels(crop, size=32)).abs().max() <= ONE_LEVEL


def test_batches_lists_and_4d_inputs(colour_image):
    array = np.asarray(colour_image)
    single = pixels(colour_image, size=24)
    batch_hwc = np.stack([array, array[::-1].copy()])
    out = pixels(batch_hwc, size=24)
    assert out.shape == (2, 3, 24, 24)
    assert torch.equal(out[0], single[0])
    assert torch.equal(out[1], pixels(array[::-1].copy(), size=24)[0])
    assert torch.equal(pixels(torch.from_numpy(batch_hwc).permute(0, 3, 1, 2), size=24), out)
    mixed = pixels([colour_image, np.zeros((7, 9), np.uint8), torch.ones(1, 5, 5)], size=24)
    assert mixed.shape == (3, 3, 24, 24)
    assert isinstance(MedViLLImageProcessor(size=24)(colour_image, return_tensors="np")["pixel_values"], np.ndarray)


@pytest.mark.parametrize(
    "image, kwargs, error, message",
    [
        (np.zeros((8, 8, 2), np.uint8), {}, ValueError, "cannot find the channel axis"),
        (np.zeros((3, 8, 8), np.uint8), {"input_data_format": "channels_last"}, ValueError, "has 8 channels"),
        (np.zeros((0, 5), np.uint8), {}, ValueError, "empty image"),
        (np.full((4, 4), np.nan, np.float32), {}, ValueError, "16 NaN or infinite"),
        (np.full((4, 4), 200.0), {}, ValueError, "pass float_max_value=255.0"),
        (np.full((4, 4), -0.5), {}, ValueError, "outside [0, float_max_value=1]"),
        (Image.new("LAB", (4, 4)), {}, ValueError, "unsupported PIL mode 'LAB'"),
        (np.array([np.zeros((4, 4)), np.zeros((5, 5))], dtype=object), {}, ValueError, "pass a list of images"),
        ("scan.png", {}, TypeError, "never reads files or URLs: load the image first with medvlp_hf.data.load_image"),
        (Path("scan.dcm"), {}, TypeError, "medvlp_hf.data.load_image(path)"),
        (b"\x89PNG", {}, TypeError, "medvlp_hf.data.load_image(path)"),
        (torch.zeros(4, 4, dtype=torch.uint32), {}, TypeError, "dtype uint32"),
        (np.zeros((4, 4), ">i8"), {}, TypeError, "dtype int64"),
        (Image.new("La", (4, 4)), {}, ValueError, "unsupported PIL mode 'La'"),
        (np.zeros((4, 4), np.int64), {}, TypeError, "dtype int64"),
        (Image.fromarray(np.full((4, 4), 70000, np.int32)), {}, ValueError, "must lie in [0, 65535]"),
        ([np.zeros((2, 4, 4, 3), np.uint8)], {}, ValueError, "not a list of batches"),
        ([], {}, ValueError, "no images given"),
        (np.zeros((2, 2, 4, 4, 3), np.uint8), {}, ValueError, "expected one image"),
        ([np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)], {"do_resize": False}, ValueError, "different sizes"),
        ([np.zeros((4, 4), np.uint8), np.zeros((5, 5, 2), np.uint8)], {}, ValueError, "image 1: cannot find"),
        (np.zeros((4, 4), np.uint8), {"do_center_crop": True}, ValueError, "no centre crop"),
        (np.zeros((4, 4), np.uint8), {"do_rescale": False}, ValueError, "cannot be changed"),
        (np.zeros((4, 4), np.uint8), {"size": {"shortest_edge": 8}}, ValueError, "size must be"),
    ],
)
def test_image_errors_name_the_problem(image, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)) as raised:
        MedViLLImageProcessor(size=8)(image, **kwargs)
    if not kwargs:  # raised by the decoding helpers, which later model folders copy: no model named
        assert "MedViLL" not in str(raised.value)


def test_image_processor_save_load(tmp_path, colour_image):
    image_processor = MedViLLImageProcessor(size={"height": 40, "width": 24}, do_grayscale=False, float_max_value=255.0)
    image_processor.save_pretrained(tmp_path)
    for loaded in (MedViLLImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MedViLLImageProcessor
        assert loaded.to_dict() == image_processor.to_dict()
        assert loaded.do_grayscale is False and loaded.float_max_value == 255.0
        assert torch.equal(loaded(colour_image)["pixel_values"], image_processor(colour_image)["pixel_values"])


# --- processor: text stream --------------------------------------------------------------------------------------


def wordpieces(processor, text):
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_text_stream_layout(processor):
    texts = ["Heart size is normal.", "No acute cardiopulmonary process. Lungs are clear bilaterally."]
    out = processor(text=texts)
    assert set(out.keys()) == {"input_ids", "attention_mask"}
    lengths = [len(wordpieces(processor, t)) + 2 for t in texts]
    assert out["input_ids"].shape == (2, max(lengths))
    for row, text, length in zip(range(2), texts, lengths):
        ids = out["input_ids"][row].tolist()
        assert ids == [SEP, *wordpieces(processor, text), SEP] + [PAD] * (max(lengths) - length)
        assert out["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
    assert wordpieces(processor, "heart size")[:2] == [2540, 2946]
    assert processor.model_input_names == ["input_ids", "attention_mask", "pixel_values"]


def test_truncation_keeps_both_separators(processor):
    long_text = "the lungs are clear " * 100
    pieces = wordpieces(processor, long_text)
    default = processor(text=long_text)["input_ids"][0].tolist()
    assert len(default) == 255 and default[0] == SEP and default[-1] == SEP and default[1:-1] == pieces[:253]
    short = processor(text=[long_text, "ok"], max_length=10)
    assert short["input_ids"][0].tolist() == [SEP, *pieces[:8], SEP]
    assert short["input_ids"][1].tolist() == [SEP, wordpieces(processor, "ok")[0], SEP] + [PAD] * 7
    with pytest.raises(ValueError, match=rf"text 0 is {len(pieces) + 2} tokens .* over max_length=255"):
        processor(text=long_text, truncation=False)
    with pytest.raises(ValueError, match=re.escape("max_length=1 leaves no room for [SEP] ... [SEP]")):
        processor(text="a", max_length=1)


def test_padding_options(processor):
    texts = ["a b c", "a"]
    left = processor(text=texts, padding_side="left", return_tensors=None)
    assert left["input_ids"] == [[SEP, 1037, 1038, 1039, SEP], [PAD, PAD, SEP, 1037, SEP]]
    assert left["attention_mask"] == [[1] * 5, [0, 0, 1, 1, 1]]
    fixed = processor(text=texts, padding="max_length", max_length=8)
    assert fixed["input_ids"].shape == (2, 8) and fixed["attention_mask"].sum().item() == 5 + 3
    assert processor(text=texts, pad_to_multiple_of=4)["input_ids"].shape == (2, 8)
    assert isinstance(processor(text=texts, return_tensors="np")["input_ids"], np.ndarray)


@pytest.mark.parametrize(
    "question, cleaned",
    [
        ("Is there a fracture? -yes/no", "is there a fracture"),
        ("What organ is shown? -open", "what organ is shown"),
        ("What is abnormal? - open", "what is abnormal"),
        ("Is the patient's heart enlarged, on this X ray?", "is the patient 's heart enlarged on this x-ray"),
        ("Where is the mass... located.", "where is the mass located"),
        ("Are there 2.5 cm nodules?", "are there 25 cm nodules"),
    ],
)
def test_clean_question(processor, question, cleaned):
    assert MedViLLProcessor.clean_question(question) == cleaned
    as_question = processor(text=question, text_kind="question")["input_ids"]
    assert torch.equal(as_question, processor(text=cleaned)["input_ids"])


def test_images_and_text_together_and_alone(processor, colour_image):
    both = processor(images=[colour_image, colour_image], text=["a", "b c"])
    assert set(both.keys()) == {"input_ids", "attention_mask", "pixel_values"}
    assert both["pixel_values"].shape == (2, 3, 32, 32)
    assert torch.equal(both["pixel_values"][0], processor.image_processor(colour_image)["pixel_values"][0])
    image_only = processor(images=colour_image, size=16)
    assert set(image_only.keys()) == {"pixel_values"} and image_only["pixel_values"].shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="got 1 images and 2 texts"):
        processor(images=colour_image, text=["a", "b"])
    with pytest.raises(ValueError, match="needs images, text or both"):
        processor()
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['return_token_type_ids'\\]"):
        processor(text="a", return_token_type_ids=True)
    with pytest.raises(TypeError, match="text must be a str"):
        processor(text=[["pre", "tokenized"]])
    with pytest.raises(ValueError, match="text_kind"):
        processor(text="a", text_kind="caption")


def test_decode_delegates_to_tokenizer(processor):
    out = processor(text=["Heart size is NORMAL", "clear"])
    assert processor.batch_decode(out["input_ids"], skip_special_tokens=True) == ["heart size is normal", "clear"]
    assert processor.decode(out["input_ids"][1]).startswith("[SEP] clear [SEP]")


def test_from_vocab_file_rejects_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        MedViLLProcessor.from_vocab_file(tmp_path / "vocab.txt")


def test_processor_save_load_round_trip(tmp_path, colour_image):
    processor = MedViLLProcessor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=40, max_length=12)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["max_length"] == 12
    assert saved["image_processor"]["image_processor_type"] == "MedViLLImageProcessor"
    assert saved["image_processor"]["size"] == {"height": 40, "width": 40} and saved["image_processor"]["do_grayscale"]
    assert (tmp_path / "tokenizer.json").is_file()
    inputs = {"images": [colour_image, colour_image], "text": ["Heart size is normal " * 5, "clear"]}
    expected = processor(**inputs)
    for loaded in (MedViLLProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MedViLLProcessor and loaded.max_length == 12
        out = loaded(**inputs)
        assert out.keys() == expected.keys()
        assert all(torch.equal(out[key], expected[key]) for key in expected)


def test_from_vocab_file_rejects_a_vocab_without_bert_special_tokens(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\nheart\nlung\n")
    with pytest.raises(ValueError, match=re.escape("lacks BERT's special tokens ['[SEP]', '[CLS]', '[MASK]']")):
        MedViLLProcessor.from_vocab_file(vocab)
