"""MISS (Chen et al., ICANN 2024) as a transformers model."""

from .configuration_miss import MISSConfig, MISSTextConfig, MISSVisionConfig
from .modeling_miss import (
    MISSForPreTraining,
    MISSForReportGeneration,
    MISSForRetrieval,
    MISSForVQA,
    MISSModel,
    MISSPreTrainedModel,
)

__all__ = [
    "MISSConfig",
    "MISSForPreTraining",
    "MISSForReportGeneration",
    "MISSForRetrieval",
    "MISSForVQA",
    "MISSModel",
    "MISSPreTrainedModel",
    "MISSTextConfig",
    "MISSVisionConfig",
]
