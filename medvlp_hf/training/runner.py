"""The phases every example script runs, in the style of transformers/examples/pytorch: logging setup,
training with checkpoint resume, saving the model with its processor, evaluation that writes
`<prefix>_results.json` and `<prefix>_predictions.jsonl`, and publishing with a model card (publishing.py)."""

import json
import logging
import os
import sys
from pathlib import Path

import datasets
import transformers

from .batch_norm import freeze_batch_norm_statistics
from .freezing import train_attention_only
from .lora import apply_peft, save_lora_result
from .modeling import build_model
from .publishing import card_results, publish

logger = logging.getLogger("medvlp_hf.training")

_RESUME_FROM_LAST = ("true", "last")


def setup_logging(training_args):
    """Log to stdout. The main process shows the run's own messages (the results and where they are written) and
    the warnings of transformers and datasets, without transformers' progress bars for writing and reading weight
    files; `--log_level info` (or `debug`) shows everything transformers reports too. Other processes log
    warnings only (`--log_level_replica`)."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    passive = training_args.should_log and training_args.log_level == "passive"
    logger.setLevel(min(log_level, logging.INFO) if passive else log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    transformers.utils.logging.set_tqdm_hook(None if log_level <= logging.INFO else _without_progress_bar)
    logger.info(
        f"Process rank: {training_args.process_index} of {training_args.world_size}, device: {training_args.device}, "
        f"bf16: {training_args.bf16}"
    )


def _without_progress_bar(factory, args, kwargs):
    return factory(*args, **{**kwargs, "disable": True})


def resume_checkpoint(training_args):
    """--resume_from_checkpoint: a checkpoint folder, or 'true'/'last' for the newest one in output_dir."""
    value = training_args.resume_from_checkpoint
    if value is None:
        return None
    if value.lower() in _RESUME_FROM_LAST:
        return True
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint {value!r} is not a folder; pass a checkpoint-<step> folder "
                                "or 'last' for the newest checkpoint in --output_dir.")
    return value


def build_trainable_model(model_args, model_class, config, initialize=None):
    """The model to hand to Trainer: loaded or initialised, then `initialize(model)` (e.g. a new head's start
    values), BatchNorm frozen when asked, only attention and the image encoder trainable with
    --train_attention_only, and PEFT-wrapped with --peft (--lora)."""
    model = build_model(model_args, model_class, config)
    if initialize is not None:
        initialize(model)
    if model_args.freeze_batch_norm:
        freeze_batch_norm_statistics(model)
    if model_args.train_attention_only:
        train_attention_only(model)
    return apply_peft(model, model_args) if model_args.peft else model


def train_and_save(trainer, processor, model_args, train_dataset):
    """Train (resuming when asked), save the model (or LoRA adapter) with its processor, log train metrics."""
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(trainer.args))
    if model_args.peft:
        save_lora_result(trainer, processor, merge=model_args.merge_adapter)
    else:
        trainer.save_model()
    metrics = {**result.metrics, "train_samples": len(train_dataset)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


def trainer_evaluator(trainer, prediction_rows, metrics_for=None):
    """evaluate(dataset, prefix) for `run_phases` through `trainer.predict`: the split is scored by
    `metrics_for(dataset)` (compute_metrics needing the split's own columns) or the trainer's compute_metrics,
    and `prediction_rows(output, dataset)` gives one predictions-file row per example."""

    def evaluate(dataset, prefix):
        if metrics_for is not None:
            trainer.compute_metrics = metrics_for(dataset)
        output = trainer.predict(dataset, metric_key_prefix=prefix)
        rows = prediction_rows(output, dataset) if trainer.is_world_process_zero() else ()
        return save_results(trainer, prefix, {**output.metrics, f"{prefix}_samples": len(dataset)}, rows)

    return evaluate


def save_results(trainer, prefix, metrics, rows):
    """Log `metrics`, write `<prefix>_results.json` and `<prefix>_predictions.jsonl` (main process only)."""
    trainer.log_metrics(prefix, metrics)
    trainer.save_metrics(prefix, metrics)
    if trainer.is_world_process_zero():
        write_jsonl(Path(trainer.args.output_dir) / f"{prefix}_predictions.jsonl", rows)
    return metrics


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def run_phases(trainer, processor, model_args, data_args, splits, split_names, evaluate, card_metrics=(), push=False,
               command=None, summary=None):
    """--do_train, --do_eval, --do_predict and --push_to_hub in that order; returns every metric.

    evaluate(dataset, prefix) scores one split and saves `<prefix>_results.json` (see `trainer_evaluator`);
    card_metrics names the evaluation metrics (without prefix) that go into the model card; summary(metrics,
    prefix, split) gives lines that explain an evaluated split's results in the log. The log ends with what the run
    wrote where."""
    metrics = {}
    if "train" in splits:
        metrics.update(train_and_save(trainer, processor, model_args, splits["train"]))
    for phase in ("eval", "predict"):
        if phase in splits:
            metrics.update(evaluate(splits[phase], phase))
            if summary is not None and trainer.is_world_process_zero():
                logger.info(summary(metrics, phase, split_names[phase]))
    if push:
        results = card_results(metrics, "eval", split_names["eval"], data_args.dataset, card_metrics) if "eval" in splits else []
        publish(trainer, processor, model_args, data_args, results, command)
    model = "the trained model" + (f" (a {model_args.peft.upper()} adapter)" if model_args.peft else "")
    written = [f"{model} and its processor"] if "train" in splits else []
    written += [f"{phase}_results.json and {phase}_predictions.jsonl" for phase in ("eval", "predict") if phase in splits]
    if written and trainer.is_world_process_zero():
        logger.info(f"Written to {trainer.args.output_dir}: {', '.join(written)}.")
    leave_process_group(trainer)
    return metrics


def leave_process_group(trainer):
    """Under torchrun / accelerate, every process waits for the others and then leaves the process group together:
    a process that simply exits takes the rendezvous store down (rank 0 hosts it) while another may still be using it,
    which aborts that one ("terminate called without an active exception") after a successful run."""
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
