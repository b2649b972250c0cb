"""M2I2 (Li et al., ISBI 2023) as a transformers model."""

from .configuration_m2i2 import M2I2Config, M2I2MIMDecoderConfig, M2I2TextConfig, M2I2VisionConfig
from .modeling_m2i2 import (
    M2I2ForPreTraining,
    M2I2ForRetrieval,
    M2I2ForVQA,
    M2I2Model,
    M2I2PreTrainedModel,
    mask_caption_tokens,
    sincos_position_table,
    vqa_state_dict_from_pretraining,
)

__all__ = [
    "M2I2Config",
    "M2I2ForPreTraining",
    "M2I2ForRetrieval",
    "M2I2ForVQA",
    "M2I2MIMDecoderConfig",
    "M2I2Model",
    "M2I2PreTrainedModel",
    "M2I2TextConfig",
    "M2I2VisionConfig",
    "mask_caption_tokens",
    "sincos_position_table",
    "vqa_state_dict_from_pretraining",
]
