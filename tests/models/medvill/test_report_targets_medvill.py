"""MedViLL's report-generation targets (reference/originals.md §2.7): `MedViLLProcessor(text_target=...)` and its
masks (at most 3 [MASK] per report, the closing [SEP] with p=0.5, never a random token), and the task collators on
MedViLL's processor where its layout matters."""

import numpy as np
import pytest
import torch

from medvlp_hf.data import GenerativeVQACollator, ReportGenerationCollator, load_demo
from medvlp_hf.data.collators import IGNORE_INDEX
from medvlp_hf.models.medvill.processing_medvill import MedViLLProcessor
from medvlp_hf.resources import bert_base_uncased_vocab_file
from tests.models.medvill.tester import PAD, SEP, text_batch

MASK = 103


@pytest.fixture(scope="module")
def processor():
    return MedViLLProcessor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=32)


@pytest.fixture(scope="module")
def examples():
    demo = load_demo(num_train=8, num_test=0, image_size=32, seed=0)["train"]
    return [demo[i] for i in range(8)]


def _streams(rows=400, max_words=58, seed=0, left_pad=False):
    """`[SEP] words [SEP]` rows with 0..max_words words, padded right (or left), and their attention mask."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_words + 1, (rows,), generator=generator).tolist()
    return text_batch(lengths, generator, left_pad=left_pad)


@pytest.mark.parametrize("left_pad", [False, True])
def test_report_masks_follow_the_medvill_rule(processor, left_pad):
    input_ids, attention = _streams(left_pad=left_pad)
    words = attention.bool() & (input_ids != SEP)
    final = torch.tensor([row.nonzero().max().item() for row in attention])
    masked, labels = processor.mask_for_report_generation(input_ids, attention, torch.Generator().manual_seed(2))
    with_final = 0
    for row in range(input_ids.shape[0]):
        n_text = words[row].sum().item()
        expected = min(3, max(1, round(0.15 * n_text)))
        positions = (labels[row] != IGNORE_INDEX).nonzero().flatten()
        assert len(positions) == expected
        assert (masked[row, positions] == MASK).all()
        assert torch.equal(labels[row, positions], input_ids[row, positions])
        others = torch.ones_like(attention[row], dtype=torch.bool)
        others[positions] = False
        assert torch.equal(masked[row, others], input_ids[row, others])
        allowed = words[row].clone()
        allowed[final[row]] = True
        assert allowed[positions].all()
        if final[row] in positions:
            with_final += 1
            assert labels[row, final[row]] == SEP
    assert 0.4 < with_final / input_ids.shape[0] < 0.6


def test_report_masks_without_final_token_and_empty_reports(processor):
    input_ids = torch.tensor([[SEP, SEP, PAD], [SEP, 1500, SEP]])
    attention = torch.tensor([[1, 1, 0], [1, 1, 1]])
    masked, labels = processor.mask_for_report_generation(input_ids, attention, final_token_probability=0.0)
    assert labels.tolist() == [[IGNORE_INDEX, SEP, IGNORE_INDEX], [IGNORE_INDEX, 1500, IGNORE_INDEX]]
    assert masked.tolist() == [[SEP, MASK, PAD], [SEP, MASK, SEP]]


def test_text_target_is_the_masked_report_stream(processor, examples):
    images, reports = [e["image"] for e in examples], [e["report"] for e in examples]
    target = processor(images=images, text_target=reports, generator=torch.Generator().manual_seed(0))
    plain = processor(images=images, text=reports)
    assert set(target) == {"input_ids", "attention_mask", "labels", "pixel_values"}
    assert torch.equal(target["attention_mask"], plain["attention_mask"])
    assert torch.equal(target["pixel_values"], plain["pixel_values"])
    expected = processor.mask_for_report_generation(
        plain["input_ids"], plain["attention_mask"], torch.Generator().manual_seed(0)
    )
    assert torch.equal(target["input_ids"], expected[0]) and torch.equal(target["labels"], expected[1])
    again = processor(text_target=reports, generator=torch.Generator().manual_seed(0), return_tensors=None)
    assert again["input_ids"] == expected[0].tolist() and again["labels"] == expected[1].tolist()
    as_numpy = processor(text_target=reports, generator=torch.Generator().manual_seed(0), return_tensors="np")
    assert isinstance(as_numpy["labels"], np.ndarray) and (as_numpy["labels"] == expected[1].numpy()).all()
    with pytest.raises(ValueError, match="one text: pass `text`.*or `text_target`"):
        processor(text=reports, text_target=reports)


def test_report_generation_collator(processor, examples):
    batch = ReportGenerationCollator(processor, seed=3)(examples)
    reference = processor(images=[e["image"] for e in examples], text=[e["report"] for e in examples])
    assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values"}
    assert torch.equal(batch["pixel_values"], reference["pixel_values"])
    chosen = batch["labels"] != IGNORE_INDEX
    assert torch.equal(batch["labels"][chosen], reference["input_ids"][chosen])
    assert (batch["input_ids"][chosen] == MASK).all()
    assert torch.equal(batch["input_ids"][~chosen], reference["input_ids"][~chosen])
    n_text = ((reference["input_ids"] != SEP) & (reference["input_ids"] != PAD)).sum(1)
    expected = [min(3, max(1, round(0.15 * n))) for n in n_text.tolist()]
    assert chosen.sum(1).tolist() == expected
    assert not chosen[:, 0].any() and not chosen[reference["attention_mask"] == 0].any()
    again = ReportGenerationCollator(processor, seed=3)(examples)
    assert torch.equal(again["labels"], batch["labels"])
    assert not torch.equal(ReportGenerationCollator(processor, seed=4)(examples)["labels"], batch["labels"])
    short = ReportGenerationCollator(processor, max_length=6, seed=3)(examples)
    assert short["input_ids"].shape[1] == 6


def test_generative_vqa_refuses_medvill(processor, examples):
    """MedViLL has no answer decoder: its text targets live in the question's own stream."""
    with pytest.raises(ValueError, match=r"into \['attention_mask', 'input_ids'\].*no answer decoder.*VQACollator"):
        GenerativeVQACollator(processor)(examples)
