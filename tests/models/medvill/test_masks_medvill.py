"""The five MedViLL attention masks against the matrices the original code builds (originals.md §2.5).

Example: two image cells and the text `w1 w2` padded by one: joint sequence
`0 [CLS]  1 v1  2 v2  3 [SEP]  4 w1  5 w2  6 [SEP]  7 [PAD]` (the original's layout, index for index).
"""

import torch

from medvlp_hf.models.medvill.configuration_medvill import MedViLLConfig
from medvlp_hf.models.medvill.modeling_medvill import joint_attention_mask, text_stream_layout

PREFIX = 3
TEXT_MASK = torch.tensor([[1, 1, 1, 1, 0]])


def original_pretraining_mask(kind):
    """The square mask of data/dataset_origin.py, written out from its description."""
    size, image_block = 8, 4
    if kind == "bidirectional":
        return torch.tensor([[1] * 7 + [0]] * size)
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[:, :image_block] = 1
    mask[image_block:, image_block:] = torch.tril(torch.ones(4, 4, dtype=torch.long))
    if kind == "bar":
        mask[:image_block, :] = 1
    return mask


def ours(kind, attend_padding, use_s2s=None):
    return joint_attention_mask(kind, PREFIX, TEXT_MASK, 8, use_s2s=use_s2s, attend_padding=attend_padding)[0].long()


def test_pretraining_masks_equal_the_original_matrices():
    assert torch.equal(ours("bidirectional", True), original_pretraining_mask("bidirectional"))
    assert torch.equal(ours("s2s", True), original_pretraining_mask("s2s"))
    assert torch.equal(ours("bar", True), original_pretraining_mask("bar"))


def test_finetuning_masks_mask_padding_and_keep_real_rows():
    """Without the padding quirk, real rows equal the original and no row attends to padding."""
    for kind in ("s2s", "bar"):
        reference = original_pretraining_mask(kind)
        mask = ours(kind, False)
        assert torch.equal(mask[:7, :7], reference[:7, :7])
        assert mask[:, 7].sum() == 0
    fine_tuning_s2s = torch.tensor(
        [
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1, 1, 0],
        ]
    )
    assert torch.equal(ours("s2s", False)[:7], fine_tuning_s2s)


def test_non_crossing_mask_separates_image_and_text_blocks():
    expected = torch.tensor(
        [[1, 1, 1, 0, 0, 0, 0, 0]] * 3 + [[0, 0, 0, 1, 1, 1, 1, 0]] * 5
    )
    assert torch.equal(ours("non_crossing", False), expected)


def test_bi_s2s_picks_per_sample():
    text_mask = torch.cat([TEXT_MASK, TEXT_MASK])
    mixed = joint_attention_mask("bi_s2s", PREFIX, text_mask, 8, use_s2s=torch.tensor([True, False]))
    assert torch.equal(mixed[0].long(), ours("s2s", False))
    assert torch.equal(mixed[1].long(), ours("bidirectional", False))


def test_cached_rows_are_the_last_rows_of_the_full_mask():
    full = joint_attention_mask("s2s", PREFIX, TEXT_MASK, 8)
    last_two = joint_attention_mask("s2s", PREFIX, TEXT_MASK, 2)
    assert torch.equal(full[:, -2:], last_two)


def test_left_padding_shifts_nothing_but_the_padding():
    left = joint_attention_mask("s2s", PREFIX, torch.tensor([[0, 1, 1, 1, 1]]), 8)[0].long()
    right = ours("s2s", False)
    real_left = [0, 1, 2, 4, 5, 6, 7]
    real_right = [0, 1, 2, 3, 4, 5, 6]
    assert torch.equal(left[real_left][:, real_left], right[real_right][:, real_right])
    assert left[:, 3].sum() == 0


def test_position_and_segment_schemes():
    config = MedViLLConfig(image_size=64, num_pretraining_image_tokens=4, position_scheme="downstream", padding_token_type_id=0)
    positions, segments = text_stream_layout(config, TEXT_MASK)
    assert positions.tolist() == [[config.num_image_tokens + 1, 0, 1, 2, 3]]
    assert segments.tolist() == [[0, 1, 1, 1, 0]]
    pretraining = MedViLLConfig(image_size=64, num_pretraining_image_tokens=4)
    positions, segments = text_stream_layout(pretraining, torch.tensor([[0, 1, 1, 1]]))
    assert positions.tolist() == [[0, 0, 0, 1]]
    assert segments.tolist() == [[1, 0, 1, 1]]
