"""Task collators with the real MedViLL processor: shapes, label semantics, negatives, determinism."""
import numpy as np
import pytest
import torch

from medvlp_hf.data import (
    DEMO_ANSWERS, ClassificationCollator, GenerativeVQACollator, LabelConditionedNegatives, PreTrainingCollator,
    RandomNegatives, ReportGenerationCollator, RetrievalGroupCollator, RetrievalPairCollator, VQACollator,
    label_set, load_demo, retrieval_candidate_groups,
)
from medvlp_hf.data.collators import IGNORE_INDEX
from tests.test_data_support import medvill_processor

SEP, PAD, MASK = 102, 0, 103


@pytest.fixture(scope="module")
def processor():
    return medvill_processor(image_size=32)


@pytest.fixture(scope="module")
def demo():
    return load_demo(num_train=24, num_test=0, image_size=32, seed=0)["train"]


@pytest.fixture(scope="module")
def examples(demo):
    return [demo[i] for i in range(8)]


def _plain(processor, images, texts, **kwargs):
    return processor(images=images, text=texts, padding="longest", truncation=True, return_tensors="pt", **kwargs)


def test_vqa_collator_soft_score_targets(processor, examples):
    collator = VQACollator(processor, DEMO_ANSWERS, processor_kwargs={"text_kind": "question"})
    batch = collator(examples)
    questions = [e["question"] for e in examples]
    reference = _plain(processor, [e["image"] for e in examples], questions, text_kind="question")
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(batch[key], reference[key])
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


def test_generative_vqa_labels_are_answer_tokens(processor, examples):
    rows = examples[:3] + [dict(examples[0], answer="pleural effusion right side")]
    batch = GenerativeVQACollator(processor, max_answer_length=3)(rows)
    answers = [row["answer"] for row in rows]
    pieces = processor.tokenizer(answers, add_special_tokens=False)["input_ids"]
    expected = [ids[:2] + [SEP] for ids in pieces]
    width = max(map(len, expected))
    assert batch["labels"].tolist() == [ids + [IGNORE_INDEX] * (width - len(ids)) for ids in expected]


def test_classification_collator(processor, examples):
    batch = ClassificationCollator(processor)(examples)
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [e["labels"] for e in examples]
    image_only = ClassificationCollator(processor, text_column=None)(examples)
    assert torch.equal(image_only["input_ids"], torch.tensor([[SEP, SEP]] * len(examples)))
    with pytest.raises(ValueError, match="uncertain"):
        ClassificationCollator(processor)([dict(examples[0], labels=[-1.0] + [0.0] * 13)])


def test_report_generation_collator(processor, examples):
    batch = ReportGenerationCollator(processor, seed=3)(examples)
    reference = _plain(processor, [e["image"] for e in examples], [e["report"] for e in examples])
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


def _original_ids(batch):
    return torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])


def test_pretraining_label_conditioned_negatives(processor, demo, examples):
    negatives = LabelConditionedNegatives(demo)
    collator = PreTrainingCollator(processor, negatives=negatives, seed=0)
    encoded = {report: _plain(processor, None, [report])["input_ids"][0].tolist() for report in set(demo["report"])}
    itm = []
    for _ in range(6):
        batch = collator(examples)
        originals = _original_ids(batch)
        for row, example in enumerate(examples):
            ids = [i for i in originals[row].tolist() if i != PAD]
            used = next(report for report, reference in encoded.items() if reference == ids)
            label = batch["itm_labels"][row].item()
            itm.append(label)
            if label == 1:
                assert used == example["report"]
            else:
                sources = [i for i, report in enumerate(demo["report"]) if report == used]
                assert all(label_set(demo[i]["labels"]) != label_set(example["labels"]) for i in sources)
        special = (originals == SEP) | (batch["attention_mask"] == 0)
        assert (batch["labels"][special] == IGNORE_INDEX).all()
        assert ((batch["labels"] != IGNORE_INDEX).sum(1) >= 1).all()
    assert 0.3 < 1 - np.mean(itm) < 0.7


def test_pretraining_without_negatives_and_determinism(processor, examples):
    batch = PreTrainingCollator(processor, seed=1)(examples)
    assert batch["itm_labels"].tolist() == [1] * len(examples)
    assert batch["labels"].shape == batch["input_ids"].shape
    again = PreTrainingCollator(processor, seed=1)(examples)
    assert all(torch.equal(batch[key], again[key]) for key in batch)


def test_dataloader_workers_draw_different_masks(processor, examples):
    """Every worker holds a copy of the collator; copies of one generator would mask identically."""
    collator = PreTrainingCollator(processor, seed=1)
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
    assert torch.equal(masks(0)[0], PreTrainingCollator(processor, seed=1)(rows)["labels"])


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
    assert all(torch.equal(i2t[key], reference[key]) for key in reference)
    t2i = RetrievalGroupCollator(processor, demo, "t2i")(group)
    reference = _plain(processor, [demo[c]["image"] for c in group["candidates"]], [demo[3]["report"]] * 5)
    assert all(torch.equal(t2i[key], reference[key]) for key in reference)
