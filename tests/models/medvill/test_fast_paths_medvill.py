"""The speed paths of MedViLL decoding give the results of the plain ones (their speed is in benchmarks/)."""

import pytest
import torch
from torch import nn
from transformers import DynamicCache, StaticCache

from medvlp_hf import MedViLLDecodingCache, MedViLLForReportGeneration
from medvlp_hf.models.medvill.modeling_medvill import MedViLLLinear
from tests.models.medvill.tester import pixel_batch, tiny_config


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (3,), (1, 3), (2, 2), (4, 5)])
def test_linear_matches_nn_linear_for_every_row_count(shape, bias):
    torch.manual_seed(0)
    fast = MedViLLLinear(24, 40, bias=bias)
    plain = nn.Linear(24, 40, bias=bias)
    plain.load_state_dict(fast.state_dict())
    inputs = torch.randn(*shape, 48)[..., ::2].requires_grad_()
    output = fast(inputs)
    expected = plain(inputs)
    assert output.shape == expected.shape == (*shape, 40)
    assert output.is_contiguous()
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    (gradient,) = torch.autograd.grad(output.square().sum(), inputs)
    (expected_gradient,) = torch.autograd.grad(expected.square().sum(), inputs)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-5, atol=1e-5)


def _fill(cache, steps, generator):
    """Prefill 7 tokens, then per step append 2 (token + [MASK]) and crop the [MASK], like a decoding step."""
    shape = (3, 2, 7, 4)
    keys, values = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    returned = [cache.update(keys, values, layer) for layer in range(2)]
    for _ in range(steps):
        shape = (3, 2, 2, 4)
        keys, values = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        returned = [cache.update(keys, values, layer) for layer in range(2)]
        cache.crop(-1)
    return returned


def test_decoding_cache_behaves_like_dynamic_cache():
    caches = {"dynamic": DynamicCache(), "decoding": MedViLLDecodingCache()}
    returned = {name: _fill(cache, 300, torch.Generator().manual_seed(0)) for name, cache in caches.items()}
    for (keys, values), (expected_keys, expected_values) in zip(returned["decoding"], returned["dynamic"]):
        assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)

    def state(cache):
        return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]

    assert caches["decoding"].get_seq_length() == caches["dynamic"].get_seq_length() == 307
    for operation in (
        lambda cache: cache.reorder_cache(torch.tensor([2, 0, 0])),
        lambda cache: cache.batch_select_indices(torch.tensor([1, 2])),
        lambda cache: cache.batch_repeat_interleave(2),
        lambda cache: cache.crop(-5),
    ):
        for cache in caches.values():
            operation(cache)
        for (keys, values), (expected_keys, expected_values) in zip(state(caches["decoding"]), state(caches["dynamic"])):
            assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
    caches["decoding"].reset()
    assert caches["decoding"].get_seq_length() == 0
    with pytest.raises(ValueError, match="negative"):
        caches["decoding"].crop(3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=64, cls_token_id=1, sep_token_id=2, mask_token_id=3, initializer_range=0.3)
    return MedViLLForReportGeneration(config).eval()


@pytest.mark.parametrize("options", [{"do_sample": False}, {"num_beams": 3, "do_sample": False}])
def test_generate_decodes_with_the_in_place_cache_and_matches_dynamic_cache(model, options):
    pixel_values = pixel_batch(model.config, 2, torch.Generator().manual_seed(1)) * 3
    kwargs = {
        "pixel_values": pixel_values, "max_new_tokens": 12, "return_dict_in_generate": True, "output_scores": True,
        **options,
    }
    default = model.generate(**kwargs)
    dynamic = model.generate(**kwargs, past_key_values=DynamicCache(config=model.config))
    assert isinstance(default.past_key_values, MedViLLDecodingCache)
    assert torch.equal(default.sequences, dynamic.sequences)
    for scores, expected in zip(default.scores, dynamic.scores):
        torch.testing.assert_close(scores, expected)


def test_a_cache_that_cannot_drop_the_mask_is_refused(model):
    pixel_values = pixel_batch(model.config, 1, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        model.generate(pixel_values=pixel_values, max_new_tokens=3, cache_implementation="static")
    with pytest.raises(ValueError, match="cache=StaticCache"):
        model.generate(pixel_values=pixel_values, max_new_tokens=3,
                       past_key_values=StaticCache(config=model.config, max_cache_len=32))
