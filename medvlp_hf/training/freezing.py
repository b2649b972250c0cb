"""Partial fine-tuning: which of a model's own weights train."""

ATTENTION = "attention"


def train_attention_only(model) -> list[str]:
    """Freeze every weight except those of the model's image encoder (`model.image_encoder_modules`, trained in full)
    and those whose name contains "attention" (self- and cross-attention with their output dense and LayerNorm):
    MISS's released SLAKE recipe (`train_slake.py`), which tests `'attention' in name` as here. Returns the names of
    the weights that train.

    Raises ValueError for a model that names no image encoder (the recipe would freeze it by accident)."""
    image_encoder = getattr(model, "image_encoder_modules", None)
    if not image_encoder:
        raise ValueError(f"{type(model).__name__} names no image encoder (`image_encoder_modules`), which "
                         "--train_attention_only trains in full; train all weights or use --peft instead.")
    prefixes = tuple(f"{module}." for module in image_encoder)
    trained = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes) or ATTENTION in name)
        if parameter.requires_grad:
            trained.append(name)
    return trained
