"""Frozen BatchNorm statistics for training.

In train mode a BatchNorm layer normalises with the statistics of the micro-batch it sees and updates its
running averages, so a CNN's loss depends on how a batch is split over processes and accumulation steps,
and a LoRA adapter saved without the BatchNorm buffers would not reproduce the trained model. Frozen, the
layers normalise with their stored running statistics in train mode too and leave them untouched.
"""

from torch import nn


def _use_running_statistics(module, inputs):
    module.train(False)


def freeze_batch_norm_statistics(model: nn.Module) -> int:
    """Keep every BatchNorm layer of `model` in inference mode, whatever `model.train()` sets; returns how
    many layers were frozen. A forward pre-hook re-applies it because Trainer calls `train()` each step."""
    layers = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.register_forward_pre_hook(_use_running_statistics)
    return len(layers)
