"""M2I2 image processor and processor on the shared processor checks (tests/common), plus what is special to M2I2:
bicubic resizing and CLIP normalisation against their formulas, every text layout against the rule of ALBEF's own
tokenizer (`models/tokenization_bert.py`: `[CLS]` + wordpieces, no `[SEP]`; answers end with the `[SEP]` their string
carries), and the original's text normalisation (`pre_question`, `pre_caption`, `preprocess_answer`) on real VQA-RAD
questions and answers."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, BertTokenizer, RobertaTokenizer

import medvlp_hf  # noqa: F401  (registers the zoo's Auto classes)
from medvlp_hf.data.collators.vqa import GenerativeVQACollator, VQACollator
from medvlp_hf.models.m2i2 import M2I2Config, M2I2ForPreTraining, M2I2ForVQA, M2I2ImageProcessor, M2I2Processor
from medvlp_hf.models.m2i2.processing_m2i2 import pre_caption, pre_question, preprocess_answer
from medvlp_hf.resources import bert_base_uncased_vocab_file, tokenizer_dir
from tests.common.albef_style import TEXT_ERRORS, image_setting_refusals
from tests.common.processor_tester import ProcessorTester, ProcessorTesterMixin

PAD, CLS, SEP, MASK = 0, 101, 102, 103
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
XRAYS = ("00000001_000.png", "00027426_000.png")  # 8-bit gray ("L") PNGs
VQA_RAD_IMAGES = ("synpic100132.jpg", "synpic100176.jpg")  # RGB JPEGs


class M2I2ProcessorTester(ProcessorTester):
    processor_class = M2I2Processor
    vocab_size = 30522
    target_calls = (({"text_kind": "question"}, "decoder_input_ids"),)
    generation_prompt_call = ({"text_kind": "question"}, "decoder_input_ids")
    text_has_end_token = False
    generation_prompt_holds_text = False

    def get_model_config(self):
        return M2I2Config.from_preset("tiny")

    def model_config_image_size(self, config):
        return config.vision_config.image_size


class TestM2I2Processor(ProcessorTesterMixin):
    tester = M2I2ProcessorTester()


@pytest.fixture(scope="module")
def processor():
    return M2I2Processor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=32)


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(vocab=str(bert_base_uncased_vocab_file()), do_lower_case=True)


@pytest.fixture(scope="module")
def colour_image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))


def vqa_rad(data_dir, split):
    return json.loads((data_dir / "vqa_rad" / f"{split}set.json").read_text())


# --- image processor -----------------------------------------------------------------------------------------------


def test_transform_reference(image: Image.Image, size: int) -> torch.Tensor:
    """The original's `test_transform` as torchvision runs it on `Image.open(path).convert('RGB')`:
    `image.resize((size, size), BICUBIC)`, uint8 -> float32 `div(255)`, `sub(mean).div(std)`."""
    resized = np.array(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8)
    return torch.from_numpy(resized).permute(2, 0, 1).contiguous().float().div(255).sub(CLIP_MEAN).div(CLIP_STD)


test_transform_reference.__test__ = False  # a helper, not a test


def bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) resampling matrix of PIL's bicubic filter (Keys' kernel, a = -0.5), widened by the scale
    when shrinking (antialiasing) and normalised per output pixel, as PIL's `precompute_coeffs` builds it."""

    def kernel(x):
        x = abs(x)
        if x < 1:
            return ((1.5 * x - 2.5) * x) * x + 1
        return (((x - 5) * x + 8) * x - 4) * -0.5 if x < 2 else 0.0

    scale = in_size / out_size
    widening = max(scale, 1.0)
    support = 2.0 * widening
    weights = np.zeros((out_size, in_size))
    for out in range(out_size):
        centre = (out + 0.5) * scale
        first, last = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        row = np.array([kernel((x - centre + 0.5) / widening) for x in range(first, last)])
        weights[out, first:last] = row / row.sum()
    return weights


def test_eight_bit_images_equal_the_original_test_transform_bit_for_bit(data_dir):
    for name in VQA_RAD_IMAGES:
        image = Image.open(data_dir / "vqa_rad" / "images" / name)
        assert image.mode == "RGB"
        out = M2I2ImageProcessor(size=384)(image)["pixel_values"]
        assert out.shape == (1, 3, 384, 384) and out.dtype == torch.float32
        assert torch.equal(out[0], test_transform_reference(image, 384)), name
    for name in XRAYS:
        image = Image.open(data_dir / "cxr_samples" / name)
        assert image.mode == "L"
        out = M2I2ImageProcessor()(image)["pixel_values"][0]
        assert out.shape == (3, 256, 256), "pre-training size by default"
        assert torch.equal(out, test_transform_reference(image, 256)), name
        unit = out * CLIP_STD + CLIP_MEAN
        torch.testing.assert_close(unit[0], unit[1], rtol=0, atol=1e-6)
        torch.testing.assert_close(unit[1], unit[2], rtol=0, atol=1e-6)


@pytest.mark.parametrize("out_size", [24, 45, 96])
def test_bicubic_resize_and_clip_normalisation_follow_their_formulas(out_size):
    """A 16-bit image is resized in float (PIL "F"): horizontally then vertically with the bicubic weights, each pass
    stored in float32, then normalised per channel with the CLIP mean/std. Shrinking (24), an uneven ratio (45) and
    enlarging (96) from 40 x 60."""
    rng = np.random.default_rng(5)
    sixteen = rng.integers(0, 65536, (40, 60), dtype=np.uint16)
    unit = (sixteen.astype(np.float64) / 65535).astype(np.float32)
    horizontal = (unit.astype(np.float64) @ bicubic_weights(60, out_size).T).astype(np.float32)
    resized = (bicubic_weights(40, out_size) @ horizontal.astype(np.float64)).astype(np.float32)
    expected = (torch.from_numpy(resized)[None].expand(3, -1, -1) - CLIP_MEAN) / CLIP_STD
    out = M2I2ImageProcessor(size=out_size)(sixteen)["pixel_values"][0]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    bilinear = M2I2ImageProcessor(size=out_size, resample=Image.BILINEAR)(sixteen)["pixel_values"][0]
    assert (bilinear - expected).abs().max() > 1e-2, "the formula tells bicubic from bilinear"


@pytest.mark.parametrize("mode", ["P", "1", "LA", "CMYK", "RGBA"])
def test_other_eight_bit_modes_are_converted_to_rgb_like_the_original(colour_image, mode):
    """`.convert('RGB')` semantics: palette and bilevel images are expanded to colours first (PIL would resize them
    nearest-neighbour and ToTensor would read palette indices), alpha is dropped."""
    image = colour_image.convert(mode)
    image_processor = M2I2ImageProcessor(size=24)
    assert torch.equal(image_processor(image)["pixel_values"][0], test_transform_reference(image, 24))


@pytest.mark.parametrize("kwargs, message", image_setting_refusals())
def test_image_processor_refuses_settings_that_break_the_pipeline(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        M2I2ImageProcessor(size=8)(np.zeros((4, 4), np.uint8), **kwargs)


def test_image_processor_save_load(tmp_path, colour_image):
    image_processor = M2I2ImageProcessor(size=384)
    image_processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["resample"] == 3 and saved["do_normalize"] and saved["size"] == {"height": 384, "width": 384}
    for loaded in (M2I2ImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is M2I2ImageProcessor and loaded.to_dict() == image_processor.to_dict()
        assert torch.equal(loaded(colour_image)["pixel_values"], image_processor(colour_image)["pixel_values"])


# --- the original's text normalisation, on real VQA-RAD questions and answers ---------------------------------------


def test_pre_question_on_real_vqa_rad_questions(data_dir):
    questions = {record["qid"]: record["question"] for record in vqa_rad(data_dir, "train")}
    expected = {
        # the "? -yes/no" and "? -open" markers go, "/" and "-" stay
        252: "is/are the mass well-defined",
        537: "how wide is/are the cardiac shadow",
        # the original never removes "? - open" (it assigns the result to an unused variable); its "?" goes later
        572: "how many instances of intussusception are present/visualized in the image - open",
        39: "is/are there fracturing in the patient 's ribs",
        145: "was this chest x-ray taken in pa format",
        50: "was this taken with good x-ray penetration",
        2145: "the imaging modality is",
    }
    for qid, question in expected.items():
        assert pre_question(questions[qid]) == question, qid
    assert pre_question(questions[572], 3) == "how many instances"
    assert pre_question("Is  there a mass?", 3) == "is  there", "a double space counts an empty word"


def test_pre_caption_on_real_vqa_rad_questions(data_dir):
    questions = {record["qid"]: record["question"] for record in vqa_rad(data_dir, "train")}
    assert pre_caption(questions[252]) == "is are the mass well defined yes no"
    assert pre_caption(questions[39]) == "is are there fracturing in the patients ribs"
    expected = "how many instances of intussusception are present visualized in the image open"
    assert pre_caption(questions[572]) == expected
    assert pre_caption(questions[572], 4) == "how many instances of"
    assert pre_caption("  A <person>'s  chest (PA)...\n") == "a persons chest pa"


def test_preprocess_answer_on_real_vqa_rad_answers(data_dir):
    records = vqa_rad(data_dir, "train") + vqa_rad(data_dir, "test")
    answers = {str(record["answer"]) for record in records}
    expected = {
        "Yes": "yes",
        "The extremities": "extremities",
        "Chest X-ray": "chest xray",
        "Xray - plain film": "xray plain film",
        "Ring-enhancing lesion": "ring enhancing lesion",
        "enlarged, fluid-filled": "enlarged fluid filled",
        "On the right shoulder.": "on right shoulder",
        "3.4 cm": "3.4 cm",
        "Diffusion Weighted Imaging (DWI)": "diffusion weighted imaging dwi",
        "retroperitoneum; retroperitoneal space": "retroperitoneum retroperitoneal space",
        "None": "0",
        "One": "1",
        "Skull \tcartilage and medulla": "skull cartilage and medulla",
    }
    assert set(expected) <= answers
    for answer, normalised in expected.items():
        assert preprocess_answer(answer) == normalised, answer
    assert preprocess_answer(4) == "4", "ten VQA-RAD answers are JSON integers"
    released = json.loads((data_dir / "vqa_rad" / "answer_all_list.json").read_text())
    assert [preprocess_answer(answer) for answer in released] == released, "the released list is normalised"
    known = sum(preprocess_answer(record["answer"]) in set(released) for record in records)
    assert known == 3472, "3472 of the 3515 normalised answers are in the released list"


def test_preprocess_answer_follows_the_vqa_evaluation_rules():
    assert preprocess_answer("1,000 cases") == "1000 cases", "a digit,digit group: every mark is deleted"
    assert preprocess_answer("left/right") == "left right", "a mark between letters becomes a space"
    assert preprocess_answer("left / right") == "left right", "a mark next to a space is deleted"
    assert preprocess_answer("dont know, isnt it") == "don't know isn't it"
    assert preprocess_answer("couldnt've") == "couldn't've" and preprocess_answer("couldntve") == "couldntve"
    assert preprocess_answer("lets see") == "lets see", "the table maps let's to itself"
    assert preprocess_answer("somebody'd") == "somebodyd"
    assert preprocess_answer("Two x ray views") == "2 xray views"
    periods = "a." * 40 + "b"
    assert preprocess_answer(periods) == "a" * 32 + "a." * 8 + "b", "the original removes at most 32 periods"


# --- text layouts: ALBEF's tokenizer rule ----------------------------------------------------------------------------


def albef_tokenize(tokenizer, texts, max_length=None):
    """What ALBEF's `BertTokenizer(texts, padding='longest', truncation=max_length is not None, max_length=...)`
    writes: per text `[CLS]` + its wordpieces (`build_inputs_with_special_tokens` of a single sequence; a literal
    "[SEP]" in the string is a wordpiece of its own), the first `max_length` tokens kept, right-padded with [PAD]."""
    rows = [[CLS] + tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) for text in texts]
    rows = [row[:max_length] for row in rows] if max_length is not None else rows
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [PAD] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return ids, mask


def test_questions_and_answers_as_the_vqa_training_loop(data_dir, processor, tokenizer):
    """train_rad.py: `pre_question(q, 30)` -> `tokenizer(question, padding='longest', truncation=True, max_length=25)`;
    `preprocess_answer(a) + '[SEP]'` -> `tokenizer(answer, padding='longest')`; the decoder's targets are the ids with
    -100 at padding (and at `[CLS]`, which the decoder's shift never scores). Every VQA-RAD training pair."""
    records = vqa_rad(data_dir, "train")
    questions, answers = [r["question"] for r in records], [str(r["answer"]) for r in records]
    out = processor(text=questions, text_target=answers, text_kind="question")
    ids, mask = albef_tokenize(tokenizer, [pre_question(q, 30) for q in questions], max_length=25)
    assert out["input_ids"].shape == (3064, 25), "two training questions are cut at 25 tokens"
    assert torch.equal(out["input_ids"], ids) and torch.equal(out["attention_mask"], mask)
    assert not (out["input_ids"] == SEP).any(), "questions have no closing [SEP]"
    ids, mask = albef_tokenize(tokenizer, [preprocess_answer(a) + "[SEP]" for a in answers])
    assert torch.equal(out["decoder_input_ids"], ids) and torch.equal(out["decoder_attention_mask"], mask)
    assert ((out["decoder_input_ids"] == SEP).sum(dim=1) == 1).all(), "one [SEP], the answer's own"
    targets = ids.masked_fill(ids == PAD, -100)
    assert torch.equal(out["labels"][:, 1:], targets[:, 1:]) and (out["labels"][:, 0] == -100).all()


def test_evaluation_processor_as_the_vqa_test_loop(data_dir, processor, tokenizer):
    """rad_dataset(split='test'): `pre_question(q, 50)`; `evaluation`: `tokenizer(question, padding='longest')`,
    untruncated; candidates `answer + '[SEP]'` for the released answer list, as they are."""
    questions = [record["question"] for record in vqa_rad(data_dir, "test")]
    evaluating = processor.for_evaluation()
    out = evaluating(text=questions, text_kind="question")
    ids, mask = albef_tokenize(tokenizer, [pre_question(q, 50) for q in questions])
    assert out["input_ids"].shape == (451, 30), "qids 1602 and 1603 are 27 and 30 tokens long"
    assert torch.equal(out["input_ids"], ids) and torch.equal(out["attention_mask"], mask)
    assert processor(text=questions, text_kind="question")["input_ids"].shape == (451, 25), "training limit"
    assert (evaluating.question_max_words, evaluating.question_max_length) == (50, None)
    assert (processor.question_max_words, processor.question_max_length) == (30, 25), "the original is unchanged"
    released = json.loads((data_dir / "vqa_rad" / "answer_all_list.json").read_text())
    ids, mask = albef_tokenize(tokenizer, [answer + "[SEP]" for answer in released])
    for normalize in (True, False):
        candidates = evaluating.encode_answer_candidates(released, normalize=normalize)
        assert set(candidates) == {"answer_input_ids", "answer_attention_mask"}
        assert torch.equal(candidates["answer_input_ids"], ids)
        assert torch.equal(candidates["answer_attention_mask"], mask)


def test_captions_as_the_pretraining_loop(processor, tokenizer):
    """pretrain_dataset: `pre_caption(caption, 30)`; pretrain_med.py: `tokenizer(text, padding='longest',
    truncation=True, max_length=25)`."""
    captions = ["Chest X-ray: heart size is normal; lungs are clear (PA view)... " * 3, "No pneumothorax.", "A/B"]
    out = processor(text=captions)
    assert set(out) == {"input_ids", "attention_mask"}
    ids, mask = albef_tokenize(tokenizer, [pre_caption(c, 30) for c in captions], max_length=25)
    assert out["input_ids"].shape == (3, 25)
    assert torch.equal(out["input_ids"], ids) and torch.equal(out["attention_mask"], mask)
    assert out["input_ids"][2].tolist()[:3] == [CLS, 1037, 1038], "'A/B' -> 'a b'"


def test_normalisation_options_and_limits_are_saved(tmp_path, processor, tokenizer):
    raw = M2I2Processor(
        processor.image_processor,
        processor.tokenizer,
        normalize_reports=False,
        normalize_questions=False,
        normalize_answers=False,
        text_max_length=6,
        question_max_length=None,
    )
    ids, _ = albef_tokenize(tokenizer, ["The patient's X-ray?"])
    assert torch.equal(raw(text="The patient's X-ray?", text_kind="question")["input_ids"], ids)
    assert raw(text="A/B b c d e f g")["input_ids"].tolist() == [[CLS, 1037, 1013, 1038, 1038, 1039]]
    assert raw(text_target="The brain", text_kind="question")["decoder_input_ids"].tolist() == [[CLS, 1996, 4167, SEP]]
    assert processor(text_target="The brain", text_kind="question")["decoder_input_ids"].tolist() == [[CLS, 4167, SEP]]
    raw.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["normalize_reports"] is False and saved["question_max_length"] is None
    assert saved["text_max_length"] == 6
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is M2I2Processor and loaded.normalize_answers is False and loaded.question_max_length is None
    assert loaded(text="A/B b c d e f g")["input_ids"].tolist() == [[CLS, 1037, 1013, 1038, 1038, 1039]]


def test_generation_prompt_is_the_answer_decoders_start(processor, colour_image):
    questions = ["Is there a mass?", "Where is the lesion located in this image?"]
    out = processor(images=[colour_image] * 2, text=questions, text_kind="question", generation_prompt=True)
    assert set(out) == {"pixel_values", "input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"}
    assert torch.equal(out["input_ids"], processor(text=questions, text_kind="question")["input_ids"])
    assert out["decoder_input_ids"].tolist() == [[CLS], [CLS]] and out["decoder_attention_mask"].tolist() == [[1], [1]]
    images_only = processor(images=[colour_image] * 3, text_kind="question", generation_prompt=True)
    assert images_only["decoder_input_ids"].tolist() == [[CLS]] * 3


def test_truncated_answers_keep_their_sep(processor):
    out = processor(text_target=["left upper lobe of the lung", "yes"], text_kind="question", max_length=4)
    assert out["decoder_input_ids"].tolist() == [[CLS, 2187, 3356, SEP], [CLS, 2748, SEP, PAD]]
    assert out["labels"].tolist() == [[-100, 2187, 3356, SEP], [-100, 2748, SEP, -100]]
    long_answer = processor(text_target=["the answer " * 300], text_kind="question")["labels"]
    assert long_answer.shape == (1, 302), "answers are not truncated by default, as in the original"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        *TEXT_ERRORS,
        ({"text_target": "b"}, ValueError, "M2I2 has no report decoder"),
        ({"text": "a", "generation_prompt": True}, ValueError, "pass text_kind='question'"),
        ({"text_target": "b", "text_kind": "question", "generation_prompt": True}, ValueError, "a training target"),
        ({"text_target": "a", "text_kind": "question", "max_length": 1}, ValueError, "no room for [CLS] ... [SEP]"),
        ({"text_target": "a", "text_kind": "question", "padding": "max_length"}, ValueError, "needs a max_length"),
        ({"text": "a " * 30, "text_kind": "question", "truncation": False}, ValueError, "31 tokens long as [CLS] ..."),
    ],
)
def test_text_errors_name_the_problem(processor, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        processor(**kwargs)


def test_image_and_text_counts_must_match(processor, colour_image):
    with pytest.raises(ValueError, match="got 2 texts and 3 targets; M2I2 pairs one image with one text"):
        processor(text=["a", "b"], text_target=["a", "b", "c"], text_kind="question")
    with pytest.raises(ValueError, match="got 1 images and 2 texts"):
        processor(images=colour_image, text=["a", "b"], text_kind="question")


@pytest.mark.parametrize(
    "make_tokenizer, found",
    [
        (lambda vocab: BertTokenizer(vocab=vocab, mask_token=None), "mask_token=None"),
        (lambda vocab: BertTokenizer(vocab=vocab, cls_token="[unused0]"), "cls_token='[unused0]'"),
    ],
)
def test_a_tokenizer_without_berts_special_tokens_is_refused_with_the_fix(make_tokenizer, found):
    with pytest.raises(ValueError, match=re.escape(found)) as raised:
        M2I2Processor(M2I2ImageProcessor(), make_tokenizer(str(bert_base_uncased_vocab_file())))
    assert "M2I2Processor.from_vocab_file" in str(raised.value)


def test_a_roberta_tokenizer_is_refused(data_dir):
    folder = data_dir / "tokenizers" / "roberta-base"
    roberta = RobertaTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    with pytest.raises(ValueError, match=re.escape("cls_token='<s>', sep_token='</s>', mask_token='<mask>'")):
        M2I2Processor(M2I2ImageProcessor(), roberta)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text_max_length": 0}, "text_max_length must be a positive int or None"),
        ({"question_max_length": 2.5}, "question_max_length must be a positive int or None"),
        ({"question_max_words": None}, "question_max_words must be a positive int"),
    ],
)
def test_settings_are_checked(processor, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        M2I2Processor(processor.image_processor, processor.tokenizer, **kwargs)


def m2i2_config_fields(image_size=48, vocab_size=30522, **token_ids):
    """The fields `from_model_config` reads, laid out as M2I2Config holds them, free to disagree with the tokenizer
    in ways M2I2Config's own validation refuses, to test the processor's checks."""
    ids = {"pad_token_id": PAD, "cls_token_id": CLS, "sep_token_id": SEP, "mask_token_id": MASK}
    ids.update(bos_token_id=CLS, eos_token_id=SEP)
    return SimpleNamespace(
        vision_config=SimpleNamespace(image_size=image_size),
        text_config=SimpleNamespace(vocab_size=vocab_size, pad_token_id=PAD),
        **{**ids, **token_ids},
    )


def test_from_model_config_checks_the_config_against_the_tokenizer():
    directory = tokenizer_dir(M2I2Processor.default_tokenizer)
    vqa = M2I2Config.from_preset("base", vision_config={"image_size": 384, "position_embedding_type": "learned"})
    processor = M2I2Processor.from_model_config(vqa, directory)
    assert dict(processor.image_processor.size) == {"height": 384, "width": 384}
    assert processor.image_processor.resample == Image.BICUBIC and processor.image_processor.do_normalize
    with pytest.raises(ValueError, match=re.escape("bos_token_id=102 but the tokenizer's is 101")):
        M2I2Processor.from_model_config(m2i2_config_fields(bos_token_id=SEP), directory)
    with pytest.raises(ValueError, match=re.escape("config's mask_token_id=100 but the tokenizer's is 103")):
        M2I2Processor.from_model_config(m2i2_config_fields(mask_token_id=100), directory)
    config = m2i2_config_fields()
    config.text_config.pad_token_id = 1
    with pytest.raises(ValueError, match=re.escape("config's text_config.pad_token_id=1 but the tokenizer's is 0")):
        M2I2Processor.from_model_config(config, directory)
    with pytest.raises(ValueError, match=re.escape("vocab_size=30000 is smaller than the tokenizer's 30522 tokens")):
        M2I2Processor.from_model_config(m2i2_config_fields(vocab_size=30000), directory)
    with pytest.raises(ValueError, match="no vision_config.image_size"):
        M2I2Processor.from_model_config(SimpleNamespace(), directory)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        M2I2Processor.from_model_config(m2i2_config_fields(), directory / "absent")


def test_processor_loads_as_remote_code_in_a_fresh_process(tmp_path, processor, colour_image):
    """Plain transformers, `trust_remote_code=True`, medvlp_hf not importable: the saved processor (here with the
    evaluation settings) gives the same outputs."""
    evaluating = processor.for_evaluation()
    evaluating.save_pretrained(tmp_path / "processor")
    colour_image.save(tmp_path / "image.png")
    call = {"text": ["Is there a mass? -yes/no", "x " * 40], "text_target": ["Yes", "The brain"]}
    call["text_kind"] = "question"
    (tmp_path / "call.json").write_text(json.dumps(call))
    loader = textwrap.dedent(
        """
        import json, sys
        sys.modules["medvlp_hf"] = None  # any import of the package now fails
        import torch
        from PIL import Image
        from transformers import AutoProcessor
        root = sys.argv[1]
        processor = AutoProcessor.from_pretrained(f"{root}/processor", trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        image = Image.open(f"{root}/image.png")
        out = dict(processor(images=[image, image], **json.load(open(f"{root}/call.json"))))
        out.update(processor.encode_answer_candidates(["yes", "The brain"]))
        torch.save(out, f"{root}/out.pt")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", loader, str(tmp_path)], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    actual = torch.load(tmp_path / "out.pt")
    expected = dict(evaluating(images=[Image.open(tmp_path / "image.png")] * 2, **call))
    expected.update(evaluating.encode_answer_candidates(["yes", "The brain"]))
    assert actual.keys() == expected.keys() and actual["input_ids"].shape == (2, 41), "no question length limit"
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


# --- the processor's outputs drive the M2I2 heads and the zoo's collators ---------------------------------------------


def test_processor_outputs_run_the_m2i2_heads(colour_image):
    torch.manual_seed(0)
    config = M2I2Config.from_preset("tiny")
    processor = M2I2Processor.from_model_config(config, tokenizer_dir(M2I2Processor.default_tokenizer))
    images = [colour_image, colour_image.convert("L")]
    questions, answers = ["Is there a mass? -yes/no", "Where is the lesion?"], ["Yes", "Left upper lobe"]
    vqa = M2I2ForVQA(config).eval()
    batch = processor(images=images, text=questions, text_target=answers, text_kind="question")
    assert math.isfinite(vqa(**batch).loss.item())
    candidates = processor.encode_answer_candidates(["yes", "no", "left upper lobe"])
    questions_only = processor(images=images, text=questions, text_kind="question")
    ranking = vqa.rank_answers(**questions_only, **candidates, k=3)
    assert ranking.scores.shape == (2, 3) and torch.isfinite(ranking.scores).all()
    prompts = processor(images=images, text=questions, text_kind="question", generation_prompt=True)
    generated = vqa.generate(**prompts, max_new_tokens=3, do_sample=False)
    assert generated.shape[0] == 2 and (generated[:, 0] == CLS).all()
    pretraining = M2I2ForPreTraining(config).eval()
    captions = processor(images=images, text=["Heart size is normal.", "No acute process."])
    assert math.isfinite(pretraining(**captions, generator=torch.Generator().manual_seed(0)).loss.item())


def test_collators_ask_for_the_question_layout(processor, colour_image):
    examples = [
        {"image": colour_image, "question": "Is there a mass? -yes/no", "answer": "Yes"},
        {"image": colour_image, "question": "Where is the lesion?", "answer": "The left upper lobe"},
    ]
    expected = processor(
        images=[colour_image] * 2,
        text=[e["question"] for e in examples],
        text_target=[e["answer"] for e in examples],
        text_kind="question",
        max_length=None,
    )
    generative = GenerativeVQACollator(processor, max_answer_length=None)(examples)
    assert generative.keys() == expected.keys()
    assert all(torch.equal(generative[key], expected[key]) for key in expected)
    closed = VQACollator(processor, answers=["yes", "left upper lobe"])(examples)
    assert torch.equal(closed["input_ids"], expected["input_ids"])
