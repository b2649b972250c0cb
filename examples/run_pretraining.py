#!/usr/bin/env python
r"""Vision-language pre-training with Trainer, following MedViLL: masked language modelling on the report
(15% of its tokens, 80/10/10) plus image-report matching against label-conditioned negatives (a report of a
record with a different CheXpert label set; random other reports for data without labels), under the
attention mask of the config (`attention_mask_type`: bar (MedViLL), bidirectional, s2s, bi_s2s, non_crossing;
set it with --config_overrides attention_mask_type=bi_s2s).

    python examples/run_pretraining.py --dataset demo --model_type medvill --config tiny \
        --output_dir outputs/demo-pretraining --do_train --do_eval
    python examples/run_pretraining.py --dataset mimic_cxr --data_dir /data/mimic-cxr-jpg --model_type medvill \
        --config base --output_dir outputs/medvill-base --do_train --do_eval

Writes the model with its processor (loadable with AutoModelForPreTraining and AutoProcessor; the downstream
scripts take the folder as --model_name_or_path), eval_results.json (eval_loss, eval_mlm_accuracy,
eval_itm_accuracy) and eval_predictions.jsonl. Datasets: demo, mimic_cxr, report_jsonl, iu_xray, roco, medicat.
"""

import shlex
import sys

import cpu_threads  # noqa: F401  (sets the OpenMP wait policy; must come before torch)

from transformers import AutoModelForPreTraining, set_seed

from medvlp_hf.data import PreTrainingCollator
from medvlp_hf.training import (
    MedVLPTrainer, build_processor, build_trainable_model, load_config, load_task_dataset, parse_arguments,
    run_phases, run_splits, setup_logging, take_push_to_hub, text_column, trainer_evaluator,
)
from medvlp_hf.training.datasets import PRETRAINING
from medvlp_hf.training.pretraining import (
    PREDICTION_OUTPUTS, negatives_for, pretraining_metrics, pretraining_prediction_rows, reduce_pretraining_outputs,
)

# A learning rate and length for the CPU presets on small data; MedViLL pre-trained the base model with AdamW 1e-5
# for 50 epochs at batch 32 per GPU on 8 GPUs.
DEFAULTS = {
    "learning_rate": 5e-4,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "num_train_epochs": 5,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "label_names": ["labels", "itm_labels"],
}
CARD_METRICS = ("mlm_accuracy", "itm_accuracy")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, training_args = parse_arguments((), argv, __doc__, **DEFAULTS)
    push = take_push_to_hub(training_args)
    setup_logging(training_args)
    set_seed(training_args.seed)

    dataset_dict = load_task_dataset(data_args, PRETRAINING)
    splits, split_names = run_splits(dataset_dict, data_args, training_args)
    column = text_column(next(iter(dataset_dict.values())))
    config = load_config(model_args)
    model = build_trainable_model(model_args, AutoModelForPreTraining, config)
    processor = build_processor(model_args, config)

    def collator(dataset):
        if dataset is None:
            return None
        return PreTrainingCollator(processor, negatives=negatives_for(dataset, column), mask_first_if_none=True,
                                   max_length=data_args.max_seq_length, text_column=column, seed=training_args.seed)

    trainer = MedVLPTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.get("train"),
        eval_dataset=splits.get("eval"),
        data_collator=collator(splits.get("train")),
        eval_data_collator=collator(splits.get("eval") or splits.get("predict")),
        eval_collator_seed=training_args.seed,
        processing_class=processor,
        compute_metrics=pretraining_metrics,
        preprocess_logits_for_metrics=reduce_pretraining_outputs,
        prediction_outputs=PREDICTION_OUTPUTS,
    )
    return run_phases(
        trainer, processor, model_args, data_args, splits, split_names,
        evaluate=trainer_evaluator(trainer, pretraining_prediction_rows),
        card_metrics=CARD_METRICS,
        push=push,
        command=shlex.join(["python", "examples/run_pretraining.py", *argv]),
    )


if __name__ == "__main__":
    main()
