"""M2I2's open-answer decoding on the shared generation checks (tests/common), plus what is special to M2I2: answers
start from [CLS], padded questions answer as they would alone."""

from medvlp_hf import M2I2ForVQA
from tests.common.generation_tester import GenerationTesterMixin
from tests.models.m2i2.tester import SMALL_CLS, M2I2GenerationTester

TESTER = M2I2GenerationTester()


class TestM2I2Generation(GenerationTesterMixin):
    tester = TESTER


def vqa_and_inputs(**overrides):
    model = TESTER.build(M2I2ForVQA, **overrides).eval()
    return model, TESTER.image_inputs(model.config)


def test_answers_start_with_cls_and_padded_questions_answer_as_one_at_a_time():
    model, inputs = vqa_and_inputs()
    batched = model.generate(**inputs, max_new_tokens=8)
    assert (batched[:, 0] == SMALL_CLS).all()
    assert len({tuple(row.tolist()) for row in batched}) > 1, "answers depend on the question and image"
    for row in range(3):
        length = int(inputs["attention_mask"][row].sum())
        single = model.generate(input_ids=inputs["input_ids"][row : row + 1, :length],
                                pixel_values=inputs["pixel_values"][row : row + 1], max_new_tokens=8)
        assert batched[row, : single.shape[1]].tolist() == single[0].tolist()
