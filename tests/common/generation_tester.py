"""The generation checks every zoo model that generates text passes, written once (DESIGN.md "Generation").

A model's generation test file defines a `GenerationTester` and `class TestX(GenerationTesterMixin): tester = ...`;
each check runs on every head in `generative_model_classes`.
"""

import inspect
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import GenerationMixin

NEW_TOKENS = 12


class GenerationTester:
    """What the generation checks need to know about one model."""

    generative_model_classes = ()

    def build(self, model_class, seed=0):
        """A tiny model whose generations depend on the image (a random init that steers the decoder)."""
        raise NotImplementedError

    def image_inputs(self, config, batch_size=3, seed=0, model_class=None):
        """What `generate` of `model_class` is conditioned on (e.g. `{"pixel_values": ...}`, plus the questions of a
        VQA head), one image per row."""
        raise NotImplementedError

    def prompt_inputs(self, model_class, input_ids, attention_mask=None):
        """The `generate` keyword arguments that pass `input_ids` as the prompt the output continues (a VQA head's
        answer decoder takes them as `decoder_input_ids`)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def prompts(self, config):
        """Three prompts of different lengths as token-id lists, as the processor writes generation prompts."""
        raise NotImplementedError

    def reference_greedy(self, model, image_inputs, max_new_tokens):
        """Greedy decoding by the slow reference procedure (no cache), the ground truth of the cached path."""
        raise NotImplementedError

    def prompt_with_end_token(self, config):
        """A prompt that already ends the text (must be refused)."""
        raise NotImplementedError

    def cross_attention_key(self, model):
        """The key projection of the first decoder layer's cross-attention (over image or question states), or None
        for a model whose decoder does not cross-attend."""
        return None


def kv_cache_name_of(model_class):
    return sys.modules[model_class.__module__].KV_CACHE


class GenerationTesterMixin:
    tester: GenerationTester

    def _model_and_images(self, model_class):
        model = self.tester.build(model_class).eval()
        return model, self.tester.image_inputs(model.config, model_class=model_class)

    def test_kv_cache_name_is_the_one_generate_passes(self):
        """The model folder's one cache name (KV_CACHE) is the keyword this transformers' generate() passes."""
        parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
        cache_names = [name for name in parameters if name in ("cache", "past_key_values")]
        for model_class in self.tester.generative_model_classes:
            assert [kv_cache_name_of(model_class)] == cache_names

    @pytest.mark.parametrize("options", [{}, {"num_beams": 3}], ids=["greedy", "beam3"])
    def test_generate_returns_its_cache_under_both_names(self, options):
        for model_class in self.tester.generative_model_classes:
            model, images = self._model_and_images(model_class)
            output = model.generate(**images, max_new_tokens=4, return_dict_in_generate=True, **options)
            assert output[kv_cache_name_of(model_class)] is not None
            assert output.past_key_values is output[kv_cache_name_of(model_class)]

    def test_cached_greedy_equals_the_uncached_reference(self):
        for model_class in self.tester.generative_model_classes:
            model, images = self._model_and_images(model_class)
            reference = self.tester.reference_greedy(model, images, NEW_TOKENS)
            cached = model.generate(**images, max_new_tokens=NEW_TOKENS, do_sample=False)
            assert cached.shape[1] > 5
            assert torch.equal(cached, reference[:, : cached.shape[1]])
            assert len({tuple(row) for row in cached.tolist()}) > 1, "images must steer the decoder"

    @pytest.mark.parametrize("options", [{"do_sample": False}, {"num_beams": 3, "do_sample": False},
                                         {"do_sample": True, "top_k": 8}], ids=["greedy", "beam3", "sampling"])
    def test_generate_with_and_without_cache_agree(self, options):
        for model_class in self.tester.generative_model_classes:
            model, images = self._model_and_images(model_class)
            torch.manual_seed(7)
            cached = model.generate(**images, max_new_tokens=NEW_TOKENS, **options)
            torch.manual_seed(7)
            uncached = model.generate(**images, max_new_tokens=NEW_TOKENS, use_cache=False, **options)
            assert torch.equal(cached, uncached)

    @pytest.mark.parametrize("options", [{"do_sample": False}, {"num_beams": 2, "do_sample": False}],
                             ids=["greedy", "beam2"])
    def test_left_padded_batch_equals_one_by_one(self, options):
        for model_class in self.tester.generative_model_classes:
            model, images = self._model_and_images(model_class)
            prompts = self.tester.prompts(model.config)
            width = max(map(len, prompts))
            pad = model.config.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            batched = model.generate(**self.tester.prompt_inputs(model_class, input_ids, attention_mask), **images,
                                     max_new_tokens=8, **options)
            for row, prompt in enumerate(prompts):
                single_images = {key: value[row : row + 1] for key, value in images.items()}
                prompt_inputs = self.tester.prompt_inputs(model_class, torch.tensor([prompt]))
                single = model.generate(**prompt_inputs, **single_images, max_new_tokens=8, **options)
                produced = batched[row, width - len(prompt) :].tolist()
                expected = single[0].tolist()
                assert produced[: len(expected)] == expected, (model_class.__name__, options, row)

    def test_cross_attention_keys_and_values_are_computed_once_per_generation(self):
        """The conditioning states are projected to cross-attention keys/values at the first step only (kept in the
        cache): once for 3 inputs x 2 beams; without a cache at every step, with the same tokens."""
        checked = 0
        for model_class in self.tester.generative_model_classes:
            model, images = self._model_and_images(model_class)
            key = self.tester.cross_attention_key(model)
            if key is None:
                continue
            checked += 1
            calls = []
            handle = key.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
            try:
                cached = model.generate(**images, max_new_tokens=6, num_beams=2)
                assert calls == [6], (model_class.__name__, calls)
                calls.clear()
                uncached = model.generate(**images, max_new_tokens=6, num_beams=2, use_cache=False)
                assert len(calls) == uncached.shape[1] - 1
            finally:
                handle.remove()
            assert torch.equal(cached, uncached)
        if not checked:
            pytest.skip("no generating head of this model cross-attends conditioning states")

    def test_a_prompt_that_already_ended_is_refused(self):
        for model_class in self.tester.generative_model_classes:
            model, images = self._model_and_images(model_class)
            prompt = torch.tensor([self.tester.prompt_with_end_token(model.config)])
            single = {key: value[:1] for key, value in images.items()}
            with pytest.raises(ValueError, match="end-of-text"):
                model.generate(**self.tester.prompt_inputs(model_class, prompt), **single, max_new_tokens=3)

    def test_generation_through_remote_code_in_a_fresh_process(self, tmp_path):
        """A saved generating head gives the same tokens with plain transformers and trust_remote_code=True."""
        loader = textwrap.dedent(
            """
            import json, sys
            sys.modules["medvlp_hf"] = None
            import torch, transformers
            folder, images_file, out_file = sys.argv[1:]
            auto = next(k for k in json.load(open(f"{folder}/config.json"))["auto_map"] if k != "AutoConfig")
            model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            torch.save(model.generate(**torch.load(images_file), max_new_tokens=6, num_beams=2), out_file)
            """
        )
        for model_class in self.tester.generative_model_classes:
            model, images = self._model_and_images(model_class)
            folder = tmp_path / model_class.__name__
            model.save_pretrained(folder)
            torch.save(images, tmp_path / "images.pt")
            env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="")
            result = subprocess.run([sys.executable, "-c", loader, str(folder), str(tmp_path / "images.pt"),
                                     str(tmp_path / "out.pt")], capture_output=True, text=True, env=env,
                                    cwd=tmp_path, timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            expected = model.generate(**images, max_new_tokens=6, num_beams=2)
            assert torch.equal(torch.load(tmp_path / "out.pt"), expected)
