"""MedViLL (Moon et al., IEEE JBHI 2022) as a transformers model."""

from .configuration_medvill import MedViLLConfig
from .modeling_medvill import (
    MedViLLForImageTextClassification,
    MedViLLForPreTraining,
    MedViLLForReportGeneration,
    MedViLLForRetrieval,
    MedViLLForVQA,
    MedViLLModel,
    MedViLLPreTrainedModel,
)

__all__ = [
    "MedViLLConfig",
    "MedViLLForImageTextClassification",
    "MedViLLForPreTraining",
    "MedViLLForReportGeneration",
    "MedViLLForRetrieval",
    "MedViLLForVQA",
    "MedViLLModel",
    "MedViLLPreTrainedModel",
]
