"""Config, model and processor of an example run: loaded from a checkpoint, or built from a size preset
when training from scratch. Task heads get their label fields through `config_fields`."""

import json
import re

from transformers import AutoConfig, AutoProcessor

from ..auto import config_class_for, default_processor

_TOP_LEVEL_COMMA = re.compile(r",(?![^\[\]{}]*[\]}])")
_TRUE, _FALSE = ("true", "1", "yes", "y"), ("false", "0", "no", "n")


def parse_config_overrides(text, reference) -> dict:
    """'a=1,b=false,c=[1,2]' -> typed values, each parsed as the type of the field in `reference` (a config);
    fields that are None or lists there take JSON values."""
    if not text:
        return {}
    overrides = {}
    for item in _TOP_LEVEL_COMMA.split(text):
        key, separator, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not separator or not key:
            raise ValueError(f"--config_overrides item {item!r} is not key=value.")
        if not hasattr(reference, key):
            raise ValueError(f"--config_overrides: {type(reference).__name__} has no field {key!r}.")
        overrides[key] = _typed_value(key, raw, getattr(reference, key))
    return overrides


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
    return type(config).from_dict({**config.to_dict(), **overrides}) if overrides else config


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
    image_size = getattr(config, "image_size", None)
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    processed = (size.get("height"), size.get("width"))
    if image_size is not None and None not in processed and processed != (image_size, image_size):
        raise ValueError(f"the processor from {source!r} makes {processed[0]}x{processed[1]} images but the model "
                         f"expects {image_size}x{image_size}; pass a matching --processor_name_or_path.")
