"""MISS (Chen et al., ICANN 2024) as a transformers model."""

from .image_processing_miss import MISSImageProcessor
from .processing_miss import MISSProcessor

__all__ = ["MISSImageProcessor", "MISSProcessor"]
