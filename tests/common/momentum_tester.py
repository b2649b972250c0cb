"""The checks every model with momentum encoders and feature queues passes (ALBEF/BLIP-style pre-training: MISS, then
M2I2 and MedUnifier), written once (DESIGN.md "Conventions for the models after MedViLL").

The model follows the protocol of `medvlp_hf.training.callbacks.momentum_models`: `momentum_step()`,
`momentum_parameter_pairs()`, `distillation_alpha` / `distillation_alpha_at(epoch)` and a `feature_queue` with
`enqueue(image_features, text_features)`, `queue_ptr` and `size`. A model's test file defines a `MomentumTester` and
`class TestXMomentum(MomentumTesterMixin): momentum_tester = ...`.
"""

import socket

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from medvlp_hf.training import MedVLPTrainer, MomentumUpdateCallback
from tests.common.model_tester import Rows


class MomentumTester:
    model_class = None  # the head with momentum encoders, queues and ITM hard negatives

    def get_config(self, **overrides):
        """The tiny config, dropout off, with `overrides` (e.g. `queue_size`)."""
        raise NotImplementedError

    def pair_rows(self, config, count, seed=0):
        """`count` (image, text) dataset rows with the labels the model's loss reads, dicts of tensors a Trainer can
        batch."""
        raise NotImplementedError

    def rank(self, config, k):
        """(scores (questions, candidates), number of candidates) of a top-k ranking over a candidate set (answer
        ranking, ITM re-ranking), -inf for candidates left out."""
        raise NotImplementedError


class _Recorder(TrainerCallback):
    """After each optimizer step (and after MomentumUpdateCallback): the online weights, the queue pointer, alpha."""

    def __init__(self):
        self.online, self.pointers, self.alphas, self.epochs = [], [], [], []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.online.append({name: online.detach().clone() for name, online, _ in model.momentum_parameter_pairs()})
        self.pointers.append(int(model.feature_queue.queue_ptr))
        self.alphas.append(model.distillation_alpha)
        self.epochs.append(state.epoch)


def _arguments(output_dir, **overrides):
    return TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=2, per_device_eval_batch_size=2, learning_rate=0.1,
        optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, report_to=[], use_cpu=True, seed=0,
        save_strategy="no", disable_tqdm=True, remove_unused_columns=False, **overrides,
    )


def _enqueue_in_process(rank, world_size, port, tester, output_dir):
    """One DDP process (gloo, CPU): a training forward on its own pairs, then `momentum_step()`; saves its queue."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        torch.manual_seed(0)
        model = tester.model_class(tester.get_config(queue_size=16)).train()
        model(**torch.utils.data.default_collate(tester.pair_rows(model.config, 2, seed=rank)))
        model.momentum_step()
        torch.save(model.feature_queue.state_dict(), f"{output_dir}/queue-{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MomentumTesterMixin:
    momentum_tester: MomentumTester

    def _model(self, **overrides):
        torch.manual_seed(0)
        return self.momentum_tester.model_class(self.momentum_tester.get_config(**overrides))

    def test_momentum_encoders_and_queues_change_once_per_optimizer_step(self, tmp_path):
        """Trainer, batch 2 x accumulation 2, 3 steps: the queue advances by the 4 examples of each step, the momentum
        encoders are the EMA of the encoders after each step (one update per step, none per micro-batch), and alpha
        follows the ramp."""
        model = self._model(queue_size=64)
        momentum = model.config.momentum
        expected = {name: shadow.detach().clone() for name, _, shadow in model.momentum_parameter_pairs()}
        recorder = _Recorder()
        rows = self.momentum_tester.pair_rows(model.config, 12)
        args = _arguments(tmp_path, gradient_accumulation_steps=2, max_steps=3)
        callbacks = [MomentumUpdateCallback(), recorder]
        Trainer(model=model, args=args, train_dataset=Rows(rows), callbacks=callbacks).train()
        assert recorder.pointers == [4, 8, 12]
        for online in recorder.online:
            expected = {name: expected[name] * momentum + online[name] * (1 - momentum) for name in expected}
        changed = False
        for name, online, shadow in model.momentum_parameter_pairs():
            torch.testing.assert_close(shadow, expected[name], atol=1e-6, rtol=0, msg=name)
            changed |= not torch.equal(shadow, recorder.online[0][name])
        assert changed, "training must move the encoders, so their EMA differs from them"
        assert recorder.alphas == [model.distillation_alpha_at(epoch) for epoch in recorder.epochs]
        assert 0 < recorder.alphas[0] < recorder.alphas[-1] <= model.config.alpha

    def test_evaluation_changes_no_momentum_state(self, tmp_path):
        model = self._model(queue_size=64)
        before = {name: shadow.detach().clone() for name, _, shadow in model.momentum_parameter_pairs()}
        before.update({f"queue.{key}": value.clone() for key, value in model.feature_queue.state_dict().items()})
        rows = self.momentum_tester.pair_rows(model.config, 4)
        trainer = Trainer(model=model, args=_arguments(tmp_path), eval_dataset=Rows(rows),
                          callbacks=[MomentumUpdateCallback()])
        assert "eval_loss" in trainer.evaluate()
        after = {name: shadow for name, _, shadow in model.momentum_parameter_pairs()}
        after.update({f"queue.{key}": value for key, value in model.feature_queue.state_dict().items()})
        for key, value in before.items():
            assert torch.equal(after[key], value), key
        model.momentum_step()
        assert int(model.feature_queue.queue_ptr) == 0, "evaluation forwards must not keep features for the queue"

    def test_every_process_enqueues_the_features_of_every_process(self, tmp_path):
        """Under DDP the queues take the whole global batch (BLIP's `concat_all_gather`), in rank order, so every
        process holds the same queues."""
        torch.multiprocessing.spawn(_enqueue_in_process, args=(2, _free_port(), self.momentum_tester, tmp_path),
                                    nprocs=2)
        queues = [torch.load(tmp_path / f"queue-{rank}.pt") for rank in range(2)]
        assert int(queues[0]["queue_ptr"]) == 4
        for key in queues[0]:
            assert torch.equal(queues[0][key], queues[1][key]), key
        alone = self._model(queue_size=16).train()
        for rank in range(2):
            alone(**torch.utils.data.default_collate(self.momentum_tester.pair_rows(alone.config, 2, seed=rank)))
        alone.momentum_step()
        torch.testing.assert_close(queues[0]["image_queue"][:, :4], alone.feature_queue.image_queue[:, :4])
        torch.testing.assert_close(queues[0]["text_queue"][:, :4], alone.feature_queue.text_queue[:, :4])

    def test_medvlp_trainer_adds_the_momentum_callback_once(self, tmp_path):
        model = self._model()
        for callbacks in ([], [MomentumUpdateCallback()]):
            trainer = MedVLPTrainer(model=model, args=_arguments(tmp_path), callbacks=callbacks)
            added = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MomentumUpdateCallback)]
            assert len(added) == 1

    def test_queue_takes_any_batch_size_and_wraps_around(self):
        queue = self._model(queue_size=10).feature_queue
        dim = queue.image_queue.shape[0]
        batches = [torch.randn(4, dim) for _ in range(3)]
        for batch, pointer in zip(batches, (4, 8, 2)):
            queue.enqueue(batch, -batch)
            assert int(queue.queue_ptr) == pointer
        torch.testing.assert_close(queue.image_queue[:, [8, 9, 0, 1]], batches[2].T)
        torch.testing.assert_close(queue.text_queue[:, 4:8], -batches[1].T)
        with pytest.raises(ValueError, match="exceed the ITC queue"):
            queue.enqueue(torch.randn(11, dim), torch.randn(11, dim))

    def test_training_forwards_without_momentum_steps_get_a_clear_error(self):
        model = self._model(queue_size=4).train()
        batch = torch.utils.data.default_collate(self.momentum_tester.pair_rows(model.config, 2))
        model(**batch)
        model(**batch)
        with pytest.raises(ValueError, match="MomentumUpdateCallback"):
            model(**batch)

    def test_hard_negatives_for_a_batch_of_one_are_a_clear_error(self):
        model = self._model()
        single = torch.utils.data.default_collate(self.momentum_tester.pair_rows(model.config, 1))
        with pytest.raises(ValueError, match="only 1"):
            model(**single)

    def test_ranking_with_k_beyond_the_candidates_scores_every_candidate(self):
        config = self.momentum_tester.get_config()
        best, candidates = self.momentum_tester.rank(config, k=1)
        scores, _ = self.momentum_tester.rank(config, k=candidates)
        assert torch.isfinite(scores).all()
        beyond, _ = self.momentum_tester.rank(config, k=candidates + 10)
        torch.testing.assert_close(beyond, scores)
        assert (torch.isfinite(best).sum(-1) == 1).all()
        kept = torch.isfinite(best)
        torch.testing.assert_close(best[kept], scores[kept])
