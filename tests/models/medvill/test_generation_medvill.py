"""Report decoding: stock generate() with the KV cache against the paper's uncached procedure."""

import pytest
import torch

from medvlp_hf import MedViLLForReportGeneration
from tests.models.medvill.inputs import SEP, pixel_batch, tiny_config

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=64, cls_token_id=1, sep_token_id=2, mask_token_id=3, initializer_range=0.3)
    return MedViLLForReportGeneration(config).eval()


@pytest.fixture(scope="module")
def pixel_values(model):
    return pixel_batch(model.config, 3, torch.Generator().manual_seed(0)) * 3


def test_cached_greedy_equals_the_uncached_reference_loop(model, pixel_values):
    reference = model.generate_without_cache(pixel_values, max_new_tokens=NEW_TOKENS)
    cached = model.generate(pixel_values=pixel_values, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert cached.shape[1] > 5
    assert torch.equal(cached, reference[:, : cached.shape[1]])
    assert len({tuple(row) for row in cached.tolist()}) > 1, "images must steer the decoder"


def test_generate_with_and_without_cache_agree(model, pixel_values):
    kwargs = {"pixel_values": pixel_values, "max_new_tokens": NEW_TOKENS}
    for options in ({"do_sample": False}, {"num_beams": 3, "do_sample": False}):
        cached = model.generate(**kwargs, **options)
        uncached = model.generate(**kwargs, **options, use_cache=False)
        assert torch.equal(cached, uncached), options
    torch.manual_seed(7)
    sampled = model.generate(**kwargs, do_sample=True, top_k=8)
    torch.manual_seed(7)
    assert torch.equal(sampled, model.generate(**kwargs, do_sample=True, top_k=8, use_cache=False))


def test_decoding_starts_from_the_visual_sep(model, pixel_values):
    generated = model.generate(pixel_values=pixel_values[:1], max_new_tokens=3, do_sample=False)
    assert generated[0, 0].item() == model.config.sep_token_id
    logits = model(
        input_ids=torch.tensor([[model.config.sep_token_id]]), pixel_values=pixel_values[:1], next_token_prediction=True
    ).logits
    assert generated[0, 1].item() == logits[0, -1].argmax().item()


def test_left_padded_batch_equals_one_by_one(model, pixel_values):
    prompts = [[2, 10, 11, 12, 13], [2, 20], [2, 30, 31]]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    attention_mask = (input_ids != 0).long()
    for options in ({"do_sample": False}, {"num_beams": 2, "do_sample": False}):
        batched = model.generate(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                                 max_new_tokens=8, **options)
        for row, prompt in enumerate(prompts):
            single = model.generate(input_ids=torch.tensor([prompt]), pixel_values=pixel_values[row : row + 1],
                                    max_new_tokens=8, **options)
            produced = batched[row, width - len(prompt) :].tolist()
            expected = single[0].tolist()
            assert produced[: len(expected)] == expected, (options, row)


def test_report_generation_training_loss_is_a_token_mean(model, pixel_values):
    input_ids = torch.tensor([[SEP, 10, 3, 12, SEP], [SEP, 3, 21, SEP, 0]])
    input_ids[input_ids == SEP] = model.config.sep_token_id
    attention_mask = (input_ids != 0).long()
    labels = torch.full_like(input_ids, -100)
    labels[0, 2], labels[1, 1] = 11, 20
    output = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values[:2], labels=labels)
    log_probs = output.logits.log_softmax(-1)
    expected = -(log_probs[0, 2, 11] + log_probs[1, 1, 20]) / 2
    torch.testing.assert_close(output.loss, expected)
    summed = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values[:2], labels=labels,
                   num_items_in_batch=torch.tensor(4))
    torch.testing.assert_close(summed.loss, expected / 2)
