"""MLM (80/10/10) and MedViLL report-generation masking on text-stream tensors."""
import torch

from medvlp_hf.data.collators import IGNORE_INDEX, mask_tokens_for_mlm, mask_tokens_for_report_generation
from medvlp_hf.data.collators.masking import last_real_positions

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


def test_mlm_forces_the_first_text_token_when_nothing_is_chosen():
    input_ids, _, candidates = _streams(rows=20)
    masked, labels = mask_tokens_for_mlm(input_ids, candidates, MASK, VOCAB, torch.Generator(), probability=0.0)
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


def test_last_real_positions_for_right_and_left_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_real_positions(mask).tolist() == [2, 4, 4]


def test_report_generation_masks_follow_the_medvill_rule():
    input_ids, attention, candidates = _streams(rows=400)
    final = last_real_positions(attention)
    masked, labels = mask_tokens_for_report_generation(
        input_ids, candidates, final, MASK, torch.Generator().manual_seed(2))
    with_final = 0
    for row in range(input_ids.shape[0]):
        n_text = candidates[row].sum().item()
        expected = min(3, max(1, round(0.15 * n_text)))
        positions = (labels[row] != IGNORE_INDEX).nonzero().flatten()
        assert len(positions) == expected
        assert (masked[row, positions] == MASK).all()
        assert torch.equal(labels[row, positions], input_ids[row, positions])
        others = torch.ones_like(attention[row], dtype=torch.bool)
        others[positions] = False
        assert torch.equal(masked[row, others], input_ids[row, others])
        allowed = candidates[row].clone()
        allowed[final[row]] = True
        assert allowed[positions].all() and positions.min() > 0
        if final[row] in positions:
            with_final += 1
            assert labels[row, final[row]] == SEP
    assert 0.4 < with_final / input_ids.shape[0] < 0.6


def test_report_generation_without_final_token_and_empty_reports():
    input_ids = torch.tensor([[SEP, SEP, PAD], [SEP, 1500, SEP]])
    attention = torch.tensor([[1, 1, 0], [1, 1, 1]])
    candidates = attention.bool() & (input_ids != SEP) & (input_ids != PAD)
    masked, labels = mask_tokens_for_report_generation(
        input_ids, candidates, last_real_positions(attention), MASK, torch.Generator(), final_token_probability=0.0)
    assert labels.tolist() == [[IGNORE_INDEX, SEP, IGNORE_INDEX], [IGNORE_INDEX, 1500, IGNORE_INDEX]]
    assert masked.tolist() == [[SEP, MASK, PAD], [SEP, MASK, SEP]]
