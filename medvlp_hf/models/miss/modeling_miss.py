"""MISS: generative medical VQA with a Joint Text-Multimodal encoder (Chen et al., ICANN 2024), as transformers models.

The authors' code is a trimmed BLIP fork (`models/{vit,med,miss,miss_pretrain,miss_vqa}.py`); the module names here are
those of transformers' BLIP (`vision_model`, `text_encoder.encoder.layer.N.{attention,crossattention,...}`,
`text_decoder.{bert,cls}`), so a conversion is a prefix map. transformers' BLIP modules are reused where their numerics
are the original's (patch/position embeddings, MLP, BERT feed-forward and output blocks, LM head); attention is written
here because BLIP's is eager-only, and the ViT layers because BLIP's have no stochastic depth.

Texts are tokenised as any BERT tokenizer does (`[CLS] w_1..w_n [SEP]`); as in the original, the model replaces the
first token with `[ENC]` where the JTM encoder reads a text over the image (ITM, VQA questions) and with `[DEC]` where
the decoder reads it (LM, answers, reports).
"""

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    CausalLMOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.blip.modeling_blip import BlipMLP, BlipVisionEmbeddings
from transformers.models.blip.modeling_blip_text import (
    BlipTextEmbeddings,
    BlipTextIntermediate,
    BlipTextLMPredictionHead,
    BlipTextOnlyMLMHead,
    BlipTextOutput,
    BlipTextSelfOutput,
)
from transformers.utils import ModelOutput

from .configuration_miss import MISSConfig, MISSTextConfig, MISSVisionConfig

IGNORE_INDEX = -100
# ITM hard negatives are drawn with probability softmax(similarity) + 1e-4 (`miss_pretrain.py`).
HARD_NEGATIVE_SMOOTHING = 1e-4


# Copied from medvlp_hf.models.medvill.modeling_medvill.kv_cache_name
def kv_cache_name() -> str:
    """The name transformers gives the KV cache, both as the output field and as the keyword `generate()` passes
    to `forward`: `past_key_values` up to 5.23, `cache` from 5.24. Read off transformers' own
    `CausalLMOutputWithPast`, so outputs that inherit its field and code that uses this name follow a rename
    without version checks."""
    fields = {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
    (name,) = fields - {"loss", "logits", "hidden_states", "attentions"}
    return name


KV_CACHE = kv_cache_name()


# Copied from medvlp_hf.models.medvill.modeling_medvill.resolve_kv_cache
def resolve_kv_cache(cache, past_key_values):
    """The cache a caller passed as `cache` (transformers >= 5.24) or `past_key_values` (the older name)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("got two different caches, `cache` and `past_key_values`; pass one (they are the same argument).")
    return cache if cache is not None else past_key_values


# --------------------------------------------------------------------------------------------------
# Input checks, masks, positions, losses
# --------------------------------------------------------------------------------------------------


def check_image_batch(pixel_values: torch.Tensor, batch_size: int) -> None:
    """One image per text: torch would fail deep inside (an opaque shape error) when the counts differ."""
    if pixel_values.shape[0] != batch_size:
        raise ValueError(
            f"got {pixel_values.shape[0]} image(s) (pixel_values) and {batch_size} text(s) (input_ids); each text "
            "needs its own image. To ask several questions about one image, repeat it, e.g. "
            "`pixel_values.expand(len(texts), -1, -1, -1)` or `images=[image] * len(texts)` in the processor."
        )


# Copied from medvlp_hf.models.medvill.modeling_medvill.check_label_batch
def check_label_batch(labels: torch.Tensor | None, input_ids: torch.Tensor | None, name: str = "labels") -> None:
    """Labels need one row per example; a mismatch would otherwise surface as an opaque loss-function error."""
    if labels is not None and input_ids is not None and labels.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"{name} has {labels.shape[0]} row(s) but the batch has {input_ids.shape[0]} example(s) (input_ids); "
            f"pass one row of {name} per example."
        )


def check_decoder_labels(labels: torch.Tensor, input_ids: torch.Tensor) -> None:
    """Decoder labels are aligned with the decoder input `[DEC] w_1..w_n [SEP]`: `labels[:, t]` is the token at t,
    predicted from the tokens before it, so position 0 is never a target. It must be -100, or Trainer's count of
    target tokens (`num_items_in_batch`) would include it and rescale the loss."""
    if labels.shape != input_ids.shape:
        raise ValueError(
            f"labels has shape {tuple(labels.shape)} but the decoder input has shape {tuple(input_ids.shape)}; the "
            "labels are aligned with the decoder input `[DEC] w_1..w_n [SEP]` (the model shifts them itself)."
        )
    if bool((labels[:, 0] != IGNORE_INDEX).any()):
        raise ValueError(
            "labels[:, 0] must be -100: it is the [DEC] start position, which no token predicts (the model shifts the "
            "labels itself). Pass the decoder input ids with -100 at [DEC] and at padding, as MISSProcessor does."
        )


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's first real token (0 for right padding)."""
    return attention_mask.int().argmax(-1)


def text_position_ids(attention_mask: torch.Tensor, new_length: int) -> torch.Tensor:
    """Positions of the last `new_length` tokens of texts whose mask (past and new tokens) is `attention_mask`:
    counted from each row's first real token, so right-padded texts get BLIP's `0..L-1` and left-padded ones the
    positions they would have alone."""
    total = attention_mask.shape[1]
    offsets = torch.arange(total, device=attention_mask.device)[None] - first_token_index(attention_mask)[:, None]
    return offsets.clamp(min=0)[:, total - new_length :]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's minimum elsewhere (the original adds -10000: the same in fp32)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def self_attention_mask(attention_mask, query_length, causal, dtype):
    """Additive (B, 1, Q, K) mask of the last Q of K tokens: padding, and the future when `causal`."""
    allowed = attention_mask.bool()[:, None, None, :]
    if causal:
        keys = attention_mask.shape[1]
        query_positions = torch.arange(keys - query_length, keys, device=attention_mask.device)
        allowed = allowed & (torch.arange(keys, device=attention_mask.device)[None] <= query_positions[:, None])
    return additive_mask(allowed, dtype)


def with_first_token(input_ids, attention_mask, token_id, config: MISSConfig, role: str):
    """`input_ids` with each row's first real token set to `token_id` ([ENC] or [DEC]), as the original overwrites the
    tokenizer's [CLS]. A row that starts with neither [CLS] nor `token_id` is refused: it was not tokenised with the
    special tokens, and overwriting would drop a word."""
    first = first_token_index(attention_mask)[:, None]
    current = input_ids.gather(1, first)
    accepted = torch.tensor([config.cls_token_id, token_id], device=input_ids.device)
    if not bool(torch.isin(current, accepted).all()):
        raise ValueError(
            f"MISS {role} must start with [CLS] (id {config.cls_token_id}, the tokenizer's first token) or with id "
            f"{token_id}; got first tokens {current.flatten().tolist()}. Tokenise with the special tokens "
            "(`add_special_tokens=True`), as MISSProcessor does."
        )
    return input_ids.scatter(1, first, token_id)


def decoder_cross_entropy(logits, labels, label_smoothing, reduction="mean", num_items_in_batch=None):
    """Label-smoothed next-token cross-entropy of decoder `logits` (B, L, V) against `labels` (B, L) aligned with the
    decoder input (position t predicts `labels[:, t + 1]`; -100 is ignored), as `med.py`'s `BertLMHeadModel` computes.

    reduction: "mean" over the target tokens (of the whole accumulated batch when Trainer passes their count
    `num_items_in_batch`), or "sum_per_sample" (B,) (the VQA loss and answer scores).
    """
    predicted, targets = logits[:, :-1].float(), labels[:, 1:]
    losses = F.cross_entropy(
        predicted.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing,
        reduction="none",
    ).view(targets.shape)
    if reduction == "sum_per_sample":
        return losses.sum(-1)
    if num_items_in_batch is not None:
        return losses.sum() / num_items_in_batch
    return losses.sum() / (targets != IGNORE_INDEX).sum()


# Copied from medvlp_hf.models.medvill.modeling_medvill._eager_attention
def _eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.dropout(weights.softmax(-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def attend(module, query, key, value, attention_mask, output_attentions):
    """Attention through `ALL_ATTENTION_FUNCTIONS` (the config's implementation; eager when weights are asked for).
    Returns the context (B, L, heads * head_dim) and the weights (None unless eager)."""
    implementation = "eager" if output_attentions else module.config._attn_implementation
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, _eager_attention)
    context, weights = attention(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=module.dropout if module.training else 0.0,
        scaling=module.scaling,
    )
    return context.reshape(*context.shape[:2], -1), weights


def drop_path(hidden_states: torch.Tensor, probability: float, training: bool) -> torch.Tensor:
    """Stochastic depth (timm's `DropPath`): in training, each sample's residual branch is dropped with `probability`
    and kept ones are scaled by 1 / (1 - probability)."""
    if probability == 0.0 or not training:
        return hidden_states
    keep = 1.0 - probability
    mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)).bernoulli_(keep)
    return hidden_states * mask / keep


# --------------------------------------------------------------------------------------------------
# Image encoder: BLIP's ViT (`vit.py`) with SDPA and stochastic depth
# --------------------------------------------------------------------------------------------------


class MISSVisionAttention(nn.Module):
    """Multi-head self-attention with timm's fused `qkv` projection."""

    is_causal = False

    def __init__(self, config: MISSVisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.projection = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states, output_attentions=False):
        batch_size, length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        context, weights = attend(self, query, key, value, None, output_attentions)
        return self.projection(context), weights


class MISSVisionLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm ViT block; both residual branches go through stochastic depth (timm's `Block`)."""

    def __init__(self, config: MISSVisionConfig, drop_path_rate: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MISSVisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = BlipMLP(config)
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states, output_attentions=False):
        attended, weights = self.self_attn(self.layer_norm1(hidden_states), output_attentions)
        hidden_states = hidden_states + drop_path(attended, self.drop_path_rate, self.training)
        feed_forward = self.mlp(self.layer_norm2(hidden_states))
        return hidden_states + drop_path(feed_forward, self.drop_path_rate, self.training), weights


class MISSVisionEncoder(nn.Module):
    def __init__(self, config: MISSVisionConfig):
        super().__init__()
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.ModuleList([MISSVisionLayer(config, rate) for rate in rates])

    def forward(self, hidden_states, output_attentions=False, output_hidden_states=False):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, all_hidden, all_attentions


class MISSVisionModel(PreTrainedModel):
    """ViT: `[CLS]` + patch embeddings + position embeddings (BLIP's `BlipVisionEmbeddings`), the blocks, a final
    LayerNorm. Returns every token's state (B, 1 + grid**2, hidden); token 0 is the image's [CLS]. A `PreTrainedModel`
    of its own (as BLIP-2's vision tower) so it follows its sub-config's attention implementation and initialisation
    (timm's truncated normal)."""

    config_class = MISSVisionConfig
    config: MISSVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MISSVisionLayer"]

    def __init__(self, config: MISSVisionConfig):
        super().__init__(config)
        self.embeddings = BlipVisionEmbeddings(config)
        self.encoder = MISSVisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, BlipVisionEmbeddings):
            init.trunc_normal_(module.class_embedding, std=std)
            init.trunc_normal_(module.position_embedding, std=std)

    def forward(
        self, pixel_values, interpolate_pos_encoding=False, output_attentions=False, output_hidden_states=False
    ):
        r"""
        pixel_values: (B, 3, image_size, image_size); any square size with `interpolate_pos_encoding=True` (the
            position embeddings are resized bicubically, as BLIP does).
        """
        size = self.config.image_size
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or (
            not interpolate_pos_encoding and tuple(pixel_values.shape[2:]) != (size, size)
        ):
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; this MISS model expects (batch, 3, {size}, "
                f"{size}) (vision_config.image_size={size}). Preprocess images with MISSProcessor / MISSImageProcessor "
                "at this size, or pass interpolate_pos_encoding=True to run at another size."
            )
        embeddings = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states, all_hidden, all_attentions = self.encoder(embeddings, output_attentions, output_hidden_states)
        return BaseModelOutput(
            last_hidden_state=self.post_layernorm(hidden_states), hidden_states=all_hidden, attentions=all_attentions
        )


# --------------------------------------------------------------------------------------------------
# JTM encoder and text decoder: BLIP's BERT (`med.py`) with SDPA and a KV cache
# --------------------------------------------------------------------------------------------------


class MISSTextSelfAttention(nn.Module):
    """BERT attention over the text itself or, as cross-attention, over `encoder_hidden_states` (image or question
    states). With an `EncoderDecoderCache`, self-attention appends its keys/values and cross-attention computes its
    keys/values once and reads them from the cache afterwards."""

    def __init__(self, config: MISSTextConfig, layer_idx: int, is_cross_attention: bool, is_causal: bool):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.is_cross_attention = is_cross_attention
        self.is_causal = is_causal
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        key_width = config.encoder_hidden_size if is_cross_attention else config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(key_width, config.hidden_size)
        self.value = nn.Linear(key_width, config.hidden_size)

    def _heads(self, states):
        return states.view(*states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden_states, attention_mask, encoder_hidden_states=None, kv_cache=None, output_attentions=False
    ):
        query = self._heads(self.query(hidden_states))
        if not self.is_cross_attention:
            key, value = self._heads(self.key(hidden_states)), self._heads(self.value(hidden_states))
            if kv_cache is not None:
                key, value = kv_cache.self_attention_cache.update(key, value, self.layer_idx)
        elif kv_cache is not None and kv_cache.is_updated.get(self.layer_idx):
            layer = kv_cache.cross_attention_cache.layers[self.layer_idx]
            key, value = layer.keys, layer.values
        else:
            key = self._heads(self.key(encoder_hidden_states))
            value = self._heads(self.value(encoder_hidden_states))
            if kv_cache is not None:
                key, value = kv_cache.cross_attention_cache.update(key, value, self.layer_idx)
                kv_cache.is_updated[self.layer_idx] = True
        return attend(self, query, key, value, attention_mask, output_attentions)


class MISSTextAttention(nn.Module):
    """Attention + BLIP's output block (dense, dropout, residual, LayerNorm)."""

    def __init__(
        self, config: MISSTextConfig, layer_idx: int, is_cross_attention: bool = False, is_causal: bool = False
    ):
        super().__init__()
        self.self = MISSTextSelfAttention(config, layer_idx, is_cross_attention, is_causal)
        self.output = BlipTextSelfOutput(config)

    def forward(
        self, hidden_states, attention_mask, encoder_hidden_states=None, kv_cache=None, output_attentions=False
    ):
        context, weights = self.self(hidden_states, attention_mask, encoder_hidden_states, kv_cache, output_attentions)
        return self.output(context, hidden_states), weights


class MISSTextLayer(GradientCheckpointingLayer):
    """Self-attention (bidirectional in the JTM encoder, causal in the decoder), cross-attention to
    `encoder_hidden_states` when given (the encoder's `text` mode skips it), feed-forward."""

    def __init__(self, config: MISSTextConfig, layer_idx: int, is_decoder: bool):
        super().__init__()
        self.attention = MISSTextAttention(config, layer_idx, is_causal=is_decoder)
        self.crossattention = MISSTextAttention(config, layer_idx, is_cross_attention=True)
        self.intermediate = BlipTextIntermediate(config)
        self.output = BlipTextOutput(config)

    def forward(
        self,
        hidden_states,
        attention_mask,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        kv_cache=None,
        output_attentions=False,
    ):
        hidden_states, self_weights = self.attention(hidden_states, attention_mask, None, kv_cache, output_attentions)
        cross_weights = None
        if encoder_hidden_states is not None:
            hidden_states, cross_weights = self.crossattention(
                hidden_states, encoder_attention_mask, encoder_hidden_states, kv_cache, output_attentions
            )
        return self.output(self.intermediate(hidden_states), hidden_states), self_weights, cross_weights


class MISSTextEncoder(nn.Module):
    def __init__(self, config: MISSTextConfig, is_decoder: bool):
        super().__init__()
        self.layer = nn.ModuleList([MISSTextLayer(config, i, is_decoder) for i in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states,
        attention_mask,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        kv_cache=None,
        output_attentions=False,
        output_hidden_states=False,
    ):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross = () if output_attentions and encoder_hidden_states is not None else None
        for layer in self.layer:
            hidden_states, self_weights, cross_weights = layer(
                hidden_states,
                attention_mask,
                encoder_hidden_states,
                encoder_attention_mask,
                kv_cache=kv_cache,
                output_attentions=output_attentions,
            )
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (self_weights,)
                if all_cross is not None:
                    all_cross += (cross_weights,)
        return BaseModelOutputWithCrossAttentions(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden,
            attentions=all_attentions,
            cross_attentions=all_cross,
        )


class MISSTextModel(PreTrainedModel):
    """BERT without token types (BLIP's `med.BertModel`): the JTM encoder, or with `is_decoder` the decoder's body.

    The encoder reads a text alone (`text` mode, no `encoder_hidden_states`: ITC text features) or over image states
    (`multimodal` mode: ITM, VQA questions); the decoder always cross-attends. A `PreTrainedModel` of its own so it
    follows its sub-config's attention implementation and initialisation (BERT's normal).
    """

    config_class = MISSTextConfig
    config: MISSTextConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MISSTextLayer"]

    def __init__(self, config: MISSTextConfig, is_decoder: bool = False):
        super().__init__(config)
        self.is_decoder = is_decoder
        self.embeddings = BlipTextEmbeddings(config)
        self.encoder = MISSTextEncoder(config, is_decoder)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BlipTextEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def forward(
        self,
        input_ids,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        kv_cache=None,
        output_attentions=False,
        output_hidden_states=False,
    ):
        r"""
        input_ids: (B, L) the new tokens (with a filled cache, only those after it).
        attention_mask: (B, past + L) over the whole text so far, 1 = real token.
        encoder_hidden_states / encoder_attention_mask: (B, N, encoder_hidden_size) states to cross-attend and their
            (B, N) mask (None: all attended).
        kv_cache: an `EncoderDecoderCache` (decoding).
        """
        batch_size, length = input_ids.shape
        past_length = kv_cache.get_seq_length() if kv_cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, past_length + length, dtype=torch.long, device=input_ids.device)
        if attention_mask.shape != (batch_size, past_length + length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the text so far has shape "
                f"({batch_size}, {past_length + length}); pass the mask of the whole text (cached and new tokens)."
            )
        position_ids = text_position_ids(attention_mask, length)
        if past_length + length > self.config.max_position_embeddings:
            raise ValueError(
                f"a text of {past_length + length} tokens is longer than the {self.config.max_position_embeddings} "
                "positions MISS has (text_config.max_position_embeddings); truncate it (the processor's max_length)."
            )
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids)
        dtype = hidden_states.dtype
        mask = self_attention_mask(attention_mask, length, self.is_decoder, dtype)
        cross_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            cross_mask = additive_mask(encoder_attention_mask.bool()[:, None, None, :], dtype)
        return self.encoder(
            hidden_states,
            mask,
            encoder_hidden_states,
            cross_mask,
            kv_cache=kv_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )


class MISSTextDecoder(nn.Module):
    """The text decoder (BLIP's `BertLMHeadModel`): causal BERT body (`bert`) + LM head (`cls`)."""

    def __init__(self, config: MISSTextConfig):
        super().__init__()
        self.bert = MISSTextModel(config, is_decoder=True)
        self.cls = BlipTextOnlyMLMHead(config)

    def forward(self, input_ids, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                kv_cache=None, output_attentions=False, output_hidden_states=False):
        """Returns the body's output with `logits` (B, L, vocab) added."""
        outputs = self.bert(
            input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, kv_cache, output_attentions,
            output_hidden_states,
        )
        return outputs, self.cls(outputs.last_hidden_state)


class MISSFeatureQueue(nn.Module):
    """The ITC queues of the last `queue_size` momentum features of images and texts (columns), and the position the
    next features go to. A batch that passes the end wraps around to the start."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.register_buffer("image_queue", torch.zeros(dim, size))
        self.register_buffer("text_queue", torch.zeros(dim, size))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.image_queue.shape[1]

    @torch.no_grad()
    def enqueue(self, image_features: torch.Tensor, text_features: torch.Tensor) -> None:
        """Write (n, dim) features at the pointer (wrapping around) and advance it by n."""
        count = image_features.shape[0]
        if count > self.size:
            raise ValueError(
                f"{count} features per optimizer step exceed the ITC queue of {self.size}: every step would overwrite "
                "its own features. Use a larger queue_size or a smaller (accumulated, all-process) batch."
            )
        start = int(self.queue_ptr)
        index = (start + torch.arange(count, device=self.queue_ptr.device)) % self.size
        self.image_queue[:, index] = image_features.T.to(self.image_queue.dtype)
        self.text_queue[:, index] = text_features.T.to(self.text_queue.dtype)
        self.queue_ptr[0] = (start + count) % self.size


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------


@dataclass
class MISSOutput(ModelOutput):
    """
    logits_per_image: (images, texts) cosine similarity of the ITC embeddings over the temperature
        (`logits_per_text` is its transpose), as CLIP's.
    image_embeds / text_embeds: the L2-normalised ITC embeddings (projection_dim).
    vision_model_output / text_model_output: the ViT's and the JTM encoder's (`text` mode) outputs.
    """

    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    vision_model_output: BaseModelOutput | None = None
    text_model_output: BaseModelOutputWithCrossAttentions | None = None

    def to_tuple(self):
        return tuple(
            value.to_tuple() if isinstance(value, ModelOutput) else value for value in super().to_tuple()
        )


@dataclass
class MISSForPreTrainingOutput(ModelOutput):
    """
    loss: itc_loss + itm_loss + lm_loss (the configured objectives; under gradient accumulation see the class).
    logits: (B, L, vocab) decoder logits over the `[DEC]` caption; position t predicts token t + 1.
    itm_logits / itm_labels: (3B, 2) / (3B,) the B positive pairs, then each text with its hard-negative image, then
        each image with its hard-negative text (labels 1, 0, 0).
    logits_per_image / logits_per_text: (B, B + queue_size) ITC similarities over the temperature, to the batch's
        momentum features then to the queue.
    negative_image_indices / negative_text_indices: (B,) the drawn hard negatives.
    """

    loss: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    negative_image_indices: torch.LongTensor | None = None
    negative_text_indices: torch.LongTensor | None = None


@dataclass
class MISSDecoderOutput(CausalLMOutputWithCrossAttentions):
    """logits: (B, L, vocab); position t predicts token t + 1. The KV cache is the inherited field, named as this
    transformers version names it (`KV_CACHE`: `cache` from 5.24, `past_key_values` before; `output.past_key_values`
    works on both). encoder_last_hidden_state: the states the decoder cross-attended (the image's for report
    generation, the question's over the image for VQA)."""

    encoder_last_hidden_state: torch.FloatTensor | None = None


@dataclass
class MISSAnswerRankingOutput(ModelOutput):
    """
    scores: (B, candidates) the answer's log-likelihood given image and question (sum over its tokens, `[SEP]`
        included; the label-smoothed loss's negative with `vqa_ranking_uses_label_smoothing`); -inf for candidates
        outside the question's top k.
    top_k_indices: (B, k) the candidates whose first token the decoder found most probable, re-scored in full.
    answer_indices: (B,) the best candidate.
    """

    scores: torch.FloatTensor | None = None
    top_k_indices: torch.LongTensor | None = None
    answer_indices: torch.LongTensor | None = None


@dataclass
class MISSForRetrievalOutput(ModelOutput):
    """
    loss: the ITM cross-entropy of the given pairs (`labels`), or itc_loss + itm_loss (`return_loss=True`).
    logits: (N, 2) ITM logits of the scored pairs: the B input pairs, or with `return_loss=True` the B positives,
        then each text with its hard-negative image, then each image with its hard-negative text (`itm_labels`).
    scores: (N,) their matching probability softmax(logits)[:, 1].
    itm_labels: (3B,) 1 for the positives, 0 for the hard negatives (`return_loss=True`).
    logits_per_image / logits_per_text: (B, B) in-batch ITC similarities over the temperature (`return_loss=True`).
    negative_image_indices / negative_text_indices: (B,) the drawn hard negatives (`return_loss=True`).
    """

    loss: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    negative_image_indices: torch.LongTensor | None = None
    negative_text_indices: torch.LongTensor | None = None


# --------------------------------------------------------------------------------------------------
# Base class: loading, initialisation
# --------------------------------------------------------------------------------------------------


# Copied from medvlp_hf.models.medvill.modeling_medvill.check_missing_weights
def check_missing_weights(model: PreTrainedModel, missing_keys, source) -> None:
    """Refuse a load that left weights randomly initialised.

    transformers only logs the weights a checkpoint lacks and initialises them at random, so a config that asks for one
    more layer than the weights hold silently gives a different model. Missing weights are allowed only for the
    head's `new_head_modules`, when the checkpoint was saved by another class (a base or pre-training checkpoint being
    fine-tuned) and holds none of that module's weights.

    Raises:
        ValueError: naming the missing weights and the likely cause.
    """
    missing = set(missing_keys)
    saved_by = (model.config.architectures or [None])[0]
    if saved_by != type(model).__name__:
        expected = model.state_dict().keys() - getattr(model, "all_tied_weights_keys", {}).keys()
        for module in model.new_head_modules:
            module_keys = {key for key in expected if key.startswith(f"{module}.")}
            if module_keys <= missing:
                missing -= module_keys
    if missing:
        shown = ", ".join(sorted(missing)[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(
            f"{type(model).__name__}.from_pretrained({str(source)!r}): the checkpoint lacks {len(missing)} weight(s) "
            f"the model needs ({shown}); loading would leave them randomly initialised. The config and the checkpoint "
            f"disagree (e.g. a config.json that asks for more layers or other sizes than the weights hold, or a "
            f"checkpoint of another model): fix config.json or load the checkpoint that belongs to it."
        )


class MISSPreTrainedModel(PreTrainedModel):
    config_class = MISSConfig
    config: MISSConfig
    base_model_prefix = "miss"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MISSVisionLayer", "MISSTextLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    accepts_loss_kwargs = False
    # Linear layers that get LoRA adapters: the query and value projections of every text attention (self and cross,
    # encoder and decoder), as in the LoRA paper.
    lora_target_modules = ("query", "value")
    # The image encoder, trained in full by the released partial fine-tuning recipes below.
    image_encoder_modules = ("vision_model",)
    # PEFT IA3 as the released `models/peft_miss.py`: learnt scaling vectors on the attention key/value projections and
    # on every `output.dense` (attention and feed-forward outputs, all scaled as feed-forward layers, on their input)
    # of the text encoder and decoder. It wraps only those two towers, so the ViT trains in full next to the vectors.
    ia3_target_modules = ("key", "value", "output.dense")
    ia3_feedforward_modules = ("output.dense",)
    ia3_fully_trained_modules = image_encoder_modules
    # Modules a head adds on top of a checkpoint of another head: freshly initialised when it is fine-tuned from one
    # (the only weights `from_pretrained` may find missing), trained in full under LoRA.
    new_head_modules = ()
    # Modules whose state a checkpoint of another head may lack because it is derived, not learnt (see
    # `_restore_derived_state`).
    derived_state_modules = ()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict: a weight the checkpoint lacks is an error, except the
        `new_head_modules` of a head loaded from a checkpoint saved by another head (see `check_missing_weights`) and
        its `derived_state_modules` (momentum encoders copied from the loaded encoders, fresh feature queues).

        Raises:
            ValueError: the checkpoint lacks weights; its image grid disagrees with its config; or it is a
                pre-training checkpoint loaded into a head whose decoder it holds only tied to its encoder.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        try:
            model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            _, loading_info = super().from_pretrained(
                *args, output_loading_info=True, **{**kwargs, "ignore_mismatched_sizes": True}
            )
            mismatched = loading_info["mismatched_keys"]
            if not all(key.endswith("embeddings.position_embedding") for key, _, _ in mismatched):
                raise
            key, saved, expected = sorted(mismatched)[0]
            raise ValueError(
                f"{cls.__name__}.from_pretrained({str(source)!r}): {key} holds {saved[1] - 1} patch positions but the "
                f"folder's config.json (vision_config.image_size / patch_size) asks for {expected[1] - 1}: the config "
                "and the weights are of different image sizes. Fix config.json; to fine-tune a pre-training checkpoint "
                "at another image size use MISSForVQA.from_pretraining(path, image_size=...), which interpolates the "
                "position embeddings bicubically as BLIP does."
            ) from error
        # a tied weight is its source's (transformers lists it when both are absent; the source is listed anyway)
        missing = set(loading_info["missing_keys"]) - model.all_tied_weights_keys.keys()
        saved_by = (model.config.architectures or [None])[0]
        if saved_by != cls.__name__:
            missing = model._restore_derived_state(missing)
        decoder_missing = {key for key in missing if key.startswith("text_decoder.")}
        if saved_by == "MISSForPreTraining" and hasattr(cls, "from_pretraining") and decoder_missing:
            raise ValueError(
                f"{cls.__name__}.from_pretrained({str(source)!r}) got a MISSForPreTraining checkpoint, whose decoder "
                f"shares all but its self-attention with the encoder and is saved only once. Build the "
                f"{cls.__name__} with {cls.__name__}.from_pretraining({str(source)!r}), which copies the decoder "
                "untied (as the authors' fine-tuning does)."
            )
        check_missing_weights(model, missing, source)
        for name in model.derived_state_modules:  # never trained: loading replaced the frozen momentum parameters
            getattr(model, name).requires_grad_(False)
        return (model, loading_info) if output_loading_info else model

    def _restore_derived_state(self, missing: set) -> set:
        """Heads with momentum encoders or queues override this; returns the missing keys left."""
        return missing

    def _init_weights(self, module):
        super()._init_weights(module)
        # the module that holds the LM head's bias: transformers initialises a remote-code module only when one of its
        # own (not its children's) weights is missing, so a rule on BlipTextOnlyMLMHead would never run in
        # `from_pretrained` and leave a new head's bias as uninitialised memory
        if isinstance(module, BlipTextLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, MISSFeatureQueue):
            for queue in (module.image_queue, module.text_queue):
                init.normal_(queue)
                init.copy_(queue, F.normalize(queue, dim=0))
            init.zeros_(module.queue_ptr)
        if isinstance(getattr(module, "temperature", None), nn.Parameter):
            init.constant_(module.temperature, self.config.itc_temperature)


# --------------------------------------------------------------------------------------------------
# Contrastive features (base model, pre-training, retrieval)
# --------------------------------------------------------------------------------------------------


class MISSContrastiveMixin:
    """The image encoder, the JTM encoder and the ITC projections with the learnt temperature, and what they compute:
    CLIP-style features and the JTM encoder's joint encoding of a text over an image."""

    def _build_contrastive_towers(self, config: MISSConfig):
        self.vision_model = MISSVisionModel(config.vision_config)
        self.text_encoder = MISSTextModel(config.text_config)
        self.vision_proj = nn.Linear(config.vision_config.hidden_size, config.projection_dim)
        self.text_proj = nn.Linear(config.text_config.hidden_size, config.projection_dim)
        self.temperature = nn.Parameter(torch.tensor(config.itc_temperature))

    def get_input_embeddings(self):
        return self.text_encoder.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.text_encoder.embeddings.word_embeddings = value

    def get_image_hidden_states(self, pixel_values, interpolate_pos_encoding=False) -> torch.FloatTensor:
        """(B, 1 + grid**2, vision hidden) the ViT's states of each image: what the JTM encoder cross-attends
        (`image_hidden_states` of `get_joint_features`; computed once, they serve any number of texts)."""
        return self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state

    def get_image_features(self, pixel_values, interpolate_pos_encoding=False) -> torch.FloatTensor:
        """(B, projection_dim) ITC image embedding: `vision_proj` of the ViT's [CLS] (not normalised, as CLIP's)."""
        return self.vision_proj(self.get_image_hidden_states(pixel_values, interpolate_pos_encoding)[:, 0])

    def get_text_features(self, input_ids, attention_mask=None) -> torch.FloatTensor:
        """(B, projection_dim) ITC text embedding: `text_proj` of the [CLS] of the JTM encoder in `text` mode (no
        image). `input_ids`: `[CLS] w_1..w_n [SEP]` as the tokenizer writes them."""
        return self.text_proj(self.text_encoder(input_ids, attention_mask).last_hidden_state[:, 0])

    def get_joint_features(self, input_ids, pixel_values=None, attention_mask=None, image_hidden_states=None,
                           output_attentions=False, output_hidden_states=False) -> BaseModelOutputWithCrossAttentions:
        """The JTM encoder's multimodal encoding of each text over its image (ITM's input; the paper's joint feature):
        the text's first token becomes `[ENC]`, every layer cross-attends the image's ViT states
        (`image_hidden_states`, computed from `pixel_values` when not given). `last_hidden_state[:, 0]` is the pair's
        representation."""
        if image_hidden_states is None:
            check_image_batch(pixel_values, input_ids.shape[0])
            image_hidden_states = self.get_image_hidden_states(pixel_values)
        else:
            check_image_batch(image_hidden_states, input_ids.shape[0])
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids = with_first_token(input_ids, attention_mask, self.config.enc_token_id, self.config, "texts")
        return self.text_encoder(
            input_ids,
            attention_mask,
            image_hidden_states,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    def clamped_temperature(self) -> torch.Tensor:
        """The ITC temperature within [itc_temperature_min, itc_temperature_max] (in-range values keep gradients)."""
        return self.temperature.clamp(self.config.itc_temperature_min, self.config.itc_temperature_max)

    def _match_hard_negatives(self, input_ids, attention_mask, image_states, similarity_i2t, similarity_t2i,
                              same_image, negative_image_indices, negative_text_indices, generator):
        """ITM on the B positive pairs and on one hard negative per text and per image (`miss_pretrain.py`).

        A text's negative image is drawn with probability softmax(similarity_t2i row) + 1e-4, an image's negative text
        from similarity_i2t, never from a pair `same_image` marks (B, B); given indices replace the draw. In evaluation
        without a generator the draw is seeded with 0. Returns (logits (3B, 2), labels (3B,) = 1 for the positives
        then 0, loss, negative_image_indices, negative_text_indices)."""
        batch_size = input_ids.shape[0]
        if negative_image_indices is None or negative_text_indices is None:
            if batch_size < 2:
                raise ValueError(
                    "ITM draws its hard negatives from the other examples of the batch, and this batch has only 1; "
                    "use batches of at least 2 (in pre-training, or pretraining_objectives without 'itm')."
                )
            if bool(same_image.all(-1).any()):
                raise ValueError(
                    "ITM draws its hard negatives from the batch's other images, and in this batch an image has no "
                    "other: every example shows it (image_ids). Shuffle the data so a batch holds several images."
                )
            if generator is None and not self.training:
                generator = torch.Generator(device=input_ids.device).manual_seed(0)
            with torch.no_grad():
                drawn_images, drawn_texts = (
                    torch.multinomial(_hard_negative_weights(similarity, same_image), 1, generator=generator)[:, 0]
                    for similarity in (similarity_t2i, similarity_i2t)
                )
            negative_image_indices = drawn_images if negative_image_indices is None else negative_image_indices
            negative_text_indices = drawn_texts if negative_text_indices is None else negative_text_indices
        encoder_ids = with_first_token(input_ids, attention_mask, self.config.enc_token_id, self.config, "captions")
        text_ids = torch.cat([encoder_ids, encoder_ids, encoder_ids[negative_text_indices]])
        text_mask = torch.cat([attention_mask, attention_mask, attention_mask[negative_text_indices]])
        images = torch.cat([image_states, image_states[negative_image_indices], image_states])
        logits = self.itm_head(self.text_encoder(text_ids, text_mask, images).last_hidden_state[:, 0])
        labels = torch.cat([
            torch.ones(batch_size, dtype=torch.long), torch.zeros(2 * batch_size, dtype=torch.long)
        ]).to(logits.device)
        loss = F.cross_entropy(logits.float(), labels)
        return logits, labels, loss, negative_image_indices, negative_text_indices


class MISSModel(MISSContrastiveMixin, MISSPreTrainedModel):
    """The MISS encoders: ViT, JTM encoder and ITC projections. `forward` gives CLIP-style contrastive outputs (any
    number of images against any number of texts), so `AutoModelForZeroShotImageClassification` and the stock
    zero-shot pipeline work; `get_joint_features` gives the JTM encoding of (image, text) pairs."""

    # transformers Auto classes that also load this class (besides AutoModel): its `logits_per_image` is what the
    # zero-shot image-classification pipeline reads.
    additional_auto_classes = ("AutoModelForZeroShotImageClassification",)

    def __init__(self, config: MISSConfig):
        super().__init__(config)
        self._build_contrastive_towers(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        interpolate_pos_encoding=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MISSOutput:
        r"""
        input_ids: (T, L) texts `[CLS] w_1..w_n [SEP]`; pixel_values: (I, 3, H, W) images. The counts may differ.
        Other keyword arguments a tokenizer returns (`token_type_ids`) are ignored: MISS has no token types.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError(
                "MISSModel.forward compares images with texts and needs both `pixel_values` and `input_ids`; for one "
                "modality use get_image_features / get_text_features."
            )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        vision_outputs = self.vision_model(
            pixel_values, interpolate_pos_encoding, output_attentions, output_hidden_states
        )
        text_outputs = self.text_encoder(
            input_ids, attention_mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        image_embeds = F.normalize(self.vision_proj(vision_outputs.last_hidden_state[:, 0]), dim=-1)
        text_embeds = F.normalize(self.text_proj(text_outputs.last_hidden_state[:, 0]), dim=-1)
        logits_per_image = image_embeds @ text_embeds.T / self.clamped_temperature()
        return MISSOutput(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.T,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            vision_model_output=vision_outputs,
            text_model_output=text_outputs,
        )


# --------------------------------------------------------------------------------------------------
# Pre-training
# --------------------------------------------------------------------------------------------------


# The decoder of the pre-training model shares every weight of the JTM encoder except its self-attention
# (`tie_encoder_decoder_weights(text_encoder, text_decoder.bert, '', '/attention')`); its LM head shares the word
# embeddings. Order matters: the LM-head entry's source is itself tied, so it resolves to the encoder's embeddings.
_DECODER_TIED_TO_ENCODER = {
    r"text_decoder\.bert\.(?!encoder\.layer\.\d+\.attention\.).*\.(weight|bias)$":
        r"text_encoder\.(?!encoder\.layer\.\d+\.attention\.).*\.(weight|bias)$",
}
_LM_HEAD_TIED = {
    "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
    "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias",
}
_MOMENTUM_MODULES = {
    "vision_model": "vision_model_m",
    "vision_proj": "vision_proj_m",
    "text_encoder": "text_encoder_m",
    "text_proj": "text_proj_m",
}


class MISSForPreTraining(MISSContrastiveMixin, MISSPreTrainedModel):
    """MISS pre-training (`models/miss_pretrain.py`): image-text contrastive learning with momentum encoders, feature
    queues and momentum distillation (ITC), image-text matching on hard negatives (ITM), and captioning by the decoder
    with label smoothing (LM). `input_ids` are the captions `[CLS] w_1..w_n [SEP]`: ITC reads them as they are, ITM
    with `[ENC]` first, the decoder with `[DEC]` first.

    Momentum encoders and queues change once per optimizer step, outside `forward` (which cannot see accumulation
    boundaries): a training-mode forward keeps its momentum features, and `momentum_step()` - called by
    `medvlp_hf.training.MomentumUpdateCallback` at the end of every optimizer step under Trainer, or by your loop after
    `optimizer.step()` - updates the momentum encoders (EMA), enqueues the kept features and clamps the temperature.
    Over a run this is the original's order: its forward updates the momentum encoders first and enqueues last, so
    to reproduce one original forward on a converted checkpoint, call `momentum_step()` (with nothing kept, it only
    updates the momentum encoders and clamps the temperature) before `forward`. Evaluation forwards keep nothing. The distillation weight `distillation_alpha` starts at `config.alpha`; the callback ramps it
    from 0 over `config.alpha_ramp_epochs` as the released `pretrain.py` does.

    ITM draws one hard-negative image per text and one hard-negative text per image with probability
    softmax(similarity) + 1e-4 (never the pair itself) from `generator`; in evaluation without a generator the draw
    is seeded with 0, so evaluation losses are comparable from one evaluation to the next.

    Under gradient accumulation and DDP (Trainer passes `num_items_in_batch`, the target tokens of the whole
    accumulated batch) the LM loss is the mean over all those tokens, as in one full batch; ITC and ITM (means over
    the micro-batch, contrasting its examples) are weighted by the micro-batch's share of those tokens.
    """

    _tied_weights_keys = {**_DECODER_TIED_TO_ENCODER, **_LM_HEAD_TIED}
    new_head_modules = ("itm_head", "text_decoder")
    # Its forward draws the ITM hard negatives and builds every target from matching (image, caption) pairs: a
    # pre-training batch holds only those pairs (and the captions' LM labels, MISSProcessor(return_labels=True)).
    pretrains_on_matching_pairs = True
    derived_state_modules = (*_MOMENTUM_MODULES.values(), "feature_queue")
    accepts_loss_kwargs = True

    def __init__(self, config: MISSConfig):
        super().__init__(config)
        self._build_contrastive_towers(config)
        self.itm_head = nn.Linear(config.text_config.hidden_size, 2)
        self.text_decoder = MISSTextDecoder(config.text_config)
        self.vision_model_m = MISSVisionModel(config.vision_config)
        self.vision_proj_m = nn.Linear(config.vision_config.hidden_size, config.projection_dim)
        self.text_encoder_m = MISSTextModel(config.text_config)
        self.text_proj_m = nn.Linear(config.text_config.hidden_size, config.projection_dim)
        self.feature_queue = MISSFeatureQueue(config.projection_dim, config.queue_size)
        for name in _MOMENTUM_MODULES.values():
            getattr(self, name).requires_grad_(False)
        self.distillation_alpha = config.alpha
        self._momentum_features = []
        self.post_init()

    def get_output_embeddings(self):
        return self.text_decoder.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.text_decoder.cls.predictions.decoder = new_embeddings

    def momentum_parameter_pairs(self):
        """(name, online parameter, momentum parameter) of every momentum-encoder weight."""
        for online_name, momentum_name in _MOMENTUM_MODULES.items():
            momentum = dict(getattr(self, momentum_name).named_parameters())
            for name, parameter in getattr(self, online_name).named_parameters():
                yield f"{online_name}.{name}", parameter, momentum[name]

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            for _, online, momentum in self.momentum_parameter_pairs():
                init.copy_(momentum, online)

    def _restore_derived_state(self, missing: set) -> set:
        """A checkpoint of another head has no momentum encoders or queues: the momentum encoders start as copies of
        the loaded encoders (the original's `copy_params`), the queues as random unit vectors (initialised already)."""
        derived = {key for key in missing if key.split(".")[0] in self.derived_state_modules}
        with torch.no_grad():
            for name, online, momentum in self.momentum_parameter_pairs():
                module, rest = name.split(".", 1)
                if f"{_MOMENTUM_MODULES[module]}.{rest}" in derived:
                    momentum.copy_(online)
        return missing - derived

    @torch.no_grad()
    def momentum_step(self) -> None:
        """End of an optimizer step: momentum encoders <- momentum * themselves + (1 - momentum) * the encoders, the
        momentum features of the step's training forwards (of every process under DDP) into the queues, and the
        temperature clamped to [itc_temperature_min, itc_temperature_max]."""
        momentum = self.config.momentum
        for _, online, shadow in self.momentum_parameter_pairs():
            shadow.copy_(shadow * momentum + online.detach() * (1.0 - momentum))
        if self._momentum_features:
            image_features, text_features = (torch.cat(features) for features in zip(*self._momentum_features))
            self._momentum_features = []
            self.feature_queue.enqueue(_gather_from_processes(image_features), _gather_from_processes(text_features))
        self.temperature.clamp_(self.config.itc_temperature_min, self.config.itc_temperature_max)

    def distillation_alpha_at(self, epoch: float) -> float:
        """The released ramp: alpha * min(1, epoch / alpha_ramp_epochs) (`pretrain.py`)."""
        ramp = self.config.alpha_ramp_epochs
        return self.config.alpha * (min(1.0, epoch / ramp) if ramp > 0 else 1.0)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        labels=None,
        alpha=None,
        negative_image_indices=None,
        negative_text_indices=None,
        generator=None,
        num_items_in_batch=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MISSForPreTrainingOutput:
        r"""
        input_ids: (B, L) captions `[CLS] w_1..w_n [SEP]`; pixel_values: (B, 3, H, W) their images.
        labels: (B, L) LM targets aligned with `input_ids` (-100 at position 0 and at padding); by default the
            captions themselves (the original's targets). Pass them under Trainer so it can count target tokens.
        alpha: momentum-distillation weight of this forward (default `self.distillation_alpha`).
        negative_image_indices / negative_text_indices: (B,) ITM hard negatives to use instead of drawing them
            (index of the batch's image for each text, of the batch's text for each image).
        generator: the `torch.Generator` the hard negatives are drawn from.
        num_items_in_batch: LM target tokens in the whole (accumulated, all-process) batch, given by Trainer.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("MISSForPreTraining needs captions (`input_ids`) and their images (`pixel_values`).")
        check_image_batch(pixel_values, input_ids.shape[0])
        check_label_batch(labels, input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if labels is None:
            labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
            labels = labels.scatter(1, first_token_index(attention_mask)[:, None], IGNORE_INDEX)
        check_decoder_labels(labels, input_ids)
        objectives = self.config.pretraining_objectives
        image_states = self.vision_model(pixel_values).last_hidden_state
        output = MISSForPreTrainingOutput()
        share = (labels != IGNORE_INDEX).sum() / num_items_in_batch if num_items_in_batch is not None else 1.0
        losses = []
        if "itc" in objectives:
            alpha = self.distillation_alpha if alpha is None else alpha
            self._contrast(input_ids, attention_mask, pixel_values, image_states, alpha, output)
            losses.append(share * output.itc_loss)
        if "itm" in objectives:
            self._match(input_ids, attention_mask, image_states, negative_image_indices, negative_text_indices,
                        generator, output)
            losses.append(share * output.itm_loss)
        if "lm" in objectives:
            decoder_ids = with_first_token(input_ids, attention_mask, self.config.bos_token_id, self.config, "captions")
            _, output.logits = self.text_decoder(decoder_ids, attention_mask, image_states)
            output.lm_loss = decoder_cross_entropy(
                output.logits, labels, self.config.label_smoothing, num_items_in_batch=num_items_in_batch
            )
            losses.append(output.lm_loss)
        output.loss = sum(losses)
        return output

    def _contrast(self, input_ids, attention_mask, pixel_values, image_states, alpha, output):
        """ITC against the batch's momentum features and the queue, with momentum-distilled soft targets."""
        image_embeds = F.normalize(self.vision_proj(image_states[:, 0]), dim=-1)
        text_states = self.text_encoder(input_ids, attention_mask).last_hidden_state
        text_embeds = F.normalize(self.text_proj(text_states[:, 0]), dim=-1)
        temperature = self.clamped_temperature()
        with torch.no_grad():
            image_states_m = self.vision_model_m(pixel_values).last_hidden_state
            image_embeds_m = F.normalize(self.vision_proj_m(image_states_m[:, 0]), dim=-1)
            text_states_m = self.text_encoder_m(input_ids, attention_mask).last_hidden_state
            text_embeds_m = F.normalize(self.text_proj_m(text_states_m[:, 0]), dim=-1)
            image_all = torch.cat([image_embeds_m.T, self.feature_queue.image_queue.clone()], dim=1)
            text_all = torch.cat([text_embeds_m.T, self.feature_queue.text_queue.clone()], dim=1)
            targets = torch.eye(len(input_ids), image_all.shape[1], device=image_all.device)
            i2t_targets = alpha * F.softmax(image_embeds_m @ text_all / temperature, dim=1) + (1 - alpha) * targets
            t2i_targets = alpha * F.softmax(text_embeds_m @ image_all / temperature, dim=1) + (1 - alpha) * targets
        output.logits_per_image = image_embeds @ text_all / temperature
        output.logits_per_text = text_embeds @ image_all / temperature
        i2t = -(F.log_softmax(output.logits_per_image, dim=1) * i2t_targets).sum(1).mean()
        t2i = -(F.log_softmax(output.logits_per_text, dim=1) * t2i_targets).sum(1).mean()
        output.itc_loss = (i2t + t2i) / 2
        if self.training:
            self._keep_momentum_features(image_embeds_m, text_embeds_m)

    def _keep_momentum_features(self, image_features, text_features):
        kept = sum(len(features) for features, _ in self._momentum_features) + len(image_features)
        if kept > self.feature_queue.size:
            self._momentum_features = []
            raise ValueError(
                f"{kept} momentum features are waiting for `momentum_step()`, more than the ITC queue holds "
                f"({self.feature_queue.size}). Under Trainer add medvlp_hf.training.MomentumUpdateCallback (it calls "
                "momentum_step() after every optimizer step); in your own loop call model.momentum_step() after "
                "optimizer.step(). If you do, the accumulated batch is larger than queue_size: raise queue_size."
            )
        self._momentum_features.append((image_features, text_features))

    def _match(self, input_ids, attention_mask, image_states, negative_image_indices, negative_text_indices, generator,
               output):
        """ITM on the positive pairs and on one hard negative per text and per image, drawn from the batch part of the
        ITC similarities."""
        batch_size = input_ids.shape[0]
        (output.itm_logits, output.itm_labels, output.itm_loss, output.negative_image_indices,
         output.negative_text_indices) = self._match_hard_negatives(
            input_ids, attention_mask, image_states, output.logits_per_image[:, :batch_size],
            output.logits_per_text[:, :batch_size], torch.eye(batch_size, dtype=torch.bool, device=input_ids.device),
            negative_image_indices, negative_text_indices, generator,
        )


def _hard_negative_weights(similarity: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    weights = F.softmax(similarity.float(), dim=1) + HARD_NEGATIVE_SMOOTHING
    return weights.masked_fill(excluded, 0)


def _gather_from_processes(features: torch.Tensor) -> torch.Tensor:
    """The features of every process under torch.distributed (so every process enqueues the global batch, as BLIP's
    `concat_all_gather`); the features themselves otherwise."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return features
    gathered = [torch.empty_like(features) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, features.contiguous())
    return torch.cat(gathered)


# --------------------------------------------------------------------------------------------------
# Decoding heads: VQA and report generation
# --------------------------------------------------------------------------------------------------


def decoding_cache(cache) -> EncoderDecoderCache:
    """The decoder's cache: self-attention keys/values that grow, cross-attention keys/values computed once. A new
    one, `cache` itself, or a given `DynamicCache` as its self-attention part."""
    if cache is None:
        return EncoderDecoderCache(DynamicCache(), DynamicCache())
    if isinstance(cache, EncoderDecoderCache):
        return cache
    if isinstance(cache, DynamicCache):
        return EncoderDecoderCache(cache, DynamicCache())
    raise ValueError(
        f"MISS decoding keeps the cross-attention keys/values next to a growing self-attention cache, which needs an "
        f"EncoderDecoderCache of dynamic caches; got a {type(cache).__name__}. Pass a DynamicCache or "
        "EncoderDecoderCache, or none."
    )


class MISSDecodingMixin:
    """What the two decoding heads share: a decoder over `[DEC] w_1..` cross-attending encoder states (the image's,
    or the question's over the image), trained with label-smoothed next-token cross-entropy; `generate()` encodes the
    conditioning once and decodes with transformers' own generation over an `EncoderDecoderCache` (cross-attention
    keys/values are computed at the first step and kept); initialisation from a pre-training checkpoint."""

    _tied_weights_keys = dict(_LM_HEAD_TIED)
    new_head_modules = ("text_decoder",)
    # vision_config fields of the authors' fine-tuning recipe, set by `from_pretraining`
    pretraining_vision_overrides = {}

    def get_output_embeddings(self):
        return self.text_decoder.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.text_decoder.cls.predictions.decoder = new_embeddings

    def _decode(self, decoder_input_ids, decoder_attention_mask, encoder_hidden_states, encoder_attention_mask, cache,
                use_cache, output_attentions, output_hidden_states):
        """(decoder body outputs, logits, the cache to return)."""
        kv_cache = decoding_cache(cache) if use_cache or cache is not None else None
        if kv_cache is None or kv_cache.get_seq_length() == 0:
            mask = decoder_attention_mask if decoder_attention_mask is not None else torch.ones_like(decoder_input_ids)
            decoder_input_ids = with_first_token(
                decoder_input_ids, mask, self.config.bos_token_id, self.config, "decoder inputs"
            )
        outputs, logits = self.text_decoder(
            decoder_input_ids, decoder_attention_mask, encoder_hidden_states, encoder_attention_mask, kv_cache,
            output_attentions, output_hidden_states,
        )
        return outputs, logits, kv_cache

    def _check_prompt(self, input_ids, attention_mask):
        """Refuse a decoder prompt that already ends the text: generation would continue after its end-of-text [SEP]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ended = ((input_ids == self.config.sep_token_id) & attention_mask.bool()).any(-1)
        if ended.any():
            raise ValueError(
                f"prompt row(s) {ended.nonzero().flatten().tolist()} already hold the end-of-text [SEP], so generation "
                "would continue after the end of the text. Prompts are `[DEC] w_1..w_k` without the closing [SEP] "
                "(MISSProcessor's generation prompts)."
            )

    def _generate_from_states(self, states, states_mask, prompt_ids, prompt_mask, kwargs):
        """transformers' `generate()` over the decoder, cross-attending `states` (expanded per beam by generate)."""
        batch_size = states.shape[0]
        if prompt_ids is None:
            prompt_ids = torch.full((batch_size, 1), self.config.bos_token_id, dtype=torch.long, device=states.device)
        if prompt_ids.shape[0] != batch_size:
            raise ValueError(
                f"got {prompt_ids.shape[0]} decoder prompt(s) for {batch_size} input(s); pass one prompt per input."
            )
        self._check_prompt(prompt_ids, prompt_mask)
        generation_config = kwargs.get("generation_config") or self.generation_config
        use_cache = kwargs.get("use_cache", generation_config.use_cache)
        cache_implementation = kwargs.get("cache_implementation", generation_config.cache_implementation)
        cache = resolve_kv_cache(kwargs.pop("cache", None), kwargs.pop("past_key_values", None))
        if cache_implementation not in (None, "dynamic"):
            raise ValueError(
                f"MISS decoding keeps the cross-attention keys/values next to a growing self-attention cache; got "
                f"cache_implementation={cache_implementation!r}. Leave it unset, or pass a DynamicCache or "
                "EncoderDecoderCache."
            )
        if use_cache is not False:
            kwargs[KV_CACHE] = decoding_cache(cache)
        return GenerationMixin.generate(
            self,
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            encoder_hidden_states=states,
            encoder_attention_mask=states_mask,
            **kwargs,
        )

    @classmethod
    def from_pretraining(cls, pretrained, **vision_overrides):
        """This head initialised from a MISS pre-training model, as the authors' fine-tuning does
        (`models/miss.py:load_checkpoint`): every weight of the same name - the image encoder, the JTM encoder and the
        whole decoder, its encoder-tied parts copied so the head's decoder has its own weights - with the position
        embeddings interpolated bicubically (BLIP's `interpolate_pos_embed`) when the image size changes.

        Args:
            pretrained: a `MISSForPreTraining` or the path / Hub id of one.
            vision_overrides: `vision_config` fields of the new model; by default `pretraining_vision_overrides` (for
                VQA the released recipe: image_size 480, drop_path_rate 0.1).
        """
        if not isinstance(pretrained, MISSForPreTraining):
            pretrained = MISSForPreTraining.from_pretrained(pretrained)
        config = MISSConfig.from_dict(pretrained.config.to_dict())
        for field, value in {**cls.pretraining_vision_overrides, **vision_overrides}.items():
            if not hasattr(config.vision_config, field):
                raise ValueError(f"{cls.__name__}.from_pretraining: vision_config has no field {field!r}.")
            setattr(config.vision_config, field, value)
        config.vision_config = MISSVisionConfig(**config.vision_config.to_dict())
        config.architectures = None
        model = cls(config)
        source = dict(pretrained.named_parameters(remove_duplicate=False))
        grid = config.vision_config.grid_size
        state = {}
        for name in model.state_dict():
            if name == "vision_model.embeddings.position_embedding":
                layout = torch.empty(1, grid * grid + 1, config.vision_config.hidden_size)
                size = config.vision_config.image_size
                state[name] = pretrained.vision_model.embeddings.interpolate_pos_encoding(layout, size, size).detach()
            else:
                state[name] = source[name].detach().clone()
        model.load_state_dict(state, strict=True)
        return model.to(pretrained.dtype)


class MISSForVQA(MISSDecodingMixin, MISSPreTrainedModel, GenerationMixin):
    """Generative VQA (`models/miss_vqa.py`): the question `[ENC] q_1..q_n [SEP]` goes through the JTM encoder over the
    image, the answer `[DEC] a_1..a_n [SEP]` comes from an untied decoder cross-attending the question states.

    `generate(input_ids=questions, attention_mask=..., pixel_values=...)` returns answers `[DEC] a_1..a_n [SEP]`
    (decode with `skip_special_tokens=True`); the defaults are the released inference (beam search with 3 beams, at
    most 10 tokens including `[DEC]`). `rank_answers` scores a list of candidate answers instead (BLIP's
    `rank_answer`). Initialise from pre-training with `MISSForVQA.from_pretraining(path)`.
    """

    pretraining_vision_overrides = {"image_size": 480, "drop_path_rate": 0.1}

    def __init__(self, config: MISSConfig):
        super().__init__(config)
        self.vision_model = MISSVisionModel(config.vision_config)
        self.text_encoder = MISSTextModel(config.text_config)
        self.text_decoder = MISSTextDecoder(config.text_config)
        self.post_init()
        # the released inference: 3 beams, at most 10 tokens with the [DEC] start (`max_length=10, min_length=1`)
        self.generation_config.num_beams = 3
        self.generation_config.max_new_tokens = 9

    def get_input_embeddings(self):
        return self.text_encoder.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.text_encoder.embeddings.word_embeddings = value

    def encode_question(self, input_ids, pixel_values, attention_mask=None, output_attentions=False,
                        output_hidden_states=False) -> BaseModelOutputWithCrossAttentions:
        """The question `[ENC] q_1..q_n [SEP]` (a leading [CLS] becomes [ENC]) through the JTM encoder over the
        image's ViT states: the states the answer decoder cross-attends."""
        check_image_batch(pixel_values, input_ids.shape[0])
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        image_states = self.vision_model(pixel_values).last_hidden_state
        question_ids = with_first_token(input_ids, attention_mask, self.config.enc_token_id, self.config, "questions")
        return self.text_encoder(question_ids, attention_mask, image_states, output_attentions=output_attentions,
                                 output_hidden_states=output_hidden_states)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        labels=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache=None,
        past_key_values=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MISSDecoderOutput:
        r"""
        input_ids / attention_mask: (B, Lq) questions `[CLS] q_1..q_n [SEP]` (or `[ENC]` first); pixel_values their
            images.
        decoder_input_ids / decoder_attention_mask: (B, La) answers `[DEC] a_1..a_n [SEP]` (built from `labels` when
            not given: -100 becomes [PAD], position 0 [DEC]).
        labels: (B, La) aligned with the decoder input, -100 at position 0 and at padding. The loss is the
            per-answer summed label-smoothed cross-entropy averaged over the questions (`miss_vqa.py`).
        encoder_hidden_states / encoder_attention_mask: precomputed question states and their mask (`generate`).
        cache / past_key_values: the KV cache (one argument under its transformers >= 5.24 and older names).
        """
        check_label_batch(labels, input_ids if input_ids is not None else decoder_input_ids)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("MISSForVQA needs the answer: `decoder_input_ids` or `labels`.")
            decoder_input_ids = labels.masked_fill(labels == IGNORE_INDEX, self.config.pad_token_id)
            decoder_input_ids[:, 0] = self.config.bos_token_id
            decoder_attention_mask = (labels != IGNORE_INDEX).long()
            decoder_attention_mask[:, 0] = 1
        if labels is not None:
            check_decoder_labels(labels, decoder_input_ids)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if encoder_hidden_states is None:
            if input_ids is None or pixel_values is None:
                raise ValueError("MISSForVQA needs the question (`input_ids`) and its image (`pixel_values`).")
            encoder_hidden_states = self.encode_question(input_ids, pixel_values, attention_mask).last_hidden_state
            encoder_attention_mask = attention_mask
        outputs, logits, kv_cache = self._decode(
            decoder_input_ids, decoder_attention_mask, encoder_hidden_states, encoder_attention_mask,
            resolve_kv_cache(cache, past_key_values), use_cache, output_attentions, output_hidden_states,
        )
        loss = None
        if labels is not None:
            per_answer = decoder_cross_entropy(logits, labels, self.config.label_smoothing, "sum_per_sample")
            loss = per_answer.mean()
        return MISSDecoderOutput(
            loss=loss,
            logits=logits,
            **{KV_CACHE: kv_cache},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden_states,
        )

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        model_inputs["decoder_input_ids"] = model_inputs.pop("input_ids")
        if "attention_mask" in model_inputs:
            model_inputs["decoder_attention_mask"] = model_inputs.pop("attention_mask")
        return model_inputs

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, pixel_values=None, decoder_input_ids=None,
                 decoder_attention_mask=None, **kwargs):
        """Answers (B, T) `[DEC] a_1..a_n [SEP]` to the questions `input_ids` about `pixel_values`, decoded with
        transformers' `generate()` (any of its options; the defaults are the released beam search, 3 beams, at most
        10 tokens). The question is encoded once; `decoder_input_ids` optionally starts each answer (`[DEC] ...`,
        left-padded). With `config.vqa_generation_attends_question_padding` the decoder attends the question's
        padding, as the released inference does."""
        if input_ids is None or pixel_values is None:
            raise ValueError("MISSForVQA.generate needs the questions (`input_ids`) and their images (`pixel_values`).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        states = self.encode_question(input_ids, pixel_values, attention_mask).last_hidden_state
        if self.config.vqa_generation_attends_question_padding:
            attention_mask = torch.ones_like(attention_mask)
        return self._generate_from_states(states, attention_mask, decoder_input_ids, decoder_attention_mask, kwargs)

    @torch.no_grad()
    def rank_answers(self, input_ids, pixel_values, answer_input_ids, attention_mask=None, answer_attention_mask=None,
                     k=128) -> MISSAnswerRankingOutput:
        """Closed-set answering over candidate answers (BLIP's `rank_answer`): the `k` candidates whose first token
        the decoder finds most probable after `[DEC]` are scored in full; `k` >= the number of candidates scores
        every one.

        Args:
            input_ids / attention_mask / pixel_values: (B, Lq) questions and (B, 3, H, W) their images.
            answer_input_ids / answer_attention_mask: (A, La) candidates `[DEC] a_1..a_n [SEP]` (or `[CLS]` first),
                right-padded.
            k: how many candidates to score per question.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if answer_attention_mask is None:
            answer_attention_mask = torch.ones_like(answer_input_ids)
        answer_input_ids = with_first_token(
            answer_input_ids, answer_attention_mask, self.config.bos_token_id, self.config, "candidate answers"
        )
        states = self.encode_question(input_ids, pixel_values, attention_mask).last_hidden_state
        batch_size, candidates = input_ids.shape[0], answer_input_ids.shape[0]
        k = min(k, candidates)
        start = torch.full((batch_size, 1), self.config.bos_token_id, device=input_ids.device)
        _, first_logits = self.text_decoder(start, None, states, attention_mask)
        first_token_probabilities = first_logits[:, 0].float().softmax(-1)[:, answer_input_ids[:, 1]]
        top_k_indices = first_token_probabilities.topk(k, dim=1).indices
        chosen = top_k_indices.flatten()
        _, logits = self.text_decoder(
            answer_input_ids[chosen], answer_attention_mask[chosen], states.repeat_interleave(k, dim=0),
            attention_mask.repeat_interleave(k, dim=0),
        )
        targets = answer_input_ids[chosen].masked_fill(answer_attention_mask[chosen] == 0, IGNORE_INDEX)
        smoothing = self.config.label_smoothing if self.config.vqa_ranking_uses_label_smoothing else 0.0
        top_k_scores = -decoder_cross_entropy(logits, targets, smoothing, "sum_per_sample").view(batch_size, k)
        scores = top_k_scores.new_full((batch_size, candidates), float("-inf")).scatter(1, top_k_indices, top_k_scores)
        return MISSAnswerRankingOutput(scores=scores, top_k_indices=top_k_indices, answer_indices=scores.argmax(-1))


class MISSForReportGeneration(MISSDecodingMixin, MISSPreTrainedModel, GenerationMixin):
    """Image-conditioned text generation (the released `MISS_Decoder` captioner): the decoder reads `[DEC]`, an
    optional prompt and the report, cross-attending the image's ViT states; loss = label-smoothed token mean.

    `generate(pixel_values=..., input_ids=prompt)` continues prompts `[DEC] w_1..w_k` (default `[DEC]` alone; the
    original prompts 'a picture of'); defaults are `MISS_Decoder.generate`'s beam search (3 beams, 10 to 30 tokens).
    Initialise from pre-training with `MISSForReportGeneration.from_pretraining(path)`.
    """

    accepts_loss_kwargs = True

    def __init__(self, config: MISSConfig):
        super().__init__(config)
        self.vision_model = MISSVisionModel(config.vision_config)
        self.text_decoder = MISSTextDecoder(config.text_config)
        self.post_init()
        # `MISS_Decoder.generate`'s beam search: 3 beams, 10 to 30 tokens with the prompt
        self.generation_config.num_beams = 3
        self.generation_config.max_length = 30
        self.generation_config.min_length = 10

    def get_input_embeddings(self):
        return self.text_decoder.bert.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.text_decoder.bert.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        labels=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache=None,
        past_key_values=None,
        use_cache=None,
        num_items_in_batch=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MISSDecoderOutput:
        r"""
        input_ids / attention_mask: (B, L) `[DEC] prompt report [SEP]` (a leading [CLS] becomes [DEC]); with a cache,
            only the new tokens, with the mask of all of them.
        pixel_values: (B, 3, H, W), or `encoder_hidden_states` (B, N, D): the image's ViT states (`generate`).
        labels: (B, L) aligned with `input_ids`, -100 at position 0, at the prompt and at padding.
        num_items_in_batch: target tokens in the whole (accumulated, all-process) batch, given by Trainer so the loss
            is a true token mean under gradient accumulation and DDP.
        cache / past_key_values: the KV cache (one argument under its transformers >= 5.24 and older names).
        """
        check_label_batch(labels, input_ids)
        if labels is not None:
            check_decoder_labels(labels, input_ids)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if encoder_hidden_states is None:
            if pixel_values is None:
                raise ValueError("MISSForReportGeneration needs `pixel_values` (or the image states).")
            check_image_batch(pixel_values, input_ids.shape[0])
            encoder_hidden_states = self.vision_model(pixel_values).last_hidden_state
        outputs, logits, kv_cache = self._decode(
            input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask,
            resolve_kv_cache(cache, past_key_values), use_cache, output_attentions, output_hidden_states,
        )
        loss = None
        if labels is not None:
            loss = decoder_cross_entropy(
                logits, labels, self.config.label_smoothing, num_items_in_batch=num_items_in_batch
            )
        return MISSDecoderOutput(
            loss=loss,
            logits=logits,
            **{KV_CACHE: kv_cache},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden_states,
        )

    @torch.no_grad()
    def generate(self, pixel_values=None, input_ids=None, attention_mask=None, **kwargs):
        """Reports (B, T) continuing the prompts `input_ids` (`[DEC] w_1..w_k`, left-padded; default `[DEC]`) from
        `pixel_values`, decoded with transformers' `generate()` (any of its options). The ViT runs once per image."""
        if pixel_values is None:
            raise ValueError("MISSForReportGeneration.generate needs `pixel_values`.")
        if input_ids is not None:
            check_image_batch(pixel_values, input_ids.shape[0])
        states = self.vision_model(pixel_values).last_hidden_state
        return self._generate_from_states(states, None, input_ids, attention_mask, kwargs)


# --------------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------------


class MISSForRetrieval(MISSContrastiveMixin, MISSPreTrainedModel):
    """Image-text retrieval: ITC embeddings (`get_image_features` / `get_text_features`) shortlist candidates, the ITM
    head on the JTM encoding of a pair re-ranks them (`score_pairs` over `get_image_hidden_states`, computed once per
    image): the two-stage protocol of `medvlp_hf.training.two_stage_retrieval`.

    Trains two ways. On matched pairs with `return_loss=True`, as BLIP's retrieval fine-tuning (`blip_retrieval.py`):
    in-batch ITC, where examples with equal `image_ids` are all positives of each other, plus ITM on one hard negative
    per text and per image drawn from the ITC similarity as MISS's pre-training draws them; without BLIP's momentum
    distillation and queues, which stay with `MISSForPreTraining`. Or on (image, text, match) pairs with `labels`,
    the ITM cross-entropy alone (MedViLL's protocol).
    """

    new_head_modules = ("itm_head",)

    def __init__(self, config: MISSConfig):
        super().__init__(config)
        self._build_contrastive_towers(config)
        self.itm_head = nn.Linear(config.text_config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        labels=None,
        image_hidden_states=None,
        return_loss=None,
        image_ids=None,
        negative_image_indices=None,
        negative_text_indices=None,
        generator=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MISSForRetrievalOutput:
        r"""
        input_ids: (B, L) texts `[CLS] w_1..w_n [SEP]`; pixel_values: (B, 3, H, W) the image of each pair, or
            `image_hidden_states` (B, N, D) its ViT states (`get_image_hidden_states`, to score one image against many
            texts without re-running the ViT).
        labels: (B,) 1 for a matching pair, 0 otherwise: the ITM loss of these pairs.
        return_loss: with matched pairs (and no `labels`), the ITC + ITM training loss (see the class).
        image_ids: (B,) which image each pair shows (`return_loss`; default: every pair its own image).
        negative_image_indices / negative_text_indices: (B,) ITM hard negatives to use instead of drawing them.
        generator: the `torch.Generator` the hard negatives are drawn from.
        """
        check_label_batch(labels, input_ids)
        if return_loss and labels is None:
            return self._contrastive_loss(input_ids, attention_mask, pixel_values, image_hidden_states, image_ids,
                                          negative_image_indices, negative_text_indices, generator)
        joint = self.get_joint_features(input_ids, pixel_values, attention_mask, image_hidden_states)
        logits = self.itm_head(joint.last_hidden_state[:, 0])
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return MISSForRetrievalOutput(loss=loss, logits=logits, scores=logits.float().softmax(-1)[:, 1])

    def score_pairs(self, image_hidden_states, input_ids, attention_mask=None) -> torch.FloatTensor:
        """(B,) the ranking score of each (image, text) pair: the ITM head's "match" logit, as BLIP's and ALBEF's
        retrieval evaluations re-rank (not the probability `forward().scores`, which orders pairs differently).

        Args:
            image_hidden_states: (B, N, D) each pair's image states (`get_image_hidden_states`; one image's row
                repeated to score it against several texts).
            input_ids / attention_mask: (B, L) texts `[CLS] w_1..w_n [SEP]`.
        """
        return self(input_ids=input_ids, attention_mask=attention_mask,
                    image_hidden_states=image_hidden_states).logits[:, 1].float()

    def _contrastive_loss(self, input_ids, attention_mask, pixel_values, image_states, image_ids,
                          negative_image_indices, negative_text_indices, generator):
        if input_ids is None or (pixel_values is None and image_states is None):
            raise ValueError("return_loss=True trains on matched pairs: pass texts (`input_ids`) and their images.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if image_states is None:
            check_image_batch(pixel_values, input_ids.shape[0])
            image_states = self.get_image_hidden_states(pixel_values)
        batch_size = input_ids.shape[0]
        if image_ids is None:
            same_image = torch.eye(batch_size, dtype=torch.bool, device=input_ids.device)
        else:
            check_label_batch(image_ids, input_ids, "image_ids")
            same_image = image_ids[:, None] == image_ids[None, :]
        image_embeds = F.normalize(self.vision_proj(image_states[:, 0]), dim=-1)
        text_states = self.text_encoder(input_ids, attention_mask).last_hidden_state
        text_embeds = F.normalize(self.text_proj(text_states[:, 0]), dim=-1)
        logits_per_image = image_embeds @ text_embeds.T / self.clamped_temperature()
        targets = same_image.float() / same_image.sum(1, keepdim=True)
        itc_loss = (
            -(F.log_softmax(logits_per_image.float(), dim=1) * targets).sum(1).mean()
            - (F.log_softmax(logits_per_image.T.float(), dim=1) * targets).sum(1).mean()
        ) / 2
        logits, itm_labels, itm_loss, negative_image_indices, negative_text_indices = self._match_hard_negatives(
            input_ids, attention_mask, image_states, logits_per_image, logits_per_image.T, same_image,
            negative_image_indices, negative_text_indices, generator,
        )
        return MISSForRetrievalOutput(
            loss=itc_loss + itm_loss,
            itc_loss=itc_loss,
            itm_loss=itm_loss,
            logits=logits,
            scores=logits.float().softmax(-1)[:, 1],
            itm_labels=itm_labels,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.T,
            negative_image_indices=negative_image_indices,
            negative_text_indices=negative_text_indices,
        )


__all__ = [
    "MISSForPreTraining",
    "MISSForReportGeneration",
    "MISSForRetrieval",
    "MISSForVQA",
    "MISSModel",
    "MISSPreTrainedModel",
]
