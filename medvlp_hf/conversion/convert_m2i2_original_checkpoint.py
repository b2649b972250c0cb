"""Convert the authors' M2I2 checkpoints (github.com/pengfeiliHEU/M2I2, commit 807326d) to medvlp-hf.

    medvlp convert m2i2 --checkpoint PATH --kind KIND --out DIR [--head vqa] [--reference RECORD_DIR]
    (or, from a checkout: python conversion/convert_m2i2_original_checkpoint.py ...)

PATH is a file the original code wrote: `torch.save({'model': state_dict, 'optimizer': ..., 'lr_scheduler': ...,
'config': ..., 'epoch': ...})` (read with `torch.load(weights_only=True)`: the optimizer and scheduler states and the
YAML settings in `config` are plain tensors, numbers, strings and lists), or the state dict alone (a pickle or
safetensors):
- pretraining: `pretrain_med.py` -> `med_pretrain_29.pth` of `models/model_pretrain.py::M2I2` (MAE's ViT with its
  decoder, ALBEF's BERT with the MLM head, ITC projections, ITM head, momentum copies, ITC queues and temperature);
  the released checkpoint (Baidu Pan, reference/originals.md §3.8);
- vqa: `train_rad.py` / `train_slake.py` / `train_pathvqa.py` -> `*_rad_XX.pth` of `models/model_vqa.py::M2I2`
  (ALBEF's ViT, the question encoder, the answer decoder, and their momentum copies when trained with `distill`).

Every original key is looked up in an explicit table (`original_key_table`): renamed (`visual_encoder.` ->
`vision_model.` with the ViT's names, the MAE decoder -> `mim_decoder.`, `text_encoder.bert.` -> `text_encoder.`,
`text_encoder.cls.` -> `mlm_head.`, `temp` -> `temperature`, the queues -> `feature_queue.`, the same for `_m`),
recognised as a second name of a shared tensor (every LM head's decoder is the word embeddings, its bias the head's
bias: checked equal, kept once), an optional `position_ids` buffer (checked to count 0..n-1, dropped), or unused (the
momentum ViT's MAE decoder, which the original updates but no forward reads: dropped); anything else, or anything
absent, is an error naming the key. A converted pre-training model keeps the momentum encoders, the queues, their
pointer and the temperature (the state the authors' own resumption loads); a VQA checkpoint keeps its momentum copies
(`distill: True`), and the model distils with them.

`--head vqa` with a pre-training checkpoint builds the VQA model the authors' fine-tuning starts from (`train_rad.py`:
the answer decoder from the fusion layers and the MLM head, the position table interpolated bicubically to
`--image_size`, 384 by default; `--vqa_distillation` keeps the momentum copies, as `configs/RAD.yaml` does). The config
fields that reproduce the released numbers are set: answer ranking adds the first token's log-probability twice
(`vqa_ranking_double_counts_first_token`), ranking keeps the checkpoint's `k_test` (128).

Parity: `--reference DIR` is a record the parity harness (`conversion/parity/m2i2/`, which runs the authors' code)
made on the same checkpoint file; the converted model must reproduce it (`torch.testing.assert_close(rtol=1e-5,
atol=1e-4)`, identical argmax and chosen answers) or nothing is saved. Without it the folder's record holds the
converted model's own outputs, and the card says parity with the original is not verified for this checkpoint.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import conversion_utils as utils
from . import parity

SCRIPT = "medvlp_hf/conversion/convert_m2i2_original_checkpoint.py"
ORIGINAL_REPOSITORY = "pengfeiliHEU/M2I2"
ORIGINAL_COMMIT = "807326d"
# configs/config_bert.json: BERT-base with fusion from layer 6 (sizes are read off the weights)
BERT_BASE = {"num_attention_heads": 12, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": 0}
# Fields of config_bert.json that the weights also tell (checked to agree when both exist).
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
                "type_vocab_size", "fusion_layer")
ATTENTION_HEADS = {"vision": (768, 12), "mim_decoder": (512, 16)}  # mae_vit_base_patch16 / ViT-B/16: width -> heads
VIT_LAYER_NORM_EPS = 1e-6  # partial(nn.LayerNorm, eps=1e-6) in mae.py and model_vqa.py
# The YAML settings a checkpoint's `config` entry holds (configs/Pretrain.yaml, RAD.yaml) -> M2I2Config fields.
TRAINING_SETTINGS = {"pretraining": {"momentum": "momentum", "alpha": "alpha", "mlm_probability": "mlm_probability"},
                     "vqa": {"alpha": "alpha", "k_test": "vqa_ranking_top_k"}}
DEFAULT_DATASETS = {"pretraining": "imageclef_caption_2022", "vqa": "vqa_rad"}
RELEASED_VQA_IMAGE_SIZE = 384  # configs/RAD.yaml, Slake.yaml, PathVQA.yaml: image_res
PARITY_VERIFIED_BY_TESTS = (
    "what medvlp-hf's tests do verify for this converter: pre-training (ITC, ITM, MLM and MIM with injected image "
    "masks, MLM masks and hard negatives, after the momentum update), VQA (training loss with distillation, answer "
    "ranking with k as coded and k beyond the candidates) and a pre-training checkpoint initialising a VQA model at a "
    "larger image size, against the authors' code on tiny random checkpoints (every output in full) and at the "
    "released geometry (ViT-B/16 at 256 and 384 px with MAE's 8-block decoder, 768-wide BERT layers, 2 of them, the "
    "30,522-token vocabulary; large outputs through argmax, top-5, logsumexp and every 97th entry), within rtol 1e-5 / "
    "atol 1e-4 with identical argmax and chosen answers")


@dataclass(frozen=True)
class HeadSpec:
    auto_class: str  # the Auto class that maps an M2I2 config to this head
    position_embedding_type: str  # MAE's fixed sin-cos table in pre-training, ALBEF's learnt one for VQA
    quirks: dict = field(default_factory=dict)  # config fields reproducing the released numbers


HEAD_SPECS = {
    "pretraining": HeadSpec("AutoModelForPreTraining", "sincos"),
    "vqa": HeadSpec("AutoModelForVisualQuestionAnswering", "learned", {"vqa_ranking_double_counts_first_token": True}),
}
KINDS = tuple(HEAD_SPECS)
# --head for each kind: a checkpoint converts to its own head, and pre-training also initialises a VQA model.
HEADS = {"pretraining": ("pretraining", "vqa"), "vqa": ("vqa",)}


@dataclass(frozen=True)
class Geometry:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    fusion_layer: int  # the first text layer with cross-attention
    max_position_embeddings: int
    type_vocab_size: int
    vision_hidden_size: int
    vision_intermediate_size: int
    vision_num_hidden_layers: int
    patch_size: int
    grid_size: int  # patches per side of the position table
    projection_dim: int | None = None  # pre-training only: ITC embeddings
    queue_size: int | None = None  # pre-training only
    mim_hidden_size: int | None = None  # pre-training only: MAE's decoder
    mim_intermediate_size: int | None = None
    mim_num_hidden_layers: int | None = None
    distillation: bool = False  # vqa only: momentum copies saved (`distill: True`)

    @property
    def image_size(self):
        return self.grid_size * self.patch_size


# --------------------------------------------------------------------------------------------------
# The key table
# --------------------------------------------------------------------------------------------------


def original_key_table(kind: str, geometry: Geometry) -> list:
    """Every key of the original `kind` checkpoint (`KeyEntry`: shape, medvlp-hf name, role)."""
    g = geometry
    if kind == "pretraining":
        return [*_pretraining_entries("", g), *_pretraining_entries("_m", g),
                utils.KeyEntry("temp", "temperature", ()),
                *[utils.KeyEntry(name, f"feature_queue.{name}", (g.projection_dim, g.queue_size), module="buffer")
                  for name in ("image_queue", "text_queue")],
                utils.KeyEntry("queue_ptr", "feature_queue.queue_ptr", (1,), dtype=torch.int64, module="buffer")]
    copies = ("", "_m") if g.distillation else ("",)
    entries = []
    for m in copies:
        fusion_layers = range(g.fusion_layer, g.num_hidden_layers)
        entries += [*_vision_entries(f"visual_encoder{m}", f"vision_model{m}", g),
                    *_text_entries(f"text_encoder{m}", f"text_encoder{m}", g, range(g.num_hidden_layers),
                                   fusion_layers),
                    *_text_entries(f"text_decoder{m}.bert", f"text_decoder{m}.bert", g, range(len(fusion_layers)),
                                   range(len(fusion_layers))),
                    *_lm_head_entries(f"text_decoder{m}.cls", f"text_decoder{m}.cls", f"text_decoder{m}.bert", g)]
    return entries


def _pretraining_entries(m, g):
    """One copy (online `m=''` or momentum `m='_m'`) of the pre-training encoders and heads."""
    entries = [*_vision_entries(f"visual_encoder{m}", f"vision_model{m}", g),
               *_mim_decoder_entries(f"visual_encoder{m}", "mim_decoder", g, used=not m),
               *_text_entries(f"text_encoder{m}.bert", f"text_encoder{m}", g, range(g.num_hidden_layers),
                              range(g.fusion_layer, g.num_hidden_layers)),
               *_lm_head_entries(f"text_encoder{m}.cls", f"mlm_head{m}", f"text_encoder{m}.bert", g),
               *utils.linear_entries(f"vision_proj{m}", f"vision_proj{m}", g.projection_dim, g.vision_hidden_size),
               *utils.linear_entries(f"text_proj{m}", f"text_proj{m}", g.projection_dim, g.hidden_size)]
    if not m:
        entries += utils.linear_entries("itm_head", "itm_head", 2, g.hidden_size)
    return entries


def _vision_entries(original, target, g):
    """MAE's encoder (`mae.py`) or ALBEF's ViT (`vit.py`), timm blocks -> `M2I2VisionModel` (BLIP's ViT names)."""
    return utils.timm_vit_entries(original, target, g.vision_hidden_size, g.vision_intermediate_size,
                                  g.vision_num_hidden_layers, g.grid_size, g.patch_size)


def _mim_decoder_entries(original, target, g, used):
    """MAE's decoder (`decoder_*`, `mask_token`) -> `M2I2MIMDecoder`; the momentum ViT's copy is `unused`: the original
    updates it with the encoder but no forward reads it."""
    d, i, pixels = g.mim_hidden_size, g.mim_intermediate_size, 3 * g.patch_size**2
    entries = [utils.KeyEntry(f"{original}.mask_token", f"{target}.mask_token", (1, 1, d), module="embedding"),
               utils.KeyEntry(f"{original}.decoder_pos_embed", f"{target}.position_embedding",
                              (1, g.grid_size**2 + 1, d), module="embedding"),
               *utils.linear_entries(f"{original}.decoder_embed", f"{target}.embed", d, g.vision_hidden_size),
               *utils.timm_block_entries(f"{original}.decoder_blocks", f"{target}.encoder.layers", d, i,
                                         g.mim_num_hidden_layers),
               *utils.layer_norm_entries(f"{original}.decoder_norm", f"{target}.layer_norm", d),
               *utils.linear_entries(f"{original}.decoder_pred", f"{target}.prediction", pixels, d)]
    if used:
        return entries
    return [utils.KeyEntry(e.original, None, e.shape, "unused", module=e.module) for e in entries]


def _text_entries(original, target, g, layers, cross_attention_layers):
    """ALBEF's `xbert.BertModel` (token types, cross-attention in the fusion layers) -> `M2I2TextModel`: same names."""
    h, i = g.hidden_size, g.intermediate_size
    tables = {"word_embeddings": g.vocab_size, "position_embeddings": g.max_position_embeddings,
              "token_type_embeddings": g.type_vocab_size}
    entries = [utils.KeyEntry(f"{original}.embeddings.position_ids", None, (1, g.max_position_embeddings), "optional",
                              dtype=torch.int64, module="buffer"),
               *[utils.KeyEntry(f"{original}.embeddings.{name}.weight", f"{target}.embeddings.{name}.weight", (rows, h),
                                module="embedding") for name, rows in tables.items()],
               *utils.layer_norm_entries(f"{original}.embeddings.LayerNorm", f"{target}.embeddings.LayerNorm", h)]
    for n in layers:
        attentions = (("attention", h), ("crossattention", g.vision_hidden_size))
        for attention, key_width in attentions[: 2 if n in cross_attention_layers else 1]:
            prefix = f"encoder.layer.{n}.{attention}"
            entries += utils.linear_entries(f"{original}.{prefix}.self.query", f"{target}.{prefix}.self.query", h, h)
            for name in ("key", "value"):
                entries += utils.linear_entries(f"{original}.{prefix}.self.{name}", f"{target}.{prefix}.self.{name}",
                                                h, key_width)
            entries += [*utils.linear_entries(f"{original}.{prefix}.output.dense", f"{target}.{prefix}.output.dense",
                                              h, h),
                        *utils.layer_norm_entries(f"{original}.{prefix}.output.LayerNorm",
                                                  f"{target}.{prefix}.output.LayerNorm", h)]
        layer = f"encoder.layer.{n}"
        entries += [*utils.linear_entries(f"{original}.{layer}.intermediate.dense",
                                          f"{target}.{layer}.intermediate.dense", i, h),
                    *utils.linear_entries(f"{original}.{layer}.output.dense", f"{target}.{layer}.output.dense", h, i),
                    *utils.layer_norm_entries(f"{original}.{layer}.output.LayerNorm",
                                              f"{target}.{layer}.output.LayerNorm", h)]
    return entries


def _lm_head_entries(original, target, bert, g):
    """BERT's LM head; its decoder is the word embeddings and its decoder bias the head's bias (shared, kept once)."""
    h = g.hidden_size
    return [utils.KeyEntry(f"{original}.predictions.bias", f"{target}.predictions.bias", (g.vocab_size,)),
            *utils.linear_entries(f"{original}.predictions.transform.dense", f"{target}.predictions.transform.dense",
                                  h, h),
            *utils.layer_norm_entries(f"{original}.predictions.transform.LayerNorm",
                                      f"{target}.predictions.transform.LayerNorm", h),
            utils.KeyEntry(f"{original}.predictions.decoder.weight", None, (g.vocab_size, h), "shared",
                           f"{bert}.embeddings.word_embeddings.weight", module="embedding"),
            utils.KeyEntry(f"{original}.predictions.decoder.bias", None, (g.vocab_size,), "shared",
                           f"{original}.predictions.bias")]


def seeded_checkpoint(kind: str, geometry: Geometry, seed: int, batch_size: int = 4) -> dict:
    """An original-layout `kind` checkpoint with seeded random values (`conversion_utils.seeded_state_dict`), as the
    parity fixtures use; keys shared by two kinds get the same values for the same seed. The word tables (which every LM
    head also uses as its decoder) are scaled to N(0, 1 / hidden_size), so that vocabulary logits have about unit scale
    at every width, as a trained BERT's have (at N(0, 1) a 768-wide head's logits span +-120, and the first-token
    probabilities the original's answer ranking takes the logarithm of underflow to 0 in float32). Pre-training state
    that is not a weight starts as the original's constructor and training leave it: the momentum ViT's fixed position
    table equal to the ViT's (both are MAE's never-trained table), a temperature near 0.07, queues of unit-norm columns,
    and a queue pointer at a multiple of `batch_size` (the original asserts that the queue size is one) below the queue
    size."""
    state = utils.seeded_state_dict(original_key_table(kind, geometry), seed)
    for key in state:
        if key.endswith(("word_embeddings.weight", "predictions.decoder.weight")):
            state[key] = state[key] / geometry.hidden_size**0.5
    if kind == "pretraining":
        state["visual_encoder_m.pos_embed"] = state["visual_encoder.pos_embed"].clone()
        generator = torch.Generator().manual_seed(seed)
        state["temp"] = torch.tensor(0.07) * (1 + 0.1 * torch.randn((), generator=generator))
        for name in ("image_queue", "text_queue"):
            state[name] = torch.nn.functional.normalize(torch.randn(state[name].shape, generator=generator), dim=0)
        state["queue_ptr"] = batch_size * torch.randint(0, geometry.queue_size // batch_size, (1,), generator=generator)
    return state


# --------------------------------------------------------------------------------------------------
# Reading a checkpoint's geometry and kind
# --------------------------------------------------------------------------------------------------

# Keys only one kind has.
KIND_MARKERS = {
    "pretraining": ("image_queue", "itm_head.weight", "text_encoder.bert.embeddings.word_embeddings.weight"),
    "vqa": ("text_decoder.cls.predictions.bias", "text_encoder.embeddings.word_embeddings.weight"),
}


def likely_kind(state_dict):
    """The kind the keys look like (`pretraining`, `vqa`) or None."""
    return next((kind for kind, markers in KIND_MARKERS.items() if any(key in state_dict for key in markers)), None)


def kind_hint(kind, state_dict):
    guess = likely_kind(state_dict)
    if guess and guess != kind:
        extra = " (or --kind pretraining --head vqa to initialise a VQA model from it)" * (guess == "pretraining")
        return f" Its keys look like an M2I2 {guess} checkpoint: pass --kind {guess}{extra}."
    return ""


def infer_geometry(kind: str, state_dict: dict) -> Geometry:
    """Sizes read off the weights, so tiny and base checkpoints convert alike."""
    if kind not in HEAD_SPECS:
        raise ValueError(f"kind {kind!r}: choose one of {KINDS}.")

    def shape(key):
        if key not in state_dict:
            raise utils.CheckpointError(
                f"checkpoint has no key {key!r}, which every M2I2 {kind} checkpoint has.{kind_hint(kind, state_dict)}")
        return tuple(state_dict[key].shape)

    text = "text_encoder.bert" if kind == "pretraining" else "text_encoder"
    vocab_size, hidden_size = shape(f"{text}.embeddings.word_embeddings.weight")
    layers = _indices(state_dict, rf"{re.escape(text)}\.encoder\.layer\.(\d+)\.")
    fusion = _indices(state_dict, rf"{re.escape(text)}\.encoder\.layer\.(\d+)\.crossattention\.")
    if not layers or not fusion or fusion != list(range(fusion[0], len(layers))) or layers != list(range(len(layers))):
        raise utils.CheckpointError(
            f"{text}.encoder.layer.* holds layers {layers}, those with cross-attention {fusion}: M2I2's text encoder "
            f"has text-only layers 0..f-1 and fusion layers f..n-1 (f = fusion_layer).{kind_hint(kind, state_dict)}")
    tokens = shape("visual_encoder.pos_embed")[1] - 1
    grid_size = round(tokens**0.5)
    if grid_size**2 != tokens:
        raise utils.CheckpointError(f"visual_encoder.pos_embed holds {tokens} patch positions, not a square grid.")
    heads = {}
    if kind == "pretraining":
        heads = {"projection_dim": shape("vision_proj.weight")[0], "queue_size": shape("image_queue")[1],
                 "mim_hidden_size": shape("visual_encoder.decoder_embed.weight")[0],
                 "mim_intermediate_size": shape("visual_encoder.decoder_blocks.0.mlp.fc1.weight")[0],
                 "mim_num_hidden_layers": len(_indices(state_dict, r"visual_encoder\.decoder_blocks\.(\d+)\."))}
    else:
        decoder_layers = _indices(state_dict, r"text_decoder\.bert\.encoder\.layer\.(\d+)\.")
        if len(decoder_layers) != len(fusion):
            raise utils.CheckpointError(
                f"the answer decoder has {len(decoder_layers)} layers and the question encoder {len(fusion)} fusion "
                "layers; M2I2's decoder is a copy of the fusion layers (train_rad.py).")
        heads = {"distillation": "visual_encoder_m.cls_token" in state_dict}
    return Geometry(
        vocab_size=vocab_size, hidden_size=hidden_size,
        intermediate_size=shape(f"{text}.encoder.layer.0.intermediate.dense.weight")[0],
        num_hidden_layers=len(layers), fusion_layer=fusion[0],
        max_position_embeddings=shape(f"{text}.embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape(f"{text}.embeddings.token_type_embeddings.weight")[0],
        vision_hidden_size=shape("visual_encoder.cls_token")[-1],
        vision_intermediate_size=shape("visual_encoder.blocks.0.mlp.fc1.weight")[0],
        vision_num_hidden_layers=len(_indices(state_dict, r"visual_encoder\.blocks\.(\d+)\.")),
        patch_size=shape("visual_encoder.patch_embed.proj.weight")[-1], grid_size=grid_size, **heads)


def _indices(state_dict, pattern):
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


def build_config(kind: str, geometry: Geometry, original_config: dict | None = None,
                 training_config: dict | None = None, image_size: int | None = None,
                 vision_num_attention_heads: int | None = None, mim_decoder_num_attention_heads: int | None = None):
    """The M2I2 config (found through AutoConfig) of the `kind` checkpoint's own head: sizes from the weights, the BERT
    fields from the original `configs/config_bert.json` (default BERT-base), the training settings (momentum, alpha,
    MLM probability, k_test) from the checkpoint's own `config` entry when it has one."""
    g = geometry
    bert = dict(BERT_BASE)
    if original_config is not None:
        for name in SHAPE_FIELDS:
            if name in original_config and original_config[name] != getattr(g, name):
                raise utils.CheckpointError(
                    f"config_bert.json says {name}={original_config[name]} but the weights have {getattr(g, name)}.")
        bert.update({name: original_config[name] for name in BERT_BASE if name in original_config})
    elif g.hidden_size != 768:
        raise utils.CheckpointError(
            f"text hidden size {g.hidden_size} is not BERT-base's: pass the original configs/config_bert.json with "
            "--config (the number of attention heads cannot be read off the weights).")
    bert.update({name: getattr(g, name) for name in SHAPE_FIELDS}, encoder_hidden_size=g.vision_hidden_size)
    if image_size is not None and image_size != g.image_size:
        raise utils.CheckpointError(
            f"visual_encoder.pos_embed holds a {g.grid_size}x{g.grid_size} grid of {g.patch_size}-pixel patches "
            f"({g.image_size} px images), but --image_size is {image_size}. Pass --image_size {g.image_size}; to "
            "fine-tune a pre-training checkpoint at another size, convert it with --kind pretraining --head vqa "
            "--image_size N, which interpolates the position table as the authors' train_rad.py does.")
    spec = HEAD_SPECS[kind]
    vision = {"hidden_size": g.vision_hidden_size, "intermediate_size": g.vision_intermediate_size,
              "num_hidden_layers": g.vision_num_hidden_layers,
              "num_attention_heads": _heads("vision", g.vision_hidden_size, vision_num_attention_heads),
              "image_size": g.image_size, "patch_size": g.patch_size, "layer_norm_eps": VIT_LAYER_NORM_EPS,
              "position_embedding_type": spec.position_embedding_type}
    fields = dict(spec.quirks)
    if kind == "pretraining":
        fields.update(projection_dim=g.projection_dim, queue_size=g.queue_size, mim_decoder_config={
            "hidden_size": g.mim_hidden_size, "intermediate_size": g.mim_intermediate_size,
            "num_hidden_layers": g.mim_num_hidden_layers, "layer_norm_eps": VIT_LAYER_NORM_EPS,
            "num_attention_heads": _heads("mim_decoder", g.mim_hidden_size, mim_decoder_num_attention_heads)})
    else:
        fields["vqa_distillation"] = g.distillation
    for setting, name in TRAINING_SETTINGS[kind].items():
        if training_config and setting in training_config:
            fields[name] = training_config[setting]
    return utils.config_for_model("m2i2", vision_config=vision, text_config=bert, **fields)


def _heads(tower, width, given):
    if given is not None:
        return given
    base_width, base_heads = ATTENTION_HEADS[tower]
    if width != base_width:
        raise utils.CheckpointError(
            f"the {tower.replace('_', ' ')} is {width} wide, not {base_width} as released: pass "
            f"--{tower}_num_attention_heads (it cannot be read off the weights).")
    return base_heads


def head_auto_class(head):
    """transformers' Auto class of `head` (importing medvlp_hf registers M2I2 with it)."""
    import transformers

    import medvlp_hf  # noqa: F401

    return getattr(transformers, HEAD_SPECS[head].auto_class)


def check_fixed_position_tables(state_dict):
    """The pre-training ViT and its momentum copy hold MAE's fixed position table, which no step trains: the converted
    model keeps it as a buffer outside the momentum update, so the two copies must agree (up to the rounding of the
    original's momentum update, which also averages them)."""
    online, momentum = state_dict["visual_encoder.pos_embed"], state_dict["visual_encoder_m.pos_embed"]
    difference = float((online.float() - momentum.float()).abs().max())
    if difference > 1e-5:
        raise utils.CheckpointError(
            f"visual_encoder.pos_embed and visual_encoder_m.pos_embed differ by up to {difference:.3g}, but both are "
            "MAE's fixed sin-cos table in an M2I2 pre-training checkpoint; the file was edited or is not an original "
            "one.")


def convert_state_dict(state_dict: dict, kind: str, original_config: dict | None = None, head: str | None = None,
                       image_size: int | None = None, training_config: dict | None = None,
                       vision_num_attention_heads: int | None = None,
                       mim_decoder_num_attention_heads: int | None = None, vqa_distillation: bool = False):
    """Original state dict -> medvlp-hf model (eval mode) of `head` (default: the kind's own). The kind's own head takes
    the checkpoint's fp32 tensors as its parameters (no copy): do not modify `state_dict` afterwards. `image_size`: of
    the checkpoint (checked against its grid), or of the VQA model `head="vqa"` builds from a pre-training checkpoint
    (default 384), which keeps momentum copies for distillation with `vqa_distillation`."""
    if kind not in HEAD_SPECS:
        raise ValueError(f"kind {kind!r}: choose one of {KINDS}.")
    head = head or kind
    if head not in HEADS[kind]:
        raise ValueError(f"an M2I2 {kind} checkpoint converts to the heads {HEADS[kind]}, not {head!r}.")
    if vqa_distillation and (kind, head) != ("pretraining", "vqa"):
        raise ValueError("vqa_distillation chooses whether a VQA model built from a pre-training checkpoint keeps "
                         "momentum copies (--kind pretraining --head vqa); a VQA checkpoint has them or not.")
    geometry = infer_geometry(kind, state_dict)
    table = original_key_table(kind, geometry)
    utils.check_key_table(state_dict, table, f"original M2I2 {kind}", kind_hint(kind, state_dict))
    utils.check_position_ids(state_dict, table)
    if kind == "pretraining":
        check_fixed_position_tables(state_dict)
    config = build_config(kind, geometry, original_config, training_config, image_size if head == kind else None,
                          vision_num_attention_heads, mim_decoder_num_attention_heads)
    model = utils.build_on_meta(head_auto_class(kind), config)
    model.config.architectures = [type(model).__name__]
    model = utils.fill_model(model, utils.renamed_weights(state_dict, table, keep_tied=False),
                             model.all_tied_weights_keys, f" Update original_key_table in {SCRIPT}.")
    if head == kind:
        return model
    return initialise_vqa(model, image_size or RELEASED_VQA_IMAGE_SIZE, vqa_distillation)


def initialise_vqa(pretraining_model, image_size, vqa_distillation):
    """The VQA model `train_rad.py` builds from a pre-training model (`M2I2ForVQA.from_pretraining`: the answer decoder
    from the fusion layers and the MLM head, the position table interpolated bicubically to `image_size` and learnt
    from then on), with the released VQA config."""
    model_class = head_auto_class("vqa")._model_mapping[type(pretraining_model.config)]
    model = model_class.from_pretraining(pretraining_model, vqa_distillation=vqa_distillation, image_size=image_size,
                                         position_embedding_type=HEAD_SPECS["vqa"].position_embedding_type)
    for name, value in HEAD_SPECS["vqa"].quirks.items():
        setattr(model.config, name, value)
    model.config.architectures = [model_class.__name__]
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Parity cases: what a record runs for each head
# --------------------------------------------------------------------------------------------------

PARITY_BATCH = {"pretraining": 4, "vqa": 3}  # pre-training: a divisor of the queue size, as the original asserts
PARITY_TEXT_WORDS = (8, 5, 3, 6)  # words per caption / question (the shorter ones padded)
PARITY_ANSWER_WORDS = (2, 1, 3)
PARITY_CANDIDATE_WORDS = (1, 2, 1, 3, 2)  # candidate answers of the ranking cases, distinct first words
PARITY_RANK_K = 3  # k of the ranking case as coded (k_test); the exhaustive case asks for more than the candidates
PARITY_MLM_PROBABILITY = 0.3  # of each word being a masked-LM target (at least one per caption)
PARITY_FULL_SIZE = 100_000  # outputs with more elements are kept as reductions
WORD = re.compile(r"[a-z][a-z0-9]*")  # vocabulary entries ALBEF's tokenizer gives back unchanged from their text


def reductions(shape):
    """Small outputs in full; large ones (vocabulary logits, similarities to a 65,536-entry queue, the MAE decoder's
    pixels) as argmax + top-5 + logsumexp + every 97th entry of their last dimension."""
    size = 1
    for dimension in shape:
        size *= dimension
    return ["full"] if size <= PARITY_FULL_SIZE else ["argmax", "top5", "logsumexp", "stride97"]


def parity_cases(head, config) -> list:
    """The cases a `head` record runs (inputs named as the head's keyword arguments)."""
    full = {"reduce": ["full"]}
    vision, text = config.vision_config, config.text_config
    batch = PARITY_BATCH[head]
    length = max(PARITY_TEXT_WORDS[:batch]) + 1
    vocabulary = {"reduce": reductions((batch, length, text.vocab_size))}
    images = {name: name for name in ("input_ids", "attention_mask", "pixel_values")}
    if head == "pretraining":
        similarity = {"reduce": reductions((batch, batch + config.queue_size))}
        pixels = {"reduce": reductions((batch, vision.grid_size**2, 3 * vision.patch_size**2))}
        outputs = {name: {"field": name, **full} for name in ("loss", "itc_loss", "itm_loss", "mlm_loss", "mim_loss",
                                                               "itm_logits", "mim_patch_mask")}
        outputs.update(logits={"field": "logits", **vocabulary}, mim_predictions={"field": "mim_predictions", **pixels},
                       logits_per_image={"field": "logits_per_image", **similarity},
                       logits_per_text={"field": "logits_per_text", **similarity})
        drawn = ("labels", "mlm_input_ids", "patch_noise", "momentum_patch_noise", "mim_patch_noise",
                 "negative_image_indices", "negative_text_indices")
        # the original's forward updates the momentum encoders first (`_momentum_update`)
        return [parity.ParityCase("itc_itm_mlm_mim", "forward", {**images, **{name: name for name in drawn}}, outputs,
                                  {"alpha": config.alpha}, prepare=["momentum_step"])]
    ranking = {**images, "answer_input_ids": "candidate_ids", "answer_attention_mask": "candidate_mask"}
    ranked = {name: {"field": name, **full} for name in ("scores", "probabilities", "top_k_indices", "answer_indices")}
    candidates = len(PARITY_CANDIDATE_WORDS)
    answer_loss = parity.ParityCase(
        "answer_loss", "forward", {**images, "labels": "answer_labels", "answer_weights": "answer_weights"},
        {"loss": {"field": "loss", **full}, "logits": {"field": "logits", **vocabulary}}, {"alpha": config.alpha},
        # with distillation the original's training forward updates the momentum copies first
        prepare=["momentum_step"] if config.vqa_distillation else [])
    return [parity.ParityCase("answer_ranking", "rank_answers", ranking, ranked, {"k": PARITY_RANK_K}),
            parity.ParityCase("exhaustive_ranking", "rank_answers", ranking, ranked, {"k": candidates + 3}),
            answer_loss]


def parity_inputs(head, config, vocabulary, seed=0) -> dict:
    """Seeded inputs of `parity_cases(head, config)` (record tensor names). `vocabulary`: the tokens of the model's
    WordPiece vocabulary in id order; texts are random whole words of it, written as ALBEF's tokenizer writes them
    (captions and questions `[CLS] w..`, answers `[CLS] a.. [SEP]`, right-padded), so the authors' code, which tokenises
    text itself, rebuilds exactly these ids. Pixel values are N(0, 1) rounded to float16, which the record stores (half
    the size; the model computes in float32).

    Pre-training adds every draw of the original's forward: MLM targets (each word with probability 0.3, at least one
    per caption) with their masked inputs (80% [MASK], of the rest half a random token), the three image masks' noise,
    and one ITM hard negative per text and per image (never the pair itself). VQA adds answers as labels (-100 at [CLS]
    and padding) with the released weight 0.5, and candidate answers with distinct first words."""
    generator = torch.Generator().manual_seed(seed)
    words = [i for i, token in enumerate(vocabulary) if WORD.fullmatch(token)]
    cls, sep, pad = config.cls_token_id, config.sep_token_id, config.pad_token_id
    batch = PARITY_BATCH[head]

    def texts(lengths, end=(), distinct_first=False):
        first = torch.randperm(len(words), generator=generator)[: len(lengths)] if distinct_first else None
        width = 1 + max(lengths) + len(end)
        ids = torch.full((len(lengths), width), pad)
        for row, n in enumerate(lengths):
            drawn = torch.randint(len(words), (n,), generator=generator)
            if first is not None:
                drawn[0] = first[row]
            ids[row, : 1 + n + len(end)] = torch.tensor([cls, *(words[i] for i in drawn.tolist()), *end])
        return ids, (ids != pad).long()

    size = config.vision_config.image_size
    pixel_values = torch.randn(batch, 3, size, size, generator=generator).half()
    input_ids, attention_mask = texts(PARITY_TEXT_WORDS[:batch])
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
    if head == "pretraining":
        tensors.update(_pretraining_draws(input_ids, attention_mask, config, words, generator))
    else:
        answers, answer_mask = texts(PARITY_ANSWER_WORDS[:batch], end=(sep,))
        tensors["answer_labels"] = answers.masked_fill(answer_mask == 0, -100).index_fill(1, torch.tensor([0]), -100)
        tensors["answer_weights"] = torch.full((batch,), 0.5)
        tensors["candidate_ids"], tensors["candidate_mask"] = texts(PARITY_CANDIDATE_WORDS, end=(sep,),
                                                                    distinct_first=True)
    return {case.input_key(argument): tensors[name] for case in parity_cases(head, config)
            for argument, name in case.inputs.items()}


def _pretraining_draws(input_ids, attention_mask, config, words, generator):
    batch, length = input_ids.shape
    targets = (torch.rand(input_ids.shape, generator=generator) < PARITY_MLM_PROBABILITY) & attention_mask.bool()
    targets[:, 0] = False  # [CLS] is never a target
    lengths = attention_mask.sum(1)
    forced = 1 + (torch.rand(batch, generator=generator) * (lengths - 1)).long()  # one word per caption at least
    targets[torch.arange(batch), forced] = True
    kind = torch.rand(input_ids.shape, generator=generator)  # < 0.8 [MASK], < 0.9 a random word, else kept
    random_words = torch.tensor(words)[torch.randint(len(words), input_ids.shape, generator=generator)]
    mlm_input_ids = torch.where(targets & (kind < 0.8), config.mask_token_id, input_ids)
    mlm_input_ids = torch.where(targets & (kind >= 0.8) & (kind < 0.9), random_words, mlm_input_ids)
    patches = config.vision_config.grid_size**2
    draws = {"labels": input_ids.masked_fill(~targets, -100), "mlm_input_ids": mlm_input_ids}
    for name in ("patch_noise", "momentum_patch_noise", "mim_patch_noise"):
        draws[name] = torch.rand(batch, patches, generator=generator)
    for name in ("negative_image_indices", "negative_text_indices"):
        draws[name] = (torch.arange(batch) + torch.randint(1, batch, (batch,), generator=generator)) % batch
    return draws


def parity_config_fields(head, config) -> dict:
    """Config fields a reference depends on beyond the weights and inputs (checked before a record is run)."""
    if head == "pretraining":
        names = ["momentum", "mim_mask_ratio", "itc_temperature_min", "itc_temperature_max"]
    else:
        names = ["momentum", "vqa_distillation", *HEAD_SPECS[head].quirks]
    return {name: getattr(config, name) for name in names}


def parity_record(model, head, vocabulary, reference_dir, checkpoint_sha256):
    """The record saved with the model: the harness's `reference_dir`, checked (ParityRecordError, or
    ParityMismatchError listing the outputs that differ), or, without one, the model's own outputs on `parity_inputs`.
    Running a record may update momentum copies (as the original's forward does): save the model first."""
    if reference_dir is None:
        record = parity.self_record(model, parity_cases(head, model.config),
                                    parity_inputs(head, model.config, vocabulary), producer=SCRIPT,
                                    checkpoint_sha256=checkpoint_sha256)
        record.config = parity_config_fields(head, model.config)
        record.reference["note"] = PARITY_VERIFIED_BY_TESTS
        return record
    return parity.reference_record(model, reference_dir, checkpoint_sha256, f"--head {head}")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def read_vocabulary(tokenizer_dir=None) -> list:
    """The WordPiece vocabulary (tokens in id order): `tokenizer_dir/vocab.txt`, or the bundled bert-base-uncased one
    (models/tokenization_bert.py reads the same file)."""
    from medvlp_hf.resources import bert_base_uncased_vocab_file

    path = Path(tokenizer_dir) / "vocab.txt" if tokenizer_dir else bert_base_uncased_vocab_file()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; --tokenizer_dir must hold the WordPiece vocab.txt.")
    return path.read_text(encoding="utf-8").splitlines()


def build_processor(config, tokenizer_dir=None):
    """The M2I2 processor of a converted model (ALBEF's tokenisation, the released image preprocessing at the model's
    image size): the bundled bert-base-uncased vocabulary or the `vocab.txt` in `tokenizer_dir`, which must fill the
    word table exactly."""
    import medvlp_hf

    if tokenizer_dir is None:
        processor = medvlp_hf.default_processor(config)
    else:
        processor = utils.processor_class(config).from_model_config(config, tokenizer_dir)
    if len(processor.tokenizer) != config.text_config.vocab_size:
        raise utils.CheckpointError(
            f"the tokenizer has {len(processor.tokenizer)} tokens but the checkpoint's word table has "
            f"{config.text_config.vocab_size}; pass the folder of the vocab.txt it was trained with as "
            "--tokenizer_dir.")
    return processor


def build_parser(prog=None):
    parser = utils.converter_parser(__doc__, prog)
    parser.add_argument("--checkpoint", required=True, help="original .pth ({'model': state_dict, 'optimizer', "
                                                            "'lr_scheduler', 'config', 'epoch'}) or a state dict file")
    parser.add_argument("--kind", required=True, choices=KINDS, help="which original model wrote the checkpoint")
    parser.add_argument("--head", choices=KINDS,
                        help="the medvlp-hf head to build (default: the kind's own; `vqa` from a pre-training "
                             "checkpoint as train_rad.py fine-tunes)")
    parser.add_argument("--image_size", type=int,
                        help="the checkpoint's image size (default: read off its position table), or with --head vqa "
                             f"the VQA model's (default {RELEASED_VQA_IMAGE_SIZE}: the position table is interpolated)")
    parser.add_argument("--vqa_distillation", action="store_true",
                        help="with --head vqa: keep momentum copies for distillation (configs/RAD.yaml `distill: "
                             "True`; SLAKE and PathVQA train without)")
    parser.add_argument("--config", help="the original configs/config_bert.json (default: BERT-base with fusion from "
                                         "layer 6; needed for other text widths)")
    parser.add_argument("--vision_num_attention_heads", type=int,
                        help="ViT attention heads, for a ViT that is not 768 wide (default 12)")
    parser.add_argument("--mim_decoder_num_attention_heads", type=int,
                        help="MAE decoder attention heads, for a decoder that is not 512 wide (default 16)")
    parser.add_argument("--tokenizer_dir", help="folder with the WordPiece vocab.txt the model was trained with "
                                                "(default: the bundled bert-base-uncased)")
    utils.add_output_arguments(parser, "m2i2")
    return parser


def main(argv=None, prog=None):
    """Convert, save, check parity; returns the output folder (nothing is left behind when a step fails)."""
    return utils.run_converter(build_parser, convert, argv, prog)


def convert(args, staging, command):
    """The conversion `main` runs into the folder `staging`; returns the model and its parity record."""
    head = args.head or args.kind
    loaded = utils.load_checkpoint(args.checkpoint)
    original_config = json.loads(Path(args.config).read_text()) if args.config else None
    model = convert_state_dict(loaded.state_dict, args.kind, original_config, head, args.image_size,
                               loaded.training_config, args.vision_num_attention_heads,
                               args.mim_decoder_num_attention_heads, args.vqa_distillation)
    vocabulary = read_vocabulary(args.tokenizer_dir)
    if len(vocabulary) != model.config.text_config.vocab_size:
        raise utils.CheckpointError(
            f"the vocabulary has {len(vocabulary)} tokens but the checkpoint's word table has "
            f"{model.config.text_config.vocab_size}; pass the folder of the vocab.txt it was trained with as "
            "--tokenizer_dir.")
    processor = build_processor(model.config, args.tokenizer_dir)
    model.save_pretrained(staging)  # before the parity check, which runs the momentum update of the original
    checkpoint_sha256 = utils.sha256_files(loaded.files)
    record = parity_record(model, head, vocabulary, args.reference, checkpoint_sha256)
    provenance = utils.conversion_provenance(
        args.checkpoint, checkpoint_sha256, f"{ORIGINAL_REPOSITORY}@{ORIGINAL_COMMIT}", SCRIPT, command,
        [args.dataset or DEFAULT_DATASETS[head]])
    utils.finish_conversion(staging, record, processor, provenance, not args.no_card, args.push_to_hub)
    return model, record


if __name__ == "__main__":
    main()
