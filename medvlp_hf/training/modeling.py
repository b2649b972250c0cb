"""Config, model and processor of an example run: loaded from a checkpoint, or built from a size preset
when training from scratch. Task heads get their label fields through `config_fields`."""

import json
import re

from transformers import AutoConfig, AutoProcessor, PretrainedConfig
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from ..auto import config_class_for, default_processor

_TOP_LEVEL_COMMA = re.compile(r",(?![^\[\]{}]*[\]}])")
_TRUE, _FALSE = ("true", "1", "yes", "y"), ("false", "0", "no", "n")


def parse_config_overrides(text, reference) -> dict:
    """'a=1,b=false,c=[1,2],text_config.d=0' -> typed values, each parsed as the type of the field in `reference` (a
    config); fields that are None or lists there take JSON values. A dotted key sets a field of a sub-config
    (`vision_config`, `text_config`): {"text_config": {"d": 0}}."""
    if not text:
        return {}
    overrides = {}
    for item in _TOP_LEVEL_COMMA.split(text):
        key, separator, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not separator or not key:
            raise ValueError(f"--config_overrides item {item!r} is not key=value.")
        *path, name = key.split(".")
        owner, target = reference, overrides
        for part in path:
            owner = getattr(owner, part, None)
            if not isinstance(owner, PretrainedConfig):
                raise ValueError(f"--config_overrides: {type(reference).__name__} has no sub-config {part!r} (in "
                                 f"{key!r}).")
            target = target.setdefault(part, {})
        if not hasattr(owner, name):
            raise ValueError(f"--config_overrides: {type(owner).__name__} has no field {name!r}.")
        target[name] = _typed_value(key, raw, getattr(owner, name))
    return overrides


def _merged(values: dict, overrides: dict) -> dict:
    """`values` with `overrides` written in, sub-config dicts merged key by key."""
    merged = dict(values)
    for key, value in overrides.items():
        merged[key] = _merged(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def _typed_value(key, raw, current):
    if isinstance(current, bool):
        if raw.lower() not in _TRUE + _FALSE:
            raise ValueError(f"--config_overrides: {key} needs true or false, got {raw!r}.")
        return raw.lower() in _TRUE
    try:
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, str):
            return raw
        return json.loads(raw)
    except ValueError as error:
        raise ValueError(f"--config_overrides: cannot read {key}={raw!r} as {type(current).__name__}: {error}") from None


def load_config(model_args):
    """The run's config: the checkpoint's or the preset's, with --config_overrides applied (and validated)."""
    if model_args.model_name_or_path is None:
        config_class = config_class_for(model_args.model_type)
        overrides = parse_config_overrides(model_args.config_overrides, config_class.from_preset(model_args.config))
        return config_class.from_preset(model_args.config, **overrides)
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code,
    )
    overrides = parse_config_overrides(model_args.config_overrides, config)
    return type(config).from_dict(_merged(config.to_dict(), overrides)) if overrides else config


def model_class_for(auto_class, config, model_args):
    """The class `build_model(model_args, auto_class, config)` builds: the head registered with `auto_class` for the
    config (every zoo model), or, with --trust_remote_code, the checkpoint's own code named in its `auto_map`. Lets a
    script read a model fact (e.g. `can_generate()`) before building the model.

    Raises ValueError when the config has no such head."""
    mapping = auto_class._model_mapping
    if type(config) in mapping:
        return mapping[type(config)]
    reference = (getattr(config, "auto_map", None) or {}).get(auto_class.__name__)
    if reference is not None and model_args.trust_remote_code and model_args.model_name_or_path is not None:
        return get_class_from_dynamic_module(
            reference, model_args.model_name_or_path, cache_dir=model_args.cache_dir, revision=model_args.model_revision
        )
    raise ValueError(f"{type(config).__name__} ({config.model_type}) has no {auto_class.__name__} head"
                     + (" registered; pass --trust_remote_code to use the checkpoint's own code." if reference else "."))


def build_model(model_args, model_class, config):
    """`model_class` (an Auto class such as AutoModelForVisualQuestionAnswering, or a head class) loaded from
    the checkpoint, or randomly initialised from `config`."""
    if model_args.model_name_or_path is None:
        return model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
    return model_class.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
    )


def build_processor(model_args, config):
    """The checkpoint's processor (or --processor_name_or_path), else the model family's default processor."""
    source = model_args.processor_name_or_path or model_args.model_name_or_path
    if source is None:
        return default_processor(config)
    try:
        processor = AutoProcessor.from_pretrained(
            source,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError) as error:
        raise ValueError(f"no processor could be loaded from {source!r} ({error}); save one with the checkpoint "
                         "or pass --processor_name_or_path.") from error
    _check_image_size(processor, config, source)
    return processor


def _check_image_size(processor, config, source):
    image_size = getattr(config, "image_size", getattr(getattr(config, "vision_config", None), "image_size", None))
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    processed = (size.get("height"), size.get("width"))
    if image_size is not None and None not in processed and processed != (image_size, image_size):
        raise ValueError(f"the processor from {source!r} makes {processed[0]}x{processed[1]} images but the model "
                         f"expects {image_size}x{image_size}; pass a matching --processor_name_or_path.")
