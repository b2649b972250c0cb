"""Auto-class registration: `import medvlp_hf` makes every zoo model loadable through transformers' Auto
classes, and `save_pretrained` writes remote code + `auto_map` so plain transformers loads it too.

Heads are found by their class-name suffix (`<Prefix>ForVQA`, ...). Heads transformers has no Auto class for
(retrieval, image-text classification) get the package's own Auto classes here, and `AutoModel` in the `auto_map`
of their saved folders, so plain transformers loads them with `trust_remote_code=True` too.
"""

from collections import OrderedDict

import transformers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
)
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from .models import m2i2, medvill, miss
from .resources import tokenizer_dir


class AutoModelForRetrieval(_BaseAutoModelClass):
    """The zoo's image-report retrieval heads (transformers has no Auto class for them)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForImageTextClassification(_BaseAutoModelClass):
    """The zoo's image(+text) classification heads, e.g. multi-label diagnosis (transformers has no Auto class)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


# class-name suffix -> (the Auto class that loads it, the `auto_map` entry of its saved folders)
_AUTO_HEADS = {
    "Model": (AutoModel, "AutoModel"),
    "ForPreTraining": (AutoModelForPreTraining, "AutoModelForPreTraining"),
    "ForVQA": (AutoModelForVisualQuestionAnswering, "AutoModelForVisualQuestionAnswering"),
    "ForReportGeneration": (AutoModelForImageTextToText, "AutoModelForImageTextToText"),
    "ForRetrieval": (AutoModelForRetrieval, "AutoModel"),
    "ForImageTextClassification": (AutoModelForImageTextClassification, "AutoModel"),
}
ZOO_MODEL_TYPES = []


def _register_model(model_type, module, prefix, processors=True):
    """Register a model folder's config, heads and processors with the Auto classes (and for remote code).

    `processors=False` is for a model whose processor is not written yet: its config and heads load through the Auto
    classes and as remote code, but it is not a `ZOO_MODEL_TYPES` entry (the example scripts build processors) until
    its processors are registered.
    """
    config_class = getattr(module, f"{prefix}Config")
    AutoConfig.register(model_type, config_class, exist_ok=True)
    config_class.register_for_auto_class()
    for suffix, (auto_class, auto_map_entry) in _AUTO_HEADS.items():
        model_class = getattr(module, f"{prefix}{suffix}", None)
        if model_class is None:
            continue
        auto_class.register(config_class, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_map_entry)
        # a model fact: transformers Auto classes that also load the class (e.g. a contrastive base model for
        # AutoModelForZeroShotImageClassification)
        for name in getattr(model_class, "additional_auto_classes", ()):
            getattr(transformers, name).register(config_class, model_class, exist_ok=True)
    if not processors:
        return
    image_processor_class = getattr(module, f"{prefix}ImageProcessor")
    processor_class = getattr(module, f"{prefix}Processor")
    AutoImageProcessor.register(config_class, slow_image_processor_class=image_processor_class, exist_ok=True)
    AutoProcessor.register(config_class, processor_class, exist_ok=True)
    image_processor_class.register_for_auto_class("AutoImageProcessor")
    processor_class.register_for_auto_class("AutoProcessor")
    ZOO_MODEL_TYPES.append(model_type)


def config_class_for(model_type: str):
    """The config class of a zoo `model_type` (e.g. to build a preset: `config_class_for("medvill").from_preset("tiny")`)."""
    if model_type not in ZOO_MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; medvlp-hf models: {ZOO_MODEL_TYPES}.")
    return CONFIG_MAPPING[model_type]


def default_processor(config):
    """A new processor for a model built from `config` (training from scratch, conversion): the model's processor
    class (registered with AutoProcessor) built from its bundled default tokenizer files, offline."""
    processor_class = PROCESSOR_MAPPING[type(config)]
    return processor_class.from_model_config(config, tokenizer_dir(processor_class.default_tokenizer))


_register_model("medvill", medvill, "MedViLL")
_register_model("miss", miss, "MISS")
_register_model("m2i2", m2i2, "M2I2", processors=False)  # M2I2Processor: the M2I2 processor work (issue 13)
