"""MISS (Chen et al., ICANN 2024) as a transformers model."""

from .configuration_miss import MISSConfig, MISSTextConfig, MISSVisionConfig
from .image_processing_miss import MISSImageProcessor
from .modeling_miss import (
    MISSForPreTraining,
    MISSForReportGeneration,
    MISSForRetrieval,
    MISSForVQA,
    MISSModel,
    MISSPreTrainedModel,
)
from .processing_miss import MISSProcessor

__all__ = [
    "MISSConfig",
    "MISSForPreTraining",
    "MISSForReportGeneration",
    "MISSForRetrieval",
    "MISSForVQA",
    "MISSImageProcessor",
    "MISSModel",
    "MISSPreTrainedModel",
    "MISSProcessor",
    "MISSTextConfig",
    "MISSVisionConfig",
]
