"""PEFT fine-tuning (LoRA, IA3) of the zoo's models: which layers get adapters, which modules train fully, and how
the result is saved (adapter, optionally merged into a plain checkpoint).

The model says both: `model.lora_target_modules` (the Linear layers that get LoRA adapters), `ia3_target_modules` /
`ia3_feedforward_modules` / `ia3_fully_trained_modules` (its IA3 recipe) and `model.new_head_modules` (the head's own
modules, trained in full). Only PEFT's own `get_peft_model` / `PeftModel` are used: transformers' `model.add_adapter`
integration asks for a newer PEFT than is released.
"""

import warnings
from pathlib import Path

from peft import IA3Config, LoraConfig, get_peft_model
from peft.utils import ModulesToSaveWrapper

ADAPTER_SUBFOLDER = "adapter"


def lora_target_modules(model, model_args) -> list[str]:
    """--lora_target_modules, else the model's own `lora_target_modules`."""
    if model_args.lora_target_modules:
        return [name.strip() for name in model_args.lora_target_modules.split(",") if name.strip()]
    targets = getattr(model, "lora_target_modules", None)
    if not targets:
        raise ValueError(f"{type(model).__name__} names no default LoRA target modules (`lora_target_modules`); "
                         "pass --lora_target_modules, e.g. 'query,value'.")
    return list(targets)


def fully_trained_head_modules(model) -> list[str]:
    """The head modules trained in full next to the adapters (PEFT `modules_to_save`, saved with the adapter): the
    model's `new_head_modules`, less those holding a tied weight. A vocabulary head tied to the word embeddings
    stays frozen and tied: a trained copy would untie it from the embeddings it decodes into."""
    tied = {name for pair in model.all_tied_weights_keys.items() for name in pair}
    return [
        module for module in getattr(model, "new_head_modules", ())
        if not any(name.startswith(f"{module}.") for name in tied)
    ]


def lora_config_for(model, model_args) -> LoraConfig:
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=lora_target_modules(model, model_args),
        modules_to_save=fully_trained_head_modules(model),
    )


def ia3_config_for(model) -> IA3Config:
    """IA3 on the model's `ia3_target_modules` (those in `ia3_feedforward_modules` scaled on their input), with its
    `ia3_fully_trained_modules` and new head modules trained in full (PEFT `modules_to_save`).

    Raises ValueError for a model that names no IA3 target modules."""
    targets = getattr(model, "ia3_target_modules", None)
    if not targets:
        raise ValueError(f"{type(model).__name__} names no IA3 target modules (`ia3_target_modules`); use --peft lora.")
    fully_trained = [*getattr(model, "ia3_fully_trained_modules", ()), *fully_trained_head_modules(model)]
    return IA3Config(
        target_modules=list(targets),
        feedforward_modules=list(getattr(model, "ia3_feedforward_modules", ())),
        modules_to_save=list(dict.fromkeys(fully_trained)),
    )


def apply_lora(model, model_args):
    """Wrap `model` in a PeftModel whose only trainable weights are the adapters and the task head."""
    return get_peft_model(model, lora_config_for(model, model_args))


def apply_peft(model, model_args):
    """Wrap `model` in a PeftModel of `--peft` (lora or ia3)."""
    if model_args.peft == "lora":
        return apply_lora(model, model_args)
    if model_args.peft == "ia3":
        return get_peft_model(model, ia3_config_for(model))
    raise ValueError(f"--peft {model_args.peft!r} is not supported; choose lora or ia3.")


def _take_fully_trained_copies(peft_model):
    """Put each fully trained module's trained copy (PEFT `modules_to_save`) in place of its wrapper, before merging:
    PEFT 0.21's `merge_and_unload` handles a wrapped Linear or Sequential head but fails on a wrapped sub-model such as
    a ViT (IA3's base `_replace_module` reads a `.weight` from it)."""
    model = peft_model.get_base_model()
    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child_name, module.modules_to_save[module.active_adapters[0]])


def _keep_weight_tying(model, tied) -> bool:
    """Undo PEFT's `tie_word_embeddings=False` after a merge when the model's tied weights are still tied (returns
    whether it did). PEFT compares `get_output_embeddings()` with `get_input_embeddings()`, but in an encoder-decoder
    head (MISS's VQA model) the LM head is tied to the decoder's word embeddings, not to the encoder's input ones; a
    config left untied would make the saved checkpoint, which stores a tied weight once, load without it."""
    if not tied or model.config.tie_word_embeddings:
        return False
    parameters = dict(model.named_parameters(remove_duplicate=False))
    if any(parameters[target] is not parameters[source] for target, source in model.all_tied_weights_keys.items()):
        return False
    model.config.tie_word_embeddings = True
    return True


def save_lora_result(trainer, processor, merge: bool, output_dir=None):
    """Save a PEFT (LoRA or IA3) run. Without `merge`: the adapter and processor in output_dir. With `merge`: the adapter in
    output_dir/adapter, then the adapters are merged (the trainer continues with the merged model) and the
    plain checkpoint plus processor go to output_dir, loadable by the Auto classes without PEFT."""
    output_dir = Path(output_dir or trainer.args.output_dir)
    if not merge:
        trainer.save_model(str(output_dir))
        return
    trainer.save_model(str(output_dir / ADAPTER_SUBFOLDER))
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    _take_fully_trained_copies(peft_model)
    tied = peft_model.get_base_model().config.tie_word_embeddings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = peft_model.merge_and_unload()
    untied_by_peft = _keep_weight_tying(merged, tied)
    for warning in caught:
        if not (untied_by_peft and "no longer tied after merging" in str(warning.message)):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    trainer.model = trainer.model_wrapped = merged
    merged.save_pretrained(output_dir, is_main_process=trainer.args.should_save)
    if trainer.args.should_save:
        processor.save_pretrained(output_dir)
