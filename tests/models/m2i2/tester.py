"""M2I2's testers for the shared checks (tests/common), and its deterministic tiny inputs (token ids built directly, as
ALBEF's tokenizer writes them, independent of the processor): captions and questions `[CLS] w_1..w_n` without a closing
[SEP], answers `[CLS] a_1..a_n [SEP]`."""

import functools

import torch

from medvlp_hf import M2I2Config, M2I2ForPreTraining, M2I2ForRetrieval, M2I2ForVQA, M2I2Model
from tests.common import albef_style
from tests.common.albef_style import (  # noqa: F401 (the tests' names)
    CLS,
    PAD,
    SEP,
    TEXT_LENGTHS,
    pixel_batch,
    text_batch,
)
from tests.common.albef_style import decoder_labels as answer_labels

MASK = 103
ANSWER_LENGTHS = (2, 1, 3, 2)
NOISE_INPUTS = ("patch_noise", "momentum_patch_noise", "mim_patch_noise")
tiny_config = functools.partial(albef_style.tiny_config, M2I2Config)


def mlm_targets(input_ids, attention_mask, generator):
    """Injected MLM masking: in every caption one or two word positions become [MASK]; (mlm_input_ids, labels)."""
    chosen = torch.rand(input_ids.shape, generator=generator) < 0.3
    chosen[:, 1] = True
    chosen &= attention_mask.bool() & (input_ids != CLS)
    return input_ids.masked_fill(chosen, MASK), input_ids.masked_fill(~chosen, -100)


class M2I2ModelTester(albef_style.AlbefStyleModelTester):
    base_model_class = M2I2Model
    model_classes = (M2I2Model, M2I2ForPreTraining, M2I2ForVQA, M2I2ForRetrieval)
    # pre-training with its MLM term only (accumulation_overrides): ITC and ITM contrast the batch's examples, MIM is a
    # micro-batch mean weighted by the micro-batch's share of masked tokens
    mean_loss_model_classes = (M2I2ForPreTraining, M2I2ForVQA, M2I2ForRetrieval)
    unpaired_model_classes = (M2I2Model,)
    decoder_model_classes = (M2I2ForVQA,)
    pairwise_outputs = ("logits_per_image", "logits_per_text")
    model_folder = "m2i2"

    def get_config(self, **overrides):
        return tiny_config(**overrides)

    def training_overrides(self):
        # No distillation: momentum soft targets keep the loss above a floor, and the fit check asks for a loss near
        # 0. A queue larger than the fit check's 60 x 4 training forwards takes their momentum features without a
        # momentum step.
        return {"alpha": 0.0, "queue_size": 256}

    def accumulation_overrides(self):
        return {**self.training_overrides(), "pretraining_objectives": ["mlm"]}

    def batch_independent_overrides(self):
        return {"pretraining_objectives": ["mim"]}

    def prepare_inputs(self, config, batch_size=3, seed=0, left_pad=False, model_class=None):
        inputs, generator = self.pair_inputs(config, batch_size, seed, left_pad)
        if model_class is M2I2ForPreTraining:
            patches = config.vision_config.grid_size**2
            inputs.update({name: torch.rand(batch_size, patches, generator=generator) for name in NOISE_INPUTS})
        if model_class is M2I2ForVQA:
            words = [ANSWER_LENGTHS[row % len(ANSWER_LENGTHS)] for row in range(batch_size)]
            answers, answer_mask = text_batch(words, generator, end=SEP)
            inputs.update(decoder_input_ids=answers, decoder_attention_mask=answer_mask)
        return inputs

    def prepare_labels(self, model_class, config, inputs, generator):
        if model_class is M2I2ForPreTraining:
            mlm_input_ids, labels = mlm_targets(inputs["input_ids"], inputs["attention_mask"], generator)
            return {"labels": labels, "mlm_input_ids": mlm_input_ids}
        if model_class is M2I2ForVQA:
            return {"labels": answer_labels(inputs["decoder_input_ids"], inputs["decoder_attention_mask"])}
        if model_class is M2I2ForRetrieval:
            return {"labels": torch.randint(0, 2, (inputs["input_ids"].shape[0],), generator=generator)}
        return {}

    def assert_labels_predicted(self, model_class, output, labels):
        """MLM logits predict the labels (`mlm_input_ids` is an input); answer-decoder logits at position t predict the
        label at t + 1."""
        if model_class is M2I2ForPreTraining:
            labels = {"labels": labels["labels"]}
        return super().assert_labels_predicted(model_class, output, labels)


# A 64-word vocabulary and a large init, so that a random tiny decoder writes question-dependent, varied answers.
SMALL_VOCAB = {"cls_token_id": 1, "bos_token_id": 1, "sep_token_id": 2, "eos_token_id": 2, "mask_token_id": 3}
SMALL_CLS, SMALL_SEP = 1, 2
generation_config = functools.partial(albef_style.small_vocabulary_config, M2I2Config, SMALL_VOCAB)


class M2I2GenerationTester(albef_style.AlbefStyleGenerationTester):
    generative_model_classes = (M2I2ForVQA,)

    def build(self, model_class, seed=0, **overrides):
        torch.manual_seed(seed)
        return model_class(generation_config(**overrides))

    def image_inputs(self, config, batch_size=3, seed=0, model_class=None):
        generator = torch.Generator().manual_seed(seed)
        questions, mask = text_batch(TEXT_LENGTHS[:batch_size], generator, first=SMALL_CLS, vocab_low=5, vocab_high=64)
        return {"input_ids": questions, "attention_mask": mask, "pixel_values": pixel_batch(config, batch_size, generator)}

    def prompt_inputs(self, model_class, input_ids, attention_mask=None):
        return {"decoder_input_ids": input_ids, "decoder_attention_mask": attention_mask}

    def prompts(self, config):
        return [[SMALL_CLS, 10, 11, 12, 13], [SMALL_CLS, 20], [SMALL_CLS, 30, 31]]

    def prompt_with_end_token(self, config):
        return [SMALL_CLS, 10, 11, SMALL_SEP]

    def cross_attention_key(self, model):
        return model.text_decoder.bert.encoder.layer[0].crossattention.self.key

    def decoder_logits(self, model, image_inputs, tokens):
        return model(**image_inputs, decoder_input_ids=tokens, use_cache=False).logits


def candidate_answers(lengths, seed):
    """Candidate answers `[CLS] a_1..a_n [SEP]` with distinct first words (as an answer list's mostly are)."""
    answers, mask = text_batch(lengths, torch.Generator().manual_seed(seed), end=SEP)
    answers[:, 1] = torch.arange(1000, 1000 + len(lengths))
    return answers, mask


class M2I2MomentumTester(albef_style.AlbefStyleMomentumTester):
    model_class = M2I2ForPreTraining
    vqa_class = M2I2ForVQA
    model_tester = M2I2ModelTester()

    def pair_rows(self, config, count, seed=0):
        inputs = self.model_tester.prepare_inputs(config, batch_size=count, seed=seed, model_class=M2I2ForPreTraining)
        generator = torch.Generator().manual_seed(seed)
        inputs.update(self.model_tester.prepare_labels(M2I2ForPreTraining, config, inputs, generator))
        return [{key: value[row] for key, value in inputs.items()} for row in range(count)]

    def candidate_answers(self, lengths, seed):
        return candidate_answers(lengths, seed)
