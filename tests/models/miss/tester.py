"""MISS's testers for the shared checks (tests/common), and its deterministic tiny inputs (token ids built directly,
independent of the processor)."""

import torch

from medvlp_hf import (
    MISSConfig,
    MISSForPreTraining,
    MISSForReportGeneration,
    MISSForRetrieval,
    MISSForVQA,
    MISSModel,
)
from tests.common.generation_tester import GenerationTester
from tests.common.model_tester import ModelTester
from tests.common.momentum_tester import MomentumTester

PAD, CLS, SEP, DEC, ENC = 0, 101, 102, 30522, 30523
TEXT_LENGTHS = (5, 2, 3, 4)
ANSWER_LENGTHS = (2, 1, 3, 2)
DECODER_HEADS = (MISSForPreTraining, MISSForVQA, MISSForReportGeneration)


def tiny_config(**overrides) -> MISSConfig:
    """The tiny preset with dropout off."""
    text = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **overrides.pop("text_config", {})}
    return MISSConfig.from_preset("tiny", text_config=text, **overrides)


def text_batch(lengths, generator, first=CLS, vocab_low=1000, vocab_high=2000, left_pad=False):
    """Texts `first w.. [SEP]` with the given numbers of words, padded to the longest."""
    total = max(lengths) + 2
    rows, masks = [], []
    for n in lengths:
        text = [first] + torch.randint(vocab_low, vocab_high, (n,), generator=generator).tolist() + [SEP]
        pad = [PAD] * (total - len(text))
        rows.append(pad + text if left_pad else text + pad)
        masks.append([0] * len(pad) + [1] * len(text) if left_pad else [1] * len(text) + [0] * len(pad))
    return torch.tensor(rows), torch.tensor(masks)


def pixel_batch(config, batch_size, generator):
    size = config.vision_config.image_size
    return torch.randn(batch_size, 3, size, size, generator=generator) * 3


def decoder_labels(input_ids, attention_mask):
    """LM targets aligned with a decoder input: the tokens, -100 at position 0 and at padding."""
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, 0] = -100
    return labels


class MISSModelTester(ModelTester):
    base_model_class = MISSModel
    model_classes = (MISSModel, MISSForPreTraining, MISSForVQA, MISSForReportGeneration, MISSForRetrieval)
    # pre-training with its LM term only (accumulation_overrides): ITC and ITM contrast the batch's examples
    mean_loss_model_classes = (MISSForPreTraining, MISSForVQA, MISSForReportGeneration, MISSForRetrieval)
    unpaired_model_classes = (MISSModel,)
    pairwise_outputs = ("logits_per_image", "logits_per_text")
    model_folder = "miss"

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

    def add_layer(self, config_dict):
        config_dict["text_config"]["num_hidden_layers"] += 1

    def widen(self, config):
        config.text_config.hidden_size *= 2
        config.text_config.intermediate_size *= 2

    def prepare_inputs(self, config, batch_size=3, seed=0, left_pad=False, model_class=None):
        generator = torch.Generator().manual_seed(seed)
        lengths = [TEXT_LENGTHS[row % len(TEXT_LENGTHS)] for row in range(batch_size)]
        input_ids, attention_mask = text_batch(lengths, generator, left_pad=left_pad)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_batch(config, batch_size, generator),
        }
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

    def assert_labels_predicted(self, model_class, output, labels):
        """Decoder logits at position t predict the label at t + 1."""
        if model_class not in DECODER_HEADS:
            return super().assert_labels_predicted(model_class, output, labels)
        target = labels["labels"][:, 1:]
        scored = target != -100
        assert torch.equal(output.logits[:, :-1].argmax(-1)[scored], target[scored])


# A 64-word vocabulary and a large init, so that a random tiny decoder writes image-dependent, varied text.
SMALL_VOCAB = {"cls_token_id": 1, "sep_token_id": 2, "bos_token_id": 3, "enc_token_id": 4, "eos_token_id": 2}
SMALL_DEC, SMALL_SEP = 3, 2


def generation_config(**overrides) -> MISSConfig:
    text = {"vocab_size": 64, "initializer_range": 0.5, **overrides.pop("text_config", {})}
    return tiny_config(text_config=text, **{"initializer_range": 0.5, **SMALL_VOCAB, **overrides})


class MISSGenerationTester(GenerationTester):
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

    def reference_greedy(self, model, image_inputs, max_new_tokens):
        """Greedy decoding by re-running the whole decoder on the whole answer/report so far at every step (no
        cache): what the released code does under current transformers."""
        config = model.config
        batch_size = image_inputs["pixel_values"].shape[0]
        tokens = torch.full((batch_size, 1), config.bos_token_id)
        finished = torch.zeros(batch_size, dtype=torch.bool)
        with torch.no_grad():
            for _ in range(max_new_tokens):
                if isinstance(model, MISSForVQA):
                    logits = model(**image_inputs, decoder_input_ids=tokens, use_cache=False).logits
                else:
                    logits = model(input_ids=tokens, pixel_values=image_inputs["pixel_values"], use_cache=False).logits
                next_tokens = logits[:, -1].argmax(-1).masked_fill(finished, config.pad_token_id)
                tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
                finished |= next_tokens == config.eos_token_id
                if finished.all():
                    break
        return tokens


class MISSMomentumTester(MomentumTester):
    model_class = MISSForPreTraining

    def get_config(self, **overrides):
        return tiny_config(**overrides)

    def pair_rows(self, config, count, seed=0):
        inputs = MISSModelTester().prepare_inputs(config, batch_size=count, seed=seed)
        inputs["labels"] = decoder_labels(inputs["input_ids"], inputs["attention_mask"])
        return [{key: value[row] for key, value in inputs.items()} for row in range(count)]

    def rank(self, config, k):
        """Scores of three candidate answers for two questions (`MISSForVQA.rank_answers`)."""
        torch.manual_seed(0)
        model = MISSForVQA(config).eval()
        inputs = MISSModelTester().prepare_inputs(config, batch_size=2, seed=4)
        answers, answer_mask = text_batch([1, 3, 2], torch.Generator().manual_seed(5), first=DEC)
        return model.rank_answers(
            inputs["input_ids"], inputs["pixel_values"], answers, inputs["attention_mask"], answer_mask, k=k
        ).scores, 3
