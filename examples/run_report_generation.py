#!/usr/bin/env python
r"""Radiology report generation with Trainer, following MedViLL's fine-tuning: sequence-to-sequence attention
mask, up to 3 report tokens per example replaced by [MASK] and predicted. Evaluation decodes each report from
the image alone with `generate()` and scores it against the reference (BLEU-1..4, ROUGE-L, CIDEr-D, MedViLL's
NLTK BLEU, optional METEOR, and clinical efficacy with the rule-based CheXpert labeler).

    python examples/run_report_generation.py --dataset demo --model_type medvill --config tiny \
        --output_dir outputs/demo-report --do_train --do_eval
    python examples/run_report_generation.py --dataset mimic_cxr --data_dir /data/mimic-cxr-jpg \
        --model_name_or_path path/to/pretrained --output_dir outputs/mimic-report --do_train --do_eval --do_predict

Writes the model with its processor (loadable with AutoModelForImageTextToText and AutoProcessor),
eval_results.json (eval_bleu_1..4, eval_rouge_l, eval_cider, eval_ce_f1_micro_14, ...) and
eval_predictions.jsonl (reference and generated report per example).
Datasets: demo, mimic_cxr, iu_xray, report_jsonl (MedViLL's {id,label,text,img} files).
"""

import shlex
import sys

import cpu_threads  # noqa: F401  (sets the OpenMP wait policy; must come before torch)

from transformers import AutoModelForImageTextToText, set_seed

from medvlp_hf.data import ReportGenerationCollator
from medvlp_hf.training import (
    ImageToTextTrainer, build_processor, build_trainable_model, load_config, load_task_dataset, parse_arguments,
    run_phases, run_splits, setup_logging, take_push_to_hub, text_column, trainer_evaluator,
)
from medvlp_hf.training.datasets import REPORT_GENERATION
from medvlp_hf.training.report_generation import (
    ReportGenerationArguments, report_generation_metrics, report_prediction_rows,
)

# MedViLL's fine-tuning schedule (linear warmup over 10% of the steps, weight decay 0.01) with a learning rate for
# training the CPU presets from scratch; pass --learning_rate 3e-5 (MedViLL's rate) to fine-tune a pre-trained model.
DEFAULTS = {
    "learning_rate": 5e-4,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "num_train_epochs": 5,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "label_names": ["labels"],
}
CARD_METRICS = ("bleu_1", "bleu_4", "rouge_l", "cider", "ce_f1_micro_14")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, task_args, training_args = parse_arguments(
        (ReportGenerationArguments,), argv, __doc__, **DEFAULTS
    )
    push = take_push_to_hub(training_args)
    setup_logging(training_args)
    set_seed(training_args.seed)

    dataset_dict = load_task_dataset(data_args, REPORT_GENERATION)
    splits, split_names = run_splits(dataset_dict, data_args, training_args)
    column = text_column(next(iter(dataset_dict.values())))
    config = load_config(model_args)
    model = build_trainable_model(model_args, AutoModelForImageTextToText, config)
    processor = build_processor(model_args, config)

    def collator(seed):
        return ReportGenerationCollator(processor, max_length=data_args.max_seq_length, text_column=column, seed=seed)

    metrics_for = report_generation_metrics(processor.tokenizer, column, task_args)
    trainer = ImageToTextTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.get("train"),
        eval_dataset=splits.get("eval"),
        data_collator=collator(training_args.seed),
        eval_data_collator=collator(training_args.seed),
        eval_collator_seed=training_args.seed,
        processing_class=processor,
        compute_metrics=metrics_for(splits["eval"]) if "eval" in splits else None,
        generation_kwargs={"max_new_tokens": task_args.max_new_tokens, "num_beams": task_args.num_beams},
    )
    return run_phases(
        trainer, processor, model_args, data_args, splits, split_names,
        evaluate=trainer_evaluator(trainer, report_prediction_rows(processor.tokenizer, column), metrics_for),
        card_metrics=CARD_METRICS,
        push=push,
        command=shlex.join(["python", "examples/run_report_generation.py", *argv]),
    )


if __name__ == "__main__":
    main()
