"""MISS's testers for the shared checks (tests/common), and its deterministic tiny inputs (token ids built directly,
independent of the processor)."""

import functools

import torch

from medvlp_hf import (
    MISSConfig,
    MISSForPreTraining,
    MISSForReportGeneration,
    MISSForRetrieval,
    MISSForVQA,
    MISSModel,
)
from tests.common import albef_style
from tests.common.albef_style import PAD, TEXT_LENGTHS, decoder_labels  # noqa: F401 (the tests' names)

CLS, SEP, DEC, ENC = 101, 102, 30522, 30523
ANSWER_LENGTHS = (2, 1, 3, 2)
DECODER_HEADS = (MISSForPreTraining, MISSForVQA, MISSForReportGeneration)
tiny_config = functools.partial(albef_style.tiny_config, MISSConfig)
# BLIP's texts end with [SEP]: `first w_1..w_n [SEP]`
text_batch = functools.partial(albef_style.text_batch, end=SEP)
PIXEL_SCALE = 3.0
pixel_batch = functools.partial(albef_style.pixel_batch, scale=PIXEL_SCALE)


class MISSModelTester(albef_style.AlbefStyleModelTester):
    base_model_class = MISSModel
    model_classes = (MISSModel, MISSForPreTraining, MISSForVQA, MISSForReportGeneration, MISSForRetrieval)
    # pre-training with its LM term only (accumulation_overrides): ITC and ITM contrast the batch's examples
    mean_loss_model_classes = (MISSForPreTraining, MISSForVQA, MISSForReportGeneration, MISSForRetrieval)
    unpaired_model_classes = (MISSModel,)
    decoder_model_classes = DECODER_HEADS
    pairwise_outputs = ("logits_per_image", "logits_per_text")
    model_folder = "miss"
    pixel_scale = PIXEL_SCALE

    def get_config(self, **overrides):
        return tiny_config(**overrides)

    def training_overrides(self):
        # No label smoothing nor distillation: their targets keep the loss above a floor (label smoothing 0.1 over
        # 30,524 tokens alone is 1.36 nats per token), and the fit check asks for a loss near 0. A queue larger than
        # the fit check's 60 x 4 training forwards takes their momentum features without a momentum step.
        return {"label_smoothing": 0.0, "alpha": 0.0, "queue_size": 256}

    def accumulation_overrides(self):
        return {**self.training_overrides(), "pretraining_objectives": ["lm"]}

    def batch_independent_overrides(self):
        return {"pretraining_objectives": ["lm"]}

    def prepare_inputs(self, config, batch_size=3, seed=0, left_pad=False, model_class=None):
        inputs, generator = self.pair_inputs(config, batch_size, seed, left_pad, end=SEP)
        if model_class is MISSForVQA:
            words = [ANSWER_LENGTHS[row % len(ANSWER_LENGTHS)] - 1 for row in range(batch_size)]
            answers, answer_mask = text_batch(words, generator, first=DEC)
            inputs.update(decoder_input_ids=answers, decoder_attention_mask=answer_mask)
        return inputs

    def prepare_labels(self, model_class, config, inputs, generator):
        if model_class in (MISSForPreTraining, MISSForReportGeneration):
            return {"labels": decoder_labels(inputs["input_ids"], inputs["attention_mask"])}
        if model_class is MISSForVQA:
            return {"labels": decoder_labels(inputs["decoder_input_ids"], inputs["decoder_attention_mask"])}
        if model_class is MISSForRetrieval:
            return {"labels": torch.randint(0, 2, (inputs["input_ids"].shape[0],), generator=generator)}
        return {}


# A 64-word vocabulary and a large init, so that a random tiny decoder writes image-dependent, varied text.
SMALL_VOCAB = {"cls_token_id": 1, "sep_token_id": 2, "bos_token_id": 3, "enc_token_id": 4, "eos_token_id": 2}
SMALL_DEC, SMALL_SEP = 3, 2
generation_config = functools.partial(albef_style.small_vocabulary_config, MISSConfig, SMALL_VOCAB)


class MISSGenerationTester(albef_style.AlbefStyleGenerationTester):
    generative_model_classes = (MISSForVQA, MISSForReportGeneration)

    def build(self, model_class, seed=0, **overrides):
        """Greedy by default (the released defaults, beam search with a minimum length, are tested on their own)."""
        torch.manual_seed(seed)
        model = model_class(generation_config(**overrides))
        model.generation_config.num_beams = 1
        model.generation_config.min_length = 0
        return model

    def image_inputs(self, config, batch_size=3, seed=0, model_class=None):
        generator = torch.Generator().manual_seed(seed)
        inputs = {"pixel_values": pixel_batch(config, batch_size, generator)}
        if model_class is MISSForVQA:
            questions, mask = text_batch(TEXT_LENGTHS[:batch_size], generator, first=1, vocab_low=5, vocab_high=64)
            questions[questions == SEP] = SMALL_SEP
            inputs.update(input_ids=questions, attention_mask=mask)
        return inputs

    def prompt_inputs(self, model_class, input_ids, attention_mask=None):
        if model_class is MISSForVQA:
            return {"decoder_input_ids": input_ids, "decoder_attention_mask": attention_mask}
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def prompts(self, config):
        return [[SMALL_DEC, 10, 11, 12, 13], [SMALL_DEC, 20], [SMALL_DEC, 30, 31]]

    def prompt_with_end_token(self, config):
        return [SMALL_DEC, 10, 11, SMALL_SEP]

    def cross_attention_key(self, model):
        return model.text_decoder.bert.encoder.layer[0].crossattention.self.key

    def decoder_logits(self, model, image_inputs, tokens):
        if isinstance(model, MISSForVQA):
            return model(**image_inputs, decoder_input_ids=tokens, use_cache=False).logits
        return model(input_ids=tokens, pixel_values=image_inputs["pixel_values"], use_cache=False).logits


class MISSMomentumTester(albef_style.AlbefStyleMomentumTester):
    model_class = MISSForPreTraining
    vqa_class = MISSForVQA
    model_tester = MISSModelTester()

    def pair_rows(self, config, count, seed=0):
        inputs = self.model_tester.prepare_inputs(config, batch_size=count, seed=seed)
        inputs["labels"] = decoder_labels(inputs["input_ids"], inputs["attention_mask"])
        return [{key: value[row] for key, value in inputs.items()} for row in range(count)]

    def candidate_answers(self, lengths, seed):
        return text_batch(lengths, torch.Generator().manual_seed(seed), first=DEC)
