"""The processor checks every zoo processor passes, written once (DESIGN.md "Tests").

A model's processor test file defines a `ProcessorTester` subclass (how to build its processor and a config for its
default processor, the calls that give generative targets and generation prompts) and a test class
`class TestMedViLLProcessor(ProcessorTesterMixin): tester = MedViLLProcessorTester()`.
"""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as transformers_logging

from medvlp_hf.resources import bert_base_uncased_vocab_file, tokenizer_dir

REPORTS = ["Heart size is normal and the lungs are clear.", "No acute process."]
LONG_TEXT = "the lungs are clear " * 150  # 600 wordpieces: over every zoo model's text limit
IGNORE_INDEX = -100


class ProcessorTester:
    """What the common checks need to know about one processor. Subclasses set `processor_class` and `vocab_size`
    and implement `get_model_config`."""

    processor_class = None
    vocab_size = None  # number of tokens of the default processor's tokenizer
    image_size = 16  # small output images keep the checks fast
    # `text_target` calls: (extra keyword arguments, the key of the ids that `labels` are aligned with)
    target_calls = (({}, "input_ids"),)
    # the `generation_prompt=True` call: (extra keyword arguments, the key holding the prompt)
    generation_prompt_call = ({}, "input_ids")
    # whether an encoded `text` closes with `end_token_id` (M2I2's ALBEF layout `[CLS] text` has no closing token)
    text_has_end_token = True
    # whether the generation prompt holds `text` (a report's beginning, one length per text); False when it is a fixed
    # decoder start, the same for every text (M2I2's answer decoder starts from `[CLS]` alone)
    generation_prompt_holds_text = True

    def get_processor(self, **image_processor_kwargs):
        """The processor built offline from the bundled vocabulary, with `image_size` outputs."""
        return self.processor_class.from_vocab_file(
            bert_base_uncased_vocab_file(), image_size=self.image_size, **image_processor_kwargs
        )

    def get_model_config(self):
        """A config of the model, for `from_model_config`."""
        raise NotImplementedError

    def model_config_image_size(self, config) -> int:
        return config.image_size

    def end_token_id(self, processor) -> int:
        """The token that closes a text (and would end generation)."""
        return processor.tokenizer.sep_token_id


def gray_image(seed=0, shape=(20, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def colour_image(seed=1, shape=(20, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def gradient16(shape=(20, 30)) -> np.ndarray:
    """16-bit values spread over the whole range (every 8-bit level would hide a scaling error)."""
    count = shape[0] * shape[1]
    return (np.arange(count, dtype=np.int64) * 65535 // (count - 1)).astype(np.uint16).reshape(shape)


def image_input_forms() -> list[tuple[str, object, Image.Image]]:
    """(name, input, the equivalent PIL image) for every container, bit depth and byte order the zoo's image
    processors accept, as decode_image's rules define equivalence (alpha is dropped, 16-bit and float data are read
    by bit depth / as [0, 1])."""
    gray, colour, wide = gray_image(), colour_image(), gradient16()
    pil_gray, pil_colour, pil16 = Image.fromarray(gray), Image.fromarray(colour), Image.fromarray(wide)
    rgba = np.dstack([colour, gray_image(seed=2)])
    unit = (wide / 65535).astype(np.float32)
    return [
        ("numpy uint8 HxW", gray, pil_gray),
        ("numpy uint8 HxWx1", gray[:, :, None], pil_gray),
        ("torch uint8 HxW", torch.from_numpy(gray.copy()), pil_gray),
        ("torch uint8 1xHxW", torch.from_numpy(gray.copy())[None], pil_gray),
        ("numpy uint8 HxWx3", colour, pil_colour),
        ("numpy uint8 3xHxW", np.ascontiguousarray(colour.transpose(2, 0, 1)), pil_colour),
        ("torch uint8 3xHxW", torch.from_numpy(colour.copy()).permute(2, 0, 1), pil_colour),
        ("PIL RGBA", Image.fromarray(rgba), pil_colour),
        ("numpy uint8 HxWx4", rgba, pil_colour),
        ("PIL I;16B", Image.frombytes("I;16B", pil16.size, wide.astype(">u2").tobytes()), pil16),
        ("PIL I (int32)", Image.fromarray(wide.astype(np.int32)), pil16),
        ("numpy uint16 native", wide, pil16),
        ("numpy uint16 big-endian", wide.astype(">u2"), pil16),
        ("numpy uint16 little-endian", wide.astype("<u2"), pil16),
        ("torch uint16", torch.from_numpy(wide.astype(np.int32)).to(torch.uint16), pil16),
        ("numpy float32 in [0, 1]", unit, pil16),
        ("numpy float64 big-endian", unit.astype(">f8"), pil16),
        ("torch float32", torch.from_numpy(unit), pil16),
        ("PIL F", Image.fromarray(unit), pil16),
    ]


def as_tensors(batch) -> dict:
    return {key: torch.as_tensor(np.asarray(value)) for key, value in batch.items()}


class ProcessorTesterMixin:
    """The common checks. The test class sets `tester` (a `ProcessorTester`)."""

    tester: ProcessorTester

    def calls(self, processor):
        """The processor's outputs for one call of every kind the checks cover (images + texts, each text target,
        the generation prompt), with fresh seeded generators so randomised targets are reproducible."""
        images = [Image.fromarray(colour_image()), Image.fromarray(gradient16())]
        outputs = {"images and text": processor(images=images, text=REPORTS)}
        for index, (kwargs, _) in enumerate(self.tester.target_calls):
            generator = torch.Generator().manual_seed(index)
            outputs[f"target {kwargs}"] = processor(images=images, text_target=REPORTS, generator=generator, **kwargs)
        kwargs, _ = self.tester.generation_prompt_call
        outputs["generation prompt"] = processor(images=images, text=REPORTS, generation_prompt=True, **kwargs)
        return outputs

    # ------------------------------------------------------------------ saving and loading

    def test_save_load_round_trip_gives_identical_outputs(self, tmp_path):
        processor = self.tester.get_processor()
        processor.save_pretrained(tmp_path)
        expected = self.calls(processor)
        for loader in (self.tester.processor_class, AutoProcessor):
            loaded = loader.from_pretrained(tmp_path)
            assert type(loaded) is self.tester.processor_class, loader.__name__
            assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
            assert len(loaded.tokenizer) == len(processor.tokenizer)
            for name, output in self.calls(loaded).items():
                assert output.keys() == expected[name].keys(), name
                for key in output:
                    assert torch.equal(output[key], expected[name][key]), f"{loader.__name__}: {name}: {key}"

    def test_default_processor_from_model_config(self):
        config = self.tester.get_model_config()
        processor_class = self.tester.processor_class
        processor = processor_class.from_model_config(config, tokenizer_dir(processor_class.default_tokenizer))
        assert type(processor) is processor_class
        size = self.tester.model_config_image_size(config)
        assert dict(processor.image_processor.size) == {"height": size, "width": size}
        assert len(processor.tokenizer) == self.tester.vocab_size
        reference = self.tester.get_processor()
        assert torch.equal(processor(text=REPORTS)["input_ids"], reference(text=REPORTS)["input_ids"])

    # ------------------------------------------------------------------ images

    @pytest.mark.parametrize("form", range(len(image_input_forms())), ids=[form[0] for form in image_input_forms()])
    def test_every_image_input_form_equals_its_pil_image(self, form):
        name, image, pil_image = image_input_forms()[form]
        processor = self.tester.get_processor()
        expected = processor(images=pil_image)["pixel_values"]
        assert expected.shape == (1, 3, self.tester.image_size, self.tester.image_size)
        assert torch.equal(processor(images=image)["pixel_values"], expected), name

    def test_image_batches_equal_single_images(self):
        processor = self.tester.get_processor()
        forms = image_input_forms()
        singles = torch.cat([processor(images=pil_image)["pixel_values"] for _, _, pil_image in forms])
        assert torch.equal(processor(images=[image for _, image, _ in forms])["pixel_values"], singles)
        gray = np.stack([gray_image(seed) for seed in range(3)])
        stacked = processor(images=gray[..., None])["pixel_values"]
        assert torch.equal(stacked, torch.cat([processor(images=Image.fromarray(g))["pixel_values"] for g in gray]))

    # ------------------------------------------------------------------ text

    def test_too_long_text_is_an_error_without_truncation(self):
        processor = self.tester.get_processor()
        with pytest.raises(ValueError, match="over max_length.*truncation=True"):
            processor(text=LONG_TEXT, truncation=False)
        truncated = processor(text=[LONG_TEXT, "clear"], max_length=12)
        assert truncated["input_ids"].shape == (2, 12)
        ends_with_end_token = bool(truncated["input_ids"][0, -1] == self.tester.end_token_id(processor))
        assert ends_with_end_token == self.tester.text_has_end_token

    def test_truncation_by_default_is_said_once(self):
        """Truncation is the default (as the originals' tokenizer calls): the first cut of a process is logged,
        naming the limit and how to get an error instead, and repeated batches do not repeat it."""
        processor = self.tester.get_processor()
        transformers_logging.warning_once.cache_clear()
        with CaptureLogger(logging.getLogger(type(processor).__module__)) as captured:
            processor(text=["clear"], max_length=12)
            assert captured.out == ""
            for _ in range(3):
                processor(text=[LONG_TEXT, "clear"], max_length=12)
        assert captured.out.count("are cut to their first") == 1
        assert "max_length=12" in captured.out and "truncation=False" in captured.out

    def test_image_and_text_counts_must_match(self):
        processor = self.tester.get_processor()
        image = Image.fromarray(colour_image())
        with pytest.raises(ValueError, match=r"got 1 images and 2 texts"):
            processor(images=image, text=REPORTS)
        with pytest.raises(ValueError, match=r"got 3 images and 2 texts"):
            processor(images=[image] * 3, text=REPORTS)

    def test_generation_prompt_is_left_padded_without_the_end_token(self):
        processor = self.tester.get_processor()
        kwargs, key = self.tester.generation_prompt_call
        prompts = processor(text=REPORTS, generation_prompt=True, **kwargs)
        mask_key = key.replace("input_ids", "attention_mask")
        ids, mask = prompts[key], prompts[mask_key]
        assert (ids[:, -1] != self.tester.end_token_id(processor)).all()
        if self.tester.generation_prompt_holds_text:
            assert mask[:, -1].all() and not mask.all(), "left-padded: every row ends with a real token"
        else:
            assert mask.all() and (ids == ids[0]).all(), "one decoder start for every text"
        for row, report in enumerate(REPORTS):
            single = processor(text=report, generation_prompt=True, **kwargs)
            length = int(mask[row].sum())
            assert torch.equal(ids[row, -length:], single[key][0]), report

    def test_text_target_gives_labels_aligned_with_its_inputs(self):
        processor = self.tester.get_processor()
        for kwargs, key in self.tester.target_calls:
            out = processor(text_target=REPORTS, generator=torch.Generator().manual_seed(0), **kwargs)
            labels, ids = out["labels"], out[key]
            mask = out[key.replace("input_ids", "attention_mask")]
            assert labels.shape == ids.shape == mask.shape and labels.dtype == torch.long, kwargs
            assert (labels[mask == 0] == IGNORE_INDEX).all(), "padding is never a target"
            scored = labels[labels != IGNORE_INDEX]
            assert scored.numel() > 0 and (scored != processor.tokenizer.pad_token_id).all()
            assert ((scored >= 0) & (scored < len(processor.tokenizer))).all()
            generator = torch.Generator().manual_seed(0)
            lists = processor(text_target=REPORTS, generator=generator, return_tensors=None, **kwargs)
            assert torch.equal(as_tensors(lists)["labels"], labels), "return_tensors=None holds the same values"
