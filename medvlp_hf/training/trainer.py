"""Trainer subclasses for the examples: reproducible evaluation batches, and generation during evaluation."""

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
        generator = self.accelerator.unwrap_model(model)
        conditioning = {name: inputs[name] for name in self.generation_input_names if name in inputs}
        generated = generator.generate(**conditioning, **self.generation_kwargs)
        return loss, generated, inputs["labels"]
