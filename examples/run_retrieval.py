#!/usr/bin/env python
r"""Image-report retrieval with Trainer, by the protocol of the model (a fact of its class):

- Contrastive models with a matching head (MISS, M2I2;
  `medvlp_hf.training.two_stage_retrieval.TwoStageRetrievalModel`), as BLIP's and ALBEF's retrieval recipes:
  fine-tuned on matched pairs with ITC + ITM on hard negatives from the batch, then evaluated in two stages: ITC
  similarity of every image with every text, the top --rerank_top_k of each query re-ranked by the matching head.
  R@1/5/10 in both directions with instance relevance (eval_i2t_r@1, ...) and the similarity's alone
  (eval_itc_i2t_r@1, ...); --image_id_column groups records showing one image.
- MedViLL: the matching head is fine-tuned on one true and one label-conditioned negative pair per record (the
  negative's image or report comes from a record with a different CheXpert label set), then every query is ranked
  against --num_candidates candidates, every candidate with the query's label set counting as relevant. Metrics
  per direction: Hit@K, Recall@K, Precision@K (K = 1, 5, 10), MRR and mAP@K under three named normalisers.

    python examples/run_retrieval.py --dataset demo --model_type medvill --config tiny \
        --output_dir outputs/demo-retrieval --do_train --do_eval
    python examples/run_retrieval.py --dataset demo --model_type miss --config tiny \
        --output_dir outputs/demo-retrieval-miss --do_train --do_eval --rerank_top_k 16
    python examples/run_retrieval.py --dataset demo --model_type m2i2 --config tiny \
        --output_dir outputs/demo-retrieval-m2i2 --do_train --do_eval --rerank_top_k 16
    python examples/run_retrieval.py --dataset report_jsonl --data_dir /data/openi_jsonl \
        --model_name_or_path path/to/pretrained --output_dir outputs/openi-retrieval --do_train --do_eval

Writes the model with its processor (loadable with medvlp_hf.AutoModelForRetrieval and AutoProcessor),
eval_results.json (eval_i2t_r@1 or eval_i2t_hit@1, ...) and eval_predictions.jsonl (each query's top candidates).
Datasets: demo, mimic_cxr, report_jsonl (MedViLL's protocol needs their CheXpert labels, which define relevance).
"""

import shlex
import sys

import cpu_threads  # noqa: F401  (sets the OpenMP wait policy; must come before torch)

from transformers import set_seed

from medvlp_hf import AutoModelForRetrieval
from medvlp_hf.data import LabelConditionedNegatives, MatchedPairCollator, RetrievalPairCollator
from medvlp_hf.training import (
    MedVLPTrainer, build_processor, build_trainable_model, load_config, load_task_dataset, parse_arguments,
    run_phases, run_splits, setup_logging, take_push_to_hub, text_column,
)
from medvlp_hf.training.datasets import RETRIEVAL
from medvlp_hf.training.retrieval import RetrievalArguments, retrieval_evaluator
from medvlp_hf.training.two_stage_retrieval import supports_two_stage_retrieval

# MedViLL's retrieval batch size (10 records, i.e. 20 pairs) with a learning rate for training the CPU presets from
# scratch; MedViLL fine-tuned its pre-trained model with AdamW 1e-5 for 10 epochs (BLIP's retrieval fine-tuning:
# AdamW 1e-5, weight decay 0.05, batch 32 per GPU, 6 epochs).
DEFAULTS = {
    "learning_rate": 5e-4,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "num_train_epochs": 5,
    "per_device_train_batch_size": 10,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "label_names": ["labels"],
}
CARD_METRICS = ("i2t_r@1", "i2t_r@5", "t2i_r@1", "t2i_r@5", "i2t_hit@5", "i2t_mrr", "t2i_hit@5", "t2i_mrr")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, task_args, training_args = parse_arguments(
        (RetrievalArguments,), argv, __doc__, **DEFAULTS
    )
    if training_args.eval_strategy != "no":
        raise ValueError("run_retrieval.py ranks candidate groups after training (--do_eval); evaluation during "
                         "training (--eval_strategy) is not supported.")
    push = take_push_to_hub(training_args)
    setup_logging(training_args)
    set_seed(training_args.seed)

    dataset_dict = load_task_dataset(data_args, RETRIEVAL)
    splits, split_names = run_splits(dataset_dict, data_args, training_args)
    column = text_column(next(iter(dataset_dict.values())))
    config = load_config(model_args)
    model = build_trainable_model(model_args, AutoModelForRetrieval, config)
    processor = build_processor(model_args, config)
    collator = None
    if "train" in splits and supports_two_stage_retrieval(model):
        collator = MatchedPairCollator(processor, max_length=data_args.max_seq_length, text_column=column,
                                       image_id_column=task_args.image_id_column)
    elif "train" in splits:
        collator = RetrievalPairCollator(
            processor,
            negatives=LabelConditionedNegatives(splits["train"], text_column=column),
            swap_image_probability=task_args.swap_image_probability,
            max_length=data_args.max_seq_length,
            text_column=column,
            seed=training_args.seed,
        )
    trainer = MedVLPTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.get("train"),
        data_collator=collator,
        processing_class=processor,
    )
    return run_phases(
        trainer, processor, model_args, data_args, splits, split_names,
        evaluate=retrieval_evaluator(trainer, processor, column, task_args, data_args.max_seq_length),
        card_metrics=CARD_METRICS,
        push=push,
        command=shlex.join(["python", "examples/run_retrieval.py", *argv]),
    )


if __name__ == "__main__":
    main()
