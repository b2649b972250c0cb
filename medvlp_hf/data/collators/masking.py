"""BERT-style masked language modelling (MLM) on any tokenizer's text tokens."""
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
    mask_first_if_none: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose each candidate token (a bool mask like `input_ids`, True at text tokens) with `probability`; of
    those, `mask_ratio` become `mask_token_id`, `random_ratio` a random id in [0, vocab_size), the rest stay (BERT's
    80/10/10 by default). With `mask_first_if_none`, a row with candidates but no choice gets its first candidate
    masked (MedViLL's pre-training). Returns (masked input_ids, labels = original ids where chosen, -100 elsewhere)."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability={probability} must be between 0 and 1")
    if not 0.0 <= mask_ratio + random_ratio <= 1.0 or min(mask_ratio, random_ratio) < 0:
        raise ValueError(f"mask_ratio={mask_ratio} and random_ratio={random_ratio} must be >= 0 and sum to <= 1")
    shape = input_ids.shape
    chosen = (torch.rand(shape, generator=generator) < probability) & candidates
    action = torch.rand(shape, generator=generator)
    random_ids = torch.randint(vocab_size, shape, generator=generator)
    to_mask = chosen & (action < mask_ratio)
    to_random = chosen & (action >= mask_ratio) & (action < mask_ratio + random_ratio)
    if mask_first_if_none:
        forced_rows = (~chosen.any(dim=1) & candidates.any(dim=1)).nonzero().flatten()
        first_candidate = candidates.int().argmax(dim=1)[forced_rows]
        chosen[forced_rows, first_candidate] = True
        to_mask[forced_rows, first_candidate] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels
