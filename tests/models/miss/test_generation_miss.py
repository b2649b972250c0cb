"""MISS decoding (VQA answers, reports) on the shared generation checks (tests/common), plus what is special to MISS:
the released defaults, the question-padding quirk, caches that cannot grow."""

import pytest
import torch
from transformers import StaticCache

from medvlp_hf import MISSForReportGeneration, MISSForVQA
from tests.common.generation_tester import GenerationTesterMixin
from tests.models.miss.tester import SMALL_DEC, MISSGenerationTester, generation_config

TESTER = MISSGenerationTester()


class TestMISSGeneration(GenerationTesterMixin):
    tester = TESTER


def vqa_and_inputs(**overrides):
    model = TESTER.build(MISSForVQA, **overrides).eval()
    return model, TESTER.image_inputs(model.config, model_class=MISSForVQA)


def test_released_decoding_defaults():
    """VQA: beam search with 3 beams, at most 10 tokens with [DEC] (`miss_vqa.py`); reports: `MISS_Decoder.generate`'s
    3 beams and 10 to 30 tokens."""
    torch.manual_seed(0)
    vqa = MISSForVQA(generation_config()).eval()
    assert (vqa.generation_config.num_beams, vqa.generation_config.max_new_tokens) == (3, 9)
    inputs = TESTER.image_inputs(vqa.config, model_class=MISSForVQA)
    answers = vqa.generate(**inputs)
    assert answers.shape[1] <= 10 and (answers[:, 0] == SMALL_DEC).all()
    beam = vqa.generate(**inputs, num_beams=3, max_new_tokens=9, do_sample=False)
    assert torch.equal(answers, beam)
    report = MISSForReportGeneration(generation_config())
    config = report.generation_config
    assert (config.num_beams, config.min_length, config.max_length) == (3, 10, 30)


def test_padded_questions_answer_as_one_at_a_time_and_the_released_quirk_attends_their_padding():
    model, inputs = vqa_and_inputs()
    batched = model.generate(**inputs, max_new_tokens=8)
    for row in range(3):
        length = int(inputs["attention_mask"][row].sum())
        single = model.generate(input_ids=inputs["input_ids"][row : row + 1, :length],
                                pixel_values=inputs["pixel_values"][row : row + 1], max_new_tokens=8)
        assert batched[row, : single.shape[1]].tolist() == single[0].tolist()
    model.config.vqa_generation_attends_question_padding = True
    quirk = model.generate(**inputs, max_new_tokens=8)
    with torch.no_grad():
        states = model.encode_question(inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"])
        tokens = torch.full((3, 1), model.config.bos_token_id)
        for _ in range(quirk.shape[1] - 1):
            logits = model(decoder_input_ids=tokens, encoder_hidden_states=states.last_hidden_state,
                           encoder_attention_mask=torch.ones_like(inputs["attention_mask"])).logits
            tokens = torch.cat([tokens, logits[:, -1:].argmax(-1)], dim=1)
        start = tokens[:, :1]
        masked = model(decoder_input_ids=start, encoder_hidden_states=states.last_hidden_state,
                       encoder_attention_mask=inputs["attention_mask"]).logits[:, 0]
    finished = (quirk == model.config.eos_token_id).cumsum(-1).roll(1, -1).clamp(max=1).bool()
    finished[:, 0] = False
    assert torch.equal(quirk.masked_fill(finished, 0), tokens.masked_fill(finished, 0))
    # the quirk is real: attending the padding changes the predictions for the padded questions, only for them
    attended = model(decoder_input_ids=start, encoder_hidden_states=states.last_hidden_state).logits[:, 0]
    padded = (inputs["attention_mask"] == 0).any(-1)
    assert padded.tolist() == [False, True, True]
    torch.testing.assert_close(attended[~padded], masked[~padded])
    assert ((attended[padded] - masked[padded]).abs().amax(-1) > 1e-3).all()


def test_caches_that_cannot_grow_are_refused_clearly():
    model, inputs = vqa_and_inputs()
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        model.generate(**inputs, max_new_tokens=3, cache_implementation="static")
    with pytest.raises(ValueError, match="got a StaticCache"):
        model.generate(**inputs, max_new_tokens=3, past_key_values=StaticCache(config=model.config, max_cache_len=8))
