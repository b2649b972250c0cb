"""Task collators on three real processors with different text layouts: MedViLL's `[SEP] w [SEP]`, transformers'
BlipProcessor with bert-base-uncased WordPiece (`[CLS] w [SEP]`) and CLIPProcessor with RoBERTa BPE (`<s> w </s>`,
needs the real-data tokenizer files). Shapes, label semantics, MLM on text tokens only, negatives, determinism."""
import numpy as np
import pytest
import torch
from transformers import (
    BertTokenizer, BlipImageProcessorPil, BlipProcessor, CLIPImageProcessorPil, CLIPProcessor, RobertaTokenizer,
)

from medvlp_hf.data import (
    DEMO_ANSWERS, ClassificationCollator, LabelConditionedNegatives, PreTrainingCollator,
    RandomNegatives, ReportGenerationCollator, RetrievalGroupCollator, RetrievalPairCollator, VQACollator,
    label_set, load_demo, retrieval_candidate_groups,
)
from medvlp_hf.data.collators import IGNORE_INDEX
from medvlp_hf.models.medvill.processing_medvill import MedViLLProcessor
from medvlp_hf.resources import bert_base_uncased_vocab_file
from tests.test_data_support import medvill_processor


def blip_bert_processor():
    """`[CLS] wordpieces [SEP]`, BLIP's image processor at 32x32."""
    tokenizer = BertTokenizer(str(bert_base_uncased_vocab_file()))
    return BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer)


def clip_roberta_processor(data_dir):
    """`<s> BPE tokens </s>` (PTUnifier's layout), CLIP's image processor at 32x32."""
    folder = data_dir / "tokenizers" / "roberta-base"
    tokenizer = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPProcessor(image_processor, tokenizer)


@pytest.fixture(scope="module", params=["medvill", "blip-bert", "clip-roberta"])
def processor(request):
    if request.param == "medvill":
        return medvill_processor(image_size=32)
    if request.param == "blip-bert":
        return blip_bert_processor()
    return clip_roberta_processor(request.getfixturevalue("data_dir"))


@pytest.fixture(scope="module")
def blip_bert():
    return blip_bert_processor()


@pytest.fixture(scope="module")
def demo():
    return load_demo(num_train=24, num_test=0, image_size=32, seed=0)["train"]


@pytest.fixture(scope="module")
def examples(demo):
    return [demo[i] for i in range(8)]


def _plain(processor, images, texts, **kwargs):
    return processor(images=images, text=texts, padding="longest", truncation=True, return_tensors="pt", **kwargs)


def _assert_inputs_equal(batch, reference):
    assert all(torch.equal(batch[key], reference[key]) for key in reference)


def _text_tokens(processor, input_ids):
    """Reference: True where a token is neither padding nor one of the tokenizer's special tokens."""
    special = set(processor.tokenizer.all_special_ids)
    return torch.tensor([[token not in special for token in row] for row in input_ids.tolist()])


def test_batch_carries_every_key_the_processor_returns(examples):
    """CLIPProcessor with a WordPiece tokenizer also returns token_type_ids; the collators pass them on."""
    processor = CLIPProcessor(blip_bert_processor().image_processor, BertTokenizer(str(bert_base_uncased_vocab_file())))
    reference = _plain(processor, [e["image"] for e in examples], [e["report"] for e in examples])
    assert "token_type_ids" in reference
    batch = ClassificationCollator(processor)(examples)
    assert set(batch) == set(reference) | {"labels"}
    _assert_inputs_equal(batch, reference)
    plain = PreTrainingCollator(processor, mlm_probability=None)(examples)
    assert set(plain) == set(reference)
    _assert_inputs_equal(plain, reference)


def test_vqa_collator_soft_score_targets(processor, examples):
    batch = VQACollator(processor, DEMO_ANSWERS)(examples)
    images, questions = [e["image"] for e in examples], [e["question"] for e in examples]
    if isinstance(processor, MedViLLProcessor):
        reference = _plain(processor, images, questions, text_kind="question")
        assert not torch.equal(reference["input_ids"], _plain(processor, images, questions)["input_ids"])
    else:
        reference = _plain(processor, images, questions)
    assert set(batch) == set(reference) | {"labels"}
    _assert_inputs_equal(batch, reference)
    expected = torch.zeros(len(examples), len(DEMO_ANSWERS))
    for row, example in enumerate(examples):
        expected[row, DEMO_ANSWERS.index(example["answer"])] = 1.0
    assert torch.equal(batch["labels"], expected)


def test_vqa_collator_normalises_answers_and_zeroes_unknown_ones(processor, examples):
    collator = VQACollator(processor, {"Yes": 0, "no": 1, "chest x-ray": 2}, max_length=6)
    rows = [dict(examples[0], answer=answer) for answer in ("YES.", "No", "Chest X ray", "kidney", 4)]
    batch = collator(rows)
    assert batch["labels"].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert batch["input_ids"].shape[1] <= 6
    scored = VQACollator(processor, ["yes", "no", "left"], answer_column="answers", score_column="scores")
    multi = scored([dict(examples[0], answers=["left", "Yes", "unknown"], scores=[0.3, 1.0, 0.6])])
    assert multi["labels"].tolist() == [[1.0, 0.0, pytest.approx(0.3)]]
    with pytest.raises(ValueError, match="both normalise to 'yes'"):
        VQACollator(processor, ["yes", "Yes."])


def test_classification_collator(processor, examples):
    batch = ClassificationCollator(processor)(examples)
    images = [e["image"] for e in examples]
    _assert_inputs_equal(batch, _plain(processor, images, [e["report"] for e in examples]))
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [e["labels"] for e in examples]
    image_only = ClassificationCollator(processor, text_column=None)(examples)
    _assert_inputs_equal(image_only, _plain(processor, images, [""] * len(examples)))
    assert not _text_tokens(processor, image_only["input_ids"]).any()
    with pytest.raises(ValueError, match="uncertain"):
        ClassificationCollator(processor)([dict(examples[0], labels=[-1.0] + [0.0] * 13)])


def test_mlm_masks_only_text_tokens(processor, examples):
    """Over many batches MLM chooses every text token somewhere and never a special token or padding."""
    collator = PreTrainingCollator(processor, mlm_probability=0.5, seed=2)
    reference = _plain(processor, [e["image"] for e in examples], [e["report"] for e in examples])
    text = _text_tokens(processor, reference["input_ids"])
    assert text.any(dim=1).all() and (~text & (reference["attention_mask"] == 1)).any()
    ever_chosen = torch.zeros_like(text)
    tokenizer = processor.tokenizer
    for _ in range(20):
        batch = collator(examples)
        chosen = batch["labels"] != IGNORE_INDEX
        assert not (chosen & ~text).any()
        assert torch.equal(batch["labels"][chosen], reference["input_ids"][chosen])
        assert torch.equal(batch["input_ids"][~chosen], reference["input_ids"][~chosen])
        assert (batch["input_ids"][chosen] == tokenizer.mask_token_id).any()
        assert ((batch["input_ids"] >= 0) & (batch["input_ids"] < len(tokenizer))).all()
        ever_chosen |= chosen
    assert torch.equal(ever_chosen, text)


def test_pretraining_emits_plain_pairs(processor, examples):
    """Models that mask and draw hard negatives inside their forward get the processor's outputs unchanged."""
    batch = PreTrainingCollator(processor, mlm_probability=None)(examples)
    reference = _plain(processor, [e["image"] for e in examples], [e["report"] for e in examples])
    assert set(batch) == set(reference)
    _assert_inputs_equal(batch, reference)


def _original_ids(batch):
    return torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])


def test_pretraining_label_conditioned_negatives(processor, demo, examples):
    negatives = LabelConditionedNegatives(demo)
    collator = PreTrainingCollator(processor, negatives=negatives, mask_first_if_none=True, seed=0)
    pad = processor.tokenizer.pad_token_id
    encoded = {report: _plain(processor, None, [report])["input_ids"][0].tolist() for report in set(demo["report"])}
    itm = []
    for _ in range(6):
        batch = collator(examples)
        originals = _original_ids(batch)
        for row, example in enumerate(examples):
            ids = [i for i, real in zip(originals[row].tolist(), batch["attention_mask"][row].tolist()) if real]
            used = next(report for report, reference in encoded.items() if reference == ids)
            label = batch["itm_labels"][row].item()
            itm.append(label)
            if label == 1:
                assert used == example["report"]
            else:
                sources = [i for i, report in enumerate(demo["report"]) if report == used]
                assert all(label_set(demo[i]["labels"]) != label_set(example["labels"]) for i in sources)
        assert (batch["labels"][~_text_tokens(processor, originals)] == IGNORE_INDEX).all()
        assert (batch["input_ids"][batch["attention_mask"] == 0] == pad).all()
        assert ((batch["labels"] != IGNORE_INDEX).sum(1) >= 1).all()
    assert 0.3 < 1 - np.mean(itm) < 0.7


def test_pretraining_without_negatives_and_determinism(processor, examples):
    batch = PreTrainingCollator(processor, seed=1)(examples)
    assert "itm_labels" not in batch
    assert batch["labels"].shape == batch["input_ids"].shape
    again = PreTrainingCollator(processor, seed=1)(examples)
    assert all(torch.equal(batch[key], again[key]) for key in batch)
    assert not torch.equal(PreTrainingCollator(processor, seed=2)(examples)["labels"], batch["labels"])


def test_pretraining_refuses_mlm_without_a_mask_token(blip_bert, examples):
    tokenizer = BertTokenizer(str(bert_base_uncased_vocab_file()), mask_token=None)
    assert tokenizer.mask_token_id is None
    processor = BlipProcessor(blip_bert.image_processor, tokenizer)
    with pytest.raises(ValueError, match="no mask token.*mlm_probability=None"):
        PreTrainingCollator(processor)
    assert "labels" not in PreTrainingCollator(processor, mlm_probability=None)(examples)


def test_dataloader_workers_draw_different_masks(blip_bert, examples):
    """Every worker holds a copy of the collator; copies of one generator would mask identically."""
    collator = PreTrainingCollator(blip_bert, seed=1)
    rows = [examples[0]] * 4

    def masks(num_workers):
        loader = torch.utils.data.DataLoader(
            [rows] * 4, batch_size=None, collate_fn=collator, num_workers=num_workers,
            generator=torch.Generator().manual_seed(5),
        )
        return [batch["labels"] for batch in loader]

    two_workers = masks(2)
    assert not torch.equal(two_workers[0], two_workers[1]), "workers 0 and 1 drew the same masks"
    assert all(torch.equal(a, b) for a, b in zip(two_workers, masks(2))), "a seeded DataLoader must repeat itself"
    assert torch.equal(masks(0)[0], PreTrainingCollator(blip_bert, seed=1)(rows)["labels"])


def test_generative_targets_need_a_processor_that_encodes_them(blip_bert, examples):
    """BlipProcessor ignores `text_target` without `text`: no labels, so the collator says what is missing."""
    with pytest.raises(ValueError, match=r"BlipProcessor\(text_target=...\) returned \['pixel_values'\] without"):
        ReportGenerationCollator(blip_bert)(examples)


def test_collators_need_a_processor_with_a_tokenizer(blip_bert):
    with pytest.raises(TypeError, match="BlipImageProcessorPil has no `tokenizer`"):
        VQACollator(blip_bert.image_processor, DEMO_ANSWERS)


def test_random_negatives_differ_from_the_query(demo, examples):
    sampler = RandomNegatives(demo)
    generator = torch.Generator().manual_seed(0)
    for example in examples:
        for _ in range(5):
            assert sampler.text(sampler.sample_index(example, generator)) != example["report"]
    same = [{"report": "same", "labels": [0.0] * 14}] * 3
    with pytest.raises(ValueError, match="no record"):
        LabelConditionedNegatives(same).sample_index(same[0], generator)


def test_retrieval_pairs(processor, demo, examples):
    batch = RetrievalPairCollator(processor, LabelConditionedNegatives(demo), seed=0)(examples)
    assert batch["labels"].tolist() == [1, 0] * len(examples)
    assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0] == 2 * len(examples)
    reference = _plain(processor, [e["image"] for e in examples], [e["report"] for e in examples])
    swapped_images = 0
    for row, example in enumerate(examples):
        positive, negative = 2 * row, 2 * row + 1
        assert torch.equal(batch["pixel_values"][positive], reference["pixel_values"][row])
        own_text = batch["input_ids"][negative].tolist() == batch["input_ids"][positive].tolist()
        own_image = torch.equal(batch["pixel_values"][negative], reference["pixel_values"][row])
        assert own_text != own_image
        swapped_images += own_text
    assert 0 < swapped_images < len(examples)


def test_retrieval_candidate_groups(demo):
    labels = demo["labels"]
    groups = retrieval_candidate_groups(labels, num_candidates=6, seed=0)
    assert len(groups) == len(labels)
    for group in groups:
        query, candidates = group["query"], group["candidates"]
        assert len(candidates) == len(set(candidates)) == 6 and query in candidates
        assert group["relevance"] == [int(label_set(labels[c]) == label_set(labels[query])) for c in candidates]
    assert retrieval_candidate_groups(labels, num_candidates=6, seed=0) == groups
    full = retrieval_candidate_groups(labels)
    assert all(sorted(group["candidates"]) == list(range(len(labels))) for group in full)
    with pytest.raises(ValueError, match="num_candidates"):
        retrieval_candidate_groups(labels, num_candidates=0)


def test_retrieval_group_collator(processor, demo):
    group = retrieval_candidate_groups(demo["labels"], num_candidates=5, seed=1)[3]
    i2t = RetrievalGroupCollator(processor, demo, "i2t")(group)
    texts = [demo[c]["report"] for c in group["candidates"]]
    reference = _plain(processor, [demo[3]["image"]] * 5, texts)
    assert set(i2t) == set(reference)
    _assert_inputs_equal(i2t, reference)
    t2i = RetrievalGroupCollator(processor, demo, "t2i")(group)
    reference = _plain(processor, [demo[c]["image"] for c in group["candidates"]], [demo[3]["report"]] * 5)
    _assert_inputs_equal(t2i, reference)
