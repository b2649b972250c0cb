"""MedViLL: a single-stream BERT over ResNet grid features and report text (Moon et al., IEEE JBHI 2022).

The joint sequence is `[CLS] v_1..v_N [SEP] w_1..w_n [SEP]`. The model builds `[CLS] v_1..v_N` from
`pixel_values`; `input_ids` is the *text stream* `[SEP] w_1..w_n [SEP] [PAD]..`, whose first token is the
visual [SEP] closing the image block. Keeping that [SEP] in the text stream makes it the natural
`bos_token_id` for `generate()` and lets left padding work: image keys/values live in the cache.
"""

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_medvill import MedViLLConfig

IGNORE_INDEX = -100


def kv_cache_name() -> str:
    """The name transformers gives the KV cache, both as the output field and as the keyword `generate()` passes
    to `forward`: `past_key_values` up to 5.23, `cache` from 5.24. Read off transformers' own
    `CausalLMOutputWithPast`, so outputs that inherit its field and code that uses this name follow a rename
    without version checks."""
    fields = {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
    (name,) = fields - {"loss", "logits", "hidden_states", "attentions"}
    return name


KV_CACHE = kv_cache_name()


def resolve_kv_cache(cache, past_key_values):
    """The cache a caller passed as `cache` (transformers >= 5.24) or `past_key_values` (the older name)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("got two different caches, `cache` and `past_key_values`; pass one (they are the same argument).")
    return cache if cache is not None else past_key_values


# --------------------------------------------------------------------------------------------------
# Image encoder: a torchvision-layout bottleneck ResNet (no torchvision dependency)
# --------------------------------------------------------------------------------------------------


class MedViLLBottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), parameter names as in torchvision."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class MedViLLImageEncoder(nn.Module):
    """ResNet trunk without pooling/fc: image -> (B, grid*grid, 4 * widths[-1]) in raster order."""

    def __init__(self, config: MedViLLConfig):
        super().__init__()
        stem = config.resnet_stem_width
        self.conv1 = nn.Conv2d(config.num_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = stem
        for stage, (width, depth) in enumerate(zip(config.resnet_widths, config.resnet_depths)):
            blocks = []
            for block in range(depth):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(MedViLLBottleneck(in_channels, width, stride))
                in_channels = width * MedViLLBottleneck.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(pixel_values))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------------------------------
# Layout: positions, segments and the five attention masks
# --------------------------------------------------------------------------------------------------


def text_stream_layout(config: MedViLLConfig, text_attention_mask: torch.Tensor):
    """Position and segment ids of every text-stream token (the visual [SEP] is the first real one).

    Text tokens restart at position 0 and keep counting through right padding (as the original code's
    `arange`); left padding gets position 0. The visual [SEP] sits where `config.position_scheme` says.
    """
    length = text_attention_mask.shape[1]
    first = text_attention_mask.int().argmax(-1, keepdim=True)
    relative = torch.arange(length, device=text_attention_mask.device)[None] - first
    sep_position = 0 if config.position_scheme == "pretraining" else config.num_image_tokens + 1
    position_ids = torch.where(relative == 0, sep_position, (relative - 1).clamp(min=0))
    is_text = (relative > 0) & text_attention_mask.bool()
    token_type_ids = torch.where(relative == 0, 0, torch.where(is_text, 1, config.padding_token_type_id))
    return position_ids, token_type_ids


def joint_attention_mask(
    mask_type: str,
    prefix_length: int,
    text_attention_mask: torch.Tensor,
    query_length: int,
    use_s2s: torch.Tensor | None = None,
    attend_padding: bool = False,
) -> torch.Tensor:
    """Boolean (B, query_length, T) mask (True = attend) for the last `query_length` rows of the joint
    sequence `[CLS] v_1..v_N | text stream`, T = prefix_length + text length.

    - bidirectional: every row sees every real token.
    - s2s: the image block ([CLS], v, visual [SEP]) sees itself; text rows see the image block and the
      text up to themselves.
    - bar: s2s, except the image block sees everything.
    - bi_s2s: per sample, s2s where `use_s2s` else bidirectional.
    - non_crossing: [CLS] + v and the text stream (visual [SEP] onwards) only see themselves.
    `attend_padding` reproduces the released s2s/BAR masks, which never mask text padding.
    """
    batch_size, text_length = text_attention_mask.shape
    device = text_attention_mask.device
    total = prefix_length + text_length
    text_valid = text_attention_mask.bool()
    valid = torch.cat([text_valid.new_ones(batch_size, prefix_length), text_valid], dim=1)
    index = torch.arange(total, device=device)
    in_text = index >= prefix_length
    first = text_valid.int().argmax(-1, keepdim=True) + prefix_length
    rows = slice(total - query_length, total)

    bidirectional = valid[:, None, :].expand(batch_size, query_length, total)
    if mask_type == "bidirectional":
        return bidirectional
    if mask_type == "non_crossing":
        text_side = in_text[None] & (index[None] >= first)
        same_side = text_side[:, rows, None] == text_side[:, None, :]
        return same_side & valid[:, None, :]

    image_block = ~in_text[None] | (index[None] == first)
    seen = valid if not attend_padding else torch.ones_like(valid)
    causal = index[rows, None] >= index[None, :]
    text_rows = (image_block[:, None, :] | causal[None]) & seen[:, None, :]
    if mask_type == "bar":
        image_rows = seen[:, None, :].expand(batch_size, query_length, total)
    else:
        image_rows = image_block[:, None, :] & seen[:, None, :]
    s2s = torch.where(image_block[:, rows, None], image_rows, text_rows)
    if mask_type == "bi_s2s":
        if use_s2s is None:
            raise ValueError("attention_mask_type='bi_s2s' needs `use_s2s` (one boolean per sample).")
        return torch.where(use_s2s[:, None, None], s2s, bidirectional)
    return s2s


# --------------------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------------------


class MedViLLLinear(nn.Linear):
    """`nn.Linear` that multiplies 2-3 rows on CPU as `W @ x^T`.

    A cached decoding step feeds exactly two rows per sample (the new token and the [MASK]) and is bound by
    reading the weights. For so few rows MKL's `x @ W^T` kernel streams them at about half the speed of
    `W @ x^T`: a base batch-1 step is 1.4-1.5x faster this way (benchmarks/bench_decoding_step.py). Elsewhere
    it is `nn.Linear`.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        rows = input.numel() // self.in_features
        if input.device.type != "cpu" or not 1 < rows <= 3:
            return super().forward(input)
        columns = input.reshape(rows, self.in_features).contiguous().T
        if self.bias is None:
            output = self.weight @ columns
        else:
            output = torch.addmm(self.bias[:, None], self.weight, columns)
        return output.T.contiguous().view(*input.shape[:-1], self.out_features)


class MedViLLDecodingCacheLayer(DynamicLayer):
    """Keys/values kept in a buffer with spare room along the sequence.

    `DynamicLayer` concatenates, copying the whole layer cache at every step; here a step writes its tokens in
    place and `crop` (the [MASK] dropped after each step) only shortens the visible length, which makes a base
    step 1.1x faster at batch 1 and 1.24x at batch 16 on CPU (benchmarks/bench_decoding_step.py).
    `keys`/`values` are views of the filled start of the buffers.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_buffer = self.value_buffer = None

    def _set_buffers(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int) -> None:
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.keys = key_buffer[:, :, :length]
        self.values = value_buffer[:, :, :length]

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, length: int) -> None:
        kept = self.get_seq_length()
        capacity = length + max(128, length // 2)
        buffers = []
        for old, new in ((self.keys, key_states), (self.values, value_states)):
            buffer = new.new_empty(*new.shape[:2], capacity, new.shape[3])
            if kept:
                buffer[:, :, :kept] = old
            buffers.append(buffer)
        self._set_buffers(*buffers, kept)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if self.key_buffer is None or end > self.key_buffer.shape[2]:
            self._grow(key_states, value_states, end)
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self._set_buffers(self.key_buffer, self.value_buffer, end)
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes the negative number of tokens to drop, got {tokens_to_remove}.")
        if self.is_initialized and tokens_to_remove:
            length = max(0, self.get_seq_length() + tokens_to_remove)
            self._set_buffers(self.key_buffer, self.value_buffer, length)

    def _select_batch(self, select) -> None:
        length = self.get_seq_length()
        if length > 0:
            self._set_buffers(select(self.key_buffer), select(self.value_buffer), length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._select_batch(lambda buffer: buffer.index_select(0, beam_idx.to(buffer.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select_batch(lambda buffer: buffer[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._select_batch(lambda buffer: buffer.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        super().reset()
        self.key_buffer = self.value_buffer = None


class MedViLLDecodingCache(Cache):
    """The cache `MedViLLForReportGeneration.generate` decodes with: one `MedViLLDecodingCacheLayer` per layer."""

    def __init__(self):
        super().__init__(layer_class_to_replicate=MedViLLDecodingCacheLayer)


class MedViLLEmbeddings(nn.Module):
    """Word/position/segment embeddings shared by text, [CLS] and the projected image grid."""

    def __init__(self, config: MedViLLConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.image_projection = nn.Linear(config.image_feature_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def embed_tokens(self, input_ids, position_ids, token_type_ids):
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(embeddings))

    def embed_prefix(self, image_features: torch.Tensor, grid_indices: torch.Tensor) -> torch.Tensor:
        """`[CLS] v_1..v_N`: CLS at position 0; image cells at their grid index (+1 when consecutive)."""
        batch_size = image_features.shape[0]
        device = image_features.device
        zeros = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        cls = self.embed_tokens(zeros + self.config.cls_token_id, zeros, zeros)
        offset = 1 if self.config.position_scheme == "consecutive" else 0
        image = (
            self.image_projection(image_features)
            + self.position_embeddings(grid_indices + offset)[None]
            + self.token_type_embeddings(zeros)
        )
        return torch.cat([cls, self.dropout(self.layer_norm(image))], dim=1)


class MedViLLSelfAttention(nn.Module):
    is_causal = False

    def __init__(self, config: MedViLLConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.query = MedViLLLinear(config.hidden_size, config.hidden_size)
        self.key = MedViLLLinear(config.hidden_size, config.hidden_size)
        self.value = MedViLLLinear(config.hidden_size, config.hidden_size)
        self.output = MedViLLLinear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states, attention_mask, kv_cache=None, output_attentions=False):
        batch_size, length, _ = hidden_states.shape
        shape = (batch_size, length, self.num_heads, self.head_dim)
        query = self.query(hidden_states).view(shape).transpose(1, 2)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        if kv_cache is not None:
            key, value = kv_cache.update(key, value, self.layer_idx)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, _eager_attention)
        context, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.output(context.reshape(batch_size, length, -1)), weights


def _eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.dropout(weights.softmax(-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class MedViLLLayer(GradientCheckpointingLayer):
    """Post-LayerNorm BERT layer."""

    def __init__(self, config: MedViLLConfig, layer_idx: int):
        super().__init__()
        self.attention = MedViLLSelfAttention(config, layer_idx)
        self.attention_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = MedViLLLinear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.output = MedViLLLinear(config.intermediate_size, config.hidden_size)
        self.output_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, attention_mask, kv_cache=None, output_attentions=False):
        attended, weights = self.attention(hidden_states, attention_mask, kv_cache, output_attentions)
        hidden_states = self.attention_layer_norm(hidden_states + self.dropout(attended))
        feed_forward = self.output(self.activation(self.intermediate(hidden_states)))
        return self.output_layer_norm(hidden_states + self.dropout(feed_forward)), weights


class MedViLLEncoder(nn.Module):
    def __init__(self, config: MedViLLConfig):
        super().__init__()
        self.layers = nn.ModuleList([MedViLLLayer(config, i) for i in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_mask, kv_cache=None, output_attentions=False, output_hidden_states=False):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(
                hidden_states, attention_mask, kv_cache=kv_cache, output_attentions=output_attentions
            )
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, all_hidden, all_attentions


class MedViLLPooler(nn.Module):
    def __init__(self, config: MedViLLConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return torch.tanh(self.dense(hidden_states[:, 0]))


class MedViLLHeadTransform(nn.Module):
    """Dense + activation + LayerNorm (with the original's own eps) before the vocabulary decoder."""

    def __init__(self, config: MedViLLConfig):
        super().__init__()
        self.dense = MedViLLLinear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.head_layer_norm_eps)

    def forward(self, hidden_states):
        return self.layer_norm(self.activation(self.dense(hidden_states)))


class MedViLLPredictionHead(nn.Module):
    """Vocabulary head shared by MLM pre-training and report generation (decoder tied to word embeddings)."""

    def __init__(self, config: MedViLLConfig):
        super().__init__()
        self.transform = MedViLLHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states)) + self.bias


# --------------------------------------------------------------------------------------------------
# Base model
# --------------------------------------------------------------------------------------------------


@dataclass
class MedViLLModelOutput(BaseModelOutputWithPast):
    """
    last_hidden_state: joint sequence `[CLS] v_1..v_N | text stream` (only the new positions when a cache
        already holds earlier ones).
    The KV cache is the inherited field, named as this transformers version names it (`KV_CACHE`: `cache` from
        5.24, `past_key_values` before; `output.past_key_values` works on both).
    pooler_output: tanh(dense(h_CLS)) (None on cached steps, where [CLS] is not recomputed).
    prefix_length: 1 + number of image tokens; `last_hidden_state[:, prefix_length:]` is the text stream.
    image_token_indices: the grid cells that were used (sorted).
    """

    pooler_output: torch.FloatTensor | None = None
    prefix_length: int | None = None
    image_token_indices: torch.LongTensor | None = None


def check_image_batch(images: torch.Tensor, batch_size: int) -> None:
    """One image per text: torch would fail deep inside (an opaque `torch.cat` error) when the counts differ."""
    if images.shape[0] != batch_size:
        raise ValueError(
            f"got {images.shape[0]} image(s) (pixel_values / image_features) and {batch_size} text(s) (input_ids); "
            "each text needs its own image. To ask several questions about one image, repeat it, e.g. "
            "`pixel_values.expand(len(texts), -1, -1, -1)` or `images=[image] * len(texts)` in the processor."
        )


def check_label_batch(labels: torch.Tensor | None, input_ids: torch.Tensor | None, name: str = "labels") -> None:
    """Labels need one row per example; a mismatch would otherwise surface as an opaque loss-function error."""
    if labels is not None and input_ids is not None and labels.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"{name} has {labels.shape[0]} row(s) but the batch has {input_ids.shape[0]} example(s) (input_ids); "
            f"pass one row of {name} per example."
        )


def token_mean_cross_entropy(logits, labels, num_items_in_batch=None):
    """Cross-entropy averaged over the target tokens (labels != -100): of this batch, or of the whole accumulated,
    all-process batch when Trainer gives their count `num_items_in_batch` (so gradient accumulation and DDP give the
    full-batch loss)."""
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)
    return loss if num_items_in_batch is None else loss / num_items_in_batch


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


class MedViLLPreTrainedModel(PreTrainedModel):
    config_class = MedViLLConfig
    config: MedViLLConfig
    base_model_prefix = "medvill"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["MedViLLLayer", "MedViLLBottleneck"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    accepts_loss_kwargs = False
    # Linear layers that get LoRA adapters: the joint encoder's attention query and value projections, as in the
    # LoRA paper (module names `encoder.layers.{i}.attention.query|value`).
    lora_target_modules = ("query", "value")
    # Modules a head adds on top of a base or pre-trained checkpoint of another head: freshly initialised when it is
    # fine-tuned from one (the only weights `from_pretrained` may find missing), trained in full under LoRA.
    new_head_modules = ()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict: a weight the checkpoint lacks is an error, except the
        `new_head_modules` of a head loaded from a checkpoint saved by another head (see `check_missing_weights`)."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        check_missing_weights(model, loading_info["missing_keys"], args[0] if args else kwargs.get("pretrained_model_name_or_path"))
        return (model, loading_info) if output_loading_info else model

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, MedViLLPredictionHead):
            init.zeros_(module.bias)

    def _encode_pair(self, input_ids, pixel_values, attention_mask, image_features, output_attentions,
                     output_hidden_states):
        """Bidirectional encoding of an (image, text) pair, the mask every understanding head fine-tunes with."""
        return self.medvill(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            image_features=image_features,
            attention_mask_type="bidirectional",
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    def post_init(self):
        super().post_init()
        if self.config.freeze_image_encoder:
            self.base_model.image_encoder.requires_grad_(False)


class MedViLLModel(MedViLLPreTrainedModel):
    def __init__(self, config: MedViLLConfig):
        super().__init__(config)
        self.embeddings = MedViLLEmbeddings(config)
        self.image_encoder = MedViLLImageEncoder(config)
        self.encoder = MedViLLEncoder(config)
        self.pooler = MedViLLPooler(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ResNet grid features (B, grid*grid, feature_size), computed once and reusable via `image_features`."""
        expected = (self.config.num_channels, self.config.image_size, self.config.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; MedViLL expects (batch, {expected[0]}, "
                f"{expected[1]}, {expected[2]}). Preprocess images with MedViLLProcessor / MedViLLImageProcessor "
                f"(size={self.config.image_size})."
            )
        dtype = self.embeddings.image_projection.weight.dtype
        layout = torch.channels_last if self.config.resnet_channels_last else torch.contiguous_format
        return self.image_encoder(pixel_values.to(dtype=dtype, memory_format=layout))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_features: torch.FloatTensor | None = None,
        image_token_indices: torch.LongTensor | None = None,
        attention_mask_type: str | None = None,
        use_s2s: torch.BoolTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MedViLLModelOutput:
        r"""
        input_ids: text stream `[SEP] w_1..w_n [SEP] [PAD]..` (see the module docstring); with a cache, only
            the new tokens.
        attention_mask: (B, text length) over the whole text stream so far (past + new), 1 = real token.
        image_features: precomputed `get_image_features(pixel_values)`, instead of pixel_values.
        image_token_indices: sorted grid cells to keep (pre-training samples `num_pretraining_image_tokens`).
        attention_mask_type: overrides `config.attention_mask_type` (heads pass their fine-tuning mask).
        use_s2s: (B,) booleans for `bi_s2s`; drawn with `config.s2s_probability` when not given.
        position_ids: positions of the new text-stream tokens, replacing the layout's (only the released
            teacher-forced decoder needs this, see `MedViLLForReportGeneration.generate_teacher_forced`).
        cache / past_key_values: the KV cache (one argument under its transformers >= 5.24 and older names).
        """
        cache = resolve_kv_cache(cache, past_key_values)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if input_ids is None:
            raise ValueError("MedViLL needs `input_ids` (the text stream starting with [SEP]); use MedViLLProcessor.")
        mask_type = attention_mask_type or self.config.attention_mask_type
        past_length = cache.get_seq_length() if cache is not None else 0
        if use_cache and cache is None:
            cache = MedViLLDecodingCache()

        batch_size, new_length = input_ids.shape
        if past_length == 0:
            if image_features is None and pixel_values is None:
                raise ValueError("MedViLL needs `pixel_values` (or `image_features`) for the first forward pass.")
            check_image_batch(image_features if image_features is not None else pixel_values, batch_size)
            if image_features is None:
                image_features = self.get_image_features(pixel_values)
            if image_token_indices is None:
                image_token_indices = torch.arange(image_features.shape[1], device=image_features.device)
            image_features = image_features[:, image_token_indices]
            prefix_length = 1 + image_features.shape[1]
        else:
            prefix_length = 1 + self.config.num_image_tokens

        text_length = past_length - prefix_length + new_length if past_length else new_length
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, text_length, dtype=torch.long, device=input_ids.device)
        if attention_mask.shape != (batch_size, text_length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the text stream so far has shape "
                f"({batch_size}, {text_length}); pass the mask of the whole text stream (past and new tokens)."
            )
        if past_length == 0:
            self._check_text_stream(input_ids, attention_mask)

        layout_positions, token_type_ids = text_stream_layout(self.config, attention_mask)
        if position_ids is None:
            position_ids = layout_positions[:, -new_length:]
        text_embeddings = self.embeddings.embed_tokens(input_ids, position_ids, token_type_ids[:, -new_length:])
        if past_length == 0:
            prefix = self.embeddings.embed_prefix(image_features, image_token_indices)
            hidden_states = torch.cat([prefix, text_embeddings], dim=1)
        else:
            hidden_states = text_embeddings

        if mask_type == "bi_s2s" and use_s2s is None:
            use_s2s = torch.rand(batch_size, device=input_ids.device) < self.config.s2s_probability
        allowed = joint_attention_mask(
            mask_type,
            prefix_length,
            attention_mask,
            hidden_states.shape[1],
            use_s2s=use_s2s,
            attend_padding=self.config.prefix_attends_text_padding,
        )
        additive_mask = torch.zeros(allowed.shape, dtype=hidden_states.dtype, device=allowed.device)
        additive_mask = additive_mask.masked_fill(~allowed, torch.finfo(hidden_states.dtype).min)[:, None]

        kv_cache = cache if use_cache or past_length else None
        sequence_output, all_hidden, all_attentions = self.encoder(
            hidden_states,
            additive_mask,
            kv_cache=kv_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return MedViLLModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if past_length == 0 else None,
            **{KV_CACHE: kv_cache},
            hidden_states=all_hidden,
            attentions=all_attentions,
            prefix_length=prefix_length,
            image_token_indices=image_token_indices,
        )

    def _check_text_stream(self, input_ids, attention_mask):
        first = attention_mask.int().argmax(-1, keepdim=True)
        if not bool((input_ids.gather(1, first) == self.config.sep_token_id).all()):
            raise ValueError(
                "MedViLL text inputs must start with the [SEP] that closes the image block "
                f"(token id {self.config.sep_token_id}); got {input_ids.gather(1, first).flatten().tolist()}. "
                "Build inputs with MedViLLProcessor, which writes `[SEP] text [SEP]`."
            )


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------


@dataclass
class MedViLLForPreTrainingOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_token_indices: torch.LongTensor | None = None


class MedViLLForPreTraining(MedViLLPreTrainedModel):
    """Masked language modelling on the report + image-report matching on the pooled [CLS].

    Under gradient accumulation and DDP (Trainer passes `num_items_in_batch`, the masked tokens of the whole
    accumulated batch) the MLM loss is the mean over all those tokens, as in one full batch; the ITM mean of a
    micro-batch is weighted by the micro-batch's share of those tokens, so it keeps its full-batch scale.
    """

    _tied_weights_keys = {"mlm_head.decoder.weight": "medvill.embeddings.word_embeddings.weight"}
    new_head_modules = ("mlm_head", "itm_head")
    accepts_loss_kwargs = True

    def __init__(self, config: MedViLLConfig):
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.mlm_head = MedViLLPredictionHead(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        labels=None,
        itm_labels=None,
        image_features=None,
        image_token_indices=None,
        use_s2s=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        num_items_in_batch=None,
        **kwargs,
    ) -> MedViLLForPreTrainingOutput:
        r"""
        labels: (B, L) MLM targets on the text stream, -100 where no prediction is asked.
        itm_labels: (B,) 1 when the report belongs to the image, 0 for a negative.
        image_token_indices: grid cells to keep; in training a fresh sorted sample of
            `config.num_pretraining_image_tokens` cells is drawn every forward (as the original), in
            evaluation every cell is used unless indices are given.
        num_items_in_batch: MLM targets in the whole (accumulated, all-process) batch, given by Trainer (see the
            class docstring).
        """
        check_label_batch(labels, input_ids)
        check_label_batch(itm_labels, input_ids, "itm_labels")
        if image_token_indices is None and self.training:
            device = pixel_values.device if pixel_values is not None else image_features.device
            image_token_indices = torch.randperm(self.config.num_image_tokens, device=device)
            image_token_indices = image_token_indices[: self.config.num_pretraining_image_tokens].sort().values
        outputs = self.medvill(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            image_features=image_features,
            image_token_indices=image_token_indices,
            use_s2s=use_s2s,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        text_hidden = outputs.last_hidden_state[:, outputs.prefix_length :]
        logits = self.mlm_head(text_hidden)
        itm_logits = self.itm_head(self._matching_features(outputs))
        mlm_loss = itm_loss = loss = None
        share = 1.0
        if labels is not None:
            mlm_loss = token_mean_cross_entropy(logits, labels, num_items_in_batch)
            loss = mlm_loss
            if num_items_in_batch is not None:
                share = (labels != IGNORE_INDEX).sum() / num_items_in_batch
        if itm_labels is not None:
            itm_loss = F.cross_entropy(itm_logits.float(), itm_labels)
            loss = share * itm_loss if loss is None else loss + share * itm_loss
        return MedViLLForPreTrainingOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            itm_loss=itm_loss,
            logits=logits,
            itm_logits=itm_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_token_indices=outputs.image_token_indices,
        )

    def _matching_features(self, outputs):
        """Pooled [CLS]; with the non-crossing mask [CLS] never sees text, so use h_CLS * h_SEP instead."""
        if self.config.attention_mask_type != "non_crossing":
            return outputs.pooler_output
        return outputs.last_hidden_state[:, 0] * outputs.last_hidden_state[:, outputs.prefix_length]


def _visual_sep_hidden(outputs, attention_mask):
    hidden = outputs.last_hidden_state
    if attention_mask is None:
        return hidden[:, outputs.prefix_length]
    first = attention_mask.int().argmax(-1) + outputs.prefix_length
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


@dataclass
class MedViLLClassifierOutput(ModelOutput):
    """Answer (VQA) or diagnosis (classification) scores. probabilities: sigmoid of the logits, since both
    heads train with per-label BCE (VQA on soft scores)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MedViLLForVQA(MedViLLPreTrainedModel):
    """Closed-set answer classifier over h_CLS * h_SEP (the code) or h_CLS (the paper), bidirectional mask."""

    new_head_modules = ("answer_classifier",)

    def __init__(self, config: MedViLLConfig):
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.answer_classifier = nn.Sequential(
            nn.Linear(config.hidden_size, 2 * config.hidden_size),
            nn.ReLU(),
            nn.Linear(2 * config.hidden_size, config.num_labels),
        )
        self.post_init()

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        labels=None,
        image_features=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MedViLLClassifierOutput:
        r"""
        labels: (B, num_answers) soft scores in [0, 1] (BCE as the original), or (B,) answer ids.
        """
        check_label_batch(labels, input_ids)
        outputs = self._encode_pair(
            input_ids, pixel_values, attention_mask, image_features, output_attentions, output_hidden_states
        )
        features = outputs.last_hidden_state[:, 0]
        if self.config.vqa_pooling == "cls_sep_product":
            features = features * _visual_sep_hidden(outputs, attention_mask)
        logits = self.answer_classifier(features)
        loss = None
        if labels is not None:
            if labels.dim() == 1:
                labels = F.one_hot(labels, self.config.num_labels)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return MedViLLClassifierOutput(
            loss=loss,
            logits=logits,
            probabilities=torch.sigmoid(logits),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


@dataclass
class MedViLLForReportGenerationOutput(CausalLMOutputWithPast):
    """logits: (B, L, V) per text-stream position in training; (B, 1, V) next-token logits when decoding. The KV
    cache is the inherited field (see `MedViLLModelOutput`)."""


class MedViLLForReportGeneration(MedViLLPreTrainedModel, GenerationMixin):
    """Sequence-to-sequence masked LM under the s2s mask; decodes by appending [MASK] and predicting it.

    Each decoding step feeds the new token(s) followed by a [MASK]; the [MASK]'s prediction is the next
    token and its keys/values are dropped from the cache afterwards, so the cached result equals
    re-encoding `[CLS] v [SEP] w_1..w_t [MASK]` from scratch (the paper's procedure).
    """

    _tied_weights_keys = {"mlm_head.decoder.weight": "medvill.embeddings.word_embeddings.weight"}
    # The pre-training MLM head, under the same name so a pre-training checkpoint brings it (finetune.py renames
    # `mlm.` to `cls.` for the same reason).
    new_head_modules = ("mlm_head",)
    accepts_loss_kwargs = True

    def __init__(self, config: MedViLLConfig):
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.mlm_head = MedViLLPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        labels=None,
        image_features=None,
        cache=None,
        past_key_values=None,
        use_cache=None,
        next_token_prediction=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        num_items_in_batch=None,
        **kwargs,
    ) -> MedViLLForReportGenerationOutput:
        r"""
        labels: (B, L) targets at the [MASK]ed text positions, -100 elsewhere (MedViLL fine-tuning).
        next_token_prediction: append a [MASK] and return only its logits (decoding; set by `generate`).
        num_items_in_batch: number of target tokens in the whole (accumulated, all-process) batch, given by
            Trainer so the loss is a true token mean under gradient accumulation and DDP.
        cache / past_key_values: the KV cache (one argument under its transformers >= 5.24 and older names).
        """
        check_label_batch(labels, input_ids)
        if next_token_prediction:
            return self._predict_next_token(
                input_ids, pixel_values, attention_mask, image_features, resolve_kv_cache(cache, past_key_values),
                use_cache,
                output_attentions, output_hidden_states,
            )
        outputs = self.medvill(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            image_features=image_features,
            attention_mask_type="s2s",
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.mlm_head(outputs.last_hidden_state[:, outputs.prefix_length :])
        loss = token_mean_cross_entropy(logits, labels, num_items_in_batch) if labels is not None else None
        return MedViLLForReportGenerationOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _predict_next_token(
        self, input_ids, pixel_values, attention_mask, image_features, cache, use_cache,
        output_attentions, output_hidden_states, position_ids=None,
    ):
        batch_size = input_ids.shape[0]
        mask_column = input_ids.new_full((batch_size, 1), self.config.mask_token_id)
        input_ids = torch.cat([input_ids, mask_column], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, torch.ones_like(mask_column)], dim=1)
        outputs = self.medvill(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            image_features=image_features,
            attention_mask_type="s2s",
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        cache = outputs.get(KV_CACHE)
        if cache is not None:
            cache.crop(-1)
        return MedViLLForReportGenerationOutput(
            logits=self.mlm_head(outputs.last_hidden_state[:, -1:]),
            **{KV_CACHE: cache},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        model_inputs["next_token_prediction"] = True
        return model_inputs

    @torch.no_grad()
    def generate(self, *args, pixel_values=None, image_features=None, **kwargs):
        """`GenerationMixin.generate`, with two changes that keep its results:
        - the ResNet runs once per image up front: otherwise `generate` copies `pixel_values` for every beam (or
          returned sequence) before the ResNet sees them, and re-runs the ResNet at every step when
          `use_cache=False`;
        - unless a cache (or `cache_implementation`) is asked for, it decodes with a `MedViLLDecodingCache`, which
          appends in place instead of copying the whole cache at every step.
        A prompt (`input_ids`) is a text stream without its end: `[SEP] w_1..w_k`, as the processor writes it with
        `generation_prompt=True`; a prompt holding the closing `[SEP]` raises ValueError.
        """
        self._check_prompt(args[0] if args else kwargs.get("input_ids"), kwargs.get("attention_mask"))
        if pixel_values is not None and image_features is None:
            image_features = self.medvill.get_image_features(pixel_values)
        generation_config = kwargs.get("generation_config") or self.generation_config
        use_cache = kwargs.get("use_cache", generation_config.use_cache)
        cache_implementation = kwargs.get("cache_implementation", generation_config.cache_implementation)
        cache = resolve_kv_cache(kwargs.pop("cache", None), kwargs.pop("past_key_values", None))
        growable = cache is None or isinstance(cache, (DynamicCache, MedViLLDecodingCache))
        if cache_implementation not in (None, "dynamic") or not growable:
            raise ValueError(
                "MedViLL decoding drops each step's [MASK] from the cache, which needs a cache that grows and "
                f"crops; got cache_implementation={cache_implementation!r}, cache={type(cache).__name__}. "
                "Leave both unset (generate() then uses MedViLLDecodingCache), or pass a DynamicCache."
            )
        if use_cache is not False and cache is None and cache_implementation is None:
            cache = MedViLLDecodingCache()
        if cache is not None:
            kwargs[KV_CACHE] = cache
        return super().generate(*args, image_features=image_features, **kwargs)

    def _check_prompt(self, input_ids, attention_mask):
        """Refuse a prompt that already ends the text: generation would continue after its end-of-text [SEP]."""
        if input_ids is None:
            return
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        first = attention_mask.int().argmax(-1, keepdim=True)
        after_start = torch.arange(input_ids.shape[1], device=input_ids.device)[None] > first
        ended = ((input_ids == self.config.sep_token_id) & after_start & attention_mask.bool()).any(-1)
        if ended.any():
            raise ValueError(
                f"prompt row(s) {ended.nonzero().flatten().tolist()} already hold the end-of-text [SEP] "
                f"(`[SEP] text [SEP]`), so generation would continue after the end of the text. Build prompts with "
                "`processor(text=..., generation_prompt=True, padding_side='left')`, which leaves the text open, or "
                "drop the final [SEP]."
            )

    @torch.no_grad()
    def generate_without_cache(self, pixel_values, input_ids=None, attention_mask=None, max_new_tokens=20):
        """Reference greedy decoder: re-encodes `[CLS] v [SEP] w_1..w_t [MASK]` at every step, as the paper
        describes. `generate()` must give the same tokens with the cache; kept as the ground truth for tests
        and benchmarks."""
        batch_size = pixel_values.shape[0]
        if input_ids is None:
            input_ids = torch.full((batch_size, 1), self.config.sep_token_id, device=pixel_values.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        image_features = self.medvill.get_image_features(pixel_values)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            logits = self(
                input_ids=input_ids,
                attention_mask=attention_mask,
                image_features=image_features,
                next_token_prediction=True,
                use_cache=False,
            ).logits[:, -1]
            next_tokens = logits.argmax(-1).masked_fill(finished, self.config.pad_token_id)
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(next_tokens[:, None])], dim=1)
            finished |= next_tokens == self.config.sep_token_id
            if finished.all():
                break
        return input_ids

    @torch.no_grad()
    def generate_teacher_forced(self, pixel_values, reference_ids, max_new_tokens=None):
        """The released repository's decoding (`generation_decode.py`), only to reproduce its numbers; use
        `generate()` for reports. Predictions are not fed back: step k feeds the reference token g_{k-1}
        (then [PAD] once the reference ends, attended like a word) and a [MASK], at the fixed text positions 0
        and 1 (its decoder ignores the position ids it is given). `reference_ids`: (B, R) report tokens
        without the leading [SEP]. Returns the predicted tokens (B, steps) and their logits (B, steps, V)."""
        batch_size = pixel_values.shape[0]
        steps = max_new_tokens or reference_ids.shape[1]
        reference_ids = F.pad(reference_ids, (0, max(0, steps - reference_ids.shape[1])), value=self.config.pad_token_id)
        start = torch.full((batch_size, 1), self.config.sep_token_id, device=pixel_values.device)
        cache = MedViLLDecodingCache()
        step = self(input_ids=start, pixel_values=pixel_values, cache=cache, use_cache=True,
                    next_token_prediction=True)
        logits = [step.logits[:, -1]]
        attention_mask = torch.ones_like(start)
        fixed_positions = torch.tensor([[0, 1]], device=start.device).expand(batch_size, 2)
        for index in range(1, steps):
            fed = reference_ids[:, index - 1 : index]
            attention_mask = torch.cat([attention_mask, torch.ones_like(fed)], dim=1)
            step = self._predict_next_token(fed, None, attention_mask, None, cache, True, None, None,
                                            position_ids=fixed_positions)
            logits.append(step.logits[:, -1])
        logits = torch.stack(logits, dim=1)
        return logits.argmax(-1), logits


@dataclass
class MedViLLForRetrievalOutput(ModelOutput):
    """scores: matching probability softmax(logits)[:, 1], used for ranking."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MedViLLForRetrieval(MedViLLPreTrainedModel):
    """Image-report matching head (the pre-training ITM head, fine-tuned) used to rank candidates."""

    new_head_modules = ("itm_head",)

    def __init__(self, config: MedViLLConfig):
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        labels=None,
        image_features=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MedViLLForRetrievalOutput:
        r"""
        labels: (B,) 1 for a matching (image, report) pair, 0 otherwise.
        """
        check_label_batch(labels, input_ids)
        outputs = self._encode_pair(
            input_ids, pixel_values, attention_mask, image_features, output_attentions, output_hidden_states
        )
        logits = self.itm_head(outputs.pooler_output)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return MedViLLForRetrievalOutput(
            loss=loss,
            logits=logits,
            scores=logits.float().softmax(-1)[:, 1],
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @torch.no_grad()
    def rank_texts(self, pixel_values, input_ids, attention_mask=None, batch_size=64):
        """Scores of one image (1, 3, H, W) against K candidate reports; returns (scores (K,), order (K,)),
        order = candidate indices from best to worst. The ResNet runs once for all candidates."""
        if pixel_values.shape[0] != 1:
            raise ValueError(f"rank_texts scores one image at a time; got a batch of {pixel_values.shape[0]}.")
        features = self.medvill.get_image_features(pixel_values)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        scores = torch.cat([
            self(
                input_ids=input_ids[start : start + batch_size],
                attention_mask=attention_mask[start : start + batch_size],
                image_features=features.expand(len(input_ids[start : start + batch_size]), -1, -1),
            ).scores
            for start in range(0, len(input_ids), batch_size)
        ])
        return scores, scores.argsort(descending=True)

    @torch.no_grad()
    def rank_images(self, pixel_values, input_ids, attention_mask=None, batch_size=64):
        """Scores of one report (1, L) against K candidate images; returns (scores (K,), order (K,))."""
        if input_ids.shape[0] != 1:
            raise ValueError(f"rank_images scores one report at a time; got a batch of {input_ids.shape[0]}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        scores = torch.cat([
            self(
                input_ids=input_ids.expand(len(chunk), -1),
                attention_mask=attention_mask.expand(len(chunk), -1),
                pixel_values=chunk,
            ).scores
            for chunk in pixel_values.split(batch_size)
        ])
        return scores, scores.argsort(descending=True)


class MedViLLForImageTextClassification(MedViLLPreTrainedModel):
    """Multi-label diagnosis (the 14 CheXpert observations) from the pooled [CLS], BCE with optional pos_weight."""

    new_head_modules = ("classifier",)

    def __init__(self, config: MedViLLConfig):
        super().__init__(config)
        self.medvill = MedViLLModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        labels=None,
        image_features=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> MedViLLClassifierOutput:
        r"""
        labels: (B, num_labels) multi-hot targets.
        """
        check_label_batch(labels, input_ids)
        outputs = self._encode_pair(
            input_ids, pixel_values, attention_mask, image_features, output_attentions, output_hidden_states
        )
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            pos_weight = self.config.classification_pos_weight
            if pos_weight is not None:
                pos_weight = torch.tensor(pos_weight, dtype=torch.float32, device=logits.device)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=pos_weight)
        return MedViLLClassifierOutput(
            loss=loss,
            logits=logits,
            probabilities=torch.sigmoid(logits),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "MedViLLForImageTextClassification",
    "MedViLLForPreTraining",
    "MedViLLForReportGeneration",
    "MedViLLForRetrieval",
    "MedViLLForVQA",
    "MedViLLModel",
    "MedViLLPreTrainedModel",
    "joint_attention_mask",
    "text_stream_layout",
]
