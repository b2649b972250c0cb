"""What the testers of the ALBEF/BLIP-style models (MISS, M2I2; a ViT, a BERT text encoder with cross-attention, an
answer decoder, momentum encoders) share: deterministic tiny inputs (token ids of bert-base-uncased built directly,
independent of the processor), the text-tower resizing the common checks ask for, decoder-label and greedy-decoding
references, the answer-ranking a momentum tester returns, and reference computations of ALBEF's ITC and ITM losses.
A model's tester.py subclasses these with its config class, heads and token layout.
"""

import pytest
import torch

from tests.common.generation_tester import GenerationTester
from tests.common.model_tester import ModelTester
from tests.common.momentum_tester import MomentumTester

PAD, CLS, SEP = 0, 101, 102
TEXT_LENGTHS = (5, 2, 3, 4)


def tiny_config(config_class, **overrides):
    """The tiny preset of `config_class` with dropout off."""
    text = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **overrides.pop("text_config", {})}
    return config_class.from_preset("tiny", text_config=text, **overrides)


def small_vocabulary_config(config_class, small_vocabulary, **overrides):
    """A tiny config with a 64-word vocabulary (special ids `small_vocabulary`) and a large init, so that a random
    tiny decoder writes input-dependent, varied text."""
    text = {"vocab_size": 64, "initializer_range": 0.5, **overrides.pop("text_config", {})}
    return tiny_config(config_class, text_config=text, **{"initializer_range": 0.5, **small_vocabulary, **overrides})


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


def pixel_batch(config, batch_size, generator, scale=1.0):
    """Normal pixel values of `config.vision_config.image_size`, times `scale`."""
    size = config.vision_config.image_size
    return torch.randn(batch_size, 3, size, size, generator=generator) * scale


def decoder_labels(input_ids, attention_mask):
    """LM targets aligned with a decoder input: the tokens, -100 at position 0 and at padding."""
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, 0] = -100
    return labels


def image_setting_refusals(rescale_message="cannot be changed"):
    """(image-processor keyword arguments, what the error says) for the settings the ALBEF-style image processors
    refuse because they would break the released pipeline; `rescale_message` is what refusing `do_rescale=False`
    says."""
    return [
        ({"do_convert_rgb": False}, "takes 3-channel images"),
        ({"do_rescale": False}, rescale_message),
        ({"rescale_factor": 1 / 65535}, "cannot be changed"),
        ({"do_center_crop": True}, "without centre crop"),
        ({"do_pad": True}, "without centre crop or padding"),
        ({"size": {"shortest_edge": 8}}, "size must be"),
        ({"data_format": "channels_last"}, "channels-first"),
        ({"float_max_value": 0}, "float_max_value must be positive"),
    ]


# (processor keyword arguments, error type, what the error says) that every ALBEF-style processor refuses
TEXT_ERRORS = [
    ({"text": "a", "text_kind": "caption"}, ValueError, "text_kind must be one of ('report', 'question')"),
    ({}, ValueError, "needs images, text or both"),
    ({"text": [["pre", "tokenized"]]}, TypeError, "text must be a str or a non-empty list of str"),
    ({"text": "a", "truncation": "only_second"}, ValueError, "truncation must be True or False"),
    ({"text": "a", "return_token_type_ids": True}, TypeError, "unexpected keyword arguments ['return_token"),
]


def reference_itc_loss(image, text, image_m, text_m, feature_queue, temperature, alpha):
    """ALBEF's ITC with momentum distillation: the mean of the image->text and text->image cross-entropies against the
    soft targets `alpha * softmax(momentum similarity) + (1 - alpha) * identity`, over the batch's momentum features
    and the queue. Features: (B, projection_dim), L2-normalised."""
    image_all = torch.cat([image_m, feature_queue.image_queue.T])
    text_all = torch.cat([text_m, feature_queue.text_queue.T])
    losses = []
    for query, query_m, keys in ((image, image_m, text_all), (text, text_m, image_all)):
        targets = alpha * (query_m @ keys.T / temperature).softmax(-1)
        targets = targets + (1 - alpha) * torch.eye(query.shape[0], keys.shape[0])
        losses.append(-(targets * (query @ keys.T / temperature).log_softmax(-1)).sum(-1).mean())
    return (losses[0] + losses[1]) / 2


def reference_itm_logits(match, negative_images, negative_texts):
    """ITM logits and labels as ALBEF lays them out: the B positives, each text with its negative image, each image
    with its negative text (labels 1, 0, 0); `match(text_rows, image_rows)` gives the ITM head's logits of pairs."""
    rows = torch.arange(len(negative_images))
    logits = torch.cat([match(rows, rows), match(rows, negative_images), match(negative_texts, rows)])
    labels = torch.cat([torch.ones(len(rows), dtype=torch.long), torch.zeros(2 * len(rows), dtype=torch.long)])
    return logits, labels


def assert_momentum_step(model, before, image_m):
    """After `model.momentum_step()`: every momentum parameter is the EMA (momentum 0.995) of its value `before`
    ({name: (online, momentum)}), the batch's momentum image features `image_m` were enqueued at the queue's start, and
    the temperature is clamped to its minimum."""
    for name, online, shadow in model.momentum_parameter_pairs():
        torch.testing.assert_close(shadow, before[name][1] * 0.995 + before[name][0] * 0.005, atol=0, rtol=0)
    torch.testing.assert_close(model.feature_queue.image_queue[:, : len(image_m)], image_m.T)
    assert int(model.feature_queue.queue_ptr) == len(image_m)
    assert model.temperature.item() == pytest.approx(model.config.itc_temperature_min)


def assert_bias_initialised_to_zero(model, bias):
    """What `from_pretrained` does for a head new to a checkpoint, without depending on what the memory held: every
    weight but `bias` marked loaded, `bias` NaN; `initialize_weights` (remote code) must set it to zero."""
    for module in model.modules():
        module._is_hf_initialized = False
    for tensor in (*model.parameters(), *model.buffers()):
        tensor._is_hf_initialized = True
    del bias._is_hf_initialized
    with torch.no_grad():
        bias.fill_(float("nan"))
    assert model.is_custom_code()
    model.initialize_weights()
    assert torch.equal(bias, torch.zeros_like(bias))


class AlbefStyleModelTester(ModelTester):
    """Subclasses set the `ModelTester` attributes, `decoder_model_classes` (heads whose logits at t predict the label
    at t + 1) and implement `get_config`, `prepare_inputs` (from `pair_inputs`) and `prepare_labels`."""

    decoder_model_classes = ()
    pixel_scale = 1.0

    def pair_inputs(self, config, batch_size, seed, left_pad=False, **text_options):
        """(inputs, generator): `batch_size` texts of `TEXT_LENGTHS` words (`text_batch(**text_options)`) and images,
        drawn from a generator seeded with `seed` that a head's extra inputs continue."""
        generator = torch.Generator().manual_seed(seed)
        lengths = [TEXT_LENGTHS[row % len(TEXT_LENGTHS)] for row in range(batch_size)]
        input_ids, attention_mask = text_batch(lengths, generator, left_pad=left_pad, **text_options)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_batch(config, batch_size, generator, self.pixel_scale),
        }
        return inputs, generator

    def add_layer(self, config_dict):
        config_dict["text_config"]["num_hidden_layers"] += 1

    def widen(self, config):
        config.text_config.hidden_size *= 2
        config.text_config.intermediate_size *= 2

    def assert_labels_predicted(self, model_class, output, labels):
        """Decoder logits at position t predict the label at t + 1."""
        if model_class not in self.decoder_model_classes:
            return super().assert_labels_predicted(model_class, output, labels)
        target = labels["labels"][:, 1:]
        scored = target != -100
        assert torch.equal(output.logits[:, :-1].argmax(-1)[scored], target[scored])


class AlbefStyleGenerationTester(GenerationTester):
    """Subclasses implement `decoder_logits` (one uncached forward's logits for the tokens so far) besides the
    `GenerationTester` hooks."""

    def decoder_logits(self, model, image_inputs, tokens):
        raise NotImplementedError

    def reference_greedy(self, model, image_inputs, max_new_tokens):
        """Greedy decoding by re-running the whole decoder on the whole text so far at every step (no cache): what
        the released code does under current transformers."""
        config = model.config
        batch_size = image_inputs["pixel_values"].shape[0]
        tokens = torch.full((batch_size, 1), config.bos_token_id)
        finished = torch.zeros(batch_size, dtype=torch.bool)
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = self.decoder_logits(model, image_inputs, tokens)
                next_tokens = logits[:, -1].argmax(-1).masked_fill(finished, config.pad_token_id)
                tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
                finished |= next_tokens == config.eos_token_id
                if finished.all():
                    break
        return tokens


class AlbefStyleMomentumTester(MomentumTester):
    """Subclasses set `model_class`, `vqa_class` and `model_tester` (their `AlbefStyleModelTester`) and implement
    `candidate_answers`."""

    vqa_class = None
    model_tester = None

    def get_config(self, **overrides):
        return self.model_tester.get_config(**overrides)

    def candidate_answers(self, lengths, seed):
        """(answer ids, mask) of candidate answers with `lengths` words, in the decoder's layout."""
        raise NotImplementedError

    def rank(self, config, k):
        """Scores of three candidate answers for two questions (`rank_answers` of the VQA head)."""
        torch.manual_seed(0)
        model = self.vqa_class(config).eval()
        inputs = self.model_tester.prepare_inputs(config, batch_size=2, seed=4)
        answers, answer_mask = self.candidate_answers([1, 3, 2], seed=5)
        return model.rank_answers(
            inputs["input_ids"], inputs["pixel_values"], answers, inputs["attention_mask"], answer_mask, k=k
        ).scores, 3
