"""Token masking on the text stream: BERT-style MLM (pre-training) and MedViLL's report-generation masks."""
from __future__ import annotations

import torch

IGNORE_INDEX = -100


def mask_tokens_for_mlm(
    input_ids: torch.Tensor,
    candidates: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    generator: torch.Generator,
    probability: float = 0.15,
    mask_ratio: float = 0.8,
    random_ratio: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose each candidate token with `probability`; of those, `mask_ratio` become [MASK], `random_ratio` a
    random id of the whole vocabulary, the rest stay. A row with candidates but no choice gets its first
    candidate masked (as MedViLL does). Returns (masked input_ids, labels with -100 where not chosen)."""
    if not 0.0 <= mask_ratio + random_ratio <= 1.0 or min(mask_ratio, random_ratio) < 0:
        raise ValueError(f"mask_ratio={mask_ratio} and random_ratio={random_ratio} must be >= 0 and sum to <= 1")
    shape = input_ids.shape
    chosen = (torch.rand(shape, generator=generator) < probability) & candidates
    action = torch.rand(shape, generator=generator)
    random_ids = torch.randint(vocab_size, shape, generator=generator)
    to_mask = chosen & (action < mask_ratio)
    to_random = chosen & (action >= mask_ratio) & (action < mask_ratio + random_ratio)
    forced_rows = (~chosen.any(dim=1) & candidates.any(dim=1)).nonzero().flatten()
    first_candidate = candidates.int().argmax(dim=1)[forced_rows]
    chosen[forced_rows, first_candidate] = True
    to_mask[forced_rows, first_candidate] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def last_real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token of every row (the closing [SEP]), for right or left padding."""
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.flip(dims=[1]).int().argmax(dim=1)


def mask_tokens_for_report_generation(
    input_ids: torch.Tensor,
    candidates: torch.Tensor,
    final_positions: torch.Tensor,
    mask_token_id: int,
    generator: torch.Generator,
    max_predictions: int = 3,
    probability: float = 0.15,
    final_token_probability: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MedViLL's seq2seq fine-tuning masks: per row `min(max_predictions, max(1, round(probability * n)))`
    of its `n` text tokens become [MASK] (never a random token); with `final_token_probability` one of those
    slots goes to the closing [SEP] at `final_positions` instead, so the model learns to stop. Returns
    (masked input_ids, labels = original ids at masked positions, -100 elsewhere)."""
    masked = input_ids.clone()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row in range(input_ids.shape[0]):
        text_positions = candidates[row].nonzero().flatten()
        count = len(text_positions)
        predictions = min(max_predictions, max(1, round(probability * count)))
        with_final = bool(torch.rand((), generator=generator) < final_token_probability) or count == 0
        shuffled = text_positions[torch.randperm(count, generator=generator)]
        positions = shuffled[: predictions - 1] if with_final else shuffled[:predictions]
        if with_final:
            positions = torch.cat([positions, final_positions[row].unsqueeze(0)])
        labels[row, positions] = input_ids[row, positions]
        masked[row, positions] = mask_token_id
    return masked, labels
