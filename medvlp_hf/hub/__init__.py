"""Model cards, publishing to the Hub, and seeding the Hub cache for offline (air-gapped) use."""

from .cache import seed_hub_cache
from .model_card import render_model_card, save_model_card
from .publish import push_to_hub

__all__ = ["push_to_hub", "render_model_card", "save_model_card", "seed_hub_cache"]
