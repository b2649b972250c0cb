"""MISS configuration: a BLIP-style ViT-B/16, a Joint Text-Multimodal (JTM) BERT encoder and a BERT text decoder
(Chen et al., ICANN 2024; the authors' code is a trimmed BLIP fork)."""

from transformers import PretrainedConfig

PRETRAINING_OBJECTIVES = ("itc", "itm", "lm")

# The CPU presets start from initializer_range = width ** -0.5, as MedViLL's do: BERT's 0.02 suits 768-wide layers and
# leaves every example's features almost equal at initialisation in 32- and 256-wide ones. `base` keeps 0.02.
_PRESETS = {
    "base": {},
    "small": {
        "vision_config": {
            "hidden_size": 256,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "initializer_range": 256**-0.5,
        },
        "text_config": {
            "hidden_size": 256,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "initializer_range": 256**-0.5,
        },
        "projection_dim": 128,
        "queue_size": 4096,
        "initializer_range": 256**-0.5,
    },
    "tiny": {
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "initializer_range": 32**-0.5,
        },
        "text_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "initializer_range": 32**-0.5,
        },
        "projection_dim": 16,
        "queue_size": 32,
        "initializer_range": 32**-0.5,
    },
}


class MISSVisionConfig(PretrainedConfig):
    r"""
    The image encoder: BLIP's ViT (timm blocks: pre-LayerNorm, fused qkv with bias, GELU MLP, LayerNorm eps 1e-6)
    with a learnt [CLS] and position embedding over the `(image_size / patch_size)**2` patch grid. Field names are
    those of transformers' `BlipVisionConfig`.

    Args:
        image_size: 224 in pre-training, 480 for the released VQA fine-tuning (see `MISSForVQA.from_pretraining`).
        drop_path_rate: stochastic depth of the last block (timm's linear rule: block i drops its residual branches
            with probability `drop_path_rate * i / (num_hidden_layers - 1)`); 0 in pre-training, 0.1 for VQA.
        initializer_range: std of the truncated normal initialisation of the tower (timm's 0.02).
    """

    model_type = "miss_vision_model"
    base_config_key = "vision_config"

    def __init__(
        self,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
        drop_path_rate=0.0,
        initializer_range=0.02,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        _check_heads("vision_config", hidden_size, num_attention_heads)
        if image_size % patch_size:
            raise ValueError(f"vision_config.image_size={image_size} must be a multiple of patch_size={patch_size}.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"vision_config.drop_path_rate={drop_path_rate} must be in [0, 1).")

    @property
    def grid_size(self) -> int:
        """Patches per side of the square image."""
        return self.image_size // self.patch_size


class MISSTextConfig(PretrainedConfig):
    r"""
    The JTM encoder and the text decoder: BLIP's BERT (`med.py`), without token-type embeddings, with cross-attention
    to `encoder_hidden_size`-wide states in every layer. Field names are those of transformers' `BlipTextConfig`.

    Args:
        vocab_size: bert-base-uncased (30,522) + `[DEC]` + `[ENC]`.
        encoder_hidden_size: width of the states the cross-attention reads (the ViT's; the VQA decoder reads the
            question states, which the original builds with the same 768).
        initializer_range: std of the normal initialisation of the encoder and decoder bodies (BERT's 0.02).
        pad_token_id / bos_token_id: `[PAD]` and `[DEC]` (the decoder's first token; [`MISSConfig`] writes its own
            `bos_token_id` here): transformers reads the special tokens from the text config (`get_text_config()`,
            e.g. Trainer's check that they agree with the tokenizer's).
    """

    model_type = "miss_text_model"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size=30524,
        hidden_size=768,
        encoder_hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=512,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        initializer_range=0.02,
        pad_token_id=0,
        bos_token_id=30522,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.encoder_hidden_size = encoder_hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        super().__init__(**kwargs)
        _check_heads("text_config", hidden_size, num_attention_heads)


class MISSConfig(PretrainedConfig):
    r"""
    Configuration of a MISS model. The defaults are the authors' pre-training model: ViT-B/16 at 224 px, a 12-layer
    BERT-base JTM encoder and decoder (vocabulary 30,524), ITC with momentum encoders and 57,600-entry queues, ITM
    with hard negatives, LM with label smoothing 0.1 (`models/miss_pretrain.py`, `configs/pretrain.yaml`). The released
    VQA model is the same with `vision_config.image_size=480` and `drop_path_rate=0.1` (`MISSForVQA.from_pretraining`).

    Fields whose only purpose is to reproduce the numbers of the released code are explicit (the converter sets them);
    new training keeps their defaults.

    Args:
        vision_config / text_config: [`MISSVisionConfig`] / [`MISSTextConfig`] (or their dicts).
        projection_dim: width of the ITC embeddings (`vision_proj`, `text_proj`).
        queue_size: ITC feature-queue length (57,600; any batch size works, a short batch wraps around).
        momentum: EMA factor of the momentum encoders.
        itc_temperature, itc_temperature_min, itc_temperature_max: the start value of the learnt ITC temperature and the
            range it is clamped to after every optimizer step.
        alpha, alpha_ramp_epochs: momentum-distillation weight of the ITC soft targets, ramped linearly from 0 over
            the first `alpha_ramp_epochs` epochs (`pretrain.py`) by `medvlp_hf.training.MomentumUpdateCallback`.
        label_smoothing: of every decoder cross-entropy (the original hard-codes 0.1 in `med.py`).
        pretraining_objectives: the terms of the pre-training loss, a subset of ("itc", "itm", "lm") (ITM draws its
            hard negatives from the ITC similarity, so "itm" needs "itc").
        vqa_generation_attends_question_padding: the released VQA inference lets the decoder attend the question's
            padding (an all-ones question mask), unlike its training; on for parity with it, off (the default) so a
            padded batch answers exactly as one question at a time.
        vqa_ranking_uses_label_smoothing: the original ranks candidate answers by their label-smoothed loss (BLIP's
            `rank_answer` reuses the training loss); off, answers are ranked by their log-likelihood.
        initializer_range: std of the normal initialisation of the heads (ITC projections, ITM head, LM-head transform);
            the towers use their sub-config's.
        bos_token_id / enc_token_id: `[DEC]` (30522, starts every decoder input) and `[ENC]` (30523, replaces the
            first token of a text the JTM encoder reads over the image).
    """

    model_type = "miss"
    sub_configs_defaults = {"vision_config": MISSVisionConfig, "text_config": MISSTextConfig}
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        projection_dim=256,
        queue_size=57600,
        momentum=0.995,
        itc_temperature=0.07,
        itc_temperature_min=0.001,
        itc_temperature_max=0.5,
        alpha=0.4,
        alpha_ramp_epochs=2.0,
        label_smoothing=0.1,
        pretraining_objectives=PRETRAINING_OBJECTIVES,
        vqa_generation_attends_question_padding=False,
        vqa_ranking_uses_label_smoothing=False,
        initializer_range=0.02,
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        bos_token_id=30522,
        enc_token_id=30523,
        eos_token_id=102,
        tie_word_embeddings=True,
        **kwargs,
    ):
        self.vision_config = _sub_config(MISSVisionConfig, vision_config)
        self.text_config = _sub_config(MISSTextConfig, text_config)
        self.text_config.bos_token_id = bos_token_id
        self.projection_dim = projection_dim
        self.queue_size = queue_size
        self.momentum = momentum
        self.itc_temperature = itc_temperature
        self.itc_temperature_min = itc_temperature_min
        self.itc_temperature_max = itc_temperature_max
        self.alpha = alpha
        self.alpha_ramp_epochs = alpha_ramp_epochs
        self.label_smoothing = label_smoothing
        self.pretraining_objectives = list(pretraining_objectives)
        self.vqa_generation_attends_question_padding = vqa_generation_attends_question_padding
        self.vqa_ranking_uses_label_smoothing = vqa_ranking_uses_label_smoothing
        self.initializer_range = initializer_range
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.enc_token_id = enc_token_id
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self._validate_miss()

    def _validate_miss(self):
        unknown = set(self.pretraining_objectives) - set(PRETRAINING_OBJECTIVES)
        if unknown or not self.pretraining_objectives:
            raise ValueError(
                f"MISSConfig.pretraining_objectives={self.pretraining_objectives}: choose a non-empty subset of "
                f"{PRETRAINING_OBJECTIVES}."
            )
        if "itm" in self.pretraining_objectives and "itc" not in self.pretraining_objectives:
            raise ValueError(
                "MISSConfig.pretraining_objectives has 'itm' without 'itc': ITM draws its hard negatives from the ITC "
                "similarity; add 'itc'."
            )
        if not 0.0 < self.itc_temperature_min <= self.itc_temperature <= self.itc_temperature_max:
            raise ValueError(
                f"MISSConfig: need 0 < itc_temperature_min <= itc_temperature <= itc_temperature_max, got "
                f"{self.itc_temperature_min}, {self.itc_temperature}, {self.itc_temperature_max}."
            )
        if not 0.0 <= self.momentum < 1.0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(
                f"MISSConfig: momentum={self.momentum} must be in [0, 1) and alpha={self.alpha} in [0, 1]."
            )
        if self.queue_size < 1 or self.alpha_ramp_epochs < 0:
            raise ValueError(
                f"MISSConfig: queue_size={self.queue_size} must be positive and "
                f"alpha_ramp_epochs={self.alpha_ramp_epochs} not negative."
            )
        if self.text_config.encoder_hidden_size != self.vision_config.hidden_size:
            raise ValueError(
                f"text_config.encoder_hidden_size={self.text_config.encoder_hidden_size} must equal "
                f"vision_config.hidden_size={self.vision_config.hidden_size}: the JTM encoder cross-attends the image."
            )
        vocab_size = self.text_config.vocab_size
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "enc_token_id"):
            if not 0 <= getattr(self, name) < vocab_size:
                raise ValueError(
                    f"MISSConfig.{name}={getattr(self, name)} is outside the text vocabulary (text_config.vocab_size="
                    f"{vocab_size})."
                )

    preset_names = tuple(_PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MISSConfig":
        """`base` is the authors' pre-training model; `small` trains from scratch on a CPU; `tiny` is for tests.
        `vision_config` / `text_config` overrides are dicts merged into the preset's."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown MISS preset {name!r}; choose one of {sorted(_PRESETS)}.")
        fields = {**_PRESETS[name], **overrides}
        for key in cls.sub_configs_defaults:
            fields[key] = {**_PRESETS[name].get(key, {}), **overrides.get(key, {})}
        fields["text_config"].setdefault("encoder_hidden_size", fields["vision_config"].get("hidden_size", 768))
        return cls(**fields)


def _check_heads(name, hidden_size, num_attention_heads):
    """Attention splits `hidden_size` evenly across the heads; `name` is the sub-config's field in the model config."""
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"{name}.hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})."
        )


def _sub_config(config_class, value):
    if value is None:
        return config_class()
    if isinstance(value, dict):
        return config_class(**value)
    if isinstance(value, config_class):
        return value
    raise TypeError(f"expected a {config_class.__name__} or a dict, got {type(value).__name__}.")


__all__ = ["MISSConfig", "MISSTextConfig", "MISSVisionConfig"]
