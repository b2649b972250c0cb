"""M2I2: ALBEF with MAE's masked image modelling, and ALBEF's answer-ranking VQA (Li et al., ISBI 2023), as transformers
models.

The authors' code (`models/{mae,vit,xbert,model_pretrain,model_vqa}.py`) is ALBEF's with MAE's encoder and decoder as its
image tower. Module names here follow the zoo's ALBEF/BLIP family (MISS): `vision_model` (the ViT), `text_encoder` (ALBEF's
BERT: `embeddings`, `encoder.layer.N.{attention,crossattention,intermediate,output}`), `mlm_head`/`text_decoder.cls`
(BERT's LM head), so a conversion is a prefix map. transformers' BERT/BLIP modules are reused where their numerics are
the original's (token embeddings, MLP, feed-forward and output blocks, LM head); attention goes through
`ALL_ATTENTION_FUNCTIONS`.

Texts are tokenised as ALBEF's tokenizer does: `[CLS] w_1..w_n` with no closing `[SEP]` (captions, questions), answers
`[CLS] a_1..a_n [SEP]` (the answer string carries a literal `[SEP]`), token type 0, positions 0..n.
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
from transformers.models.bert.modeling_bert import BertEmbeddings
from transformers.models.blip.modeling_blip import BlipMLP
from transformers.models.blip.modeling_blip_text import (
    BlipTextIntermediate,
    BlipTextLMPredictionHead,
    BlipTextOnlyMLMHead,
    BlipTextOutput,
    BlipTextSelfOutput,
)
from transformers.utils import ModelOutput

from .configuration_m2i2 import M2I2Config, M2I2MIMDecoderConfig, M2I2TextConfig, M2I2VisionConfig

IGNORE_INDEX = -100
TEXT_MODES = ("text", "fusion", "multimodal")
# ALBEF's MLM (`M2I2.mask`): of the chosen tokens, this share becomes [MASK], and half of the others a random token.
MLM_MASK_TOKEN_SHARE = 0.8
MLM_RANDOM_TOKEN_SHARE_OF_REST = 0.5


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


# Copied from medvlp_hf.models.miss.modeling_miss.check_image_batch
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
    """Answer labels are aligned with the decoder input `[CLS] a_1..a_n [SEP]`: `labels[:, t]` is the token at t,
    predicted from the tokens before it, so position 0 is never a target. It must be -100, or Trainer's count of
    target tokens would include it."""
    if labels.shape != input_ids.shape:
        raise ValueError(
            f"labels has shape {tuple(labels.shape)} but the decoder input has shape {tuple(input_ids.shape)}; the "
            "labels are aligned with the answer `[CLS] a_1..a_n [SEP]` (the model shifts them itself)."
        )
    if bool((labels[:, 0] != IGNORE_INDEX).any()):
        raise ValueError(
            "labels[:, 0] must be -100: it is the answer's [CLS] start, which no token predicts (the model shifts the "
            "labels itself). Pass the answer ids with -100 at [CLS] and at padding."
        )


def check_patch_noise(noise: torch.Tensor | None, batch_size: int, patches: int, name: str) -> None:
    if noise is not None and tuple(noise.shape) != (batch_size, patches):
        raise ValueError(
            f"{name} has shape {tuple(noise.shape)}; the image masking needs one value per patch and image, shape "
            f"({batch_size}, {patches})."
        )


# Copied from medvlp_hf.models.miss.modeling_miss.first_token_index
def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's first real token (0 for right padding)."""
    return attention_mask.int().argmax(-1)


# Copied from medvlp_hf.models.miss.modeling_miss.text_position_ids
def text_position_ids(attention_mask: torch.Tensor, new_length: int) -> torch.Tensor:
    """Positions of the last `new_length` tokens of texts whose mask (past and new tokens) is `attention_mask`:
    counted from each row's first real token, so right-padded texts get BLIP's `0..L-1` and left-padded ones the
    positions they would have alone."""
    total = attention_mask.shape[1]
    offsets = torch.arange(total, device=attention_mask.device)[None] - first_token_index(attention_mask)[:, None]
    return offsets.clamp(min=0)[:, total - new_length :]


# Copied from medvlp_hf.models.miss.modeling_miss.additive_mask
def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's minimum elsewhere (the original adds -10000: the same in fp32)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


# Copied from medvlp_hf.models.miss.modeling_miss.self_attention_mask
def self_attention_mask(attention_mask, query_length, causal, dtype):
    """Additive (B, 1, Q, K) mask of the last Q of K tokens: padding, and the future when `causal`."""
    allowed = attention_mask.bool()[:, None, None, :]
    if causal:
        keys = attention_mask.shape[1]
        query_positions = torch.arange(keys - query_length, keys, device=attention_mask.device)
        allowed = allowed & (torch.arange(keys, device=attention_mask.device)[None] <= query_positions[:, None])
    return additive_mask(allowed, dtype)


def token_losses(logits, labels, soft_labels=None, alpha=0.0):
    """Per-position loss (B, L) of `logits` (B, L, V) against `labels` (B, L), 0 where the label is -100: the
    cross-entropy, or with momentum-distilled `soft_labels` (B, L, V) `(1 - alpha) * CE + alpha * soft CE` (ALBEF's
    `xbert.py`)."""
    log_probs = logits.float().log_softmax(-1)
    scored = labels != IGNORE_INDEX
    losses = -log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    if soft_labels is not None:
        distilled = -(soft_labels.float() * log_probs).sum(-1)
        losses = (1 - alpha) * losses + alpha * distilled
    return losses * scored


def mlm_loss(logits, labels, soft_labels=None, alpha=0.0, num_items_in_batch=None):
    """MLM loss: the mean over the masked tokens (`labels` != -100) of this batch, or of the whole accumulated,
    all-process batch when Trainer gives their count `num_items_in_batch`. A batch without masked tokens gives 0 (the
    original's mean would be NaN)."""
    losses = token_losses(logits, labels, soft_labels, alpha)
    count = num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE_INDEX).sum().clamp(min=1)
    return losses.sum() / count


def answer_losses(logits, labels, soft_labels=None, alpha=0.0):
    """(B,) summed next-token loss of each answer: decoder `logits` (B, L, V) at position t predict `labels[:, t + 1]`
    (`BertLMHeadModel` with `reduction='none'`); `soft_labels` (B, L - 1, V) are the momentum decoder's shifted answer
    distributions."""
    return token_losses(logits[:, :-1], labels[:, 1:], soft_labels, alpha).sum(-1)


# Copied from medvlp_hf.models.medvill.modeling_medvill._eager_attention
def _eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.dropout(weights.softmax(-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


# Copied from medvlp_hf.models.miss.modeling_miss.attend
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


# Copied from medvlp_hf.models.miss.modeling_miss.drop_path
def drop_path(hidden_states: torch.Tensor, probability: float, training: bool) -> torch.Tensor:
    """Stochastic depth (timm's `DropPath`): in training, each sample's residual branch is dropped with `probability`
    and kept ones are scaled by 1 / (1 - probability)."""
    if probability == 0.0 or not training:
        return hidden_states
    keep = 1.0 - probability
    mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)).bernoulli_(keep)
    return hidden_states * mask / keep


# --------------------------------------------------------------------------------------------------
# MAE pieces: the sin-cos table, patch masking, patches
# --------------------------------------------------------------------------------------------------


def sincos_position_table(width: int, grid_size: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position table (`get_2d_sincos_pos_embed` with a [CLS] row), shape
    (1 + grid_size**2, width): row 0 ([CLS]) is zeros; patch (i, j) in raster order has, in its first half, the
    column j and, in its second half, the row i, each encoded as [sin(p * w_k), cos(p * w_k)] with
    w_k = 10000 ** (-k / (width / 4)). Computed in float64 as the original's numpy, then rounded to float32."""
    quarter = width // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, columns = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float64), torch.arange(grid_size, dtype=torch.float64), indexing="ij"
    )

    def encode(positions):
        angles = positions.flatten()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(columns), encode(rows)], dim=1)
    return torch.cat([table.new_zeros(1, width), table]).float()


def random_patch_masking(embeddings: torch.Tensor, mask_ratio: float, noise: torch.Tensor):
    """MAE's per-sample random masking (`random_masking`): each image keeps its `int(N * (1 - mask_ratio))` patches of
    lowest `noise` (B, N), in the order of increasing noise.

    Returns the kept embeddings (B, kept, D), the mask (B, N) (1 = removed, in raster order) and `ids_restore` (B, N),
    each patch's position in the noise order (to put decoder tokens back in raster order).
    """
    batch_size, patches, width = embeddings.shape
    kept = int(patches * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :kept]
    kept_embeddings = torch.gather(embeddings, 1, ids_keep[..., None].expand(-1, -1, width))
    mask = torch.ones(batch_size, patches, device=embeddings.device, dtype=embeddings.dtype)
    mask[:, :kept] = 0
    return kept_embeddings, torch.gather(mask, 1, ids_restore), ids_restore


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, patches, patch_size**2 * C), patches in raster order, each flattened row by row with the
    channels last (MAE's `patchify`)."""
    batch_size, channels, height, width = pixel_values.shape
    rows, columns = height // patch_size, width // patch_size
    patches = pixel_values.reshape(batch_size, channels, rows, patch_size, columns, patch_size)
    return torch.einsum("nchpwq->nhwpqc", patches).reshape(batch_size, rows * columns, patch_size**2 * channels)


def masked_patch_loss(pixel_values, predictions, patch_mask, patch_size, norm_pix_loss=False):
    """MIM: the mean over removed patches (`patch_mask` == 1) of the per-patch mean squared error between the
    `predictions` (B, N, patch_size**2 * C) and the patches of the (normalised) image (MAE's `forward_loss`)."""
    target = patchify(pixel_values.float(), patch_size)
    if norm_pix_loss:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((predictions.float() - target) ** 2).mean(-1)
    return (per_patch * patch_mask).sum() / patch_mask.sum()


# --------------------------------------------------------------------------------------------------
# Image encoder: MAE's encoder / ALBEF's ViT (timm blocks)
# --------------------------------------------------------------------------------------------------


# Copied from medvlp_hf.models.miss.modeling_miss.MISSVisionAttention with MISS->M2I2
class M2I2VisionAttention(nn.Module):
    """Multi-head self-attention with timm's fused `qkv` projection."""

    is_causal = False

    def __init__(self, config: M2I2VisionConfig):
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


# Copied from medvlp_hf.models.miss.modeling_miss.MISSVisionLayer with MISS->M2I2
class M2I2VisionLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm ViT block; both residual branches go through stochastic depth (timm's `Block`)."""

    def __init__(self, config: M2I2VisionConfig, drop_path_rate: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = M2I2VisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = BlipMLP(config)
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states, output_attentions=False):
        attended, weights = self.self_attn(self.layer_norm1(hidden_states), output_attentions)
        hidden_states = hidden_states + drop_path(attended, self.drop_path_rate, self.training)
        feed_forward = self.mlp(self.layer_norm2(hidden_states))
        return hidden_states + drop_path(feed_forward, self.drop_path_rate, self.training), weights


# Copied from medvlp_hf.models.miss.modeling_miss.MISSVisionEncoder with MISS->M2I2
class M2I2VisionEncoder(nn.Module):
    def __init__(self, config: M2I2VisionConfig):
        super().__init__()
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.ModuleList([M2I2VisionLayer(config, rate) for rate in rates])

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


class M2I2VisionEmbeddings(nn.Module):
    """Patch embeddings (a stride-`patch_size` convolution) plus position embeddings, optionally masked, behind a [CLS]
    embedding with the table's row 0. Without masking this is ALBEF's ViT input (`[CLS]; patches` + table); with masking,
    MAE's (position embeddings added before the patches are dropped). A learnt table is a parameter; MAE's fixed table
    a buffer, saved with the weights as the original saves it."""

    def __init__(self, config: M2I2VisionConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        table = torch.zeros(1, config.grid_size**2 + 1, config.hidden_size)
        if config.position_embedding_type == "learned":
            self.position_embedding = nn.Parameter(table)
        else:
            self.register_buffer("position_embedding", table)

    def forward(self, pixel_values, patch_noise=None, mask_ratio=0.0):
        """(embeddings (B, 1 + kept, D), patch mask or None, ids_restore or None)."""
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype)).flatten(2).transpose(1, 2)
        patches = patches + self.position_embedding[:, 1:]
        patch_mask = ids_restore = None
        if patch_noise is not None:
            patches, patch_mask, ids_restore = random_patch_masking(patches, mask_ratio, patch_noise)
        cls = (self.class_embedding + self.position_embedding[:, :1]).expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1), patch_mask, ids_restore


@dataclass
class M2I2VisionOutput(BaseModelOutput):
    """
    last_hidden_state: (B, 1 + patches, hidden) after the final LayerNorm, [CLS] first; with masking only the kept
        patches, in the mask's (noise) order.
    patch_mask: (B, patches) 1 for a removed patch, 0 for a kept one, in raster order (None without masking).
    ids_restore: (B, patches) each patch's position in the noise order (None without masking).
    """

    patch_mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None


class M2I2VisionModel(PreTrainedModel):
    """The ViT: MAE's encoder in pre-training (fixed sin-cos positions, a random share of the patches removed by
    `patch_noise`), ALBEF's ViT for VQA (learnt positions, every patch). A `PreTrainedModel` of its own (as BLIP-2's
    vision tower) so it follows its sub-config's attention implementation and initialisation (timm's truncated normal;
    the fixed table is MAE's sin-cos)."""

    config_class = M2I2VisionConfig
    config: M2I2VisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["M2I2VisionLayer"]

    def __init__(self, config: M2I2VisionConfig):
        super().__init__(config)
        self.embeddings = M2I2VisionEmbeddings(config)
        self.encoder = M2I2VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, M2I2VisionEmbeddings):
            init.trunc_normal_(module.class_embedding, std=std)
            if self.config.position_embedding_type == "learned":
                init.trunc_normal_(module.position_embedding, std=std)
            else:
                table = sincos_position_table(self.config.hidden_size, self.config.grid_size)
                init.copy_(module.position_embedding, table[None])

    def forward(self, pixel_values, patch_noise=None, mask_ratio=0.0, output_attentions=False,
                output_hidden_states=False) -> M2I2VisionOutput:
        r"""
        pixel_values: (B, num_channels, image_size, image_size).
        patch_noise: (B, patches) uniform noise that selects the patches to keep (MAE's masking, lowest noise kept);
            None encodes every patch.
        mask_ratio: the share of patches to remove when `patch_noise` is given.
        """
        size, channels = self.config.image_size, self.config.num_channels
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (channels, size, size):
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; this M2I2 model expects (batch, {channels}, {size}, "
                f"{size}) (vision_config.image_size={size}). Preprocess images with M2I2Processor / M2I2ImageProcessor "
                "at this size."
            )
        check_patch_noise(patch_noise, pixel_values.shape[0], self.config.grid_size**2, "patch_noise")
        embeddings, patch_mask, ids_restore = self.embeddings(pixel_values, patch_noise, mask_ratio)
        hidden_states, all_hidden, all_attentions = self.encoder(embeddings, output_attentions, output_hidden_states)
        return M2I2VisionOutput(
            last_hidden_state=self.post_layernorm(hidden_states),
            hidden_states=all_hidden,
            attentions=all_attentions,
            patch_mask=patch_mask,
            ids_restore=ids_restore,
        )


class M2I2MIMDecoder(PreTrainedModel):
    """MAE's decoder (`forward_decoder`): the encoder's tokens projected to the decoder width, a learnt mask token at
    every removed patch, patches put back in raster order, fixed sin-cos positions, timm blocks, LayerNorm, and a
    linear prediction of each patch's pixels (patch_size**2 * channels). A `PreTrainedModel` of its own, like the
    towers, so it follows its sub-config's attention implementation and initialisation."""

    config_class = M2I2MIMDecoderConfig
    config: M2I2MIMDecoderConfig
    base_model_prefix = "mim_decoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["M2I2VisionLayer"]

    def __init__(self, config: M2I2MIMDecoderConfig, vision_config: M2I2VisionConfig):
        super().__init__(config)
        self.grid_size = vision_config.grid_size
        self.embed = nn.Linear(vision_config.hidden_size, config.hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.register_buffer("position_embedding", torch.zeros(1, self.grid_size**2 + 1, config.hidden_size))
        self.encoder = M2I2VisionEncoder(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.prediction = nn.Linear(config.hidden_size, vision_config.patch_size**2 * vision_config.num_channels)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            init.normal_(module.mask_token, std=self.config.initializer_range)
            init.copy_(module.position_embedding, sincos_position_table(self.config.hidden_size, self.grid_size)[None])

    def forward(self, encoder_states, ids_restore):
        """encoder_states: (B, 1 + kept, vision hidden) ([CLS] first); ids_restore: (B, patches). Returns the predicted
        pixels of every patch (B, patches, patch_size**2 * channels), raster order."""
        states = self.embed(encoder_states)
        batch_size, patches = ids_restore.shape
        mask_tokens = self.mask_token.expand(batch_size, patches + 1 - states.shape[1], -1)
        tokens = torch.cat([states[:, 1:], mask_tokens.to(states.dtype)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, states.shape[2]))
        hidden_states = torch.cat([states[:, :1], tokens], dim=1) + self.position_embedding
        hidden_states, _, _ = self.encoder(hidden_states)
        return self.prediction(self.layer_norm(hidden_states))[:, 1:]


# --------------------------------------------------------------------------------------------------
# Text encoder and answer decoder: ALBEF's BERT (`xbert.py`) with fusion layers, SDPA and a KV cache
# --------------------------------------------------------------------------------------------------


# Copied from medvlp_hf.models.miss.modeling_miss.MISSTextSelfAttention with MISS->M2I2
class M2I2TextSelfAttention(nn.Module):
    """BERT attention over the text itself or, as cross-attention, over `encoder_hidden_states` (image or question
    states). With an `EncoderDecoderCache`, self-attention appends its keys/values and cross-attention computes its
    keys/values once and reads them from the cache afterwards."""

    def __init__(self, config: M2I2TextConfig, layer_idx: int, is_cross_attention: bool, is_causal: bool):
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


# Copied from medvlp_hf.models.miss.modeling_miss.MISSTextAttention with MISS->M2I2
class M2I2TextAttention(nn.Module):
    """Attention + BLIP's output block (dense, dropout, residual, LayerNorm)."""

    def __init__(
        self, config: M2I2TextConfig, layer_idx: int, is_cross_attention: bool = False, is_causal: bool = False
    ):
        super().__init__()
        self.self = M2I2TextSelfAttention(config, layer_idx, is_cross_attention, is_causal)
        self.output = BlipTextSelfOutput(config)

    def forward(
        self, hidden_states, attention_mask, encoder_hidden_states=None, kv_cache=None, output_attentions=False
    ):
        context, weights = self.self(hidden_states, attention_mask, encoder_hidden_states, kv_cache, output_attentions)
        return self.output(context, hidden_states), weights


class M2I2TextLayer(GradientCheckpointingLayer):
    """ALBEF's BERT layer: self-attention (bidirectional in the text encoder, causal in the answer decoder),
    cross-attention to `encoder_hidden_states` in the fusion layers, feed-forward.

    Consecutive rows may share their cross-attended states: with G state rows and G * k text rows (rows g*k..g*k+k-1
    reading states g), each group's k rows are cross-attended as one longer query, so the keys and values of the shared
    states are computed once per group, not once per row (answer ranking: the k candidate answers of one question).
    Every row's result is the one it would get alone.
    """

    def __init__(self, config: M2I2TextConfig, layer_idx: int, is_decoder: bool, has_cross_attention: bool):
        super().__init__()
        self.attention = M2I2TextAttention(config, layer_idx, is_causal=is_decoder)
        self.crossattention = (
            M2I2TextAttention(config, layer_idx, is_cross_attention=True) if has_cross_attention else None
        )
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
        if self.crossattention is not None:
            rows, length, width = hidden_states.shape
            groups = encoder_hidden_states.shape[0]
            if rows % groups:
                raise ValueError(
                    f"{rows} text rows cannot share {groups} rows of cross-attended states: each state row serves the "
                    "same number of consecutive text rows."
                )
            folded, cross_weights = self.crossattention(
                hidden_states.reshape(groups, (rows // groups) * length, width),
                encoder_attention_mask,
                encoder_hidden_states,
                kv_cache,
                output_attentions,
            )
            hidden_states = folded.reshape(rows, length, width)
        return self.output(self.intermediate(hidden_states), hidden_states), self_weights, cross_weights


class M2I2TextEncoder(nn.Module):
    """The layer stack: the text encoder's `num_hidden_layers` layers (cross-attention from `fusion_layer` on), or the
    answer decoder's `num_fusion_layers` causal layers, all cross-attending."""

    def __init__(self, config: M2I2TextConfig, is_decoder: bool):
        super().__init__()
        if is_decoder:
            layers = [M2I2TextLayer(config, i, True, True) for i in range(config.num_fusion_layers)]
        else:
            layers = [M2I2TextLayer(config, i, False, i >= config.fusion_layer) for i in range(config.num_hidden_layers)]
        self.layer = nn.ModuleList(layers)

    def forward(
        self,
        hidden_states,
        attention_mask,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        kv_cache=None,
        output_attentions=False,
        output_hidden_states=False,
        layers=slice(None),
    ):
        """Runs the layers `self.layer[layers]` (a slice)."""
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross = () if output_attentions and encoder_hidden_states is not None else None
        for layer in self.layer[layers]:
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
                if all_cross is not None and cross_weights is not None:
                    all_cross += (cross_weights,)
        return BaseModelOutputWithCrossAttentions(
            last_hidden_state=hidden_states, hidden_states=all_hidden, attentions=all_attentions, cross_attentions=all_cross
        )


class M2I2TextModel(PreTrainedModel):
    """ALBEF's BERT (`xbert.BertModel`, no pooler): BERT's token embeddings (token type 0), then layers.

    The text encoder runs in one of three modes (`xbert.BertEncoder`): `text`, its first `fusion_layer` layers over the
    text alone (ITC features); `fusion`, its remaining layers over `text` mode's output, cross-attending the image (ITM);
    `multimodal`, all layers from the tokens, cross-attending the image (MLM, VQA questions). With `is_decoder` it is the
    VQA answer decoder's body: `num_fusion_layers` causal layers, all cross-attending the question states. A
    `PreTrainedModel` of its own so it follows its sub-config's attention implementation and initialisation (BERT's).
    """

    config_class = M2I2TextConfig
    config: M2I2TextConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["M2I2TextLayer"]

    def __init__(self, config: M2I2TextConfig, is_decoder: bool = False):
        super().__init__(config)
        self.is_decoder = is_decoder
        self.embeddings = BertEmbeddings(config)
        self.encoder = M2I2TextEncoder(config, is_decoder)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        kv_cache=None,
        output_attentions=False,
        output_hidden_states=False,
        mode=None,
        text_hidden_states=None,
    ) -> BaseModelOutputWithCrossAttentions:
        r"""
        input_ids: (B, L) the new tokens (with a filled cache, only those after it); not used in `fusion` mode.
        attention_mask: (B, past + L) over the whole text so far, 1 = real token.
        encoder_hidden_states / encoder_attention_mask: (B', N, encoder_hidden_size) states the fusion layers
            cross-attend and their (B', N) mask (None: all attended); B' may divide B (see `M2I2TextLayer`).
        kv_cache: an `EncoderDecoderCache` (answer decoding).
        mode: `text`, `fusion` or `multimodal` (default: `text` without `encoder_hidden_states`, else `multimodal`);
            the decoder always runs all its layers.
        text_hidden_states: (B, L, hidden) `text` mode's output, the input of `fusion` mode.
        """
        mode = mode or ("text" if encoder_hidden_states is None else "multimodal")
        if mode not in TEXT_MODES:
            raise ValueError(f"unknown M2I2 text mode {mode!r}; choose one of {TEXT_MODES}.")
        if (self.is_decoder or mode != "text") and encoder_hidden_states is None:
            raise ValueError(
                "the fusion layers cross-attend image (or question) states: pass `encoder_hidden_states`, or use the "
                "`text` mode."
            )
        if mode == "fusion" and not self.is_decoder:
            if text_hidden_states is None:
                raise ValueError("the `fusion` mode continues from `text` mode's output: pass `text_hidden_states`.")
            hidden_states = text_hidden_states
            batch_size, length = hidden_states.shape[:2]
            past_length = 0
        else:
            batch_size, length = input_ids.shape
            past_length = kv_cache.get_seq_length() if kv_cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, past_length + length, dtype=torch.long, device=self.device)
        if attention_mask.shape != (batch_size, past_length + length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the text so far has shape "
                f"({batch_size}, {past_length + length}); pass the mask of the whole text (cached and new tokens)."
            )
        if mode != "fusion" or self.is_decoder:
            if past_length + length > self.config.max_position_embeddings:
                raise ValueError(
                    f"a text of {past_length + length} tokens is longer than the {self.config.max_position_embeddings} "
                    "positions M2I2 has (text_config.max_position_embeddings); truncate it (the processor's max_length)."
                )
            position_ids = text_position_ids(attention_mask, length)
            hidden_states = self.embeddings(
                input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids), position_ids=position_ids
            )
        dtype = hidden_states.dtype
        mask = self_attention_mask(attention_mask, length, self.is_decoder, dtype)
        cross_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            cross_mask = additive_mask(encoder_attention_mask.bool()[:, None, None, :], dtype)
        fusion = self.config.fusion_layer
        layers = {"text": slice(0, fusion), "fusion": slice(fusion, None), "multimodal": slice(None)}[mode]
        return self.encoder(
            hidden_states,
            mask,
            encoder_hidden_states if mode != "text" else None,
            cross_mask,
            kv_cache=kv_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            layers=slice(None) if self.is_decoder else layers,
        )


# Copied from medvlp_hf.models.miss.modeling_miss.MISSTextDecoder with MISS->M2I2
class M2I2TextDecoder(nn.Module):
    """The text decoder (BLIP's `BertLMHeadModel`): causal BERT body (`bert`) + LM head (`cls`)."""

    def __init__(self, config: M2I2TextConfig):
        super().__init__()
        self.bert = M2I2TextModel(config, is_decoder=True)
        self.cls = BlipTextOnlyMLMHead(config)

    def forward(self, input_ids, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                kv_cache=None, output_attentions=False, output_hidden_states=False):
        """Returns the body's output with `logits` (B, L, vocab) added."""
        outputs = self.bert(
            input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, kv_cache, output_attentions,
            output_hidden_states,
        )
        return outputs, self.cls(outputs.last_hidden_state)


# Copied from medvlp_hf.models.miss.modeling_miss.MISSFeatureQueue with MISS->M2I2
class M2I2FeatureQueue(nn.Module):
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
class M2I2Output(ModelOutput):
    """
    logits_per_image: (images, texts) cosine similarity of the ITC embeddings over the temperature
        (`logits_per_text` is its transpose), as CLIP's.
    image_embeds / text_embeds: the L2-normalised ITC embeddings (projection_dim).
    vision_model_output / text_model_output: the ViT's (every patch) and the text encoder's (`text` mode) outputs.
    """

    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    vision_model_output: BaseModelOutput | None = None
    text_model_output: BaseModelOutputWithCrossAttentions | None = None

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSOutput.to_tuple
    def to_tuple(self):
        return tuple(
            value.to_tuple() if isinstance(value, ModelOutput) else value for value in super().to_tuple()
        )


@dataclass
class M2I2ForPreTrainingOutput(ModelOutput):
    """
    loss: itc_loss + itm_loss + mlm_loss + mim_loss (the configured objectives; under gradient accumulation see the
        class).
    logits: (B, L, vocab) MLM logits over the masked captions `mlm_input_ids`; `mlm_labels` holds the targets.
    itm_logits / itm_labels: (3B, 2) / (3B,) the B positive pairs, then each text with its hard-negative image, then
        each image with its hard-negative text (labels 1, 0, 0).
    logits_per_image / logits_per_text: (B, B + queue_size) ITC similarities over the temperature, to the batch's
        momentum features then to the queue.
    negative_image_indices / negative_text_indices: (B,) the hard negatives.
    mim_predictions: (B, patches, patch_size**2 * channels) the MAE decoder's pixels of every patch.
    mim_patch_mask: (B, patches) 1 where MIM removed the patch (its loss is over those).
    """

    loss: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mlm_input_ids: torch.LongTensor | None = None
    mlm_labels: torch.LongTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    negative_image_indices: torch.LongTensor | None = None
    negative_text_indices: torch.LongTensor | None = None
    mim_predictions: torch.FloatTensor | None = None
    mim_patch_mask: torch.FloatTensor | None = None


@dataclass
class M2I2ForVQAOutput(CausalLMOutputWithCrossAttentions):
    """The answer decoder's output over `[CLS] a_1..a_n [SEP]`. logits: (B, L, vocab); position t predicts token t + 1.
    loss: `sum(answer_weights * answer loss) / B`, an answer's loss being its summed next-token cross-entropy
    (`model_vqa.py`). The KV cache is the inherited field, named as this transformers version names it (`KV_CACHE`:
    `cache` from 5.24, `past_key_values` before; `output.past_key_values` works on both).
    encoder_last_hidden_state: the question states the decoder cross-attended."""

    encoder_last_hidden_state: torch.FloatTensor | None = None


@dataclass
class M2I2AnswerRankingOutput(ModelOutput):
    """
    scores: (B, candidates) each answer's log-likelihood given image and question (sum over its tokens, `[SEP]`
        included; with `vqa_ranking_double_counts_first_token`, plus its first token's log-probability again, as
        released); -inf for candidates outside the question's top k.
    probabilities: (B, candidates) softmax of the scores: over the top k, 0 elsewhere (the original's `topk_probs`).
    top_k_indices: (B, k) the candidates whose first token the decoder found most probable, re-scored in full.
    answer_indices: (B,) the best candidate.
    """

    scores: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None
    top_k_indices: torch.LongTensor | None = None
    answer_indices: torch.LongTensor | None = None


# Copied from medvlp_hf.models.miss.modeling_miss.MISSForRetrievalOutput with MISS->M2I2
@dataclass
class M2I2ForRetrievalOutput(ModelOutput):
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


class M2I2PreTrainedModel(PreTrainedModel):
    config_class = M2I2Config
    config: M2I2Config
    base_model_prefix = "m2i2"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["M2I2VisionLayer", "M2I2TextLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    accepts_loss_kwargs = False
    # Linear layers that get LoRA adapters: the query and value projections of every text attention (self and cross,
    # encoder and decoder), as in the LoRA paper.
    lora_target_modules = ("query", "value")
    # Modules a head adds on top of a checkpoint of another head: freshly initialised when it is fine-tuned from one
    # (the only weights `from_pretrained` may find missing), trained in full under LoRA.
    new_head_modules = ()
    # momentum copies of modules (online name -> momentum name), never trained (see `M2I2MomentumMixin`)
    momentum_modules = {}

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict: a weight the checkpoint lacks is an error, except the
        `new_head_modules` of a head loaded from a checkpoint saved by another head (see `check_missing_weights`) and
        its momentum encoders and feature queues (copied from the loaded encoders, fresh).

        Raises:
            ValueError: the checkpoint lacks weights; its image grid disagrees with its config; or it is a
                pre-training checkpoint loaded into the VQA head, whose decoder starts from the fusion layers.
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
            if not all(key.endswith("position_embedding") for key, _, _ in mismatched):
                raise
            key, saved, expected = sorted(mismatched)[0]
            raise ValueError(
                f"{cls.__name__}.from_pretrained({str(source)!r}): {key} holds {saved[1] - 1} patch positions but the "
                f"folder's config.json (vision_config.image_size / patch_size) asks for {expected[1] - 1}: the config "
                "and the weights are of different image sizes. Fix config.json; to fine-tune a pre-training checkpoint "
                "for VQA at another image size use M2I2ForVQA.from_pretraining(path), which interpolates the position "
                "table bicubically as the authors' `train_rad.py` does."
            ) from error
        # a tied weight is its source's (transformers lists it when both are absent; the source is listed anyway)
        missing = set(loading_info["missing_keys"]) - model.all_tied_weights_keys.keys()
        saved_by = (model.config.architectures or [None])[0]
        if saved_by != cls.__name__:
            missing = model._restore_derived_state(missing)
        if saved_by == "M2I2ForPreTraining" and hasattr(cls, "from_pretraining"):
            raise ValueError(
                f"{cls.__name__}.from_pretrained({str(source)!r}) got an M2I2ForPreTraining checkpoint, whose answer "
                f"decoder starts from the fusion layers and the MLM head (`train_rad.py`). Build the {cls.__name__} "
                f"with {cls.__name__}.from_pretraining({str(source)!r})."
            )
        check_missing_weights(model, missing, source)
        model._freeze_momentum_modules()
        return (model, loading_info) if output_loading_info else model

    def _freeze_momentum_modules(self):
        """Momentum copies are never trained (loading replaces parameters, so `from_pretrained` freezes them again)."""
        for name in self.momentum_modules.values():
            getattr(self, name).requires_grad_(False)

    def _restore_derived_state(self, missing: set) -> set:
        """Heads with momentum encoders or queues override this; returns the missing keys left."""
        return missing

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSPreTrainedModel._init_weights with MISS->M2I2
    def _init_weights(self, module):
        super()._init_weights(module)
        # the module that holds the LM head's bias: transformers initialises a remote-code module only when one of its
        # own (not its children's) weights is missing, so a rule on BlipTextOnlyMLMHead would never run in
        # `from_pretrained` and leave a new head's bias as uninitialised memory
        if isinstance(module, BlipTextLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, M2I2FeatureQueue):
            for queue in (module.image_queue, module.text_queue):
                init.normal_(queue)
                init.copy_(queue, F.normalize(queue, dim=0))
            init.zeros_(module.queue_ptr)
        if isinstance(getattr(module, "temperature", None), nn.Parameter):
            init.constant_(module.temperature, self.config.itc_temperature)


# --------------------------------------------------------------------------------------------------
# Contrastive features (base model, pre-training, retrieval)
# --------------------------------------------------------------------------------------------------


class M2I2ContrastiveMixin:
    """The image encoder, the text encoder and the ITC projections with the learnt temperature, and what they compute:
    CLIP-style features and the text encoder's joint encoding of a text over an image."""

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSContrastiveMixin._build_contrastive_towers with MISS->M2I2
    def _build_contrastive_towers(self, config: M2I2Config):
        self.vision_model = M2I2VisionModel(config.vision_config)
        self.text_encoder = M2I2TextModel(config.text_config)
        self.vision_proj = nn.Linear(config.vision_config.hidden_size, config.projection_dim)
        self.text_proj = nn.Linear(config.text_config.hidden_size, config.projection_dim)
        self.temperature = nn.Parameter(torch.tensor(config.itc_temperature))

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSContrastiveMixin.get_input_embeddings
    def get_input_embeddings(self):
        return self.text_encoder.embeddings.word_embeddings

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSContrastiveMixin.set_input_embeddings
    def set_input_embeddings(self, value):
        self.text_encoder.embeddings.word_embeddings = value

    def get_image_features(self, pixel_values) -> torch.FloatTensor:
        """(B, projection_dim) ITC image embedding: `vision_proj` of the ViT's [CLS] over every patch (not
        normalised, as CLIP's). Pre-training masks 15% of the patches; features for retrieval and zero-shot use all."""
        return self.vision_proj(self.vision_model(pixel_values).last_hidden_state[:, 0])

    def get_text_features(self, input_ids, attention_mask=None) -> torch.FloatTensor:
        """(B, projection_dim) ITC text embedding: `text_proj` of the [CLS] of the text encoder's `text` mode (its
        first `fusion_layer` layers). `input_ids`: `[CLS] w_1..w_n` as ALBEF's tokenizer writes them."""
        return self.text_proj(self.text_encoder(input_ids, attention_mask, mode="text").last_hidden_state[:, 0])

    def get_joint_features(self, input_ids, pixel_values=None, attention_mask=None, image_hidden_states=None,
                           output_attentions=False, output_hidden_states=False) -> BaseModelOutputWithCrossAttentions:
        """The text encoder's encoding of each text over its image (`multimodal` mode: ITM's input): the fusion layers
        cross-attend the image's ViT states (`image_hidden_states`, computed from `pixel_values` over every patch when
        not given). `last_hidden_state[:, 0]` is the pair's representation."""
        if image_hidden_states is None:
            check_image_batch(pixel_values, input_ids.shape[0])
            image_hidden_states = self.vision_model(pixel_values).last_hidden_state
        else:
            check_image_batch(image_hidden_states, input_ids.shape[0])
        return self.text_encoder(
            input_ids,
            attention_mask,
            image_hidden_states,
            mode="multimodal",
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSContrastiveMixin.clamped_temperature
    def clamped_temperature(self) -> torch.Tensor:
        """The ITC temperature within [itc_temperature_min, itc_temperature_max] (in-range values keep gradients)."""
        return self.temperature.clamp(self.config.itc_temperature_min, self.config.itc_temperature_max)


class M2I2Model(M2I2ContrastiveMixin, M2I2PreTrainedModel):
    """The M2I2 encoders: ViT, text encoder and ITC projections. `forward` gives CLIP-style contrastive outputs (any
    number of images against any number of texts), so `AutoModelForZeroShotImageClassification` and the stock
    zero-shot pipeline work; `get_joint_features` gives the joint encoding of (image, text) pairs."""

    # transformers Auto classes that also load this class (besides AutoModel): its `logits_per_image` is what the
    # zero-shot image-classification pipeline reads.
    additional_auto_classes = ("AutoModelForZeroShotImageClassification",)

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSModel.__init__ with MISS->M2I2
    def __init__(self, config: M2I2Config):
        super().__init__(config)
        self._build_contrastive_towers(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> M2I2Output:
        r"""
        input_ids: (T, L) texts `[CLS] w_1..w_n`; pixel_values: (I, 3, H, W) images. The counts may differ.
        Other keyword arguments a tokenizer returns (`token_type_ids`) are ignored: M2I2's token types are all 0.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError(
                "M2I2Model.forward compares images with texts and needs both `pixel_values` and `input_ids`; for one "
                "modality use get_image_features / get_text_features."
            )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        vision_outputs = self.vision_model(
            pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        text_outputs = self.text_encoder(
            input_ids, attention_mask, mode="text", output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        image_embeds = F.normalize(self.vision_proj(vision_outputs.last_hidden_state[:, 0]), dim=-1)
        text_embeds = F.normalize(self.text_proj(text_outputs.last_hidden_state[:, 0]), dim=-1)
        logits_per_image = image_embeds @ text_embeds.T / self.clamped_temperature()
        return M2I2Output(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.T,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            vision_model_output=vision_outputs,
            text_model_output=text_outputs,
        )


# --------------------------------------------------------------------------------------------------
# Momentum encoders (pre-training, VQA distillation)
# --------------------------------------------------------------------------------------------------


class M2I2MomentumMixin:
    """Momentum copies of some modules (`momentum_modules`: online name -> momentum name), updated as an EMA once per
    optimizer step by `momentum_step()` (called by `medvlp_hf.training.MomentumUpdateCallback` under Trainer), never
    trained, and the distillation weight `distillation_alpha` their soft targets get."""

    def momentum_parameter_pairs(self):
        """(name, online parameter, momentum parameter) of every momentum weight; a weight tied to another (an LM
        head's decoder to the word embeddings) is listed once."""
        seen = set()
        for online_name, momentum_name in self.momentum_modules.items():
            momentum = dict(getattr(self, momentum_name).named_parameters(remove_duplicate=False))
            for name, parameter in getattr(self, online_name).named_parameters(remove_duplicate=False):
                if id(parameter) not in seen:
                    seen.add(id(parameter))

                    yield f"{online_name}.{name}", parameter, momentum[name]

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            for _, online, momentum in self.momentum_parameter_pairs():
                init.copy_(momentum, online)

    def _restore_derived_state(self, missing: set) -> set:
        """A checkpoint of another head has no momentum encoders or queues: the momentum encoders start as copies of
        the loaded encoders (the original's `copy_params`), the queues as random unit vectors (initialised already)."""
        derived_modules = (*self.momentum_modules.values(), "feature_queue")
        derived = {key for key in missing if key.split(".")[0] in derived_modules}
        with torch.no_grad():
            for name, online, momentum in self.momentum_parameter_pairs():
                module, rest = name.split(".", 1)
                if f"{self.momentum_modules[module]}.{rest}" in derived:
                    momentum.copy_(online)
        return missing - derived

    def distillation_alpha_at(self, epoch: float) -> float:
        """The released warm-up: alpha * min(1, epoch / alpha_ramp_epochs) (`pretrain_med.py`, `train_rad.py` with
        `warm_up: True`: linear over the first epoch)."""
        ramp = self.config.alpha_ramp_epochs
        return self.config.alpha * (min(1.0, epoch / ramp) if ramp > 0 else 1.0)


# --------------------------------------------------------------------------------------------------
# Pre-training
# --------------------------------------------------------------------------------------------------


def mask_caption_tokens(input_ids, config: M2I2Config, generator=None, masked_positions=None):
    """ALBEF's MLM masking (`M2I2.mask`): each token is chosen with probability `config.mlm_probability`, never
    `[PAD]` or `[CLS]` (a `[SEP]` can be); of the chosen, 80% become `[MASK]`, half of the rest a random token of the
    whole vocabulary, the rest stay. Draws come from `generator` (or torch's global generator), in the original's
    order. `masked_positions` (B, L) bools replace the first draw (the tokens to predict).

    Returns the masked ids and the labels (the chosen tokens' ids, -100 elsewhere).
    """
    shape, device = input_ids.shape, input_ids.device

    def coin(probability):
        return torch.bernoulli(torch.full(shape, probability, device=device), generator=generator).bool()

    chosen = coin(config.mlm_probability) if masked_positions is None else masked_positions.bool()
    chosen = chosen & (input_ids != config.pad_token_id) & (input_ids != config.cls_token_id)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    to_mask = coin(MLM_MASK_TOKEN_SHARE) & chosen
    to_random = coin(MLM_RANDOM_TOKEN_SHARE_OF_REST) & chosen & ~to_mask
    random_tokens = torch.randint(config.text_config.vocab_size, shape, generator=generator, device=device)
    masked = input_ids.masked_fill(to_mask, config.mask_token_id)
    return torch.where(to_random, random_tokens, masked), labels


def _hard_negative_weights(similarity: torch.Tensor) -> torch.Tensor:
    """ALBEF's draw weights: softmax over the batch's similarities, never the pair itself."""
    return F.softmax(similarity.float(), dim=1).fill_diagonal_(0)


# Copied from medvlp_hf.models.miss.modeling_miss._gather_from_processes
def _gather_from_processes(features: torch.Tensor) -> torch.Tensor:
    """The features of every process under torch.distributed (so every process enqueues the global batch, as BLIP's
    `concat_all_gather`); the features themselves otherwise."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return features
    gathered = [torch.empty_like(features) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, features.contiguous())
    return torch.cat(gathered)


class M2I2ForPreTraining(M2I2MomentumMixin, M2I2ContrastiveMixin, M2I2PreTrainedModel):
    """M2I2 pre-training (`models/model_pretrain.py`): image-text contrastive learning with momentum encoders, feature
    queues and momentum distillation (ITC), image-text matching on hard negatives (ITM), masked language modelling with
    momentum-distilled soft labels (MLM) and MAE's masked image modelling (MIM). `input_ids` are the captions
    `[CLS] w_1..w_n`; `pixel_values` their images, normalised (the MIM target is the normalised image, as coded).

    As coded, every objective reads a masked image: the ViT keeps a random `1 - mim_mask_ratio` of the patches for
    ITC, ITM and MLM, the momentum ViT draws its own mask, MIM a third. The masks, the MLM masking and the ITM hard
    negatives are drawn inside the model from `generator` (torch's global generator in training; in evaluation without
    a generator a generator seeded with 0, so evaluation losses are comparable from one evaluation to the next), or
    injected: `patch_noise` / `momentum_patch_noise` / `mim_patch_noise`, `labels` (+ `mlm_input_ids`),
    `negative_image_indices` / `negative_text_indices`.

    Momentum encoders and queues change once per optimizer step, outside `forward` (which cannot see accumulation
    boundaries): a training-mode forward keeps its momentum features, and `momentum_step()` - called by
    `medvlp_hf.training.MomentumUpdateCallback` at the end of every optimizer step under Trainer, or by your loop after
    `optimizer.step()` - updates the momentum encoders (EMA), enqueues the kept features and clamps the temperature
    (the original updates the momentum encoders at the start of each forward, which is the same sequence of weights
    over a run; to reproduce one original forward on a converted checkpoint, call `momentum_step()` - with nothing
    kept, it only updates the momentum encoders and clamps the temperature - before `forward`). Evaluation forwards
    keep nothing. The distillation weight `distillation_alpha` starts at `config.alpha`; the
    callback ramps it from 0 over `config.alpha_ramp_epochs` as `pretrain_med.py` does.

    Under gradient accumulation and DDP, with `labels` in the batch Trainer passes `num_items_in_batch` (the masked
    tokens of the whole accumulated batch): the MLM loss is then the mean over all of them, as in one full batch, and
    ITC, ITM and MIM (means over the micro-batch) are weighted by the micro-batch's share of them. Without `labels`
    (masking inside the model) every term is the micro-batch's mean and Trainer averages the micro-batches.
    """

    new_head_modules = ("itm_head", "mlm_head", "mim_decoder")
    # Its forward draws the MLM masking, the image masks and the ITM hard negatives and builds every target from
    # matching (image, caption) pairs: a pre-training batch holds only those pairs.
    pretrains_on_matching_pairs = True
    momentum_modules = {
        "vision_model": "vision_model_m",
        "vision_proj": "vision_proj_m",
        "text_encoder": "text_encoder_m",
        "mlm_head": "mlm_head_m",
        "text_proj": "text_proj_m",
    }
    accepts_loss_kwargs = True

    def __init__(self, config: M2I2Config):
        super().__init__(config)
        self._tied_weights_keys = {
            **_lm_head_tied("mlm_head", "text_encoder.embeddings"),
            **_lm_head_tied("mlm_head_m", "text_encoder_m.embeddings"),
        }
        self._build_contrastive_towers(config)
        self.itm_head = nn.Linear(config.text_config.hidden_size, 2)
        self.mlm_head = BlipTextOnlyMLMHead(config.text_config)
        self.mim_decoder = M2I2MIMDecoder(config.mim_decoder_config, config.vision_config)
        self.vision_model_m = M2I2VisionModel(config.vision_config)
        self.vision_proj_m = nn.Linear(config.vision_config.hidden_size, config.projection_dim)
        self.text_encoder_m = M2I2TextModel(config.text_config)
        self.mlm_head_m = BlipTextOnlyMLMHead(config.text_config)
        self.text_proj_m = nn.Linear(config.text_config.hidden_size, config.projection_dim)
        self.feature_queue = M2I2FeatureQueue(config.projection_dim, config.queue_size)
        self._freeze_momentum_modules()
        self.distillation_alpha = config.alpha
        self._momentum_features = []
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.predictions.decoder = new_embeddings

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSForPreTraining.momentum_step
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

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        labels=None,
        mlm_input_ids=None,
        alpha=None,
        patch_noise=None,
        momentum_patch_noise=None,
        mim_patch_noise=None,
        negative_image_indices=None,
        negative_text_indices=None,
        generator=None,
        num_items_in_batch=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> M2I2ForPreTrainingOutput:
        r"""
        input_ids: (B, L) captions `[CLS] w_1..w_n`; pixel_values: (B, 3, H, W) their images.
        labels: (B, L) MLM targets (the caption's token where it is to be predicted, -100 elsewhere); drawn by the
            model when not given. Pass them (from your collator) under Trainer for an exact token mean under gradient
            accumulation.
        mlm_input_ids: (B, L) the captions as MLM reads them (`[MASK]` and random tokens at the label positions); drawn
            at the label positions (80% [MASK], 10% random, 10% kept) when only `labels` are given.
        alpha: momentum-distillation weight of this forward (default `self.distillation_alpha`).
        patch_noise / momentum_patch_noise / mim_patch_noise: (B, patches) noise of the three image masks (the ViT
            for ITC/ITM/MLM, the momentum ViT, MIM); lowest noise is kept.
        negative_image_indices / negative_text_indices: (B,) ITM hard negatives to use instead of drawing them
            (index of the batch's image for each text, of the batch's text for each image).
        generator: the `torch.Generator` every draw comes from.
        num_items_in_batch: masked tokens in the whole (accumulated, all-process) batch, given by Trainer.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("M2I2ForPreTraining needs captions (`input_ids`) and their images (`pixel_values`).")
        batch_size = input_ids.shape[0]
        check_image_batch(pixel_values, batch_size)
        check_label_batch(labels, input_ids)
        check_label_batch(mlm_input_ids, input_ids, "mlm_input_ids")
        if mlm_input_ids is not None and labels is None:
            raise ValueError("mlm_input_ids needs the labels it was masked for; pass both, or neither.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        objectives = self.config.pretraining_objectives
        alpha = self.distillation_alpha if alpha is None else alpha
        if generator is None and not self.training:
            generator = torch.Generator(device=input_ids.device).manual_seed(0)
        patches = self.config.vision_config.grid_size**2
        for name, noise in (("patch_noise", patch_noise), ("momentum_patch_noise", momentum_patch_noise),
                            ("mim_patch_noise", mim_patch_noise)):
            check_patch_noise(noise, batch_size, patches, name)

        def masked_image(vision_model, noise):
            if noise is None:
                noise = torch.rand(batch_size, patches, generator=generator, device=pixel_values.device)
            return vision_model(pixel_values, noise, self.config.mim_mask_ratio)

        output = M2I2ForPreTrainingOutput()
        image_states = image_states_m = None
        if {"itc", "itm", "mlm"} & set(objectives):
            image_states = masked_image(self.vision_model, patch_noise).last_hidden_state
        if "itc" in objectives or ("mlm" in objectives and alpha > 0):
            with torch.no_grad():
                image_states_m = masked_image(self.vision_model_m, momentum_patch_noise).last_hidden_state
        if "itc" in objectives:
            text_states = self.text_encoder(input_ids, attention_mask, mode="text").last_hidden_state
            self._contrast(input_ids, attention_mask, image_states, image_states_m, text_states, alpha, output)
        if "itm" in objectives:
            self._match(text_states, attention_mask, image_states, negative_image_indices, negative_text_indices,
                        generator, output)
        if "mlm" in objectives:
            if mlm_input_ids is None:
                masked_positions = None if labels is None else labels != IGNORE_INDEX
                mlm_input_ids, drawn_labels = mask_caption_tokens(input_ids, self.config, generator, masked_positions)
                labels = drawn_labels if labels is None else labels
            output.mlm_input_ids, output.mlm_labels = mlm_input_ids, labels
            self._mask_language(mlm_input_ids, attention_mask, labels, image_states, image_states_m, alpha,
                                num_items_in_batch, output)
        if "mim" in objectives:
            image = masked_image(self.vision_model, mim_patch_noise)
            output.mim_predictions = self.mim_decoder(image.last_hidden_state, image.ids_restore)
            output.mim_patch_mask = image.patch_mask
            output.mim_loss = masked_patch_loss(
                pixel_values, output.mim_predictions, image.patch_mask, self.config.vision_config.patch_size,
                self.config.mim_norm_pix_loss,
            )
        share = 1.0
        if num_items_in_batch is not None and labels is not None:
            share = (labels != IGNORE_INDEX).sum() / num_items_in_batch
        output.loss = sum(
            loss if name == "mlm_loss" else share * loss
            for name, loss in (("itc_loss", output.itc_loss), ("itm_loss", output.itm_loss),
                               ("mlm_loss", output.mlm_loss), ("mim_loss", output.mim_loss))
            if loss is not None
        )
        return output

    def _contrast(self, input_ids, attention_mask, image_states, image_states_m, text_states, alpha, output):
        """ITC against the batch's momentum features and the queue, with momentum-distilled soft targets."""
        image_embeds = F.normalize(self.vision_proj(image_states[:, 0]), dim=-1)
        text_embeds = F.normalize(self.text_proj(text_states[:, 0]), dim=-1)
        temperature = self.clamped_temperature()
        with torch.no_grad():
            image_embeds_m = F.normalize(self.vision_proj_m(image_states_m[:, 0]), dim=-1)
            text_states_m = self.text_encoder_m(input_ids, attention_mask, mode="text").last_hidden_state
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

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSForPreTraining._keep_momentum_features
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

    def _match(self, text_states, attention_mask, image_states, negative_image_indices, negative_text_indices,
               generator, output):
        """ITM on the positive pairs and on one hard negative per text and per image: the fusion layers over `text`
        mode's states (`mode='fusion'`), the ITM head on the [CLS]."""
        batch_size = text_states.shape[0]
        if negative_image_indices is None or negative_text_indices is None:
            if batch_size < 2:
                raise ValueError(
                    "ITM draws its hard negatives from the other examples of the batch, and this batch has only 1; "
                    "use batches of at least 2 (or pretraining_objectives without 'itm')."
                )
            with torch.no_grad():
                drawn_images, drawn_texts = (
                    torch.multinomial(_hard_negative_weights(similarity[:, :batch_size]), 1, generator=generator)[:, 0]
                    for similarity in (output.logits_per_text, output.logits_per_image)
                )
            negative_image_indices = drawn_images if negative_image_indices is None else negative_image_indices
            negative_text_indices = drawn_texts if negative_text_indices is None else negative_text_indices
        texts = torch.cat([text_states, text_states, text_states[negative_text_indices]])
        text_mask = torch.cat([attention_mask, attention_mask, attention_mask[negative_text_indices]])
        images = torch.cat([image_states, image_states[negative_image_indices], image_states])
        joint = self.text_encoder(
            attention_mask=text_mask, encoder_hidden_states=images, mode="fusion", text_hidden_states=texts
        ).last_hidden_state[:, 0]
        output.itm_logits = self.itm_head(joint)
        output.itm_labels = torch.cat([
            torch.ones(batch_size, dtype=torch.long), torch.zeros(2 * batch_size, dtype=torch.long)
        ]).to(joint.device)
        output.itm_loss = F.cross_entropy(output.itm_logits.float(), output.itm_labels)
        output.negative_image_indices, output.negative_text_indices = negative_image_indices, negative_text_indices

    def _mask_language(self, mlm_input_ids, attention_mask, labels, image_states, image_states_m, alpha,
                       num_items_in_batch, output):
        """MLM over the masked captions read with the (masked) image, with the momentum encoder's distributions as
        soft labels weighted by alpha."""
        states = self.text_encoder(mlm_input_ids, attention_mask, image_states, mode="multimodal").last_hidden_state
        output.logits = self.mlm_head(states)
        soft_labels = None
        if alpha > 0:
            with torch.no_grad():
                states_m = self.text_encoder_m(mlm_input_ids, attention_mask, image_states_m).last_hidden_state
                soft_labels = F.softmax(self.mlm_head_m(states_m).float(), dim=-1)
        output.mlm_loss = mlm_loss(output.logits, labels, soft_labels, alpha, num_items_in_batch)


def _lm_head_tied(head: str, embeddings: str) -> dict:
    """A BERT LM head's tied weights: its decoder is the word embeddings, its decoder bias its `bias`."""
    return {
        f"{head}.predictions.decoder.weight": f"{embeddings}.word_embeddings.weight",
        f"{head}.predictions.decoder.bias": f"{head}.predictions.bias",
    }


# --------------------------------------------------------------------------------------------------
# VQA: answer decoder, ranking, generation
# --------------------------------------------------------------------------------------------------


def resize_position_table(table: torch.Tensor, grid_size: int) -> torch.Tensor:
    """A (1, 1 + g**2, D) position table for a `grid_size` x `grid_size` patch grid: the [CLS] row kept, the patch rows
    resized bicubically (ALBEF's `interpolate_pos_embed`, `align_corners=False`)."""
    old = int((table.shape[1] - 1) ** 0.5)
    if old == grid_size:
        return table
    patches = table[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(patches.float(), size=(grid_size, grid_size), mode="bicubic", align_corners=False)
    return torch.cat([table[:, :1], resized.permute(0, 2, 3, 1).flatten(1, 2).to(table.dtype)], dim=1)


def vqa_state_dict_from_pretraining(state_dict: dict, config: M2I2Config) -> dict:
    """The weights of an `M2I2ForVQA(config)` from those of an `M2I2ForPreTraining` (its `state_dict()`), as the
    authors' `train_rad.py` initialises VQA from the pre-training checkpoint:

    - the image encoder as it is, its position table resized bicubically to `config`'s grid (16x16 -> 24x24 for
      256 -> 384 px);
    - the question encoder: the text encoder, every layer;
    - the answer decoder: the text encoder's embeddings, decoder layer i = text encoder layer `fusion_layer + i` (its
      self-attention, cross-attention and feed-forward), the LM head = the MLM head;
    - with `config.vqa_distillation`, the momentum copies the same way from the momentum encoders (`..._m`).

    The ITC projections and temperature, the ITM head, the MAE decoder and the queues are not used.
    """
    fusion_layer, grid = config.text_config.fusion_layer, config.vision_config.grid_size
    weights = {}
    for name, tensor in state_dict.items():
        module, _, rest = name.partition(".")
        base, suffix = module.removesuffix("_m"), "_m" if module.endswith("_m") else ""
        if suffix and not config.vqa_distillation:
            continue
        if base == "vision_model":
            weights[name] = resize_position_table(tensor, grid) if rest == "embeddings.position_embedding" else tensor
        elif base == "text_encoder":
            weights[name] = tensor
            if rest.startswith("embeddings."):
                weights[f"text_decoder{suffix}.bert.{rest}"] = tensor
            elif rest.startswith("encoder.layer."):
                index, layer_rest = rest.removeprefix("encoder.layer.").split(".", 1)
                if int(index) >= fusion_layer:
                    weights[f"text_decoder{suffix}.bert.encoder.layer.{int(index) - fusion_layer}.{layer_rest}"] = tensor
        elif base == "mlm_head":
            weights[f"text_decoder{suffix}.cls.{rest}"] = tensor
    return weights


# Copied from medvlp_hf.models.miss.modeling_miss.decoding_cache with MISS->M2I2
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
        f"M2I2 decoding keeps the cross-attention keys/values next to a growing self-attention cache, which needs an "
        f"EncoderDecoderCache of dynamic caches; got a {type(cache).__name__}. Pass a DynamicCache or "
        "EncoderDecoderCache, or none."
    )


class M2I2ForVQA(M2I2MomentumMixin, M2I2PreTrainedModel, GenerationMixin):
    """ALBEF's generative VQA as M2I2 runs it (`models/model_vqa.py`): the question `[CLS] q_1..q_n` goes through the
    text encoder over the image (every patch), and a causal answer decoder - `num_fusion_layers` layers that start as
    copies of the fusion layers (`from_pretraining`) - reads the answer `[CLS] a_1..a_n [SEP]` cross-attending the
    question states. Trained teacher-forced: `loss = sum(answer_weights * summed answer cross-entropy) / B`; with
    `config.vqa_distillation`, momentum copies of the three towers give soft answer targets weighted by alpha
    (`distill: True`, RAD).

    Closed-set answering ranks a candidate list (`rank_answers`, the released evaluation); open answers come from
    `generate(input_ids=questions, attention_mask=..., pixel_values=...)` (transformers' generation with a KV cache,
    starting from `[CLS]`, ending at `[SEP]`; decode with `skip_special_tokens=True`). Momentum copies follow the same
    protocol as pre-training's (`momentum_step()`, `MomentumUpdateCallback`).
    """

    new_head_modules = ("text_decoder",)
    # The released evaluation answers every question by ranking a candidate answer list (`rank_answers`), not by
    # writing it; medvlp_hf.training's VQA recipe reads this to evaluate the same way.
    evaluates_by_ranking = True
    # vision_config fields of the authors' fine-tuning recipe (`configs/RAD.yaml`: 384 px, ALBEF's ViT), set by
    # `from_pretraining`
    pretraining_vision_overrides = {"image_size": 384, "position_embedding_type": "learned"}

    def __init__(self, config: M2I2Config):
        super().__init__(config)
        self._tied_weights_keys = _lm_head_tied("text_decoder.cls", "text_decoder.bert.embeddings")
        self.vision_model = M2I2VisionModel(config.vision_config)
        self.text_encoder = M2I2TextModel(config.text_config)
        self.text_decoder = M2I2TextDecoder(config.text_config)
        self.momentum_modules = {}
        if config.vqa_distillation:
            self.momentum_modules = {
                "vision_model": "vision_model_m", "text_encoder": "text_encoder_m", "text_decoder": "text_decoder_m"
            }
            self._tied_weights_keys.update(_lm_head_tied("text_decoder_m.cls", "text_decoder_m.bert.embeddings"))
            self.vision_model_m = M2I2VisionModel(config.vision_config)
            self.text_encoder_m = M2I2TextModel(config.text_config)
            self.text_decoder_m = M2I2TextDecoder(config.text_config)
            self._freeze_momentum_modules()
        self.distillation_alpha = config.alpha
        self.post_init()

    def get_input_embeddings(self):
        return self.text_encoder.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.text_encoder.embeddings.word_embeddings = value

    def get_output_embeddings(self):
        return self.text_decoder.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.text_decoder.cls.predictions.decoder = new_embeddings

    @torch.no_grad()
    def momentum_step(self) -> None:
        """End of an optimizer step: with `vqa_distillation`, the momentum copies <- momentum * themselves +
        (1 - momentum) * the trained towers (the original updates them at the start of every training forward, the
        same sequence of weights); without, nothing."""
        momentum = self.config.momentum
        for _, online, shadow in self.momentum_parameter_pairs():
            shadow.copy_(shadow * momentum + online.detach() * (1.0 - momentum))

    @classmethod
    def from_pretraining(cls, pretrained, vqa_distillation=None, **vision_overrides):
        """An `M2I2ForVQA` initialised from an M2I2 pre-training model as `train_rad.py` does (see
        `vqa_state_dict_from_pretraining`: the answer decoder from the fusion layers and the MLM head, the position
        table resized bicubically).

        Args:
            pretrained: an `M2I2ForPreTraining` or the path / Hub id of one.
            vqa_distillation: keep momentum copies for distillation (default: the pre-training config's value; the
                RAD recipe sets True, SLAKE and PathVQA False).
            vision_overrides: `vision_config` fields of the new model; by default `pretraining_vision_overrides` (the
                released recipe: image_size 384, a learnt position table).
        """
        if not isinstance(pretrained, M2I2ForPreTraining):
            pretrained = M2I2ForPreTraining.from_pretrained(pretrained)
        config = M2I2Config.from_dict(pretrained.config.to_dict())
        vision = config.vision_config.to_dict()
        for field, value in {**cls.pretraining_vision_overrides, **vision_overrides}.items():
            if not hasattr(config.vision_config, field):
                raise ValueError(f"{cls.__name__}.from_pretraining: vision_config has no field {field!r}.")
            vision[field] = value
        config.vision_config = M2I2VisionConfig(**vision)
        if vqa_distillation is not None:
            config.vqa_distillation = vqa_distillation
        config.architectures = None
        model = cls(config)
        model.load_state_dict(vqa_state_dict_from_pretraining(pretrained.state_dict(), config), strict=True)
        return model.to(pretrained.dtype)

    def encode_question(self, input_ids, pixel_values, attention_mask=None, momentum=False, output_attentions=False,
                        output_hidden_states=False) -> BaseModelOutputWithCrossAttentions:
        """The question `[CLS] q_1..q_n` through the text encoder (`multimodal` mode) over the image's ViT states, every
        patch: the states the answer decoder cross-attends. `momentum`: through the momentum copies."""
        check_image_batch(pixel_values, input_ids.shape[0])
        vision, text = (self.vision_model_m, self.text_encoder_m) if momentum else (self.vision_model, self.text_encoder)
        image_states = vision(pixel_values).last_hidden_state
        return text(input_ids, attention_mask, image_states, mode="multimodal", output_attentions=output_attentions,
                    output_hidden_states=output_hidden_states)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        labels=None,
        answer_weights=None,
        alpha=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache=None,
        past_key_values=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> M2I2ForVQAOutput:
        r"""
        input_ids / attention_mask: (B, Lq) questions `[CLS] q_1..q_n`; pixel_values: (B, 3, H, W) their images.
        decoder_input_ids / decoder_attention_mask: (B, La) answers `[CLS] a_1..a_n [SEP]` (built from `labels` when
            not given: -100 becomes [PAD], position 0 [CLS]).
        labels: (B, La) aligned with the decoder input, -100 at position 0 and at padding.
        answer_weights: (B,) each answer's weight in the loss (default `config.vqa_answer_weight`, 0.5 as released).
        alpha: distillation weight of this forward with `vqa_distillation` (default `self.distillation_alpha`).
        encoder_hidden_states / encoder_attention_mask: precomputed question states and their mask (`generate`).
        cache / past_key_values: the KV cache (one argument under its transformers >= 5.24 and older names).
        """
        check_label_batch(labels, input_ids if input_ids is not None else decoder_input_ids)
        check_label_batch(answer_weights, input_ids if input_ids is not None else decoder_input_ids, "answer_weights")
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("M2I2ForVQA needs the answer: `decoder_input_ids` or `labels`.")
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
                raise ValueError("M2I2ForVQA needs the question (`input_ids`) and its image (`pixel_values`).")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            encoder_hidden_states = self.encode_question(input_ids, pixel_values, attention_mask).last_hidden_state
            encoder_attention_mask = attention_mask
        outputs, logits, kv_cache = self._decode(
            decoder_input_ids, decoder_attention_mask, encoder_hidden_states, encoder_attention_mask,
            resolve_kv_cache(cache, past_key_values), use_cache, output_attentions, output_hidden_states,
        )
        loss = None
        if labels is not None:
            alpha = self.distillation_alpha if alpha is None else alpha
            soft_labels = None
            if self.config.vqa_distillation and alpha > 0:
                soft_labels = self._momentum_answer_distributions(
                    input_ids, attention_mask, pixel_values, decoder_input_ids, decoder_attention_mask
                )
            if answer_weights is None:
                answer_weights = logits.new_full((logits.shape[0],), self.config.vqa_answer_weight, dtype=torch.float32)
            loss = (answer_weights * answer_losses(logits, labels, soft_labels, alpha)).sum() / logits.shape[0]
        return M2I2ForVQAOutput(
            loss=loss,
            logits=logits,
            **{KV_CACHE: kv_cache},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden_states,
        )

    @torch.no_grad()
    def _momentum_answer_distributions(self, input_ids, attention_mask, pixel_values, decoder_input_ids,
                                       decoder_attention_mask):
        """The momentum towers' next-token distributions over the answer (B, La - 1, vocab), the soft targets."""
        if input_ids is None or pixel_values is None:
            raise ValueError(
                "VQA distillation runs the momentum towers on the question and image: pass `input_ids` and "
                "`pixel_values` (not precomputed question states) with labels, or set alpha=0."
            )
        states = self.encode_question(input_ids, pixel_values, attention_mask, momentum=True).last_hidden_state
        _, logits = self.text_decoder_m(decoder_input_ids, decoder_attention_mask, states, attention_mask)
        return F.softmax(logits[:, :-1].float(), dim=-1)

    def _decode(self, decoder_input_ids, decoder_attention_mask, encoder_hidden_states, encoder_attention_mask, cache,
                use_cache, output_attentions, output_hidden_states):
        """(decoder body outputs, logits, the cache to return)."""
        kv_cache = decoding_cache(cache) if use_cache or cache is not None else None
        outputs, logits = self.text_decoder(
            decoder_input_ids, decoder_attention_mask, encoder_hidden_states, encoder_attention_mask, kv_cache,
            output_attentions, output_hidden_states,
        )
        return outputs, logits, kv_cache

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSForVQA.prepare_inputs_for_generation
    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        model_inputs["decoder_input_ids"] = model_inputs.pop("input_ids")
        if "attention_mask" in model_inputs:
            model_inputs["decoder_attention_mask"] = model_inputs.pop("attention_mask")
        return model_inputs

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, pixel_values=None, decoder_input_ids=None,
                 decoder_attention_mask=None, **kwargs):
        """Open answers (B, T) `[CLS] a_1..a_n [SEP]` to the questions `input_ids` about `pixel_values`, decoded with
        transformers' `generate()` (any of its options; greedy by default). The question is encoded once;
        `decoder_input_ids` optionally starts each answer (`[CLS] ...`, left-padded)."""
        if input_ids is None or pixel_values is None:
            raise ValueError("M2I2ForVQA.generate needs the questions (`input_ids`) and their images (`pixel_values`).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        states = self.encode_question(input_ids, pixel_values, attention_mask).last_hidden_state
        return self._generate_from_states(states, attention_mask, decoder_input_ids, decoder_attention_mask, kwargs)

    def _check_prompt(self, input_ids, attention_mask):
        """Refuse an answer prompt that already ends the answer: generation would continue after its [SEP]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ended = ((input_ids == self.config.sep_token_id) & attention_mask.bool()).any(-1)
        if ended.any():
            raise ValueError(
                f"prompt row(s) {ended.nonzero().flatten().tolist()} already hold the end-of-text [SEP], so generation "
                "would continue after the end of the answer. Answer prompts are `[CLS] a_1..a_k` without the closing "
                "[SEP]."
            )

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSDecodingMixin._generate_from_states with MISS->M2I2
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
                f"M2I2 decoding keeps the cross-attention keys/values next to a growing self-attention cache; got "
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

    @torch.no_grad()
    def rank_answers(self, input_ids, pixel_values, answer_input_ids, attention_mask=None, answer_attention_mask=None,
                     k=None) -> M2I2AnswerRankingOutput:
        """Closed-set answering over candidate answers, as the released evaluation does (ALBEF's `rank_answer`): the
        decoder's distribution after `[CLS]` picks the `k` candidates whose first token is most probable, and those
        are scored in full (teacher-forced log-likelihood); `k` >= the number of candidates scores every one.

        The question is encoded once, and its states are shared by its k candidates inside the decoder's
        cross-attention (their keys and values are computed once per question, see `M2I2TextLayer`).

        Args:
            input_ids / attention_mask / pixel_values: (B, Lq) questions `[CLS] q_1..q_n` and (B, 3, H, W) images.
            answer_input_ids / answer_attention_mask: (A, La) candidates `[CLS] a_1..a_n [SEP]`, right-padded.
            k: how many candidates to score in full per question (default `config.vqa_ranking_top_k`, 128 as released).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if answer_attention_mask is None:
            answer_attention_mask = torch.ones_like(answer_input_ids)
        if not bool((answer_input_ids[:, 0] == self.config.bos_token_id).all()):
            raise ValueError(
                f"candidate answers must start with [CLS] (id {self.config.bos_token_id}) and be right-padded, "
                "`[CLS] a_1..a_n [SEP]` as ALBEF's tokenizer writes `answer + '[SEP]'`; got first tokens "
                f"{answer_input_ids[:, 0].tolist()}."
            )
        states = self.encode_question(input_ids, pixel_values, attention_mask).last_hidden_state
        batch_size, candidates = input_ids.shape[0], answer_input_ids.shape[0]
        k = min(k or self.config.vqa_ranking_top_k, candidates)
        start = torch.full((batch_size, 1), self.config.bos_token_id, device=input_ids.device)
        _, first_logits = self.text_decoder(start, None, states, attention_mask)
        first_log_probs = first_logits[:, 0].float().log_softmax(-1)[:, answer_input_ids[:, 1]]
        top_k_indices = first_log_probs.topk(k, dim=1).indices
        chosen = top_k_indices.flatten()
        _, logits = self.text_decoder(answer_input_ids[chosen], answer_attention_mask[chosen], states, attention_mask)
        targets = answer_input_ids[chosen].masked_fill(answer_attention_mask[chosen] == 0, IGNORE_INDEX)
        top_k_scores = -answer_losses(logits, targets).view(batch_size, k)
        if self.config.vqa_ranking_double_counts_first_token:
            top_k_scores = top_k_scores + first_log_probs.gather(1, top_k_indices)
        scores = top_k_scores.new_full((batch_size, candidates), float("-inf")).scatter(1, top_k_indices, top_k_scores)
        return M2I2AnswerRankingOutput(
            scores=scores,
            probabilities=scores.softmax(-1),
            top_k_indices=top_k_indices,
            answer_indices=scores.argmax(-1),
        )


# --------------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------------


class M2I2ForRetrieval(M2I2ContrastiveMixin, M2I2PreTrainedModel):
    """Image-text retrieval as ALBEF's (`Retrieval.py`, `models/model_retrieval.py`): ITC embeddings
    (`get_image_features` / `get_text_features`) shortlist candidates, the ITM head on the fusion layers' encoding of a
    pair re-ranks them by its "match" logit (`score_pairs` over `get_image_hidden_states`, computed once per image):
    the two-stage protocol of `medvlp_hf.training.two_stage_retrieval`. Images are encoded with every patch (MAE's
    masking is pre-training's), as the VQA head encodes them.

    Trains two ways. On matched pairs with `return_loss=True`, as ALBEF's retrieval fine-tuning: in-batch ITC with the
    learnt temperature, where examples with equal `image_ids` (ALBEF's `idx`) are all positives of each other, plus
    ITM on the positives and on one hard negative per text and per image drawn from the ITC similarity, the fusion
    layers reading the ITC pass's `text`-mode states. Without momentum distillation and queues: the authors' M2I2 code
    has no retrieval (its scripts are `pretrain_med.py` and `train_{rad,slake,pathvqa}.py`; originals.md §0, §3.1), so
    ALBEF's retrieval distillation (`distill: True`) is not M2I2's, and the momentum encoders stay with
    `M2I2ForPreTraining` (as `MISSForRetrieval` leaves BLIP's out). The temperature is clamped to
    [itc_temperature_min, itc_temperature_max] as M2I2's pre-training clamps it; ALBEF's `model_retrieval.py` divides
    by it unclamped, the same while it is in that range. Or on (image, text, match) pairs with `labels`, the ITM
    cross-entropy alone (MedViLL's protocol).
    """

    new_head_modules = ("itm_head",)

    def __init__(self, config: M2I2Config):
        super().__init__(config)
        self._build_contrastive_towers(config)
        self.itm_head = nn.Linear(config.text_config.hidden_size, 2)
        self.post_init()

    def get_image_hidden_states(self, pixel_values) -> torch.FloatTensor:
        """(B, 1 + grid_size**2, vision hidden) the ViT's states of each image over every patch: what the fusion layers
        cross-attend (`image_hidden_states` of `forward`, `score_pairs`, `get_joint_features`; computed once, they
        serve any number of texts). pixel_values: (B, 3, image_size, image_size); another size is a ValueError."""
        return self.vision_model(pixel_values).last_hidden_state

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSForRetrieval.forward with MISS->M2I2, w_1..w_n [SEP]->w_1..w_n
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
    ) -> M2I2ForRetrievalOutput:
        r"""
        input_ids: (B, L) texts `[CLS] w_1..w_n`; pixel_values: (B, 3, H, W) the image of each pair, or
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
        return M2I2ForRetrievalOutput(loss=loss, logits=logits, scores=logits.float().softmax(-1)[:, 1])

    # Copied from medvlp_hf.models.miss.modeling_miss.MISSForRetrieval.score_pairs with MISS->M2I2, w_1..w_n [SEP]->w_1..w_n
    def score_pairs(self, image_hidden_states, input_ids, attention_mask=None) -> torch.FloatTensor:
        """(B,) the ranking score of each (image, text) pair: the ITM head's "match" logit, as BLIP's and ALBEF's
        retrieval evaluations re-rank (not the probability `forward().scores`, which orders pairs differently).

        Args:
            image_hidden_states: (B, N, D) each pair's image states (`get_image_hidden_states`; one image's row
                repeated to score it against several texts).
            input_ids / attention_mask: (B, L) texts `[CLS] w_1..w_n`.
        """
        return self(input_ids=input_ids, attention_mask=attention_mask,
                    image_hidden_states=image_hidden_states).logits[:, 1].float()

    def _contrastive_loss(self, input_ids, attention_mask, pixel_values, image_states, image_ids,
                          negative_image_indices, negative_text_indices, generator):
        """ITC + ITM on matched pairs (`model_retrieval.py` without distillation; see the class)."""
        if input_ids is None or (pixel_values is None and image_states is None):
            raise ValueError("return_loss=True trains on matched pairs: pass texts (`input_ids`) and their images.")
        batch_size = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if image_states is None:
            check_image_batch(pixel_values, batch_size)
            image_states = self.get_image_hidden_states(pixel_values)
        else:
            check_image_batch(image_states, batch_size)
        if image_ids is None:
            same_image = torch.eye(batch_size, dtype=torch.bool, device=input_ids.device)
        else:
            check_label_batch(image_ids, input_ids, "image_ids")
            same_image = image_ids[:, None] == image_ids[None, :]
        text_states = self.text_encoder(input_ids, attention_mask, mode="text").last_hidden_state
        image_embeds = F.normalize(self.vision_proj(image_states[:, 0]), dim=-1)
        text_embeds = F.normalize(self.text_proj(text_states[:, 0]), dim=-1)
        logits_per_image = image_embeds @ text_embeds.T / self.clamped_temperature()
        targets = same_image.float() / same_image.sum(1, keepdim=True)
        itc_loss = (
            -(F.log_softmax(logits_per_image.float(), dim=1) * targets).sum(1).mean()
            - (F.log_softmax(logits_per_image.T.float(), dim=1) * targets).sum(1).mean()
        ) / 2
        if negative_image_indices is None or negative_text_indices is None:
            drawn_images, drawn_texts = self._draw_hard_negatives(logits_per_image, same_image, generator)
            negative_image_indices = drawn_images if negative_image_indices is None else negative_image_indices
            negative_text_indices = drawn_texts if negative_text_indices is None else negative_text_indices
        joint = self.text_encoder(
            attention_mask=torch.cat([attention_mask, attention_mask, attention_mask[negative_text_indices]]),
            encoder_hidden_states=torch.cat([image_states, image_states[negative_image_indices], image_states]),
            mode="fusion",
            text_hidden_states=torch.cat([text_states, text_states, text_states[negative_text_indices]]),
        ).last_hidden_state[:, 0]
        logits = self.itm_head(joint)
        itm_labels = torch.cat([
            torch.ones(batch_size, dtype=torch.long), torch.zeros(2 * batch_size, dtype=torch.long)
        ]).to(logits.device)
        itm_loss = F.cross_entropy(logits.float(), itm_labels)
        return M2I2ForRetrievalOutput(
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

    @torch.no_grad()
    def _draw_hard_negatives(self, logits_per_image, same_image, generator):
        """(B,) a negative image for each text, then (B,) a negative text for each image, each drawn from `generator`
        with probability softmax(ITC similarity) over the batch's examples of other images (ALBEF's softmax, then 0
        where `same_image`: the same distribution, taken over the allowed entries so that no row underflows to all
        zeros at a small temperature). In evaluation without a generator the draw is seeded with 0."""
        if same_image.shape[0] < 2:
            raise ValueError(
                "ITM draws its hard negatives from the other examples of the batch, and this batch has only 1; use "
                "batches of at least 2."
            )
        if bool(same_image.all(-1).any()):
            raise ValueError(
                "ITM draws its hard negatives from the batch's other images, and in this batch an image has no other: "
                "every example shows it (image_ids). Shuffle the data so a batch holds several images."
            )
        if generator is None and not self.training:
            generator = torch.Generator(device=same_image.device).manual_seed(0)
        return tuple(
            torch.multinomial(F.softmax(similarity.float().masked_fill(same_image, -torch.inf), dim=1), 1,
                              generator=generator)[:, 0]
            for similarity in (logits_per_image.T, logits_per_image)
        )


__all__ = [
    "M2I2ForPreTraining",
    "M2I2ForRetrieval",
    "M2I2ForVQA",
    "M2I2Model",
    "M2I2PreTrainedModel",
    "mask_caption_tokens",
    "sincos_position_table",
    "vqa_state_dict_from_pretraining",
]
