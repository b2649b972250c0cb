"""M2I2 image processor: the authors' test-time preprocessing (`dataset/__init__.py`, `test_transform`):
`.convert('RGB')`, `Resize((s, s), BICUBIC)`, `ToTensor()`, `Normalize` with the CLIP mean/std, at s = 256 for
pre-training and 384 for VQA (reference/originals.md §3.7).

The training transforms of the original (RandomResizedCrop with bicubic resampling, horizontal flip and ALBEF's
OpenCV-based RandomAugment) are data augmentation: they are not part of this image processor, which gives every
image its deterministic test-time tensor.

The image decoding helpers below the class are copies of MedViLL's (every bit depth, byte order and container), kept
identical by tests/test_copies.py.
"""

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ChannelDimension, PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging

logger = logging.get_logger(__name__)

# `image_res` of the authors' configs: Pretrain.yaml (MAE's 16x16 patch grid) and RAD.yaml / Slake.yaml / PathVQA.yaml.
PRETRAINING_IMAGE_SIZE = 256
VQA_IMAGE_SIZE = 384


class M2I2ImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments beyond the standard image-processor ones.

    float_max_value (`float`): the value that means white in floating-point inputs (numpy/torch floats and PIL
        "F" images); they must lie in `[0, float_max_value]`. 1.0 by default, 255.0 for 0-255 float data.
    """

    float_max_value: float | int


class M2I2ImageProcessor(PilBackend):
    r"""
    Image processor of M2I2. Every image becomes a `[3, height, width]` float32 tensor: resized to a square with PIL's
    bicubic filter (no crop), mapped to [0, 1] by its bit depth and normalised with the CLIP mean/std, as the authors'
    `test_transform` does (`Resize((s, s), interpolation=BICUBIC)`, `ToTensor()`, `Normalize`).

    Colour: the ViT takes 3 channels and the original opens every image with `.convert('RGB')`, so 8-bit images go
    through PIL's `convert("RGB")` before the resize: a gray image gives 3 equal channels, alpha is dropped (not
    composited), palette ("P") and bilevel ("1") images are expanded to their colours. Gray images of other bit depths
    are resized in float and replicated to 3 channels.

    Exactness: for 8-bit images the output equals torchvision's pipeline on the PIL image bit for bit: torchvision's
    `Resize` on a PIL image is `image.resize((w, h), BICUBIC)`, `ToTensor` is `uint8 -> float32` then `div(255)`, and
    `Normalize` is `sub(mean).div(std)` in float32. Other bit depths are mapped to [0, 1] by bit depth (16-bit / 65535,
    floats by `float_max_value`) and resized in float (PIL "F"), never rounded to 8 bits (the original's `ToTensor`
    would have left 16-bit values unscaled).

    Inputs: PIL images, numpy arrays and torch tensors (`HxW`, `HxWxC`, `CxHxW`; a 4-D array/tensor or a list is a
    batch) in every bit depth and byte order, by the rules of `decode_image`. Files and URLs are not read here:
    load them with `medvlp_hf.data.load_image` (DICOM included).

    Args:
        do_resize (`bool`, defaults to `True`): resize to `size`.
        size (`int` or `{"height", "width"}`, defaults to 256): output size; 256 for pre-training, 384 for VQA
            (`VQA_IMAGE_SIZE`).
        resample (defaults to `PILImageResampling.BICUBIC`): the PIL filter.
        do_normalize, image_mean, image_std: the CLIP mean/std normalisation (on by default, as the original).
        float_max_value (`float`, defaults to 1.0): see `M2I2ImageProcessorKwargs`.
    """

    valid_kwargs = M2I2ImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": PRETRAINING_IMAGE_SIZE, "width": PRETRAINING_IMAGE_SIZE}
    do_resize = True
    do_normalize = True
    do_convert_rgb = True
    float_max_value = 1.0
    return_tensors = "pt"

    def _validate_preprocess_kwargs(self, **kwargs):
        if kwargs.get("do_center_crop") or kwargs.get("do_pad"):
            raise ValueError(
                "M2I2 preprocessing resizes to a square without centre crop or padding; leave do_center_crop/do_pad "
                "unset."
            )
        if kwargs.get("do_rescale") is False or kwargs.get("rescale_factor") not in (None, 1 / 255):
            raise ValueError(
                "M2I2 maps every image to [0, 1] by its bit depth (8-bit /255, 16-bit /65535, floats by "
                "float_max_value); do_rescale/rescale_factor cannot be changed."
            )
        if kwargs.get("do_convert_rgb") is False:
            raise ValueError(
                "M2I2's ViT takes 3-channel images: gray images are replicated to RGB; leave do_convert_rgb unset."
            )
        size = kwargs.get("size")
        if kwargs.get("do_resize") and (size is None or not (size.height and size.width)):
            raise ValueError(f"size must be an int or {{'height': h, 'width': w}}, got {size}.")
        if kwargs.get("data_format") not in (None, ChannelDimension.FIRST, "channels_first"):
            raise ValueError("M2I2 pixel_values are always channels-first [B, 3, H, W]; leave data_format unset.")
        if not kwargs.get("float_max_value", 1.0) > 0:
            raise ValueError(f"float_max_value must be positive, got {kwargs.get('float_max_value')}.")
        super()._validate_preprocess_kwargs(**kwargs)

    # Copied from medvlp_hf.models.medvill.image_processing_medvill.MedViLLImageProcessor._prepare_image_like_inputs
    def _prepare_image_like_inputs(self, images, *args, expected_ndims=3, **kwargs):
        """Flatten the input into single images and decode each, naming the bad image on error."""
        images = flatten_images(images)
        decoded = []
        for index, image in enumerate(images):
            try:
                decoded.append(self.process_image(image, *args, **kwargs))
            except (ValueError, TypeError) as error:
                if len(images) == 1:
                    raise
                raise type(error)(f"image {index}: {error}") from None
        return decoded

    # Copied from medvlp_hf.models.miss.image_processing_miss.MISSImageProcessor.process_image
    def process_image(self, image, float_max_value=1.0, input_data_format=None, **kwargs) -> np.ndarray:
        """Decode one image with `decode_image` in colour (channels-first; uint8 with 1 or 3 channels for 8-bit
        inputs, float32 in [0, 1] else)."""
        return decode_image(image, False, float_max_value, input_data_format)

    # Copied from medvlp_hf.models.medvill.image_processing_medvill.MedViLLImageProcessor._preprocess
    def _preprocess(
        self,
        images,
        do_resize,
        size,
        resample,
        do_normalize,
        image_mean,
        image_std,
        return_tensors,
        **kwargs,
    ) -> BatchFeature:
        """Resize (PIL), map to [0, 1], replicate gray to 3 channels, normalise, stack to [B, 3, H, W]."""
        pixel_values = []
        for image in images:
            if do_resize:
                image = resize_image(image, size.height, size.width, resample)
            pixel_values.append(to_unit_tensor(image).expand(3, -1, -1))
        shapes = {tuple(value.shape) for value in pixel_values}
        if len(shapes) > 1:
            raise ValueError(
                f"images of different sizes {sorted(shapes)} cannot be batched with do_resize=False; "
                "resize them (do_resize=True) or pass same-size images."
            )
        pixel_values = torch.stack(pixel_values)
        if do_normalize:
            mean = torch.as_tensor(image_mean, dtype=torch.float32).view(-1, 1, 1)
            std = torch.as_tensor(image_std, dtype=torch.float32).view(-1, 1, 1)
            pixel_values = pixel_values.sub(mean).div(std)
        if return_tensors == "np":
            pixel_values = pixel_values.numpy()
        return BatchFeature(data={"pixel_values": pixel_values})


# Copied from medvlp_hf.models.medvill.image_processing_medvill.flatten_images
def flatten_images(images) -> list:
    """A single image, a list of single images, or one 4-D batch array/tensor -> list of single images."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("no images given (empty list).")
        for index, image in enumerate(images):
            check_image_type(image, f"images[{index}]")
            if not isinstance(image, Image.Image) and image.ndim == 4:
                raise ValueError(
                    f"images[{index}] is a 4-D batch {tuple(image.shape)}; pass either a list of single images or "
                    "one 4-D batch, not a list of batches."
                )
        return list(images)
    check_image_type(images, "images")
    if isinstance(images, Image.Image) or images.ndim in (2, 3):
        return [images]
    if images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError("no images given (empty batch).")
        return list(images)
    raise ValueError(
        f"images of shape {tuple(images.shape)}: expected one image (HxW, HxWxC, CxHxW) or a 4-D batch."
    )


# Copied from medvlp_hf.models.medvill.image_processing_medvill.check_image_type
def check_image_type(image, name: str) -> None:
    """Reject what is not a PIL image, numpy array or torch tensor (pointing files to a loader), and ragged
    numpy batches."""
    if isinstance(image, np.ndarray) and image.dtype == object:
        raise ValueError(
            f"{name} is a numpy object array (images of different shapes stacked into one array); "
            "pass a list of images instead."
        )
    if not isinstance(image, (Image.Image, np.ndarray, torch.Tensor)):
        hint = (
            " This image processor never reads files or URLs: load the image first with "
            "medvlp_hf.data.load_image(path), which keeps 16-bit PNG/TIFF data and applies a DICOM file's "
            "modality and VOI transforms."
            if isinstance(image, (str, bytes, bytearray, memoryview, dict)) or hasattr(image, "__fspath__")
            else ""
        )
        raise TypeError(f"{name} is a {type(image).__name__}; expected a PIL image, numpy array or torch tensor.{hint}")


# Copied from medvlp_hf.models.medvill.image_processing_medvill.decode_image
def decode_image(image, do_grayscale: bool, float_max_value: float, input_data_format=None) -> np.ndarray:
    """One PIL image, numpy array or torch tensor -> channels-first array with 1 (gray) or 3 (RGB) channels:
    uint8 for 8-bit inputs (kept exact), float32 in [0, 1] for every other bit depth.

    The rules, the same in every byte order (big-endian arrays and PIL "I;16B" equal their native twins):
    - PIL 8-bit modes (`1, L, LA, P, PA, RGB, RGBA, RGBa, RGBX, CMYK, YCbCr, HSV`): `image.convert("L")` (or
      "RGB" when `do_grayscale` is off), as torchvision's Grayscale does. Alpha is dropped, not composited.
    - PIL `I;16, I;16L, I;16B, I;16N` and `uint16` arrays/tensors: 16-bit, divided by 65535.
    - PIL `I` and `int32` arrays/tensors (PIL's 32-bit integer pixel type, used for 16-bit PNG/TIFF data):
      values must lie in [0, 65535] and are read as 16-bit; anything else is rejected.
    - PIL `F` and float arrays/tensors (float16/bfloat16/float32/float64): 0 = black, `float_max_value` = white;
      values outside that range, NaN or inf raise ValueError.
    - `uint8` and `bool` (0/255) arrays/tensors: 8-bit, the same path as PIL.
    - Other dtypes (int8, int16, int64, uint32, complex, ...) have no bit-depth convention: TypeError.
    - Arrays/tensors are `HxW`, `HxWxC` or `CxHxW` with C in 1, 3, 4 (4 = RGBA, alpha dropped). The channel axis
      is the one of size 1/3/4; when both ends qualify numpy is read channels-last and torch channels-first;
      `input_data_format` overrides.
    - Colour to gray for non-8-bit inputs uses PIL's ITU-R 601-2 luma weights, in float.
    """
    if isinstance(image, Image.Image):
        return decode_pil_image(image, do_grayscale, float_max_value)
    return decode_array(image, do_grayscale, float_max_value, input_data_format)


# Copied from medvlp_hf.models.medvill.image_processing_medvill.decode_pil_image
def decode_pil_image(image: Image.Image, do_grayscale: bool, float_max_value: float) -> np.ndarray:
    """PIL image -> channels-first array by the rules of `decode_image`."""
    eight_bit_modes = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV")
    wide_modes = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
    if image.mode in eight_bit_modes:
        array = np.asarray(image.convert("L" if do_grayscale else "RGB"))
        return check_not_empty(array.reshape(array.shape[0], array.shape[1], -1)).transpose(2, 0, 1)
    if image.mode in wide_modes:
        return decode_array(np.asarray(image), do_grayscale, float_max_value)
    raise ValueError(
        f"unsupported PIL mode {image.mode!r}; supported: {', '.join(eight_bit_modes + wide_modes)}. "
        "Convert it first, e.g. image.convert('RGB')."
    )


# Copied from medvlp_hf.models.medvill.image_processing_medvill.decode_array
def decode_array(image, do_grayscale: bool, float_max_value: float, input_data_format=None) -> np.ndarray:
    """numpy array or torch tensor (HxW, HxWxC or CxHxW) -> channels-first array by the rules of `decode_image`."""
    channels_last = to_channels_last(to_native_array(image), input_data_format, isinstance(image, torch.Tensor))
    check_not_empty(channels_last)
    if channels_last.dtype == np.bool_:
        channels_last = channels_last.astype(np.uint8) * 255
    if channels_last.dtype == np.uint8:
        return eight_bit_to_canonical(channels_last, do_grayscale)
    return float_to_canonical(to_unit_float(channels_last, float_max_value), do_grayscale)


# Copied from medvlp_hf.models.medvill.image_processing_medvill.to_native_array
def to_native_array(image) -> np.ndarray:
    """numpy view of an array or tensor in native byte order with its bit depth kept (16-bit floats widen to
    float32, which numpy/PIL resize), so that dtype checks see `uint16`, never `>u2`."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype in (torch.bfloat16, torch.float16):
            image = image.float()
        return image.numpy()
    return image.astype(image.dtype.newbyteorder("="), copy=False)


# Copied from medvlp_hf.models.medvill.image_processing_medvill.to_channels_last
def to_channels_last(array: np.ndarray, input_data_format, prefer_channels_first: bool) -> np.ndarray:
    """HxW / HxWxC / CxHxW -> HxWxC with C in (1, 3, 4); `prefer_channels_first` breaks ties (torch inputs)."""
    channel_counts = (1, 3, 4)
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image must be 2-D or 3-D, got shape {tuple(array.shape)}.")
    if input_data_format is not None:
        channel_axis = 0 if ChannelDimension(input_data_format) == ChannelDimension.FIRST else 2
    else:
        first, last = array.shape[0] in channel_counts, array.shape[2] in channel_counts
        if not (first or last):
            raise ValueError(
                f"cannot find the channel axis of an image of shape {tuple(array.shape)}: this image processor "
                "takes HxW, HxWxC or CxHxW with C = 1 (gray), 3 (RGB) or 4 (RGBA). For a batch of gray images add "
                "a channel axis (x[:, None]) or pass a list."
            )
        channel_axis = 0 if first and (prefer_channels_first or not last) else 2
    if array.shape[channel_axis] not in channel_counts:
        raise ValueError(
            f"image of shape {tuple(array.shape)} has {array.shape[channel_axis]} channels; this image processor "
            "takes 1 (gray), 3 (RGB) or 4 (RGBA)."
        )
    return np.moveaxis(array, channel_axis, -1) if channel_axis == 0 else array


# Copied from medvlp_hf.models.medvill.image_processing_medvill.check_not_empty
def check_not_empty(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise ValueError(f"empty image of shape {tuple(array.shape)}.")
    return array


# Copied from medvlp_hf.models.medvill.image_processing_medvill.eight_bit_to_canonical
def eight_bit_to_canonical(array: np.ndarray, do_grayscale: bool) -> np.ndarray:
    """HxWxC uint8 -> CxHxW uint8 through PIL exactly as for a PIL input (alpha dropped)."""
    if array.shape[2] == 1:
        return np.ascontiguousarray(array.transpose(2, 0, 1))
    rgb = Image.fromarray(np.ascontiguousarray(array[:, :, :3]))
    return decode_pil_image(rgb, do_grayscale, 1.0)


# Copied from medvlp_hf.models.medvill.image_processing_medvill.to_unit_float
def to_unit_float(array: np.ndarray, float_max_value: float) -> np.ndarray:
    """HxWxC array in native byte order, not 8-bit -> float32 in [0, 1] by the rules of `decode_image`.

    Floats may overshoot `float_max_value` (or undershoot 0) by 1e-4 of it, the rounding of a rescale, before
    that is an error; the overshoot is clipped.
    """
    sixteen_bit_max = 65535
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise ValueError(f"image contains {int((~finite).sum())} NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        tolerance = 1e-4 * float_max_value
        if low < -tolerance or high > float_max_value + tolerance:
            raise ValueError(
                f"float image values span [{low:g}, {high:g}], outside [0, float_max_value={float_max_value:g}]: "
                "float inputs are read as 0 = black, float_max_value = white. For 0-255 data pass "
                "float_max_value=255.0 (or cast to uint8); rescale other ranges first."
            )
        return np.clip(array.astype(np.float64) / float_max_value, 0.0, 1.0).astype(np.float32)
    if array.dtype == np.uint16:
        return (array.astype(np.float64) / sixteen_bit_max).astype(np.float32)
    if array.dtype == np.int32:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > sixteen_bit_max:
            raise ValueError(
                f"32-bit integer image (PIL mode 'I' / int32) with values in [{low}, {high}]; it is read as 16-bit "
                f"and must lie in [0, {sixteen_bit_max}]. Rescale it to float in [0, 1] first."
            )
        if high <= 255:
            logger.warning_once(
                "a 32-bit integer image (PIL mode 'I' / int32) with values <= 255 is read as 16-bit and comes out "
                "nearly black; if it holds 8-bit data cast it to uint8 (or image.convert('L'))."
            )
        return (array.astype(np.float64) / sixteen_bit_max).astype(np.float32)
    raise TypeError(
        f"images of dtype {array.dtype} have no bit-depth convention here; pass uint8 (8-bit), uint16 (16-bit), "
        "int32 in [0, 65535] (16-bit) or float in [0, float_max_value]."
    )


# Copied from medvlp_hf.models.medvill.image_processing_medvill.float_to_canonical
def float_to_canonical(array: np.ndarray, do_grayscale: bool) -> np.ndarray:
    """HxWxC float32 in [0, 1] -> CxHxW with alpha dropped and, for grayscale, PIL's ITU-R 601-2 luma in float."""
    array = array[:, :, :3]
    if do_grayscale and array.shape[2] == 3:
        array = (array.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32)[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


# Copied from medvlp_hf.models.medvill.image_processing_medvill.resize_image
def resize_image(image: np.ndarray, height: int, width: int, resample) -> np.ndarray:
    """CxHxW resize with PIL: uint8 as one L/RGB image (the torchvision-on-PIL path), float per channel in mode F."""
    if image.shape[1:] == (height, width):
        return image
    resample = Image.Resampling(int(resample))
    if image.dtype == np.uint8:
        pil_image = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        resized = np.asarray(pil_image.resize((width, height), resample))
        return resized.reshape(height, width, -1).transpose(2, 0, 1)
    return np.stack([np.asarray(Image.fromarray(channel).resize((width, height), resample)) for channel in image])


# Copied from medvlp_hf.models.medvill.image_processing_medvill.to_unit_tensor
def to_unit_tensor(image: np.ndarray) -> torch.Tensor:
    """CxHxW array -> float32 tensor in [0, 1]; uint8 divided by 255 in float32 as torchvision's ToTensor does."""
    tensor = torch.from_numpy(np.array(image))
    if tensor.dtype == torch.uint8:
        return tensor.float().div(255)
    return tensor


__all__ = ["M2I2ImageProcessor"]
