"""medvlp-hf: medical vision-language pre-training models as first-class transformers models.

Importing the package registers every model with transformers' Auto classes.
"""

from .auto import AutoModelForImageTextClassification, AutoModelForRetrieval, config_class_for, default_processor
from .models.m2i2 import (
    M2I2Config,
    M2I2ForPreTraining,
    M2I2ForRetrieval,
    M2I2ForVQA,
    M2I2Model,
)
from .models.medvill import (
    MedViLLConfig,
    MedViLLDecodingCache,
    MedViLLForImageTextClassification,
    MedViLLForPreTraining,
    MedViLLForReportGeneration,
    MedViLLForRetrieval,
    MedViLLForVQA,
    MedViLLImageProcessor,
    MedViLLModel,
    MedViLLProcessor,
)
from .models.miss import (
    MISSConfig,
    MISSForPreTraining,
    MISSForReportGeneration,
    MISSForRetrieval,
    MISSForVQA,
    MISSImageProcessor,
    MISSModel,
    MISSProcessor,
)
from .resources import bert_base_uncased_vocab_file

__version__ = "0.1.0"

__all__ = [
    "AutoModelForImageTextClassification",
    "AutoModelForRetrieval",
    "M2I2Config",
    "M2I2ForPreTraining",
    "M2I2ForRetrieval",
    "M2I2ForVQA",
    "M2I2Model",
    "MedViLLConfig",
    "MedViLLDecodingCache",
    "MedViLLForImageTextClassification",
    "MedViLLForPreTraining",
    "MedViLLForReportGeneration",
    "MedViLLForRetrieval",
    "MedViLLForVQA",
    "MedViLLImageProcessor",
    "MedViLLModel",
    "MedViLLProcessor",
    "MISSConfig",
    "MISSForPreTraining",
    "MISSForReportGeneration",
    "MISSForRetrieval",
    "MISSForVQA",
    "MISSImageProcessor",
    "MISSModel",
    "MISSProcessor",
    "bert_base_uncased_vocab_file",
    "config_class_for",
    "default_processor",
]
