"""Trainer callbacks for models whose training state changes outside `forward`."""

from transformers import TrainerCallback


def momentum_models(model):
    """The modules of `model` (wrappers such as PEFT's included) that keep momentum encoders: their class defines
    `momentum_step()` and `distillation_alpha_at(epoch)` (MISS; M2I2 and MedUnifier follow the same protocol)."""
    return [module for module in model.modules() if hasattr(type(module), "momentum_step")]


class MomentumUpdateCallback(TrainerCallback):
    """Momentum distillation under Trainer (ALBEF/BLIP-style pre-training: MISS, M2I2).

    A forward cannot see where an optimizer step ends under gradient accumulation, so a model with momentum encoders
    keeps the momentum features of its training forwards and this callback, at the end of every optimizer step, calls
    its `momentum_step()` (EMA of the momentum encoders, the kept features into the queues, temperature clamp). It
    also sets the distillation weight for the next forwards, `model.distillation_alpha_at(epoch)` (the released
    linear ramp), from the start of training (and of a resumed run). Evaluation forwards keep nothing, and the
    callback does nothing outside training steps.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._set_alpha(model, state.epoch or 0.0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        for module in momentum_models(model):
            module.momentum_step()
        self._set_alpha(model, state.epoch or 0.0)

    @staticmethod
    def _set_alpha(model, epoch):
        for module in momentum_models(model):
            module.distillation_alpha = module.distillation_alpha_at(epoch)
