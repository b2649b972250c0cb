"""MedViLL configuration: BERT-base joint encoder over ResNet-50 grid features (Moon et al., JBHI 2022)."""

from transformers import PretrainedConfig

ATTENTION_MASK_TYPES = ("bidirectional", "bar", "s2s", "bi_s2s", "non_crossing")
POSITION_SCHEMES = ("pretraining", "downstream", "consecutive")
VQA_POOLINGS = ("cls_sep_product", "cls")

# The CPU presets start from initializer_range = hidden_size ** -0.5: BERT's 0.02 suits 768-wide layers and, in 32-
# and 256-wide ones, leaves every example's pooled features almost equal at initialisation (measured on the demo set:
# `small` stays at the answer prior for 30+ steps with 0.02 and fits the batch within 30 steps with 0.0625). `base`
# keeps the paper's 0.02.
_PRESETS = {
    "base": {},
    "small": {
        "initializer_range": 256**-0.5,
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "image_size": 224,
        "resnet_stem_width": 16,
        "resnet_widths": [16, 32, 64, 128],
        "resnet_depths": [1, 1, 1, 1],
        "num_pretraining_image_tokens": 35,
        "freeze_image_encoder": False,
    },
    "tiny": {
        "initializer_range": 32**-0.5,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 64,
        "resnet_stem_width": 8,
        "resnet_widths": [4, 8, 16, 32],
        "resnet_depths": [1, 1, 1, 1],
        "num_pretraining_image_tokens": 3,
        "freeze_image_encoder": False,
    },
}


class MedViLLConfig(PretrainedConfig):
    r"""
    Configuration of a MedViLL model. The defaults are the released base model: a ResNet-50 turning a
    512x512 image into a 16x16x2048 grid, projected into a BERT-base encoder (12x768x12, vocab 30,522)
    that reads `[CLS] v_1..v_N [SEP] w_1..w_n [SEP]` under one of five attention masks.

    Fields whose only purpose is to reproduce the numbers of the authors' code (which uses three
    different position/segment schemes and per-module LayerNorm epsilons) are explicit so a converted
    checkpoint gives the original outputs; the conversion script sets them.

    Args:
        attention_mask_type: pre-training mask, one of `bidirectional`, `bar` (bidirectional
            auto-regressive: image block sees everything, text is causal), `s2s`, `bi_s2s` (per-sample
            choice of s2s with probability `s2s_probability`, else bidirectional) and `non_crossing`.
        num_pretraining_image_tokens: grid cells sampled (sorted, re-drawn every training forward) in
            pre-training; downstream heads use every cell.
        freeze_image_encoder: the released code freezes the whole ResNet (its BatchNorm statistics still
            move in train mode).
        position_scheme: `pretraining` (CLS 0, image = grid index, visual SEP 0), `downstream` (CLS 0,
            image = grid index, visual SEP N+1) or `consecutive` (CLS 0, image = 1 + grid index, visual SEP
            N+1). Text positions always restart at 0.
        padding_token_type_id: segment id of text padding (1 in pre-training, 0 in the downstream code).
        prefix_attends_text_padding: reproduces the released BAR mask, where image rows also attend to text
            padding; new training should leave it off so results do not depend on batch padding.
        layer_norm_eps: embeddings and encoder (1e-12 in the pre-training code, 1e-5 in the downstream code).
        head_layer_norm_eps: the MLM / LM head transform (1e-5 everywhere in the original).
        vqa_pooling: `cls_sep_product` (the code: h_CLS * h_SEP) or `cls` (the paper: h_CLS).
        classification_pos_weight: optional per-label positive weights for the diagnosis BCE loss.
        resnet_channels_last: feed the ResNet channels-last activations, which spares the convolutions their layout
            reorders (1.25x faster ResNet on CPU, benchmarks/bench_forward.py) but changes their summation order:
            at the released geometry a few of 1.7M vocabulary logits then differ from the original code by up to
            1.12x the parity bound (rtol 1e-5, atol 1e-4; arg-max identical). Off by default, so the default path
            is the one whose parity is proven.
    """

    model_type = "medvill"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        head_layer_norm_eps=1e-5,
        image_size=512,
        num_channels=3,
        resnet_stem_width=64,
        resnet_widths=(64, 128, 256, 512),
        resnet_depths=(3, 4, 6, 3),
        freeze_image_encoder=True,
        num_pretraining_image_tokens=180,
        attention_mask_type="bar",
        s2s_probability=0.75,
        position_scheme="pretraining",
        padding_token_type_id=1,
        prefix_attends_text_padding=False,
        vqa_pooling="cls_sep_product",
        classification_pos_weight=None,
        resnet_channels_last=False,
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        mask_token_id=103,
        tie_word_embeddings=True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.head_layer_norm_eps = head_layer_norm_eps
        self.image_size = image_size
        self.num_channels = num_channels
        self.resnet_stem_width = resnet_stem_width
        self.resnet_widths = list(resnet_widths)
        self.resnet_depths = list(resnet_depths)
        self.freeze_image_encoder = freeze_image_encoder
        self.num_pretraining_image_tokens = num_pretraining_image_tokens
        self.attention_mask_type = attention_mask_type
        self.s2s_probability = s2s_probability
        self.position_scheme = position_scheme
        self.padding_token_type_id = padding_token_type_id
        self.prefix_attends_text_padding = prefix_attends_text_padding
        self.vqa_pooling = vqa_pooling
        self.classification_pos_weight = classification_pos_weight
        self.resnet_channels_last = resnet_channels_last
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.mask_token_id = mask_token_id
        self.tie_word_embeddings = tie_word_embeddings
        kwargs.setdefault("bos_token_id", sep_token_id)
        kwargs.setdefault("eos_token_id", sep_token_id)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self._validate_medvill()

    def _validate_medvill(self):
        choices = {
            "attention_mask_type": ATTENTION_MASK_TYPES,
            "position_scheme": POSITION_SCHEMES,
            "vqa_pooling": VQA_POOLINGS,
        }
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"MedViLLConfig.{field}={getattr(self, field)!r}; choose one of {allowed}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})."
            )
        if len(self.resnet_widths) != 4 or len(self.resnet_depths) != 4:
            raise ValueError("resnet_widths and resnet_depths need four entries (the four ResNet stages).")
        if self.image_size % 32:
            raise ValueError(f"image_size={self.image_size} must be a multiple of 32 (the ResNet stride).")
        if not 0 < self.num_pretraining_image_tokens <= self.num_image_tokens:
            raise ValueError(
                f"num_pretraining_image_tokens={self.num_pretraining_image_tokens} must be in 1..{self.num_image_tokens} "
                f"(the {self.image_grid_size}x{self.image_grid_size} grid of a {self.image_size}px image)."
            )
        if not 0.0 <= self.s2s_probability <= 1.0:
            raise ValueError(f"s2s_probability={self.s2s_probability} must be a probability.")

    @property
    def image_grid_size(self) -> int:
        return self.image_size // 32

    @property
    def num_image_tokens(self) -> int:
        return self.image_grid_size**2

    @property
    def image_feature_size(self) -> int:
        return 4 * self.resnet_widths[-1]

    preset_names = tuple(_PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MedViLLConfig":
        """`base` is the paper's model; `small` trains from scratch on a CPU; `tiny` is for tests."""
        if name not in _PRESETS:
            raise ValueError(f"Unknown MedViLL preset {name!r}; choose one of {sorted(_PRESETS)}.")
        return cls(**{**_PRESETS[name], **overrides})


__all__ = ["MedViLLConfig"]
