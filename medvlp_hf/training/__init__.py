"""Trainer pieces shared by the example scripts: arguments, model/processor/dataset selection, LoRA,
frozen BatchNorm statistics, Trainer subclasses, and the train/evaluate/publish phases."""

from .arguments import DataArguments, ModelArguments, parse_arguments
from .batch_norm import freeze_batch_norm_statistics
from .callbacks import MomentumUpdateCallback
from .freezing import train_attention_only
from .datasets import DATASETS, load_task_dataset, run_splits, text_column
from .lora import (
    apply_lora, apply_peft, fully_trained_head_modules, ia3_config_for, lora_target_modules, save_lora_result,
)
from .modeling import build_model, build_processor, load_config, model_class_for, parse_config_overrides
from .publishing import card_results, publish, take_push_to_hub
from .runner import (
    build_trainable_model, run_phases, save_results, setup_logging, train_and_save, trainer_evaluator,
)
from .trainer import AnswerRankingTrainer, ImageToTextTrainer, MedVLPTrainer

__all__ = [
    "AnswerRankingTrainer",
    "DATASETS",
    "DataArguments",
    "ImageToTextTrainer",
    "MedVLPTrainer",
    "MomentumUpdateCallback",
    "ModelArguments",
    "apply_lora",
    "apply_peft",
    "build_model",
    "build_processor",
    "build_trainable_model",
    "card_results",
    "freeze_batch_norm_statistics",
    "fully_trained_head_modules",
    "ia3_config_for",
    "load_config",
    "load_task_dataset",
    "lora_target_modules",
    "model_class_for",
    "parse_arguments",
    "parse_config_overrides",
    "publish",
    "run_phases",
    "run_splits",
    "save_lora_result",
    "save_results",
    "setup_logging",
    "take_push_to_hub",
    "text_column",
    "train_attention_only",
    "train_and_save",
    "trainer_evaluator",
]
