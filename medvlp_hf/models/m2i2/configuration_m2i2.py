"""M2I2 configuration: ALBEF (a ViT-B/16, a BERT-base whose last layers cross-attend the image) pre-trained with MAE's
masked image modelling added, and ALBEF's answer-ranking VQA decoder (Li et al., ISBI 2023)."""

from transformers import PretrainedConfig

PRETRAINING_OBJECTIVES = ("itc", "itm", "mlm", "mim")
POSITION_EMBEDDING_TYPES = ("sincos", "learned")

# The CPU presets start from initializer_range = width ** -0.5, as MedViLL's and MISS's do: BERT's 0.02 suits 768-wide
# layers and leaves every example's features almost equal at initialisation in 32- and 256-wide ones. `base` keeps 0.02.
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
            "fusion_layer": 2,
            "initializer_range": 256**-0.5,
        },
        "mim_decoder_config": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "initializer_range": 128**-0.5,
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
            "fusion_layer": 1,
            "max_position_embeddings": 64,
            "initializer_range": 32**-0.5,
        },
        "mim_decoder_config": {
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "initializer_range": 16**-0.5,
        },
        "projection_dim": 16,
        "queue_size": 32,
        "initializer_range": 32**-0.5,
    },
}


class M2I2VisionConfig(PretrainedConfig):
    r"""
    The image encoder: a ViT (timm blocks: pre-LayerNorm, fused qkv with bias, GELU MLP, LayerNorm eps 1e-6) with a
    [CLS] token. Pre-training runs it as MAE's encoder (`models/mae.py`) over the patches a random mask keeps, with fixed
    2-D sin-cos position embeddings at 256 px; VQA runs it as ALBEF's ViT (`models/vit.py`) over every patch, with a
    learnt position embedding initialised from the pre-training table (see `M2I2ForVQA.from_pretraining`).

    Args:
        image_size: 256 in pre-training, 384 for the released VQA fine-tuning.
        position_embedding_type: `sincos` (MAE's fixed 2-D sin-cos table, not trained but saved, as the original) or
            `learned` (a trained table, ALBEF's ViT).
        drop_path_rate: stochastic depth of the last block (timm's linear rule); 0 in the original throughout.
        initializer_range: std of the truncated normal initialisation of the tower.
    """

    model_type = "m2i2_vision_model"
    base_config_key = "vision_config"

    def __init__(
        self,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=256,
        patch_size=16,
        num_channels=3,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
        drop_path_rate=0.0,
        position_embedding_type="sincos",
        initializer_range=0.02,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.position_embedding_type = position_embedding_type
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        _check_heads("vision_config", hidden_size, num_attention_heads)
        if image_size % patch_size:
            raise ValueError(f"vision_config.image_size={image_size} must be a multiple of patch_size={patch_size}.")
        if position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"vision_config.position_embedding_type={position_embedding_type!r}; choose one of "
                f"{POSITION_EMBEDDING_TYPES}."
            )
        if position_embedding_type == "sincos" and hidden_size % 4:
            raise ValueError(f"a 2-D sin-cos position table needs vision_config.hidden_size ({hidden_size}) divisible by 4.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"vision_config.drop_path_rate={drop_path_rate} must be in [0, 1).")

    # Copied from medvlp_hf.models.miss.configuration_miss.MISSVisionConfig.grid_size
    @property
    def grid_size(self) -> int:
        """Patches per side of the square image."""
        return self.image_size // self.patch_size


class M2I2MIMDecoderConfig(PretrainedConfig):
    r"""
    MAE's decoder for masked image modelling (512-d, 8 blocks, 16 heads in `mae_vit_base_patch16`): the same timm
    blocks as the image encoder, over the encoder's kept tokens (projected to `hidden_size`) and a learnt mask token at
    every removed patch, with fixed 2-D sin-cos position embeddings. It predicts each patch's pixels; the image geometry
    is the image encoder's.

    Args:
        initializer_range: std of the normal initialisation of the decoder (its mask token too).
    """

    model_type = "m2i2_mim_decoder"
    base_config_key = "mim_decoder_config"

    def __init__(
        self,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=16,
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
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        _check_heads("mim_decoder_config", hidden_size, num_attention_heads)
        if hidden_size % 4:
            raise ValueError(f"a 2-D sin-cos position table needs mim_decoder_config.hidden_size ({hidden_size}) divisible by 4.")


class M2I2TextConfig(PretrainedConfig):
    r"""
    ALBEF's BERT (`models/xbert.py`): BERT-base with token types, whose layers from `fusion_layer` on also cross-attend
    `encoder_hidden_size`-wide image states. The text encoder runs its first `fusion_layer` layers alone (`text` mode),
    the rest over the image (`fusion` mode), or all of them (`multimodal` mode); the VQA answer decoder is a causal copy
    of the fusion layers (`num_hidden_layers - fusion_layer` layers, all cross-attending the question states).

    Args:
        fusion_layer: the first layer with cross-attention (6 in `configs/config_bert.json`).
        encoder_hidden_size: width of the image states the fusion layers read (ALBEF's `encoder_width`).
        initializer_range: std of the normal initialisation of the text tower (BERT's 0.02).
    """

    model_type = "m2i2_text_model"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size=30522,
        hidden_size=768,
        encoder_hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        fusion_layer=6,
        max_position_embeddings=512,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        initializer_range=0.02,
        pad_token_id=0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.encoder_hidden_size = encoder_hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.fusion_layer = fusion_layer
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.pad_token_id = pad_token_id
        super().__init__(**kwargs)
        _check_heads("text_config", hidden_size, num_attention_heads)
        if not 0 < fusion_layer < num_hidden_layers:
            raise ValueError(
                f"text_config.fusion_layer={fusion_layer} must be in 1..{num_hidden_layers - 1} (num_hidden_layers - 1): "
                "M2I2 needs text-only layers for ITC and fusion layers for ITM, MLM and the VQA decoder."
            )

    @property
    def num_fusion_layers(self) -> int:
        """Layers that cross-attend the image; also the depth of the VQA answer decoder."""
        return self.num_hidden_layers - self.fusion_layer


# Copied from medvlp_hf.models.miss.configuration_miss._check_heads
def _check_heads(name, hidden_size, num_attention_heads):
    """Attention splits `hidden_size` evenly across the heads; `name` is the sub-config's field in the model config."""
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"{name}.hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})."
        )


class M2I2Config(PretrainedConfig):
    r"""
    Configuration of an M2I2 model. The defaults are the authors' pre-training model (`models/model_pretrain.py`,
    `configs/Pretrain.yaml`, `configs/config_bert.json`): MAE's ViT-B/16 at 256 px with its 512-d, 8-block decoder,
    BERT-base with fusion from layer 6, ITC with momentum encoders and 65,536-entry queues, ITM with hard negatives, MLM
    with momentum distillation, MIM on 15% of the patches. The released VQA recipe (`train_rad.py`, `configs/RAD.yaml`)
    is the same at 384 px with a learnt position table and a 6-layer answer decoder (`M2I2ForVQA.from_pretraining`).

    Fields whose only purpose is to reproduce the numbers of the released code are explicit (the converter sets them);
    new training keeps their defaults.

    Args:
        vision_config / text_config / mim_decoder_config: [`M2I2VisionConfig`] / [`M2I2TextConfig`] /
            [`M2I2MIMDecoderConfig`] (or their dicts).
        projection_dim: width of the ITC embeddings (`vision_proj`, `text_proj`).
        queue_size: ITC feature-queue length (any batch size works, a short batch wraps around).
        momentum: EMA factor of the momentum encoders (pre-training, and VQA distillation).
        itc_temperature, itc_temperature_min, itc_temperature_max: the start value of the learnt ITC temperature and the
            range it is clamped to at every optimizer step.
        alpha, alpha_ramp_epochs: momentum-distillation weight (ITC soft targets, MLM soft labels, VQA soft answers),
            ramped linearly from 0 over the first `alpha_ramp_epochs` epochs (`pretrain_med.py`, `train_rad.py` with
            `warm_up`) by `medvlp_hf.training.MomentumUpdateCallback`.
        mlm_probability: share of caption tokens MLM masks (never [PAD] or [CLS]; of the masked, 80% become [MASK],
            10% a random token, 10% stay).
        mim_mask_ratio: share of patches removed by the image masking of pre-training (0.15, the default argument of
            MAE's `forward` the original never overrides); all four objectives read the masked image, as coded.
        mim_norm_pix_loss: MAE's option to normalise each target patch by its own mean and variance (off as released).
        pretraining_objectives: the terms of the pre-training loss, a subset of ("itc", "itm", "mlm", "mim") (ITM draws
            its hard negatives from the ITC similarity, so "itm" needs "itc").
        vqa_distillation: VQA with momentum copies of the image encoder, the question encoder and the answer decoder,
            whose answer distributions are soft targets weighted by alpha (`distill: True` in `configs/RAD.yaml`; False
            for SLAKE and PathVQA).
        vqa_answer_weight: the weight of each answer in the VQA loss (`loss = sum(weight * answer loss) / batch`; the
            released datasets give every question one answer of weight 0.5).
        vqa_ranking_top_k: candidates re-scored in full per question by `M2I2ForVQA.rank_answers` (`k_test: 128`).
        vqa_ranking_double_counts_first_token: the released ranking (ALBEF's `rank_answer`) adds the first answer token's
            log-probability to the answer's log-likelihood, which already holds it; off (the default), an answer's score
            is its log-likelihood.
        initializer_range: std of the normal initialisation of the heads (ITC projections, ITM head).
        bos_token_id: `[CLS]`, which starts every answer the decoder reads or writes (ALBEF's tokenizer adds no `[SEP]`:
            texts are `[CLS] w_1..w_n`, answers `[CLS] a_1..a_n [SEP]` with a literal `[SEP]`).
    """

    model_type = "m2i2"
    sub_configs_defaults = {
        "vision_config": M2I2VisionConfig,
        "text_config": M2I2TextConfig,
        "mim_decoder_config": M2I2MIMDecoderConfig,
    }
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        mim_decoder_config=None,
        projection_dim=256,
        queue_size=65536,
        momentum=0.995,
        itc_temperature=0.07,
        itc_temperature_min=0.001,
        itc_temperature_max=0.5,
        alpha=0.4,
        alpha_ramp_epochs=1.0,
        mlm_probability=0.15,
        mim_mask_ratio=0.15,
        mim_norm_pix_loss=False,
        pretraining_objectives=PRETRAINING_OBJECTIVES,
        vqa_distillation=False,
        vqa_answer_weight=0.5,
        vqa_ranking_top_k=128,
        vqa_ranking_double_counts_first_token=False,
        initializer_range=0.02,
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        mask_token_id=103,
        bos_token_id=101,
        eos_token_id=102,
        tie_word_embeddings=True,
        **kwargs,
    ):
        self.vision_config = _sub_config(M2I2VisionConfig, vision_config)
        self.text_config = _sub_config(M2I2TextConfig, text_config)
        self.mim_decoder_config = _sub_config(M2I2MIMDecoderConfig, mim_decoder_config)
        self.projection_dim = projection_dim
        self.queue_size = queue_size
        self.momentum = momentum
        self.itc_temperature = itc_temperature
        self.itc_temperature_min = itc_temperature_min
        self.itc_temperature_max = itc_temperature_max
        self.alpha = alpha
        self.alpha_ramp_epochs = alpha_ramp_epochs
        self.mlm_probability = mlm_probability
        self.mim_mask_ratio = mim_mask_ratio
        self.mim_norm_pix_loss = mim_norm_pix_loss
        self.pretraining_objectives = list(pretraining_objectives)
        self.vqa_distillation = vqa_distillation
        self.vqa_answer_weight = vqa_answer_weight
        self.vqa_ranking_top_k = vqa_ranking_top_k
        self.vqa_ranking_double_counts_first_token = vqa_ranking_double_counts_first_token
        self.initializer_range = initializer_range
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.mask_token_id = mask_token_id
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self._validate_m2i2()

    def _validate_m2i2(self):
        unknown = set(self.pretraining_objectives) - set(PRETRAINING_OBJECTIVES)
        if unknown or not self.pretraining_objectives:
            raise ValueError(
                f"M2I2Config.pretraining_objectives={self.pretraining_objectives}: choose a non-empty subset of "
                f"{PRETRAINING_OBJECTIVES}."
            )
        if "itm" in self.pretraining_objectives and "itc" not in self.pretraining_objectives:
            raise ValueError(
                "M2I2Config.pretraining_objectives has 'itm' without 'itc': ITM draws its hard negatives from the ITC "
                "similarity; add 'itc'."
            )
        if not 0.0 < self.itc_temperature_min <= self.itc_temperature <= self.itc_temperature_max:
            raise ValueError(
                f"M2I2Config: need 0 < itc_temperature_min <= itc_temperature <= itc_temperature_max, got "
                f"{self.itc_temperature_min}, {self.itc_temperature}, {self.itc_temperature_max}."
            )
        if not 0.0 <= self.momentum < 1.0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"M2I2Config: momentum={self.momentum} must be in [0, 1) and alpha={self.alpha} in [0, 1].")
        if self.queue_size < 1 or self.alpha_ramp_epochs < 0 or self.vqa_ranking_top_k < 1:
            raise ValueError(
                f"M2I2Config: queue_size={self.queue_size} and vqa_ranking_top_k={self.vqa_ranking_top_k} must be "
                f"positive, alpha_ramp_epochs={self.alpha_ramp_epochs} not negative."
            )
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"M2I2Config.mlm_probability={self.mlm_probability} must be in (0, 1).")
        patches = self.vision_config.grid_size**2
        if not 1 <= int(patches * (1 - self.mim_mask_ratio)) < patches:
            raise ValueError(
                f"M2I2Config.mim_mask_ratio={self.mim_mask_ratio} must keep at least one of the {patches} patches and "
                "remove at least one."
            )
        if self.text_config.encoder_hidden_size != self.vision_config.hidden_size:
            raise ValueError(
                f"text_config.encoder_hidden_size={self.text_config.encoder_hidden_size} must equal "
                f"vision_config.hidden_size={self.vision_config.hidden_size}: the fusion layers cross-attend the image."
            )
        vocab_size = self.text_config.vocab_size
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id", "bos_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < vocab_size:
                raise ValueError(
                    f"M2I2Config.{name}={getattr(self, name)} is outside the text vocabulary (text_config.vocab_size="
                    f"{vocab_size})."
                )

    preset_names = tuple(_PRESETS)

    # Copied from medvlp_hf.models.miss.configuration_miss.MISSConfig.from_preset with MISS->M2I2
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "M2I2Config":
        """`base` is the authors' pre-training model; `small` trains from scratch on a CPU; `tiny` is for tests.
        `vision_config` / `text_config` overrides are dicts merged into the preset's."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown M2I2 preset {name!r}; choose one of {sorted(_PRESETS)}.")
        fields = {**_PRESETS[name], **overrides}
        for key in cls.sub_configs_defaults:
            fields[key] = {**_PRESETS[name].get(key, {}), **overrides.get(key, {})}
        fields["text_config"].setdefault("encoder_hidden_size", fields["vision_config"].get("hidden_size", 768))
        return cls(**fields)


# Copied from medvlp_hf.models.miss.configuration_miss._sub_config
def _sub_config(config_class, value):
    if value is None:
        return config_class()
    if isinstance(value, dict):
        return config_class(**value)
    if isinstance(value, config_class):
        return value
    raise TypeError(f"expected a {config_class.__name__} or a dict, got {type(value).__name__}.")


__all__ = ["M2I2Config", "M2I2MIMDecoderConfig", "M2I2TextConfig", "M2I2VisionConfig"]
