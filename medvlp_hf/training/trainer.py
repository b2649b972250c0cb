"""Trainer subclasses for the examples: reproducible evaluation batches, and generation or answer ranking during
evaluation."""

import torch
from transformers import Trainer

from .callbacks import MomentumUpdateCallback, momentum_models


class MedVLPTrainer(Trainer):
    """Trainer with two evaluation conveniences, and the momentum-encoder updates of models that have them
    (`MomentumUpdateCallback`, added automatically):

    - `eval_data_collator` (default: the training collator) builds evaluation/prediction batches and is
      re-seeded with `eval_collator_seed` before every evaluation, so randomly masked evaluation batches (MLM,
      report generation) are the same at every evaluation of a run;
    - `prediction_outputs` names the model outputs (in order) that become the predictions handed to
      `preprocess_logits_for_metrics` / `compute_metrics`, instead of every output but the loss.
    """

    def __init__(self, *args, eval_data_collator=None, eval_collator_seed=0, prediction_outputs=("logits",), **kwargs):
        super().__init__(*args, **kwargs)
        registered = any(isinstance(callback, MomentumUpdateCallback) for callback in self.callback_handler.callbacks)
        if momentum_models(self.model) and not registered:
            self.add_callback(MomentumUpdateCallback)
        self.eval_data_collator = eval_data_collator
        self.eval_collator_seed = eval_collator_seed
        self.prediction_outputs = tuple(prediction_outputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not return_outputs:
            return result
        loss, outputs = result
        return loss, {name: outputs[name] for name in self.prediction_outputs}

    def _with_eval_collator(self, make_dataloader, dataset):
        if self.eval_data_collator is None:
            return make_dataloader(dataset)
        generator = getattr(self.eval_data_collator, "generator", None)
        if generator is not None:
            generator.manual_seed(self.eval_collator_seed)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return make_dataloader(dataset)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)


class ImageToTextTrainer(MedVLPTrainer):
    """Evaluation also decodes text with `generate(**inputs, **generation_kwargs)` from the batch's
    `generation_input_names` (default the images alone, as report generation; a VQA model reads the question too);
    the generated ids (padded with -100 across batches and processes) become the predictions that `compute_metrics`
    receives, next to the loss of the teacher-forced evaluation batch."""

    def __init__(self, *args, generation_kwargs=None, generation_input_names=("pixel_values",), **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_kwargs = dict(generation_kwargs or {})
        self.generation_input_names = tuple(generation_input_names)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, _, _ = super().prediction_step(model, inputs, prediction_loss_only=True, ignore_keys=ignore_keys)
        if prediction_loss_only:
            return loss, None, None
        inputs = self._prepare_inputs(inputs)
        conditioning = {name: inputs[name] for name in self.generation_input_names if name in inputs}
        return loss, self.predict_batch(self.accelerator.unwrap_model(model), conditioning), inputs["labels"]

    def predict_batch(self, model, conditioning):
        """The predictions of one evaluation batch: the generated ids (B, T)."""
        return model.generate(**conditioning, **self.generation_kwargs)


class AnswerRankingTrainer(ImageToTextTrainer):
    """Evaluation answers each question by ranking a candidate list with the model's `rank_answers(**question_inputs,
    **answer_candidates, k=rank_top_k)` (M2I2: the released first-token top-k, then full likelihood); the chosen
    candidate's index (B, 1) becomes the prediction `compute_metrics` receives, next to the loss of the teacher-forced
    evaluation batch. `answer_candidates`: `answer_input_ids` / `answer_attention_mask` (A, La) from the processor's
    `encode_answer_candidates`.

    Scoring a candidate in full takes the decoder's logits over the vocabulary at each of its La positions, for k
    candidates of every question: (B * k, La, vocab) at once, 27 GB for M2I2 at batch 64, k = 128, La = 27. The batch's
    questions are therefore ranked a few at a time, so that one call scores at most `max_ranked_rows` candidates
    (the scores do not depend on the grouping)."""

    def __init__(self, *args, answer_candidates, rank_top_k=None, max_ranked_rows=256, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_candidates = {name: tensor.to(self.args.device) for name, tensor in answer_candidates.items()}
        self.rank_top_k = rank_top_k
        self.max_ranked_rows = max_ranked_rows

    def predict_batch(self, model, conditioning):
        candidates = self.answer_candidates
        k = min(self.rank_top_k or model.config.vqa_ranking_top_k, len(candidates["answer_input_ids"]))
        questions = max(1, self.max_ranked_rows // k)
        chosen = [
            model.rank_answers(**{name: tensor[start:start + questions] for name, tensor in conditioning.items()},
                               **candidates, k=k).answer_indices
            for start in range(0, len(conditioning["input_ids"]), questions)
        ]
        return torch.cat(chosen)[:, None]
