"""MedViLL report decoding on the shared generation checks (tests/common), plus what is special to MedViLL."""

import pytest
import torch

from medvlp_hf import MedViLLForReportGeneration
from tests.common.generation_tester import GenerationTester, GenerationTesterMixin
from tests.models.medvill.tester import SEP, pixel_batch, tiny_config

# A 64-word vocabulary and a large init, so that a random tiny model decodes image-dependent, non-degenerate text.
SPECIAL_IDS = {"cls_token_id": 1, "sep_token_id": 2, "mask_token_id": 3}


class MedViLLGenerationTester(GenerationTester):
    generative_model_classes = (MedViLLForReportGeneration,)

    def build(self, model_class, seed=0):
        torch.manual_seed(seed)
        return model_class(tiny_config(vocab_size=64, initializer_range=0.3, **SPECIAL_IDS))

    def image_inputs(self, config, batch_size=3, seed=0, model_class=None):
        return {"pixel_values": pixel_batch(config, batch_size, torch.Generator().manual_seed(seed)) * 3}

    def prompts(self, config):
        return [[2, 10, 11, 12, 13], [2, 20], [2, 30, 31]]

    def reference_greedy(self, model, image_inputs, max_new_tokens):
        return model.generate_without_cache(image_inputs["pixel_values"], max_new_tokens=max_new_tokens)

    def prompt_with_end_token(self, config):
        return [2, 10, 11, 2]


class TestMedViLLGeneration(GenerationTesterMixin):
    tester = MedViLLGenerationTester()


def test_decoding_starts_from_the_visual_sep():
    tester = MedViLLGenerationTester()
    model = tester.build(MedViLLForReportGeneration).eval()
    pixel_values = tester.image_inputs(model.config)["pixel_values"][:1]
    generated = model.generate(pixel_values=pixel_values, max_new_tokens=3, do_sample=False)
    assert generated[0, 0].item() == model.config.sep_token_id
    logits = model(
        input_ids=torch.tensor([[model.config.sep_token_id]]), pixel_values=pixel_values, next_token_prediction=True
    ).logits
    assert generated[0, 1].item() == logits[0, -1].argmax().item()


def test_report_generation_training_loss_is_a_token_mean():
    tester = MedViLLGenerationTester()
    model = tester.build(MedViLLForReportGeneration).eval()
    pixel_values = tester.image_inputs(model.config, batch_size=2)["pixel_values"]
    input_ids = torch.tensor([[SEP, 10, 3, 12, SEP], [SEP, 3, 21, SEP, 0]])
    input_ids[input_ids == SEP] = model.config.sep_token_id
    attention_mask = (input_ids != 0).long()
    labels = torch.full_like(input_ids, -100)
    labels[0, 2], labels[1, 1] = 11, 20
    output = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, labels=labels)
    log_probs = output.logits.log_softmax(-1)
    expected = -(log_probs[0, 2, 11] + log_probs[1, 1, 20]) / 2
    torch.testing.assert_close(output.loss, expected)
    summed = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, labels=labels,
                   num_items_in_batch=torch.tensor(4))
    torch.testing.assert_close(summed.loss, expected / 2)


def test_processor_generation_prompts_leave_the_text_open_and_generate_continues_them():
    """A prompt from the processor's generation mode has no closing [SEP]; the report mode's does, and generate()
    refuses it instead of continuing after the end of the text (a public bug report)."""
    import medvlp_hf

    processor = medvlp_hf.MedViLLProcessor.from_vocab_file(medvlp_hf.bert_base_uncased_vocab_file(), image_size=64)
    texts = ["the heart size is", "no"]
    prompt = processor(text=texts, generation_prompt=True)
    words = [processor.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = 1 + max(map(len, words))
    sep, pad = processor.tokenizer.sep_token_id, processor.tokenizer.pad_token_id
    assert prompt.input_ids.tolist() == [[pad] * (width - 1 - len(w)) + [sep, *w] for w in words]  # left-padded
    assert prompt.attention_mask.tolist() == [[0] * (width - 1 - len(w)) + [1] * (1 + len(w)) for w in words]
    ended = processor(text=texts, padding_side="left")
    assert ended.input_ids[:, -1].tolist() == [sep, sep]

    torch.manual_seed(0)
    model = MedViLLForReportGeneration(tiny_config()).eval()
    pixel_values = pixel_batch(model.config, 2, torch.Generator().manual_seed(0))
    generated = model.generate(**prompt, pixel_values=pixel_values, max_new_tokens=4, do_sample=False)
    assert torch.equal(generated[:, :width], prompt.input_ids)
    with pytest.raises(ValueError, match=r"prompt row\(s\) \[0, 1\] already hold the end-of-text \[SEP\]"):
        model.generate(**ended, pixel_values=pixel_values, max_new_tokens=4)
    with pytest.raises(ValueError, match="generation_prompt"):
        processor(text_target=texts, generation_prompt=True)
