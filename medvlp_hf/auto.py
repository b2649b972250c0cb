"""Auto-class registration: `import medvlp_hf` makes every zoo model loadable through transformers' Auto
classes, and `save_pretrained` writes remote code + `auto_map` so plain transformers loads it too."""

from collections import OrderedDict

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

from .models import medvill

MODEL_FOR_RETRIEVAL_MAPPING = OrderedDict()


class AutoModelForRetrieval(_BaseAutoModelClass):
    """The zoo's image-report retrieval heads (transformers has no Auto class for them)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


_AUTO_HEADS = {
    "AutoModel": (AutoModel, "Model"),
    "AutoModelForPreTraining": (AutoModelForPreTraining, "ForPreTraining"),
    "AutoModelForVisualQuestionAnswering": (AutoModelForVisualQuestionAnswering, "ForVQA"),
    "AutoModelForImageTextToText": (AutoModelForImageTextToText, "ForReportGeneration"),
}


def _register_model(model_type, module, prefix):
    config_class = getattr(module, f"{prefix}Config")
    AutoConfig.register(model_type, config_class, exist_ok=True)
    config_class.register_for_auto_class()
    for auto_name, (auto_class, suffix) in _AUTO_HEADS.items():
        model_class = getattr(module, f"{prefix}{suffix}", None)
        if model_class is None:
            continue
        auto_class.register(config_class, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_name)
    image_processor_class = getattr(module, f"{prefix}ImageProcessor")
    processor_class = getattr(module, f"{prefix}Processor")
    AutoImageProcessor.register(config_class, slow_image_processor_class=image_processor_class, exist_ok=True)
    AutoProcessor.register(config_class, processor_class, exist_ok=True)
    image_processor_class.register_for_auto_class("AutoImageProcessor")
    processor_class.register_for_auto_class("AutoProcessor")
    retrieval_class = getattr(module, f"{prefix}ForRetrieval", None)
    if retrieval_class is not None:
        AutoModelForRetrieval.register(config_class, retrieval_class, exist_ok=True)


_register_model("medvill", medvill, "MedViLL")
