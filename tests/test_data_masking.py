"""BERT-style MLM (80/10/10) on token tensors; MedViLL's report-generation masks are tested with its processor."""
import pytest
import torch

from medvlp_hf.data.collators import IGNORE_INDEX, mask_tokens_for_mlm

MASK, SEP, PAD, VOCAB = 103, 102, 0, 30522


def _streams(rows=300, length=60, seed=0):
    """Right-padded `[SEP] words [SEP] [PAD]..` rows with 0..length-2 words, and their text-token mask."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, length - 1, (rows,), generator=generator)
    input_ids = torch.full((rows, length), PAD)
    attention = torch.zeros(rows, length, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        words = torch.randint(1000, 2000, (n,), generator=generator).tolist()
        input_ids[row, : n + 2] = torch.tensor([SEP, *words, SEP])
        attention[row, : n + 2] = 1
    candidates = attention.bool() & (input_ids != SEP) & (input_ids != PAD)
    return input_ids, attention, candidates


def test_mlm_80_10_10_proportions_on_text_tokens_only():
    input_ids, attention, candidates = _streams()
    masked, labels = mask_tokens_for_mlm(input_ids, candidates, MASK, VOCAB, torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~candidates).any()
    assert torch.equal(masked[~chosen], input_ids[~chosen])
    assert torch.equal(labels[chosen], input_ids[chosen])
    rate = chosen.sum().item() / candidates.sum().item()
    assert abs(rate - 0.15) < 0.01
    as_mask = (masked[chosen] == MASK).float().mean().item()
    unchanged = (masked[chosen] == input_ids[chosen]).float().mean().item()
    replaced = 1 - as_mask - unchanged
    assert abs(as_mask - 0.8) < 0.02 and abs(unchanged - 0.1) < 0.02 and abs(replaced - 0.1) < 0.02
    assert ((masked == SEP) == (input_ids == SEP)).all() and ((masked == PAD) == (input_ids == PAD)).all()


def test_mlm_masks_nothing_at_probability_zero_unless_told_to_force_one():
    input_ids, _, candidates = _streams(rows=20)
    masked, labels = mask_tokens_for_mlm(input_ids, candidates, MASK, VOCAB, torch.Generator(), probability=0.0)
    assert (labels == IGNORE_INDEX).all() and torch.equal(masked, input_ids)
    masked, labels = mask_tokens_for_mlm(
        input_ids, candidates, MASK, VOCAB, torch.Generator(), probability=0.0, mask_first_if_none=True
    )
    for row in range(20):
        if candidates[row].any():
            first = candidates[row].nonzero()[0].item()
            assert first == 1 and masked[row, 1] == MASK and labels[row, 1] == input_ids[row, 1]
            assert (labels[row] != IGNORE_INDEX).sum() == 1
        else:
            assert (labels[row] == IGNORE_INDEX).all() and torch.equal(masked[row], input_ids[row])


def test_mlm_is_deterministic_under_a_seed():
    input_ids, _, candidates = _streams(rows=10)
    runs = [mask_tokens_for_mlm(input_ids, candidates, MASK, VOCAB, torch.Generator().manual_seed(seed))
            for seed in (5, 5, 6)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][1], runs[2][1])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"probability": 1.5}, "probability=1.5"), ({"mask_ratio": 0.9, "random_ratio": 0.2}, "sum to <= 1")],
)
def test_mlm_rejects_impossible_rates(kwargs, message):
    input_ids, _, candidates = _streams(rows=2)
    with pytest.raises(ValueError, match=message):
        mask_tokens_for_mlm(input_ids, candidates, MASK, VOCAB, torch.Generator(), **kwargs)
