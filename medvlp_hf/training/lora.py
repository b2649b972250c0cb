"""LoRA fine-tuning (PEFT) of the zoo's models: which layers get adapters, which heads train fully, and how
the result is saved (adapter, optionally merged into a plain checkpoint).

The model says both: `model.lora_target_modules` (the Linear layers that get adapters) and
`model.new_head_modules` (the head's own modules, trained in full). Only PEFT's own `get_peft_model` /
`PeftModel` are used: transformers' `model.add_adapter` integration asks for a newer PEFT than is released.
"""

from pathlib import Path

from peft import LoraConfig, get_peft_model

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


def apply_lora(model, model_args):
    """Wrap `model` in a PeftModel whose only trainable weights are the adapters and the task head."""
    return get_peft_model(model, lora_config_for(model, model_args))


def save_lora_result(trainer, processor, merge: bool, output_dir=None):
    """Save a LoRA run. Without `merge`: the adapter and processor in output_dir. With `merge`: the adapter in
    output_dir/adapter, then the adapters are merged (the trainer continues with the merged model) and the
    plain checkpoint plus processor go to output_dir, loadable by the Auto classes without PEFT."""
    output_dir = Path(output_dir or trainer.args.output_dir)
    if not merge:
        trainer.save_model(str(output_dir))
        return
    trainer.save_model(str(output_dir / ADAPTER_SUBFOLDER))
    merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    trainer.model = trainer.model_wrapped = merged
    merged.save_pretrained(output_dir, is_main_process=trainer.args.should_save)
    if trainer.args.should_save:
        processor.save_pretrained(output_dir)
