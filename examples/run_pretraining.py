#!/usr/bin/env python
r"""Vision-language pre-training with Trainer, in the protocol of the model's paper:

- MedViLL: masked language modelling on the report (15% of its tokens, 80/10/10) plus image-report matching
  against label-conditioned negatives (a report of a record with a different CheXpert label set; random other
  reports for data without labels), under the attention mask of the config (`attention_mask_type`: bar (MedViLL),
  bidirectional, s2s, bi_s2s, non_crossing; set it with --config_overrides attention_mask_type=bi_s2s);
- models that pre-train on matching pairs (MISS): the batch holds (image, caption) pairs and the caption's LM labels,
  the model draws everything else itself: ITC with momentum encoders and feature queues (updated once per optimizer
  step by MomentumUpdateCallback, never in evaluation), ITM on hard negatives, LM with label smoothing;
- M2I2 (also on matching pairs): ITC with momentum encoders, queues and momentum distillation, ITM on hard
  negatives, MLM with momentum-distilled soft labels (the masking drawn inside the model, as the original does) and
  MAE's masked image modelling (MIM), each on an MAE-masked image; momentum encoders and queues updated once per
  optimizer step by MomentumUpdateCallback.

    python examples/run_pretraining.py --dataset demo --model_type medvill --config tiny \
        --output_dir outputs/demo-pretraining --do_train --do_eval
    python examples/run_pretraining.py --dataset mimic_cxr --data_dir /data/mimic-cxr-jpg --model_type medvill \
        --config base --output_dir outputs/medvill-base --do_train --do_eval
    python examples/run_pretraining.py --dataset transcap_nih --data_dir ../shared/data/nih_cxr14_sample \
        --model_type miss --config small --output_dir outputs/miss-transcap --do_train --do_eval
    python examples/run_pretraining.py --dataset roco --data_dir ROCO --model_type m2i2 --config small \
        --output_dir outputs/m2i2-roco --do_train --do_eval

Writes the model with its processor (loadable with AutoModelForPreTraining and AutoProcessor; the downstream
scripts take the folder as --model_name_or_path), eval_results.json (eval_loss and, MedViLL, eval_mlm_accuracy,
eval_itm_accuracy; MISS, eval_itc_image_to_text_accuracy, eval_itc_text_to_image_accuracy, eval_itm_accuracy,
eval_lm_loss, eval_lm_accuracy; M2I2, the ITC and ITM ones, eval_mlm_loss, eval_mlm_accuracy, eval_mim_loss) and
eval_predictions.jsonl. Datasets: demo, mimic_cxr, report_jsonl, iu_xray, roco, medicat, image_caption_json
(--data_dir holding train.json / validation.json / test.json, ALBEF's [{"image", "caption"}] lists, images relative
to --data_dir), transcap_nih (TransCap captions of NIH ChestX-ray14 labels, new ones every epoch).
"""
import shlex
import sys

import cpu_threads  # noqa: F401  (sets the OpenMP wait policy; must come before torch)

from transformers import AutoModelForPreTraining, set_seed

from medvlp_hf.data import PreTrainingCollator
from medvlp_hf.data.collators.base import text_labels_mode
from medvlp_hf.training import (
    MedVLPTrainer, build_processor, build_trainable_model, load_config, load_task_dataset, parse_arguments,
    run_phases, run_splits, setup_logging, take_push_to_hub, text_column, trainer_evaluator,
)
from medvlp_hf.training.datasets import PRETRAINING
from medvlp_hf.training.pretraining import (
    PREDICTION_OUTPUTS, MatchingPairMetrics, check_pair_batches, negatives_for, pretraining_metrics,
    pretraining_prediction_rows, reduce_pretraining_outputs,
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
CARD_METRICS = ("mlm_accuracy", "itm_accuracy", "itc_image_to_text_accuracy", "lm_loss", "mim_loss")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, training_args = parse_arguments((), argv, __doc__, **DEFAULTS)
    push = take_push_to_hub(training_args)
    setup_logging(training_args)
    set_seed(training_args.seed)

    dataset_dict = load_task_dataset(data_args, PRETRAINING, seed=training_args.seed)
    splits, split_names = run_splits(dataset_dict, data_args, training_args)
    column = text_column(next(iter(dataset_dict.values())))
    config = load_config(model_args)
    model = build_trainable_model(model_args, AutoModelForPreTraining, config)
    processor = build_processor(model_args, config)

    pairs_only = getattr(model, "pretrains_on_matching_pairs", False)
    if pairs_only:
        check_pair_batches(splits, training_args)
        # MISS's processor writes the captions' LM labels; M2I2 draws its MLM targets inside the model, so its batch
        # has no labels and every forward still returns the loss
        training_args.label_names = ["labels"] if text_labels_mode(processor) else []
        objectives = MatchingPairMetrics(config.pretraining_objectives, getattr(config, "label_smoothing", 0.0))

        def collator(dataset):
            return PreTrainingCollator(processor, mlm_probability=None, max_length=data_args.max_seq_length,
                                       text_column=column, seed=training_args.seed)

        evaluation = dict(compute_metrics=objectives.compute_metrics, preprocess_logits_for_metrics=objectives.reduce,
                          prediction_outputs=objectives.prediction_outputs)
        prediction_rows = objectives.prediction_rows
    else:

        def collator(dataset):
            if dataset is None:
                return None
            return PreTrainingCollator(processor, negatives=negatives_for(dataset, column), mask_first_if_none=True,
                                       max_length=data_args.max_seq_length, text_column=column,
                                       seed=training_args.seed)

        evaluation = dict(compute_metrics=pretraining_metrics, preprocess_logits_for_metrics=reduce_pretraining_outputs,
                          prediction_outputs=PREDICTION_OUTPUTS)
        prediction_rows = pretraining_prediction_rows

    trainer = MedVLPTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.get("train"),
        eval_dataset=splits.get("eval"),
        data_collator=collator(splits.get("train")),
        eval_data_collator=collator(splits.get("eval") or splits.get("predict")),
        eval_collator_seed=training_args.seed,
        processing_class=processor,
        **evaluation,
    )
    if pairs_only and not training_args.label_names:
        trainer.can_return_loss = True
    return run_phases(
        trainer, processor, model_args, data_args, splits, split_names,
        evaluate=trainer_evaluator(trainer, prediction_rows),
        card_metrics=CARD_METRICS,
        push=push,
        command=shlex.join(["python", "examples/run_pretraining.py", *argv]),
    )


if __name__ == "__main__":
    main()
