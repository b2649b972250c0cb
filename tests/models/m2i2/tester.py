"""M2I2's testers for the shared checks (tests/common), and its deterministic tiny inputs (token ids built directly, as
ALBEF's tokenizer writes them, independent of the processor): captions and questions `[CLS] w_1..w_n` without a closing
[SEP], answers `[CLS] a_1..a_n [SEP]`."""

import torch

from medvlp_hf import M2I2Config, M2I2ForPreTraining, M2I2ForRetrieval, M2I2ForVQA, M2I2Model
from tests.common.generation_tester import GenerationTester
from tests.common.model_tester import ModelTester
from tests.common.momentum_tester import MomentumTester

PAD, CLS, SEP, MASK = 0, 101, 102, 103
TEXT_LENGTHS = (5, 2, 3, 4)
ANSWER_LENGTHS = (2, 1, 3, 2)
NOISE_INPUTS = ("patch_noise", "momentum_patch_noise", "mim_patch_noise")


def tiny_config(**overrides) -> M2I2Config:
    """The tiny preset with dropout off."""
    text = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **overrides.pop("text_config", {})}
    return M2I2Config.from_preset("tiny", text_config=text, **overrides)


def text_batch(lengths, generator, end=None, first=CLS, vocab_low=1000, vocab_high=2000, left_pad=False):
    """Texts `first w_1..w_n [end]` with the given numbers of words, padded to the longest."""
    closing = [] if end is None else [end]
    total = max(lengths) + 1 + len(closing)
    rows, masks = [], []
    for n in lengths:
        text = [first] + torch.randint(vocab_low, vocab_high, (n,), generator=generator).tolist() + closing
        pad = [PAD] * (total - len(text))
        rows.append(pad + text if left_pad else text + pad)
        masks.append([0] * len(pad) + [1] * len(text) if left_pad else [1] * len(text) + [0] * len(pad))
    return torch.tensor(rows), torch.tensor(masks)


def pixel_batch(config, batch_size, generator):
    size = config.vision_config.image_size
    return torch.randn(batch_size, 3, size, size, generator=generator)


def answer_labels(answer_ids, answer_mask):
    """Decoder targets aligned with the answers: the tokens, -100 at position 0 and at padding."""
    labels = answer_ids.masked_fill(answer_mask == 0, -100)
    labels[:, 0] = -100
    return labels


def mlm_targets(input_ids, attention_mask, generator):
    """Injected MLM masking: in every caption one or two word positions become [MASK]; (mlm_input_ids, labels)."""
    chosen = torch.rand(input_ids.shape, generator=generator) < 0.3
    chosen[:, 1] = True
    chosen &= attention_mask.bool() & (input_ids != CLS)
    return input_ids.masked_fill(chosen, MASK), input_ids.masked_fill(~chosen, -100)


class M2I2ModelTester(ModelTester):
    base_model_class = M2I2Model
    model_classes = (M2I2Model, M2I2ForPreTraining, M2I2ForVQA, M2I2ForRetrieval)
    # pre-training with its MLM term only (accumulation_overrides): ITC and ITM contrast the batch's examples, MIM is a
    # micro-batch mean weighted by the micro-batch's share of masked tokens
    mean_loss_model_classes = (M2I2ForPreTraining, M2I2ForVQA, M2I2ForRetrieval)
    unpaired_model_classes = (M2I2Model,)
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
            return super().assert_labels_predicted(model_class, output, {"labels": labels["labels"]})
        if model_class is not M2I2ForVQA:
            return super().assert_labels_predicted(model_class, output, labels)
        target = labels["labels"][:, 1:]
        scored = target != -100
        assert torch.equal(output.logits[:, :-1].argmax(-1)[scored], target[scored])


# A 64-word vocabulary and a large init, so that a random tiny decoder writes question-dependent, varied answers.
SMALL_VOCAB = {"cls_token_id": 1, "bos_token_id": 1, "sep_token_id": 2, "eos_token_id": 2, "mask_token_id": 3}
SMALL_CLS, SMALL_SEP = 1, 2


def generation_config(**overrides) -> M2I2Config:
    text = {"vocab_size": 64, "initializer_range": 0.5, **overrides.pop("text_config", {})}
    return tiny_config(text_config=text, **{"initializer_range": 0.5, **SMALL_VOCAB, **overrides})


class M2I2GenerationTester(GenerationTester):
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

    def reference_greedy(self, model, image_inputs, max_new_tokens):
        """Greedy decoding by re-running the whole decoder on the whole answer so far at every step (no cache), as
        the original decoder would be run without `past_key_values`."""
        config = model.config
        batch_size = image_inputs["pixel_values"].shape[0]
        tokens = torch.full((batch_size, 1), config.bos_token_id)
        finished = torch.zeros(batch_size, dtype=torch.bool)
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = model(**image_inputs, decoder_input_ids=tokens, use_cache=False).logits
                next_tokens = logits[:, -1].argmax(-1).masked_fill(finished, config.pad_token_id)
                tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
                finished |= next_tokens == config.eos_token_id
                if finished.all():
                    break
        return tokens


def candidate_answers(lengths, seed):
    """Candidate answers `[CLS] a_1..a_n [SEP]` with distinct first words (as an answer list's mostly are)."""
    answers, mask = text_batch(lengths, torch.Generator().manual_seed(seed), end=SEP)
    answers[:, 1] = torch.arange(1000, 1000 + len(lengths))
    return answers, mask


class M2I2MomentumTester(MomentumTester):
    model_class = M2I2ForPreTraining

    def get_config(self, **overrides):
        return tiny_config(**overrides)

    def pair_rows(self, config, count, seed=0):
        tester = M2I2ModelTester()
        inputs = tester.prepare_inputs(config, batch_size=count, seed=seed, model_class=M2I2ForPreTraining)
        inputs.update(tester.prepare_labels(M2I2ForPreTraining, config, inputs, torch.Generator().manual_seed(seed)))
        return [{key: value[row] for key, value in inputs.items()} for row in range(count)]

    def rank(self, config, k):
        """Scores of three candidate answers for two questions (`M2I2ForVQA.rank_answers`)."""
        torch.manual_seed(0)
        model = M2I2ForVQA(config).eval()
        inputs = M2I2ModelTester().prepare_inputs(config, batch_size=2, seed=4)
        answers, answer_mask = candidate_answers([1, 3, 2], seed=5)
        return model.rank_answers(
            inputs["input_ids"], inputs["pixel_values"], answers, inputs["attention_mask"], answer_mask, k=k
        ).scores, 3
