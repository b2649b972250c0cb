"""The model checks every zoo model passes, written once (DESIGN.md "Tests").

A model's test file defines a `ModelTester` subclass (tiny config, inputs and labels for each head) and a test class
`class TestMedViLLModel(ModelTesterMixin): tester = MedViLLModelTester()`. Tests marked `@for_heads(kind)` run once
per head class of that kind (`ModelTester.heads(kind)`, parametrised in tests/conftest.py).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from transformers import AutoConfig, PreTrainedModel, Trainer, TrainingArguments

HEAD_KINDS = ("all", "trainable", "mean_loss", "new_head", "paired")


def for_heads(kind):
    """Run the decorated test once per head class of `kind` (see `ModelTester.heads`)."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {HEAD_KINDS}.")

    def mark(test):
        test.head_kind = kind
        return test

    return mark


def float_outputs(output):
    """The floating-point tensors of a model output, by name."""
    return {key: value for key, value in output.items() if torch.is_tensor(value) and value.is_floating_point()}


def assert_outputs_close(actual, expected, atol, rtol, exact=False):
    expected, actual = float_outputs(expected), float_outputs(actual)
    assert expected.keys() == actual.keys()
    for key in expected:
        if exact:
            assert torch.equal(actual[key], expected[key]), key
        else:
            torch.testing.assert_close(actual[key], expected[key], atol=atol, rtol=rtol, msg=key)


class ModelTester:
    """What the common checks need to know about one model. Subclasses set the class attributes and implement
    `get_config`, `prepare_inputs` and `prepare_labels`."""

    base_model_class = None
    model_classes = ()  # every public head, base model included
    # heads whose loss is a mean over tokens or samples (gradient accumulation must not change it); losses over
    # in-batch or sampled negatives depend on the batch by definition and are left out
    mean_loss_model_classes = ()
    # contrastive heads that compare any number of images with any number of texts (CLIP-style), instead of reading
    # one image per text
    unpaired_model_classes = ()
    # outputs of shape (images, texts) scoring every image against every text: one example alone gives the diagonal
    pairwise_outputs = ()
    model_folder = None  # e.g. "medvill": medvlp_hf/models/<folder>/

    def get_config(self, **overrides):
        """The tiny config, dropout off, with `overrides`."""
        raise NotImplementedError

    def prepare_inputs(self, config, batch_size=3, seed=0, left_pad=False, model_class=None):
        """Model inputs of `batch_size` examples whose texts have different lengths (padded), for `model_class`
        (heads that read more than images and texts, e.g. an answer decoder's inputs, add them)."""
        raise NotImplementedError

    def prepare_labels(self, model_class, config, inputs, generator):
        """The label keyword arguments of `model_class` for `inputs` ({} for a head without a loss)."""
        raise NotImplementedError

    def config_for(self, model_class, **overrides):
        """The tiny config for `model_class` (heads that need label counts override this)."""
        return self.get_config(**overrides)

    def training_overrides(self):
        """Config overrides that make a training forward deterministic for the training checks (e.g. keep every
        image token instead of sampling some)."""
        return {}

    def accumulation_overrides(self):
        """Config overrides for the gradient-accumulation check: the training overrides, and for heads whose loss
        also has batch-level terms, only their mean terms."""
        return self.training_overrides()

    def batch_independent_overrides(self):
        """Config overrides under which every head's per-example outputs do not depend on the rest of the batch
        (heads with in-batch contrastive or matching terms drop them)."""
        return {}

    def add_layer(self, config_dict):
        """Ask a saved config.json for one more layer than its weights hold."""
        config_dict["num_hidden_layers"] += 1

    def widen(self, config):
        """Make `config` (a config object) ask for wider layers than a checkpoint of the tiny config holds."""
        config.hidden_size *= 2
        config.intermediate_size *= 2

    def assert_labels_predicted(self, model_class, output, labels):
        """Every label of a memorised batch is predicted: `<name>labels` is read off `<name>logits` by arg-max
        (class ids, or token ids where the label is not -100) or by sign (multi-hot targets of the logits' shape)."""
        for name, target in labels.items():
            logits = output[name.removesuffix("labels") + "logits"]
            if target.is_floating_point():
                assert torch.equal((logits > 0).to(target.dtype), target), name
                continue
            scored = target != -100
            assert torch.equal(logits.argmax(-1)[scored], target[scored]), name

    def training_rows(self, model_class, config, count):
        """`count` dataset rows (dicts of tensors, one example each) a Trainer can batch for `model_class`; inputs
        that make the loss depend on the micro-batch (BatchNorm statistics, stochastic sampling) are avoided."""
        inputs = self.prepare_inputs(config, batch_size=count, seed=11, model_class=model_class)
        labels = self.prepare_labels(model_class, config, inputs, torch.Generator().manual_seed(12))
        return [{key: value[row] for key, value in {**inputs, **labels}.items()} for row in range(count)]

    def single_example(self, inputs, row):
        """Example `row` of a batch alone, its text padding removed."""
        length = int(inputs["attention_mask"][row].sum())
        single = {key: value[row : row + 1] for key, value in inputs.items()}
        single["input_ids"] = single["input_ids"][:, :length]
        single["attention_mask"] = single["attention_mask"][:, :length]
        return single

    def heads(self, kind):
        if kind == "all":
            return list(self.model_classes)
        if kind == "trainable":
            return [cls for cls in self.model_classes if cls is not self.base_model_class]
        if kind == "mean_loss":
            return list(self.mean_loss_model_classes)
        if kind == "paired":
            return [cls for cls in self.model_classes if cls not in self.unpaired_model_classes]
        return [cls for cls in self.model_classes if cls.new_head_modules]

    def build(self, model_class, seed=0, **overrides):
        torch.manual_seed(seed)
        return model_class(self.config_for(model_class, **overrides)).eval()


class Rows(Dataset):
    """A dataset of prepared rows (dicts of tensors) for Trainer."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


class ModelTesterMixin:
    """The common checks. The test class sets `tester` (a `ModelTester`)."""

    tester: ModelTester

    # ------------------------------------------------------------------ saving and loading

    @for_heads("all")
    def test_save_load_round_trip_is_bit_exact(self, model_class, tmp_path):
        model = self.tester.build(model_class)
        inputs = self.tester.prepare_inputs(model.config, model_class=model_class)
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
        reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, reloaded.state_dict()[name]), name
        with torch.no_grad():
            assert_outputs_close(reloaded.eval()(**inputs), model(**inputs), 0, 0, exact=True)

    def test_config_round_trip_and_presets(self, tmp_path):
        config = self.tester.get_config()
        config.save_pretrained(tmp_path)
        loaded = AutoConfig.from_pretrained(tmp_path)
        assert type(loaded) is type(config)
        assert {**loaded.to_dict(), "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}
        config_class = type(config)
        assert {"tiny", "small", "base"} <= set(config_class.preset_names)
        assert config_class.from_preset("base").to_dict() == config_class().to_dict(), "base is the paper's model"
        with pytest.raises(ValueError, match="preset"):
            config_class.from_preset("huge")

    def test_checkpoint_of_another_size_is_refused(self, tmp_path):
        self.tester.build(self.tester.base_model_class).save_pretrained(tmp_path)
        config = AutoConfig.from_pretrained(tmp_path)
        self.tester.widen(config)
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            self.tester.base_model_class.from_pretrained(tmp_path, config=config)

    def test_missing_weights_are_refused_with_the_cause(self, tmp_path):
        """A config that asks for one more layer than the weights hold must not load with a random layer."""
        model = self.tester.build(self.tester.base_model_class)
        model.save_pretrained(tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        self.tester.add_layer(config)
        (tmp_path / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match=r"lacks \d+ weight\(s\).*config and the checkpoint disagree"):
            self.tester.base_model_class.from_pretrained(tmp_path)

    @for_heads("new_head")
    def test_new_head_starts_from_a_base_checkpoint_but_a_partial_head_is_refused(self, model_class, tmp_path):
        base = self.tester.build(self.tester.base_model_class)
        base.save_pretrained(tmp_path / "base")
        head = model_class.from_pretrained(tmp_path / "base", **self._label_fields(model_class))
        head_state = head.base_model.state_dict()
        shared = base.state_dict().keys() & head_state.keys()
        assert shared, "the head must hold the base model's weights (all of them, or its towers)"
        for name in shared:
            assert torch.equal(head_state[name], base.state_dict()[name]), name
        head.save_pretrained(tmp_path / "head")
        weights = load_file(tmp_path / "head" / "model.safetensors")
        dropped = next(key for key in sorted(weights) if key.startswith(f"{model_class.new_head_modules[-1]}."))
        del weights[dropped]
        save_file(weights, tmp_path / "head" / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(ValueError, match=dropped.replace(".", r"\.")):
            model_class.from_pretrained(tmp_path / "head")

    def _label_fields(self, model_class):
        config = self.tester.config_for(model_class)
        return {"num_labels": config.num_labels} if config.num_labels != 2 else {}

    def test_auto_classes_load_each_head(self, tmp_path):
        from medvlp_hf.auto import _AUTO_HEADS  # the suffix table the package registers with

        prefix = self.tester.base_model_class.__name__.removesuffix("Model")
        for model_class in self.tester.model_classes:
            auto_class, _ = _AUTO_HEADS[model_class.__name__.removeprefix(prefix)]
            folder = tmp_path / model_class.__name__
            model = self.tester.build(model_class)
            model.save_pretrained(folder)
            loaded = auto_class.from_pretrained(folder)
            assert type(loaded) is model_class, auto_class.__name__
            for name, tensor in model.state_dict().items():
                assert torch.equal(tensor, loaded.state_dict()[name]), name

    def test_every_head_loads_as_remote_code_in_a_fresh_process(self, tmp_path):
        """Plain transformers, `trust_remote_code=True`, medvlp_hf not importable: same outputs for every head."""
        expected = {}
        for model_class in self.tester.model_classes:
            model = self.tester.build(model_class)
            inputs = self.tester.prepare_inputs(model.config, model_class=model_class)
            torch.save(inputs, tmp_path / f"{model_class.__name__}-inputs.pt")
            model.save_pretrained(tmp_path / model_class.__name__)
            saved = json.loads((tmp_path / model_class.__name__ / "config.json").read_text())
            assert saved["auto_map"].get(model_class._auto_class, "").endswith(model_class.__name__)
            with torch.no_grad():
                expected[model_class.__name__] = float_outputs(model(**inputs))
        loader = textwrap.dedent(
            """
            import json, sys
            sys.modules["medvlp_hf"] = None  # any import of the package now fails
            import torch, transformers
            root, names = sys.argv[1], sys.argv[2:]
            results = {}
            for name in names:
                inputs = torch.load(f"{root}/{name}-inputs.pt")
                entry = json.load(open(f"{root}/{name}/config.json"))["auto_map"]
                auto = next(key for key, value in entry.items() if value.endswith("." + name))
                model = getattr(transformers, auto).from_pretrained(f"{root}/{name}", trust_remote_code=True).eval()
                assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
                assert type(model).__name__ == name, (auto, type(model).__name__)
                with torch.no_grad():
                    output = model(**inputs)
                results[name] = {k: v for k, v in output.items() if torch.is_tensor(v) and v.is_floating_point()}
            torch.save(results, f"{root}/out.pt")
            """
        )
        names = [model_class.__name__ for model_class in self.tester.model_classes]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="")
        result = subprocess.run([sys.executable, "-c", loader, str(tmp_path), *names], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        actual = torch.load(tmp_path / "out.pt")
        for name in names:
            assert actual[name].keys() == expected[name].keys(), name
            for key in expected[name]:
                assert torch.equal(actual[name][key], expected[name][key]), (name, key)

    # ------------------------------------------------------------------ forward equivalences

    @for_heads("all")
    def test_batch_equals_one_by_one(self, model_class):
        """Every per-example output of a padded batch equals the example's alone (batch-level scalars, such as a
        loss, are left out; image-text score matrices are compared on their diagonal)."""
        model = self.tester.build(model_class, **self.tester.batch_independent_overrides())
        inputs = self.tester.prepare_inputs(model.config, model_class=model_class)
        with torch.no_grad():
            batched = float_outputs(model(**inputs))
            for row in range(inputs["input_ids"].shape[0]):
                single = float_outputs(model(**self.tester.single_example(inputs, row)))
                assert single.keys() == batched.keys()
                for key, value in single.items():
                    if value.dim() == 0:
                        continue
                    reference = batched[key][row : row + 1]
                    if key in self.tester.pairwise_outputs:
                        reference = batched[key][row : row + 1, row : row + 1]
                    if value.dim() >= 2 and value.shape[1] != reference.shape[1]:
                        reference = reference[:, : value.shape[1]]
                    torch.testing.assert_close(value, reference, atol=1e-5, rtol=1e-5, msg=f"{key} row {row}")

    @for_heads("all")
    def test_eager_equals_sdpa(self, model_class, tmp_path):
        self.tester.build(model_class).save_pretrained(tmp_path)
        sdpa = model_class.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
        eager = model_class.from_pretrained(tmp_path, attn_implementation="eager").eval()
        for model, implementation in ((sdpa, "sdpa"), (eager, "eager")):
            configs = [module.config for module in model.modules() if isinstance(module, PreTrainedModel)]
            assert {config._attn_implementation for config in configs} == {implementation}
        inputs = self.tester.prepare_inputs(sdpa.config, model_class=model_class)
        with torch.no_grad():
            assert_outputs_close(sdpa(**inputs), eager(**inputs), atol=1e-5, rtol=1e-4)

    @for_heads("paired")
    def test_mismatched_batch_sizes_get_a_clear_error(self, model_class):
        """One image with two texts, or labels for another batch: a ValueError naming both sizes, for every input."""
        model = self.tester.build(model_class)
        inputs = self.tester.prepare_inputs(model.config, batch_size=2, model_class=model_class)
        image_key = "pixel_values"
        with pytest.raises(ValueError, match=r"1 image\(s\).*2 text\(s\)"):
            model(**inputs | {image_key: inputs[image_key][:1]})
        labels = self.tester.prepare_labels(model_class, model.config, inputs, torch.Generator().manual_seed(0))
        for name, value in labels.items():
            with pytest.raises(ValueError, match=rf"{name} has 1 row\(s\) but the batch has 2"):
                model(**inputs, **labels | {name: value[:1]})

    # ------------------------------------------------------------------ training

    @for_heads("trainable")
    def test_gradient_checkpointing_gives_the_same_gradients(self, model_class):
        gradients = []
        for checkpointing in (False, True):
            model = self.tester.build(model_class).train()
            inputs = self.tester.prepare_inputs(model.config, model_class=model_class)
            labels = self.tester.prepare_labels(model_class, model.config, inputs, torch.Generator().manual_seed(1))
            if checkpointing:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
                assert layers and all(layer.gradient_checkpointing for layer in layers)
            torch.manual_seed(0)
            model(**inputs, **labels).loss.backward()
            gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert gradients[0].keys() == gradients[1].keys()
        for name in gradients[0]:
            torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-6, rtol=1e-5, msg=name)

    @for_heads("trainable")
    def test_head_fits_a_small_batch(self, model_class):
        """A working head memorises four distinct examples: every label of the batch is predicted exactly, and
        the loss falls to a small fraction of its start (a check on the whole training path, not on luck)."""
        model = self.tester.build(model_class, **self.tester.training_overrides()).train()
        inputs = self.tester.prepare_inputs(model.config, batch_size=4, seed=3, model_class=model_class)
        labels = self.tester.prepare_labels(model_class, model.config, inputs, torch.Generator().manual_seed(2))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        losses = []
        for _ in range(60):
            torch.manual_seed(0)
            loss = model(**inputs, **labels).loss
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            output = model(**inputs, **labels)
        assert output.loss.item() < 0.1 * losses[0], losses
        self.tester.assert_labels_predicted(model_class, output, labels)

    @for_heads("mean_loss")
    def test_gradient_accumulation_gives_the_full_batch_loss_and_gradients(self, model_class, tmp_path):
        """Trainer with batch 4 x accumulation 1 and 2 x 2: the same logged loss and the same weights after one
        SGD step (so the same gradients), for a loss that is a mean over tokens or samples."""
        (full_loss, full_step), (split_loss, split_step) = (
            self._train_one_step(model_class, tmp_path / f"run-{b}x{a}", b, a) for b, a in ((4, 1), (2, 2))
        )
        assert split_loss == pytest.approx(full_loss, rel=1e-5)
        assert any(step.abs().max() > 0 for step in full_step.values()), "the step must change the weights"
        for name in full_step:
            torch.testing.assert_close(split_step[name], full_step[name], atol=1e-7, rtol=1e-4, msg=name)

    def _train_one_step(self, model_class, output_dir, batch_size, accumulation):
        """(logged training loss, per-parameter change of one plain SGD step at learning rate 1 = minus the
        gradient) of a Trainer run over the same four rows."""
        model = self.tester.build(model_class, **self.tester.accumulation_overrides())
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        args = TrainingArguments(
            output_dir=str(output_dir), per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1.0, optim="sgd",
            lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, report_to=[], use_cpu=True, seed=0,
            save_strategy="no", disable_tqdm=True, remove_unused_columns=False,
        )
        rows = self.tester.training_rows(model_class, model.config, 4)
        result = Trainer(model=model, args=args, train_dataset=Rows(rows)).train()
        return result.training_loss, {n: p.detach() - initial[n] for n, p in model.named_parameters()}
