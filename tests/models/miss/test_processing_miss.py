"""MISS image processor and processor on the shared processor checks (tests/common), plus what is special to MISS:
the released pipeline bit-exact with torchvision's formulas (and its double /255), BLIP's default pipeline, and every
text layout reproduced from the original's own tokenizer calls (models/miss.py, miss_vqa.py, miss_pretrain.py)."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, BertTokenizer

import medvlp_hf  # noqa: F401  (registers the zoo's Auto classes)
from medvlp_hf.data.collators.pretraining import PreTrainingCollator
from medvlp_hf.data.collators.report_generation import ReportGenerationCollator
from medvlp_hf.data.collators.vqa import GenerativeVQACollator
from medvlp_hf.models.miss import MISSConfig, MISSImageProcessor, MISSProcessor
from medvlp_hf.resources import bert_base_uncased_vocab_file, tokenizer_dir
from tests.common.albef_style import TEXT_ERRORS, image_setting_refusals
from tests.common.processor_tester import ProcessorTester, ProcessorTesterMixin

CLS, SEP, PAD, DEC, ENC = 101, 102, 0, 30522, 30523
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
XRAYS = ("00000001_000.png", "00027426_000.png")  # 8-bit gray ("L") PNGs
VQA_RAD_IMAGES = ("synpic100132.jpg", "synpic100176.jpg")  # RGB JPEGs, what the released VQA scripts read


class MISSProcessorTester(ProcessorTester):
    processor_class = MISSProcessor
    vocab_size = 30524
    target_calls = (({}, "input_ids"), ({"text_kind": "question"}, "decoder_input_ids"))

    def get_model_config(self):
        return MISSConfig.from_preset("tiny")

    def model_config_image_size(self, config):
        return config.vision_config.image_size


def miss_config(image_size=48, vocab_size=30524, **token_ids):
    """The fields `from_model_config` reads, laid out as MISSConfig holds them (special-token ids on the config,
    `vision_config.image_size`, `text_config.vocab_size`/`pad_token_id`), free to disagree with the tokenizer in ways
    MISSConfig's own validation refuses, to test the processor's checks."""
    ids = {"pad_token_id": PAD, "cls_token_id": CLS, "sep_token_id": SEP, "bos_token_id": DEC, "enc_token_id": ENC}
    return SimpleNamespace(
        vision_config=SimpleNamespace(image_size=image_size),
        text_config=SimpleNamespace(vocab_size=vocab_size, pad_token_id=PAD),
        **{**ids, **token_ids},
    )


class TestMISSProcessor(ProcessorTesterMixin):
    tester = MISSProcessorTester()


@pytest.fixture(scope="module")
def processor():
    return MISSProcessor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=32)


@pytest.fixture(scope="module")
def original_tokenizer():
    """The original's `init_tokenizer`: bert-base-uncased + bos '[DEC]' + additional special '[ENC]'."""
    tokenizer = BertTokenizer(vocab=str(bert_base_uncased_vocab_file()), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


@pytest.fixture(scope="module")
def colour_image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))


# --- image processor: the released pipeline ----------------------------------------------------------------------


def released_reference(image: Image.Image, size: int) -> torch.Tensor:
    """`transforms.Resize((size, size))` -> `ToTensor()` -> the dataset's `data / 255`, as torchvision runs them on
    an 8-bit PIL image: `image.resize((w, h), BILINEAR)`, uint8 -> float32, `div(255)`, `div(255)`; a gray image's
    single channel repeated 3 times as the authors' RSNA/SLAKE loaders do."""
    resized = np.array(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    tensor = torch.from_numpy(resized.reshape(size, size, -1)).permute(2, 0, 1).contiguous()
    tensor = tensor.float().div(255) / 255
    return tensor.repeat(3, 1, 1) if tensor.shape[0] == 1 else tensor


def blip_reference(image: Image.Image, size: int) -> torch.Tensor:
    """BLIP's test transform on `image.convert('RGB')`: bicubic `Resize((size, size))`, `ToTensor()`, CLIP
    `Normalize`."""
    resized = np.array(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8)
    tensor = torch.from_numpy(resized).permute(2, 0, 1).contiguous().float().div(255)
    return tensor.sub(CLIP_MEAN).div(CLIP_STD)


@pytest.mark.parametrize("name", VQA_RAD_IMAGES)
def test_released_pipeline_is_bit_exact_on_vqa_rad_images(data_dir, name):
    image = Image.open(data_dir / "vqa_rad" / "images" / name)
    assert image.mode == "RGB"
    out = MISSImageProcessor.as_released()(image)["pixel_values"]
    assert out.shape == (1, 3, 480, 480) and out.dtype == torch.float32
    assert torch.equal(out[0], released_reference(image, 480))
    assert 0 <= out.min() and out.max() <= 1 / 255


@pytest.mark.parametrize("name", XRAYS)
def test_released_pipeline_is_bit_exact_on_gray_xrays(data_dir, name):
    image = Image.open(data_dir / "cxr_samples" / name)
    assert image.mode == "L"
    out = MISSImageProcessor.as_released(size=224)(image)["pixel_values"][0]
    assert torch.equal(out, released_reference(image, 224))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2]), "gray becomes 3 equal channels"


def test_the_two_divisions_are_kept_apart():
    """ToTensor's `div(255)` is true float32 division (not a multiplication by 1/255, which differs at 126 of the
    256 levels), and two divisions by 255 differ from one by 65025 at 83 levels: the released values need both."""
    levels = torch.arange(256, dtype=torch.uint8)
    once = levels.float().div(255)
    assert torch.equal(once, torch.from_numpy(np.arange(256, dtype=np.float32) / np.float32(255)))
    assert int((once != levels.float().mul(1 / 255)).sum()) == 126
    assert int((once.div(255) != levels.float().div(65025)).sum()) == 83
    image = levels.reshape(16, 16).numpy()
    out = MISSImageProcessor.as_released(do_resize=False)(image)["pixel_values"][0, 0]
    assert torch.equal(out.flatten(), once.div(255))


def test_released_preset_and_sizes():
    released = MISSImageProcessor.as_released()
    assert dict(released.size) == {"height": 480, "width": 480}
    assert released.resample == Image.BILINEAR and not released.do_normalize and released.rescale_twice_as_released
    assert dict(MISSImageProcessor.as_released(size=224).size) == {"height": 224, "width": 224}
    default = MISSImageProcessor()
    assert dict(default.size) == {"height": 224, "width": 224}
    assert default.resample == Image.BICUBIC and default.do_normalize and not default.rescale_twice_as_released
    assert MISSImageProcessor(size=480)(np.zeros((7, 9), np.uint8))["pixel_values"].shape == (1, 3, 480, 480)


def test_released_pipeline_on_sixteen_bit_images_stays_in_range():
    """16-bit data are mapped by bit depth and resized in float, then divided by 255 like the 8-bit images (the
    original's ToTensor would have left 16-bit values unscaled): a 16-bit copy of an 8-bit image gives its values."""
    eight = np.random.default_rng(3).integers(0, 256, (40, 60), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # v * 257 / 65535 = v / 255
    released = MISSImageProcessor.as_released(do_resize=False)
    torch.testing.assert_close(released(sixteen)["pixel_values"], released(eight)["pixel_values"], rtol=0, atol=1e-9)
    resized = MISSImageProcessor.as_released(size=24)(sixteen)["pixel_values"]
    assert 0 <= resized.min() and resized.max() <= 1 / 255 + 1e-9


# --- image processor: the default (BLIP) pipeline ----------------------------------------------------------------


@pytest.mark.parametrize("name", XRAYS)
def test_default_pipeline_is_blip_preprocessing_on_xrays(data_dir, name):
    image = Image.open(data_dir / "cxr_samples" / name)
    out = MISSImageProcessor(size=64)(image)["pixel_values"][0]
    assert torch.equal(out, blip_reference(image, 64))


def test_default_pipeline_on_colour_and_alpha(colour_image):
    assert torch.equal(MISSImageProcessor(size=24)(colour_image)["pixel_values"][0], blip_reference(colour_image, 24))
    rgba = colour_image.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70), dtype=np.uint8)))
    assert torch.equal(MISSImageProcessor(size=24)(rgba)["pixel_values"][0], blip_reference(colour_image, 24))


@pytest.mark.parametrize("mode", ["P", "1", "LA", "CMYK"])
def test_other_eight_bit_modes_are_converted_to_rgb_before_the_resize(colour_image, mode):
    """Palette and bilevel images are expanded to RGB first (PIL would resize them nearest-neighbour and ToTensor
    would read palette indices)."""
    image = colour_image.convert(mode)
    for image_processor in (MISSImageProcessor(size=24), MISSImageProcessor.as_released(size=24)):
        expected = image_processor(image.convert("RGB"))["pixel_values"]
        assert torch.equal(image_processor(image)["pixel_values"], expected)


@pytest.mark.parametrize("kwargs, message", image_setting_refusals("rescale_twice_as_released=True"))
def test_image_processor_refuses_settings_that_break_the_pipeline(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MISSImageProcessor(size=8)(np.zeros((4, 4), np.uint8), **kwargs)


def test_image_processor_save_load_keeps_the_released_flag(tmp_path, colour_image):
    image_processor = MISSImageProcessor.as_released(size=40)
    image_processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["rescale_twice_as_released"] is True and saved["do_normalize"] is False and saved["resample"] == 2
    for loaded in (MISSImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MISSImageProcessor and loaded.to_dict() == image_processor.to_dict()
        assert torch.equal(loaded(colour_image)["pixel_values"], image_processor(colour_image)["pixel_values"])


# --- processor: tokenizer -----------------------------------------------------------------------------------------


def test_tokenizer_is_the_originals_init_tokenizer(processor, original_tokenizer):
    tokenizer = processor.tokenizer
    assert len(tokenizer) == 30524 and tokenizer.bos_token == "[DEC]" and tokenizer.bos_token_id == DEC
    assert (processor.dec_token_id, processor.enc_token_id) == (DEC, ENC)
    assert original_tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [DEC, ENC]
    assert {DEC, ENC} <= set(tokenizer.all_special_ids)
    assert processor.batch_decode([[DEC, 2748, SEP, PAD], [ENC, 2003, 2045, SEP]], skip_special_tokens=True) == [
        "yes",
        "is there",
    ]


@pytest.mark.parametrize("tokens", [{}, {"bos_token": "[DEC]"}])
def test_a_tokenizer_without_the_miss_tokens_is_refused_with_the_fix(tokens):
    tokenizer = BertTokenizer(vocab=str(bert_base_uncased_vocab_file()), do_lower_case=True)
    tokenizer.add_special_tokens(tokens)
    missing = "[ENC]" if tokens else "[DEC] or [ENC]"
    with pytest.raises(ValueError, match=re.escape(f"no special token {missing}")) as raised:
        MISSProcessor(image_processor=MISSImageProcessor(), tokenizer=tokenizer)
    assert "tokenizer.add_special_tokens({'bos_token': '[DEC]', 'additional_special_tokens': ['[ENC]']})" in str(
        raised.value
    )
    assert "MISSProcessor.from_vocab_file" in str(raised.value)


# --- processor: the text layouts, against the original's own tokenizer calls ------------------------------------

CAPTIONS = ["Chest X-ray: heart size is normal, lungs are clear. " * 3, "No pneumothorax.", "Mild cardiomegaly."]
QUESTIONS = ["Is there evidence of a pneumothorax in the left upper lobe of this patient's chest?" * 2, "Is it normal?"]
ANSWERS = ["yes", "left upper lobe", "8"]


def test_reports_as_the_pretraining_caption_call(processor, original_tokenizer):
    """miss_pretrain.py: `tokenizer(caption, padding='longest', truncation=True, max_length=30)`."""
    original = original_tokenizer(CAPTIONS, padding="longest", truncation=True, max_length=30, return_tensors="pt")
    out = processor(text=CAPTIONS)
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].shape == (3, 30) and out["input_ids"][0, 0] == CLS and out["input_ids"][0, -1] == SEP
    assert torch.equal(out["input_ids"], original["input_ids"])
    assert torch.equal(out["attention_mask"], original["attention_mask"])


def test_caption_labels_are_the_pretraining_lm_targets(processor, original_tokenizer):
    """miss_pretrain.py: `decoder_targets = input_ids.masked_fill(input_ids == pad, -100)` with input_ids[:, 0] = [DEC],
    shifted by the decoder: the first token is never a target; MISSForPreTraining computes the same by default."""
    out = processor(text=CAPTIONS, return_labels=True)
    original = original_tokenizer(CAPTIONS, padding="longest", truncation=True, max_length=30, return_tensors="pt")
    expected = original["input_ids"].masked_fill(original["input_ids"] == PAD, -100)
    expected[:, 0] = -100
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(out["input_ids"], processor(text=CAPTIONS)["input_ids"])
    assert torch.equal(out["labels"], expected)
    left = processor(text=CAPTIONS[1:], return_labels=True, padding_side="left")
    first = left["attention_mask"].argmax(-1)
    assert first.tolist() == [0, 2] and bool((left["input_ids"][[0, 1], first] == CLS).all())
    expected = left["input_ids"].masked_fill(left["attention_mask"] == 0, -100)
    expected[[0, 1], first] = -100
    assert torch.equal(left["labels"], expected)


@pytest.mark.parametrize(
    "kwargs",
    [{"images": np.zeros((8, 8, 3), np.uint8)}, {"text": "a", "text_kind": "question"},
     {"text": "a", "generation_prompt": True}, {"text_target": "a"}],
)
def test_caption_labels_need_report_text(processor, kwargs):
    with pytest.raises(ValueError, match=re.escape("return_labels=True gives the pre-training LM targets of report")):
        processor(return_labels=True, **kwargs)


def test_questions_as_the_vqa_call(processor, original_tokenizer):
    """miss_vqa.py: `tokenizer(question, padding='longest', truncation=True, max_length=35)`, then
    `input_ids[:, 0] = enc_token_id`."""
    original = original_tokenizer(QUESTIONS, padding="longest", truncation=True, max_length=35, return_tensors="pt")
    original["input_ids"][:, 0] = ENC
    out = processor(text=QUESTIONS, text_kind="question")
    assert out["input_ids"].shape == (2, 35)
    assert torch.equal(out["input_ids"], original["input_ids"])
    assert torch.equal(out["attention_mask"], original["attention_mask"])
    length = len(original_tokenizer(QUESTIONS[0])["input_ids"])
    message = f"text 0 is {length} tokens long as [ENC] ... [SEP], over max_length=35"
    with pytest.raises(ValueError, match=re.escape(message)):
        processor(text=QUESTIONS, text_kind="question", truncation=False)


def test_answers_as_the_vqa_training_call(processor, original_tokenizer):
    """miss_vqa.py: `tokenizer(answer, padding='longest')`, `input_ids[:, 0] = bos_token_id`, targets = ids with
    -100 at padding (the decoder's shift drops position 0, which is -100 here)."""
    original = original_tokenizer(ANSWERS, padding="longest", return_tensors="pt")
    original["input_ids"][:, 0] = DEC
    targets = original["input_ids"].masked_fill(original["input_ids"] == PAD, -100)
    out = processor(text_target=ANSWERS, text_kind="question")
    assert set(out) == {"decoder_input_ids", "decoder_attention_mask", "labels"}
    assert torch.equal(out["decoder_input_ids"], original["input_ids"])
    assert torch.equal(out["decoder_attention_mask"], original["attention_mask"])
    assert torch.equal(out["labels"][:, 1:], targets[:, 1:]) and (out["labels"][:, 0] == -100).all()
    long_answer = processor(text_target=["the answer " * 300], text_kind="question")["labels"]
    assert long_answer.shape == (1, 602), "answers are not truncated by default, as in the original"


def test_reports_as_the_captioning_decoder_call(processor, original_tokenizer):
    """MISS_Decoder.forward on captions that start with the prompt: `tokenizer(caption, padding='longest',
    truncation=True, max_length=40)`, `input_ids[:, 0] = bos_token_id`, targets -100 at padding and at the first
    `prompt_length = len(tokenizer('a picture of ').input_ids) - 1` positions."""
    prompt = "a picture of "
    captions = [prompt + caption for caption in CAPTIONS]
    original = original_tokenizer(captions, padding="longest", truncation=True, max_length=40, return_tensors="pt")
    original["input_ids"][:, 0] = DEC
    targets = original["input_ids"].masked_fill(original["input_ids"] == PAD, -100)
    prompt_length = len(original_tokenizer(prompt).input_ids) - 1
    targets[:, :prompt_length] = -100
    out = processor(text_target=CAPTIONS)
    assert set(out) == {"input_ids", "attention_mask", "labels"} and prompt_length == 4
    assert torch.equal(out["input_ids"], original["input_ids"])
    assert torch.equal(out["attention_mask"], original["attention_mask"])
    assert torch.equal(out["labels"], targets)


def test_report_generation_prompt_as_the_captioning_decoder_generate(processor, original_tokenizer, colour_image):
    """MISS_Decoder.generate: `tokenizer(prompt).input_ids`, `[:, 0] = bos_token_id`, `[:, :-1]`."""
    original = original_tokenizer(["a picture of "] * 2, return_tensors="pt").input_ids
    original[:, 0] = DEC
    out = processor(images=[colour_image, colour_image], generation_prompt=True)
    assert set(out) == {"pixel_values", "input_ids", "attention_mask"}
    assert torch.equal(out["input_ids"], original[:, :-1]) and out["attention_mask"].all()
    started = processor(text=["", "the heart"], generation_prompt=True, return_tensors=None)
    assert started["input_ids"] == [[PAD, PAD, DEC, 1037, 3861, 1997], [DEC, 1037, 3861, 1997, 1996, 2540]]
    assert started["attention_mask"] == [[0, 0, 1, 1, 1, 1], [1] * 6]


def test_vqa_generation_prompt_is_the_answer_decoders_start(processor, colour_image):
    out = processor(images=[colour_image] * 2, text=QUESTIONS, text_kind="question", generation_prompt=True)
    assert set(out) == {"pixel_values", "input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"}
    assert torch.equal(out["input_ids"], processor(text=QUESTIONS, text_kind="question")["input_ids"])
    assert out["decoder_input_ids"].tolist() == [[DEC], [DEC]] and out["decoder_attention_mask"].tolist() == [[1], [1]]


def test_custom_prompt_and_limits_are_saved(tmp_path, colour_image):
    default = MISSProcessor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=16)
    processor = MISSProcessor(
        default.image_processor, default.tokenizer, report_prompt="", text_max_length=8, target_max_length=6
    )
    assert processor(text_target="heart is normal")["labels"].tolist() == [[-100, 2540, 2003, 3671, SEP]]
    truncated = processor(text_target="the heart size is normal")["input_ids"]
    assert truncated.tolist() == [[DEC, 1996, 2540, 2946, 2003, SEP]]
    assert processor(text=CAPTIONS[0])["input_ids"].shape == (1, 8)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["report_prompt"] == "" and saved["text_max_length"] == 8 and saved["question_max_length"] == 35
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert (loaded.report_prompt, loaded.text_max_length, loaded.target_max_length) == ("", 8, 6)
    assert loaded(images=colour_image, generation_prompt=True)["input_ids"].tolist() == [[DEC]]


def test_questions_with_their_answers_in_one_call(processor, colour_image):
    out = processor(images=[colour_image] * 2, text=QUESTIONS, text_target=ANSWERS[:2], text_kind="question")
    decoder_keys = {"decoder_input_ids", "decoder_attention_mask", "labels"}
    assert set(out) == {"pixel_values", "input_ids", "attention_mask"} | decoder_keys
    assert torch.equal(out["labels"], processor(text_target=ANSWERS[:2], text_kind="question")["labels"])
    with pytest.raises(ValueError, match="got 2 texts and 3 targets"):
        processor(text=QUESTIONS, text_target=ANSWERS, text_kind="question")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        *TEXT_ERRORS,
        ({"text": "a", "text_target": "b"}, ValueError, "would both be `input_ids`: encode them in two calls"),
        ({"text_target": "b", "generation_prompt": True}, ValueError, "a `text_target` is a training target"),
        ({"text": "a", "max_length": 1}, ValueError, "max_length=1 leaves no room for [CLS] ... [SEP]"),
        ({"text": "a", "max_length": 3, "generation_prompt": True}, ValueError, "no room for [DEC] a picture of ..."),
        ({"text_target": "a", "text_kind": "question", "padding": "max_length"}, ValueError, "needs a max_length"),
    ],
)
def test_text_errors_name_the_problem(processor, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        processor(**kwargs)


def test_padding_and_tensor_options(processor):
    fixed = processor(text=["a b c", "a"], padding="max_length", max_length=8)
    assert fixed["input_ids"].shape == (2, 8) and fixed["attention_mask"].sum() == 5 + 3
    assert processor(text=["a b c", "a"], pad_to_multiple_of=4)["input_ids"].shape == (2, 8)
    left = processor(text=["a b c", "a"], padding_side="left", return_tensors=None)
    assert left["input_ids"] == [[CLS, 1037, 1038, 1039, SEP], [PAD, PAD, CLS, 1037, SEP]]
    numpy = processor(text_target=["a b", "a"], text_kind="question", return_tensors="np")
    assert all(isinstance(value, np.ndarray) for value in numpy.values())
    assert numpy["labels"].tolist() == [[-100, 1037, 1038, SEP], [-100, 1037, SEP, -100]]


def test_from_model_config_checks_the_config_against_the_tokenizer():
    directory = tokenizer_dir(MISSProcessor.default_tokenizer)
    processor = MISSProcessor.from_model_config(miss_config(image_size=480), directory)
    assert dict(processor.image_processor.size) == {"height": 480, "width": 480}
    assert not processor.image_processor.rescale_twice_as_released, "new training uses BLIP's preprocessing"
    with pytest.raises(ValueError, match=re.escape("bos_token_id=1 but the tokenizer's is 30522")):
        MISSProcessor.from_model_config(miss_config(bos_token_id=1), directory)
    with pytest.raises(ValueError, match=re.escape("config's enc_token_id=30522 but the tokenizer's is 30523")):
        MISSProcessor.from_model_config(miss_config(enc_token_id=DEC), directory)
    config = miss_config()
    config.text_config.pad_token_id = 1
    with pytest.raises(ValueError, match=re.escape("config's text_config.pad_token_id=1 but the tokenizer's is 0")):
        MISSProcessor.from_model_config(config, directory)
    with pytest.raises(ValueError, match=re.escape("vocab_size=30522 is smaller than the tokenizer's 30524 tokens")):
        MISSProcessor.from_model_config(miss_config(vocab_size=30522), directory)
    with pytest.raises(ValueError, match="no vision_config.image_size"):
        MISSProcessor.from_model_config(SimpleNamespace(), directory)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        MISSProcessor.from_model_config(miss_config(), directory / "absent")


# --- the zoo's collators drive MISS through the processor protocol ----------------------------------------------


def test_collators_produce_the_miss_training_inputs(processor, colour_image):
    examples = [
        {"image": colour_image, "question": QUESTIONS[1], "answer": "yes", "report": CAPTIONS[1]},
        {"image": colour_image, "question": "Where is the mass?", "answer": "left upper lobe", "report": CAPTIONS[2]},
    ]
    vqa = GenerativeVQACollator(processor)(examples)  # the collator asks for the processor's question mode
    expected = processor(
        images=[colour_image] * 2,
        text=[e["question"] for e in examples],
        text_target=[e["answer"] for e in examples],
        text_kind="question",
    )
    assert vqa.keys() == expected.keys()
    assert all(torch.equal(vqa[key], expected[key]) for key in expected)
    pairs = PreTrainingCollator(processor, mlm_probability=None)(examples)  # asks for the caption's LM labels
    expected = processor(images=[colour_image] * 2, text=[e["report"] for e in examples], return_labels=True)
    assert pairs.keys() == expected.keys() == {"pixel_values", "input_ids", "attention_mask", "labels"}
    assert all(torch.equal(pairs[key], expected[key]) for key in expected)
    report = ReportGenerationCollator(processor)(examples)
    expected = processor(images=[colour_image] * 2, text_target=[e["report"] for e in examples])
    assert report.keys() == expected.keys()
    assert all(torch.equal(report[key], expected[key]) for key in expected)
