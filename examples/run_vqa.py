#!/usr/bin/env python
r"""Medical visual question answering with Trainer, in the protocol of the model's paper:

- closed-set models (MedViLL): bidirectional attention, a classifier over a fixed answer list (VQA-RAD: MEVF's
  answer_all_list.json; otherwise the training answers), soft-score BCE targets, accuracy of the arg-max answer by
  answer type;
- generative models (MISS; the model class can `generate()`): the answer decoder learns the reference answer, and
  evaluation writes every answer with `generate()` (the model's own settings unless --num_beams / --max_new_tokens
  say otherwise; MISS: the released beam search, 3 beams, at most 10 tokens), scored as an exact match after
  VQA-v2 normalisation by answer type, plus MISS's yes/no accuracy (ACC.py, matched by question id);
- answer-ranking models (M2I2; the model class `evaluates_by_ranking` with `rank_answers`): the answer decoder learns the reference answer
  (`[CLS] answer [SEP]`), and evaluation ranks a candidate list for every question (the training answers, or
  --answer_list) as the released evaluation does: the --rank_top_k candidates (default the model's config; M2I2: 128)
  whose first token is most probable, re-scored by their full likelihood; questions are encoded with the processor's
  evaluation settings (M2I2: 50 words, not truncated). Scored as the generative answers are.
On VQA-RAD every model also reports its accuracies over the 308 freeform test questions (eval_freeform_*), the
subset M2I2's released evaluation scores.

    python examples/run_vqa.py --dataset demo --model_type medvill --config tiny \
        --output_dir outputs/demo-vqa --do_train --do_eval
    python examples/run_vqa.py --dataset vqa_rad --data_dir ../shared/data/vqa_rad --model_type medvill \
        --config small --output_dir outputs/vqa-rad-small --do_train --do_eval
    python examples/run_vqa.py --dataset vqa_rad --data_dir ../shared/data/vqa_rad --model_type miss \
        --config small --output_dir outputs/miss-vqa-rad --do_train --do_eval
    python examples/run_vqa.py --dataset vqa_rad --data_dir ../shared/data/vqa_rad --model_type m2i2 \
        --config tiny --output_dir outputs/m2i2-vqa-rad --do_train --do_eval
    python examples/run_vqa.py --dataset slake --data_dir SLAKE --model_name_or_path MISS_VQA_FOLDER \
        --peft ia3 --output_dir outputs/miss-slake-ia3 --do_train --do_eval      # or --train_attention_only
    torchrun --standalone --nproc_per_node 2 examples/run_vqa.py ...   # DDP (gloo on CPU)

Writes to --output_dir the model with its processor (loadable with AutoModelForVisualQuestionAnswering and
AutoProcessor), eval_results.json (eval_closed_accuracy, eval_open_accuracy, eval_overall_accuracy, generative and
ranking models also eval_yes_no_accuracy, on VQA-RAD eval_freeform_*, and the majority baseline's eval_baseline_*),
eval_predictions.jsonl, and with
--do_predict predict_results.json / predict_predictions.jsonl.
Datasets: demo (synthetic, no files), vqa_rad (--organ all|CHEST|HEAD|ABD), slake (--language), pathvqa.
"""
import shlex
import sys

import cpu_threads  # noqa: F401  (sets the OpenMP wait policy; must come before torch)

from transformers import AutoModelForVisualQuestionAnswering, set_seed

from medvlp_hf.data import GenerativeVQACollator, VQACollator
from medvlp_hf.training import (
    AnswerRankingTrainer, ImageToTextTrainer, MedVLPTrainer, build_processor, build_trainable_model, load_config, load_task_dataset,
    model_class_for, parse_arguments, run_phases, run_splits, setup_logging, take_push_to_hub, trainer_evaluator,
)
from medvlp_hf.training.answer_ranking import candidate_answers, ranked_answer_decoder, ranks_answers
from medvlp_hf.training.datasets import VQA
from medvlp_hf.training.generative_vqa import (
    GENERATION_INPUT_NAMES, generated_answer_decoder, generation_kwargs, generative_vqa_metrics,
    generative_vqa_prediction_rows, majority_answer_texts,
)
from medvlp_hf.training.vqa import (
    VQAArguments, accuracy_summary, answer_head_is_new, majority_answers, resolve_answers, set_answers,
    start_answer_logits_at_uniform_prior, vqa_metrics, vqa_prediction_rows,
)

# MedViLL's fine-tuning schedule (linear warmup over 10% of the steps, then linear decay; weight decay 0.01) with a
# learning rate, batch size and length for training the CPU presets from scratch: `tiny` on the demo set (2,048
# questions, one per image) in about a minute on 2 CPU cores. The learning rate is the one that lets `tiny` learn the
# findings within that minute: with 5e-4 it stays near the majority answer (closed 0.59 vs 0.55 after 5 epochs of
# 512 questions), with 2e-3 it reaches closed ~0.8 over 6 epochs of 2,048. To fine-tune a pre-trained checkpoint as
# the paper did, pass --learning_rate 3e-5 (MedViLL's BertAdam rate).
DEFAULTS = {
    "learning_rate": 2e-3,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "num_train_epochs": 6,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "label_names": ["labels"],
}
CARD_METRICS = ("closed_accuracy", "open_accuracy", "overall_accuracy")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, vqa_args, training_args = parse_arguments(
        (VQAArguments,), argv, __doc__, **DEFAULTS
    )
    push = take_push_to_hub(training_args)
    setup_logging(training_args)
    set_seed(training_args.seed)

    dataset_dict = load_task_dataset(data_args, VQA)
    splits, split_names = run_splits(dataset_dict, data_args, training_args)
    training_answers = splits.get("train", dataset_dict.get("train"))
    config = load_config(model_args)
    model_class = model_class_for(AutoModelForVisualQuestionAnswering, config, model_args)
    if ranks_answers(model_class):
        build = ranking_parts
    else:
        build = generative_parts if model_class.can_generate() else closed_set_parts
    trainer, processor, evaluate, baseline_answers = build(
        config, model_args, data_args, vqa_args, training_args, splits, dataset_dict, training_answers
    )
    return run_phases(
        trainer, processor, model_args, data_args, splits, split_names,
        evaluate=evaluate,
        card_metrics=CARD_METRICS,
        push=push,
        command=shlex.join(["python", "examples/run_vqa.py", *argv]),
        summary=lambda metrics, phase, split: accuracy_summary(metrics, phase, split, baseline_answers),
    )


def closed_set_parts(config, model_args, data_args, vqa_args, training_args, splits, dataset_dict, training_answers):
    """(trainer, processor, evaluate, baseline answers) of a classifier over the run's answer vocabulary."""
    answers = resolve_answers(config, model_args, data_args, vqa_args, dataset_dict)
    new_head = answer_head_is_new(model_args, config, answers)
    set_answers(config, answers)
    model = build_trainable_model(
        model_args, AutoModelForVisualQuestionAnswering, config,
        initialize=start_answer_logits_at_uniform_prior if new_head else None,
    )
    processor = build_processor(model_args, config)
    baseline = majority_answers(training_answers, answers) if training_answers is not None else {}
    trainer = MedVLPTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.get("train"),
        eval_dataset=splits.get("eval"),
        data_collator=VQACollator(processor, answers, max_length=data_args.max_seq_length),
        processing_class=processor,
        compute_metrics=vqa_metrics(splits["eval"], baseline) if "eval" in splits else None,
    )
    evaluate = trainer_evaluator(trainer, vqa_prediction_rows(config.id2label),
                                 metrics_for=lambda dataset: vqa_metrics(dataset, baseline))
    return trainer, processor, evaluate, {kind: config.id2label[label] for kind, label in baseline.items()}


def generative_parts(config, model_args, data_args, vqa_args, training_args, splits, dataset_dict, training_answers):
    """(trainer, processor, evaluate, baseline answers) of a model that writes its answers with generate()."""
    processor = build_processor(model_args, config)
    return answer_text_parts(
        ImageToTextTrainer, generated_answer_decoder(processor.tokenizer), processor, config, model_args, data_args,
        vqa_args, training_args, splits, training_answers, generation_kwargs=generation_kwargs(vqa_args),
    )


def ranking_parts(config, model_args, data_args, vqa_args, training_args, splits, dataset_dict, training_answers):
    """(trainer, processor, evaluate, baseline answers) of a model that answers by ranking candidate answers."""
    processor = build_processor(model_args, config)
    candidates = candidate_answers(vqa_args, dataset_dict)
    evaluation_processor = processor.for_evaluation() if hasattr(processor, "for_evaluation") else processor
    return answer_text_parts(
        AnswerRankingTrainer, ranked_answer_decoder(candidates), processor, config, model_args, data_args, vqa_args,
        training_args, splits, training_answers,
        eval_data_collator=GenerativeVQACollator(evaluation_processor, max_length=data_args.max_seq_length,
                                                 max_answer_length=vqa_args.max_answer_length),
        answer_candidates=processor.encode_answer_candidates(candidates),
        rank_top_k=vqa_args.rank_top_k,
    )


def answer_text_parts(trainer_class, decode, processor, config, model_args, data_args, vqa_args, training_args, splits,
                      training_answers, **trainer_kwargs):
    """The parts of a model with an answer decoder whose evaluation answers are texts (`decode(predictions)`),
    scored by exact match next to the majority answer texts."""
    model = build_trainable_model(model_args, AutoModelForVisualQuestionAnswering, config)
    baseline = majority_answer_texts(training_answers) if training_answers is not None else {}

    def metrics_for(dataset):
        return generative_vqa_metrics(dataset, decode, baseline)

    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=splits.get("train"),
        eval_dataset=splits.get("eval"),
        data_collator=GenerativeVQACollator(processor, max_length=data_args.max_seq_length,
                                            max_answer_length=vqa_args.max_answer_length),
        processing_class=processor,
        compute_metrics=metrics_for(splits["eval"]) if "eval" in splits else None,
        generation_input_names=GENERATION_INPUT_NAMES,
        **trainer_kwargs,
    )
    evaluate = trainer_evaluator(trainer, generative_vqa_prediction_rows(decode), metrics_for)
    return trainer, processor, evaluate, baseline


if __name__ == "__main__":
    main()
