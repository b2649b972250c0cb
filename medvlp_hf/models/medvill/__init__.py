"""MedViLL (Moon et al., IEEE JBHI 2022) as a transformers model."""

from .configuration_medvill import MedViLLConfig
from .image_processing_medvill import MedViLLImageProcessor
from .modeling_medvill import (
    MedViLLDecodingCache,
    MedViLLForImageTextClassification,
    MedViLLForPreTraining,
    MedViLLForReportGeneration,
    MedViLLForRetrieval,
    MedViLLForVQA,
    MedViLLModel,
    MedViLLPreTrainedModel,
)
from .processing_medvill import MedViLLProcessor

__all__ = [
    "MedViLLConfig",
    "MedViLLDecodingCache",
    "MedViLLForImageTextClassification",
    "MedViLLForPreTraining",
    "MedViLLForReportGeneration",
    "MedViLLForRetrieval",
    "MedViLLForVQA",
    "MedViLLImageProcessor",
    "MedViLLModel",
    "MedViLLPreTrainedModel",
    "MedViLLProcessor",
]
