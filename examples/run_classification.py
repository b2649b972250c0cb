#!/usr/bin/env python
r"""Multi-label diagnosis classification (the 14 CheXpert observations) with Trainer, following MedViLL's
classifier: image and report read together, pooled [CLS] -> linear layer, BCE (optionally with MedViLL's
per-label pos_weight). Metrics: AUROC micro/macro and F1 micro/macro at --threshold.

    python examples/run_classification.py --dataset demo --model_type medvill --config tiny \
        --output_dir outputs/demo-classification --do_train --do_eval
    python examples/run_classification.py --dataset mimic_cxr --data_dir /data/mimic-cxr-jpg \
        --model_name_or_path path/to/pretrained --output_dir outputs/mimic-cls --pos_weight --do_train --do_eval

Writes the model with its processor (loadable with medvlp_hf.AutoModelForImageTextClassification and AutoProcessor),
eval_results.json (eval_auroc_micro, eval_auroc_macro, eval_f1_micro, eval_f1_macro) and eval_predictions.jsonl.
Datasets: demo, mimic_cxr, report_jsonl.
"""

import shlex
import sys

import cpu_threads  # noqa: F401  (sets the OpenMP wait policy; must come before torch)

from transformers import set_seed

from medvlp_hf import AutoModelForImageTextClassification
from medvlp_hf.data import ClassificationCollator
from medvlp_hf.training import (
    MedVLPTrainer, build_processor, build_trainable_model, load_config, load_task_dataset, parse_arguments,
    run_phases, run_splits, setup_logging, take_push_to_hub, text_column, trainer_evaluator,
)
from medvlp_hf.training.classification import (
    ClassificationArguments, classification_compute_metrics, classification_prediction_rows, positive_class_weights,
    set_label_fields,
)
from medvlp_hf.training.datasets import CLASSIFICATION

# Linear warmup over 10% of the steps and weight decay 0.01 as in MedViLL's fine-tuning, with a learning rate for
# training the CPU presets from scratch; MedViLL fine-tuned its pre-trained model with 1e-4 for 10 epochs, batch 20.
DEFAULTS = {
    "learning_rate": 5e-4,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "num_train_epochs": 5,
    "per_device_train_batch_size": 20,
    "per_device_eval_batch_size": 32,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "label_names": ["labels"],
}
CARD_METRICS = ("auroc_micro", "auroc_macro", "f1_micro", "f1_macro")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, task_args, training_args = parse_arguments(
        (ClassificationArguments,), argv, __doc__, **DEFAULTS
    )
    push = take_push_to_hub(training_args)
    setup_logging(training_args)
    set_seed(training_args.seed)

    dataset_dict = load_task_dataset(data_args, CLASSIFICATION)
    splits, split_names = run_splits(dataset_dict, data_args, training_args)
    config = load_config(model_args)
    set_label_fields(config)
    if task_args.pos_weight and "train" in splits:
        config.classification_pos_weight = positive_class_weights(splits["train"])
    model = build_trainable_model(model_args, AutoModelForImageTextClassification, config)
    processor = build_processor(model_args, config)
    collator = ClassificationCollator(
        processor,
        text_column=text_column(next(iter(dataset_dict.values()))) if task_args.use_report_text else None,
        max_length=data_args.max_seq_length,
    )
    trainer = MedVLPTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.get("train"),
        eval_dataset=splits.get("eval"),
        data_collator=collator,
        processing_class=processor,
        compute_metrics=classification_compute_metrics(task_args.threshold),
    )
    return run_phases(
        trainer, processor, model_args, data_args, splits, split_names,
        evaluate=trainer_evaluator(trainer, classification_prediction_rows(task_args.threshold)),
        card_metrics=CARD_METRICS,
        push=push,
        command=shlex.join(["python", "examples/run_classification.py", *argv]),
    )


if __name__ == "__main__":
    main()
