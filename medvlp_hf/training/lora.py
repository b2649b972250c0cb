"""LoRA fine-tuning (PEFT) of the zoo's models: which layers get adapters, which heads train fully, and how
the result is saved (adapter, optionally merged into a plain checkpoint)."""

from pathlib import Path

from peft import LoraConfig, get_peft_model

# model_type -> the Linear layers that get LoRA adapters: the joint encoder's attention query and value
# projections (module names `encoder.layers.{i}.attention.query|value`), as in the LoRA paper.
LORA_TARGET_MODULES = {"medvill": ("query", "value")}

# head class -> task heads that are newly initialised on a pre-trained encoder and therefore train in full
# (PEFT `modules_to_save`; they are saved with the adapter). Tied vocabulary heads stay frozen.
LORA_TRAINED_HEADS = {
    "MedViLLForVQA": ("answer_classifier",),
    "MedViLLForImageTextClassification": ("classifier",),
    "MedViLLForRetrieval": ("itm_head",),
    "MedViLLForPreTraining": ("itm_head",),
    "MedViLLForReportGeneration": (),
}

ADAPTER_SUBFOLDER = "adapter"


def lora_config_for(model, model_args) -> LoraConfig:
    if model_args.lora_target_modules:
        targets = [name.strip() for name in model_args.lora_target_modules.split(",") if name.strip()]
    elif model.config.model_type in LORA_TARGET_MODULES:
        targets = list(LORA_TARGET_MODULES[model.config.model_type])
    else:
        raise ValueError(f"no default LoRA target modules for model_type {model.config.model_type!r}; pass "
                         "--lora_target_modules.")
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=list(LORA_TRAINED_HEADS.get(type(model).__name__, ())),
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
