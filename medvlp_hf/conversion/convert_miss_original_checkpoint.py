"""Convert the authors' MISS checkpoints (github.com/TIMMY-CHAN/MISS, commit ac8b724) to medvlp-hf.

    medvlp convert miss --checkpoint PATH --kind KIND --out DIR [--head vqa] [--reference RECORD_DIR]
    (or, from a checkout: python conversion/convert_miss_original_checkpoint.py ...)

PATH is a file the original code wrote: BLIP's `torch.save({'model': state_dict, 'optimizer': ..., 'config': ...,
'epoch': ...})` (`checkpoint_XX.pth`), or the state dict alone (read with `torch.load(weights_only=True)`, or
safetensors). No MISS checkpoint has been published (reference/originals.md §4.8); the layouts are those of the
released classes:
- pretraining: `models/miss_pretrain.py::MISS_Pretrain` (ViT, JTM encoder, ITC projections, ITM head, the decoder,
  momentum copies, ITC queues and temperature);
- vqa: `models/miss_vqa.py::MISS_VQA` (ViT at 480 px, JTM encoder, answer decoder).

Every original key is looked up in an explicit table (`original_key_table`): renamed (the layouts are transformers'
BLIP names, so mostly a prefix map), recognised as a second name of a shared tensor (the pre-training decoder shares
all but its self-attention with the JTM encoder, `tie_encoder_decoder_weights`; every LM head shares the word
embeddings: checked equal, kept once), or an optional `position_ids` buffer (checked to count 0..n-1, dropped);
anything else, or anything absent, is an error naming the key. A converted pre-training model keeps the momentum
encoders, the ITC queues, their pointer and the temperature: they are the state the authors' own resumption loads
from the same file, the ITC loss and its distillation targets depend on them, and a fine-tuned head
(`MISSForVQA.from_pretraining`) drops them anyway.

`--head vqa` with a pre-training checkpoint builds the VQA model the authors' fine-tuning starts from
(`models/miss.py:load_checkpoint`: every weight of the same name, the decoder untied, the position embeddings
interpolated bicubically to `--image_size`, 480 by default). The config fields that reproduce the released numbers are
set per head: VQA generation attends the question's padding, answer ranking uses the label-smoothed loss, stochastic
depth 0.1 (0 in pre-training). The processor saved is the released preprocessing
(`MISSImageProcessor.as_released`: bilinear resize, no normalisation, the double division by 255).

Parity: `--reference DIR` is a record the parity harness (`conversion/parity/miss/`, which runs the authors' code) made
on the same checkpoint file; the converted model must reproduce it (`torch.testing.assert_close(rtol=1e-5,
atol=1e-4)`, identical argmax and tokens) or nothing is saved. Without it the folder's record holds the converted
model's own outputs, and the card says parity with the original is not verified for this checkpoint.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import conversion_utils as utils
from . import parity

SCRIPT = "medvlp_hf/conversion/convert_miss_original_checkpoint.py"
ORIGINAL_REPOSITORY = "TIMMY-CHAN/MISS"
ORIGINAL_COMMIT = "ac8b724"
# configs/med_config.json: BERT-base (its vocabulary, 30,524, is read off the weights)
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "max_position_embeddings": 512, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12, "pad_token_id": 0}
# Fields of the BERT config.json that the weights also tell (checked to agree when both exist).
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings")
VIT_BASE_WIDTH, VIT_BASE_HEADS = 768, 12  # create_vit('base'): the only ViT the released scripts build
VIT_LAYER_NORM_EPS = 1e-6  # vit.py: partial(nn.LayerNorm, eps=1e-6)
QUEUE_SIZE = 57600  # configs/pretrain.yaml
DEFAULT_DATASETS = {"pretraining": "medicat", "vqa": "vqa_rad"}
PARITY_VERIFIED_BY_TESTS = (
    "what medvlp-hf's tests do verify for this converter: pre-training (ITC, ITM, LM), VQA (training loss, beam search, "
    "answer ranking) and a pre-training checkpoint initialising a VQA model at a larger image size, against the authors' "
    "code on tiny random checkpoints (every output in full), and at the released geometry (ViT-B/16, BERT-base layers, "
    "2 of them, the 30,524-token vocabulary; large outputs through argmax, top-5, logsumexp and every 97th entry), "
    "within rtol 1e-5 / atol 1e-4 with identical argmax and tokens")


@dataclass(frozen=True)
class HeadSpec:
    auto_class: str  # the Auto class that maps a MISS config to this head
    drop_path_rate: float  # create_vit(..., drop_path_rate): MISS_Pretrain 0, MISS_VQA 0.1
    quirks: dict = field(default_factory=dict)  # config fields reproducing the released numbers


HEAD_SPECS = {
    "pretraining": HeadSpec("AutoModelForPreTraining", 0.0),
    "vqa": HeadSpec("AutoModelForVisualQuestionAnswering", 0.1, {
        "vqa_generation_attends_question_padding": True, "vqa_ranking_uses_label_smoothing": True}),
}
KINDS = tuple(HEAD_SPECS)
# --head for each kind: a checkpoint converts to its own head, and pre-training also initialises a VQA model.
HEADS = {"pretraining": ("pretraining", "vqa"), "vqa": ("vqa",)}
RELEASED_IMAGE_SIZE = {"pretraining": 224, "vqa": 480}  # configs/pretrain.yaml, configs/rad.yaml and slake.yaml


@dataclass(frozen=True)
class Geometry:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    max_position_embeddings: int
    vision_hidden_size: int
    vision_intermediate_size: int
    vision_num_hidden_layers: int
    patch_size: int
    grid_size: int  # patches per side of the position-embedding grid
    projection_dim: int | None = None  # pre-training only: ITC embeddings
    queue_size: int | None = None  # pre-training only

    @property
    def image_size(self):
        return self.grid_size * self.patch_size


# --------------------------------------------------------------------------------------------------
# The key table
# --------------------------------------------------------------------------------------------------


def original_key_table(kind: str, geometry: Geometry) -> list:
    """Every key of the original `kind` checkpoint (`KeyEntry`: shape, medvlp-hf name, role)."""
    g = geometry
    entries = [*_vision_entries("visual_encoder", "vision_model", g), *_text_entries("text_encoder", "text_encoder", g)]
    if kind == "pretraining":
        entries += [
            *utils.linear_entries("vision_proj", "vision_proj", g.projection_dim, g.vision_hidden_size),
            *utils.linear_entries("text_proj", "text_proj", g.projection_dim, g.hidden_size),
            *utils.linear_entries("itm_head", "itm_head", 2, g.hidden_size),
            utils.KeyEntry("temp", "temperature", ()),
            utils.KeyEntry("image_queue", "feature_queue.image_queue", (g.projection_dim, g.queue_size), module="buffer"),
            utils.KeyEntry("text_queue", "feature_queue.text_queue", (g.projection_dim, g.queue_size), module="buffer"),
            utils.KeyEntry("queue_ptr", "feature_queue.queue_ptr", (1,), dtype=torch.int64, module="buffer"),
            *_vision_entries("visual_encoder_m", "vision_model_m", g),
            *utils.linear_entries("vision_proj_m", "vision_proj_m", g.projection_dim, g.vision_hidden_size),
            *_text_entries("text_encoder_m", "text_encoder_m", g),
            *utils.linear_entries("text_proj_m", "text_proj_m", g.projection_dim, g.hidden_size),
        ]
    decoder = _text_entries("text_decoder.bert", "text_decoder.bert", g)
    if kind == "pretraining":  # tie_encoder_decoder_weights(text_encoder, text_decoder.bert, '', '/attention')
        decoder = [_shared_with_encoder(e) if e.target and not _is_self_attention(e.original) else e for e in decoder]
    word = "text_encoder" if kind == "pretraining" else "text_decoder.bert"
    head = "text_decoder.cls.predictions"
    return [*entries, *decoder,
            utils.KeyEntry(f"{head}.bias", f"{head}.bias", (g.vocab_size,)),
            *utils.linear_entries(f"{head}.transform.dense", f"{head}.transform.dense", g.hidden_size, g.hidden_size),
            *utils.layer_norm_entries(f"{head}.transform.LayerNorm", f"{head}.transform.LayerNorm", g.hidden_size),
            utils.KeyEntry(f"{head}.decoder.weight", None, (g.vocab_size, g.hidden_size), "shared",
                           f"{word}.embeddings.word_embeddings.weight", module="embedding"),
            utils.KeyEntry(f"{head}.decoder.bias", None, (g.vocab_size,), "shared", f"{head}.bias")]


def _vision_entries(original, target, g):
    """BLIP's `vit.py` VisionTransformer -> `MISSVisionModel` (transformers' BLIP ViT names)."""
    return utils.timm_vit_entries(original, target, g.vision_hidden_size, g.vision_intermediate_size,
                                  g.vision_num_hidden_layers, g.grid_size, g.patch_size)


def _text_entries(original, target, g):
    """BLIP's `med.py` BertModel (no token types, cross-attention in every layer) -> `MISSTextModel`: same names."""
    h, i = g.hidden_size, g.intermediate_size
    entries = [utils.KeyEntry(f"{original}.embeddings.position_ids", None, (1, g.max_position_embeddings), "optional",
                              dtype=torch.int64, module="buffer"),
               utils.KeyEntry(f"{original}.embeddings.word_embeddings.weight",
                              f"{target}.embeddings.word_embeddings.weight", (g.vocab_size, h), module="embedding"),
               utils.KeyEntry(f"{original}.embeddings.position_embeddings.weight",
                              f"{target}.embeddings.position_embeddings.weight", (g.max_position_embeddings, h),
                              module="embedding"),
               *utils.layer_norm_entries(f"{original}.embeddings.LayerNorm", f"{target}.embeddings.LayerNorm", h)]
    for n in range(g.num_hidden_layers):
        for attention, key_width in (("attention", h), ("crossattention", g.vision_hidden_size)):
            prefix = f"encoder.layer.{n}.{attention}"
            entries += utils.linear_entries(f"{original}.{prefix}.self.query", f"{target}.{prefix}.self.query", h, h)
            for name in ("key", "value"):
                entries += utils.linear_entries(f"{original}.{prefix}.self.{name}", f"{target}.{prefix}.self.{name}",
                                                h, key_width)
            entries += [*utils.linear_entries(f"{original}.{prefix}.output.dense", f"{target}.{prefix}.output.dense", h, h),
                        *utils.layer_norm_entries(f"{original}.{prefix}.output.LayerNorm",
                                                  f"{target}.{prefix}.output.LayerNorm", h)]
        layer = f"encoder.layer.{n}"
        entries += [*utils.linear_entries(f"{original}.{layer}.intermediate.dense", f"{target}.{layer}.intermediate.dense",
                                          i, h),
                    *utils.linear_entries(f"{original}.{layer}.output.dense", f"{target}.{layer}.output.dense", h, i),
                    *utils.layer_norm_entries(f"{original}.{layer}.output.LayerNorm", f"{target}.{layer}.output.LayerNorm",
                                              h)]
    return entries


def _is_self_attention(key):
    return re.search(r"\.encoder\.layer\.\d+\.attention\.", key) is not None


def _shared_with_encoder(entry):
    """A pre-training decoder weight outside self-attention: the JTM encoder's tensor under a second name."""
    source = "text_encoder" + entry.original[len("text_decoder.bert"):]
    return utils.KeyEntry(entry.original, None, entry.shape, "shared", source, module=entry.module)


def seeded_checkpoint(kind: str, geometry: Geometry, seed: int) -> dict:
    """An original-layout `kind` checkpoint with seeded random values (`conversion_utils.seeded_state_dict`), as the
    parity fixtures use; keys shared by two kinds get the same values for the same seed. The pre-training state that
    is not a weight starts as `MISS_Pretrain.__init__` leaves it, drawn from the seed: a temperature near 0.07, queues
    of unit-norm columns, and a queue pointer at a multiple of 3 (the parity batch) below the queue size."""
    state = utils.seeded_state_dict(original_key_table(kind, geometry), seed)
    if kind == "pretraining":
        generator = torch.Generator().manual_seed(seed)
        state["temp"] = torch.tensor(0.07) * (1 + 0.1 * torch.randn((), generator=generator))
        for name in ("image_queue", "text_queue"):
            state[name] = torch.nn.functional.normalize(torch.randn(state[name].shape, generator=generator), dim=0)
        slots = geometry.queue_size // PARITY_BATCH
        state["queue_ptr"] = PARITY_BATCH * torch.randint(0, slots, (1,), generator=generator)
    return state


# --------------------------------------------------------------------------------------------------
# Reading a checkpoint's geometry and kind
# --------------------------------------------------------------------------------------------------

# Keys only one kind (or a model this converter does not convert) has.
KIND_MARKERS = {"pretraining": ("image_queue", "itm_head.weight", "visual_encoder_m.cls_token"),
                "vqa": ("text_encoder.encoder.layer.0.attention.self.query.weight",)}


def infer_geometry(kind: str, state_dict: dict) -> Geometry:
    """Sizes read off the weights, so tiny and base checkpoints convert alike."""
    def shape(key):
        if key not in state_dict:
            raise utils.CheckpointError(
                f"checkpoint has no key {key!r}, which every MISS {kind} checkpoint has.{kind_hint(kind, state_dict)}")
        return tuple(state_dict[key].shape)

    vocab_size, hidden_size = shape("text_encoder.embeddings.word_embeddings.weight")
    text_layers = _indices(state_dict, r"text_encoder\.encoder\.layer\.(\d+)\.")
    decoder_layers = _indices(state_dict, r"text_decoder\.bert\.encoder\.layer\.(\d+)\.")
    if text_layers != decoder_layers:
        raise utils.CheckpointError(
            f"the JTM encoder has {len(text_layers)} layers and the decoder {len(decoder_layers)}; MISS builds both from "
            f"one BERT config.{kind_hint(kind, state_dict)}")
    tokens = shape("visual_encoder.pos_embed")[1] - 1
    grid_size = round(tokens**0.5)
    if grid_size**2 != tokens:
        raise utils.CheckpointError(f"visual_encoder.pos_embed holds {tokens} patch positions, not a square grid.")
    pretraining = {}
    if kind == "pretraining":
        pretraining = {"projection_dim": shape("vision_proj.weight")[0], "queue_size": shape("image_queue")[1]}
    return Geometry(
        vocab_size=vocab_size, hidden_size=hidden_size,
        intermediate_size=shape("text_encoder.encoder.layer.0.intermediate.dense.weight")[0],
        num_hidden_layers=len(text_layers),
        max_position_embeddings=shape("text_encoder.embeddings.position_embeddings.weight")[0],
        vision_hidden_size=shape("visual_encoder.cls_token")[-1],
        vision_intermediate_size=shape("visual_encoder.blocks.0.mlp.fc1.weight")[0],
        vision_num_hidden_layers=len(_indices(state_dict, r"visual_encoder\.blocks\.(\d+)\.")),
        patch_size=shape("visual_encoder.patch_embed.proj.weight")[-1], grid_size=grid_size, **pretraining)


def _indices(state_dict, pattern):
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


def likely_kind(state_dict):
    """The kind the keys look like: `pretraining`, `vqa`, `captioning` (the released `MISS_Decoder`, which no script
    trains and this converter does not convert) or None."""
    if any(key in state_dict for key in KIND_MARKERS["pretraining"]):
        return "pretraining"
    if any(key in state_dict for key in KIND_MARKERS["vqa"]):
        return "vqa"
    if "visual_encoder.cls_token" in state_dict and "text_decoder.cls.predictions.bias" in state_dict:
        return "captioning"
    return None


def kind_hint(kind, state_dict):
    guess = likely_kind(state_dict)
    if guess == "captioning":
        return (" Its keys look like the released captioning model MISS_Decoder (visual_encoder + text_decoder only), "
                "which this converter does not convert.")
    if guess and guess != kind:
        extra = " (or --kind pretraining --head vqa to initialise a VQA model from it)" if guess == "pretraining" else ""
        return f" Its keys look like a {guess} checkpoint: pass --kind {guess}{extra}."
    return ""


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


def build_config(kind: str, geometry: Geometry, original_config: dict | None, vision_num_attention_heads: int | None,
                 image_size: int | None):
    """The MISS config (found through AutoConfig) of the `kind` checkpoint's own head: sizes from the weights, the
    BERT fields from the original config.json (`configs/med_config.json` / `bert_config.json`; default BERT-base)."""
    bert = dict(BERT_BASE)
    if original_config is not None:
        for name in SHAPE_FIELDS:
            if name in original_config and original_config[name] != getattr(geometry, name):
                raise utils.CheckpointError(
                    f"config.json says {name}={original_config[name]} but the weights have {getattr(geometry, name)}.")
        bert.update({k: original_config[k] for k in BERT_BASE if k in original_config})
    elif geometry.hidden_size != BERT_BASE["hidden_size"]:
        raise utils.CheckpointError(
            f"text hidden size {geometry.hidden_size} is not BERT-base's: pass the original BERT config.json with "
            "--config (the number of attention heads cannot be read off the weights).")
    bert.update({name: getattr(geometry, name) for name in SHAPE_FIELDS}, vocab_size=geometry.vocab_size,
                encoder_hidden_size=geometry.vision_hidden_size)
    if vision_num_attention_heads is None:
        if geometry.vision_hidden_size != VIT_BASE_WIDTH:
            raise utils.CheckpointError(
                f"the ViT is {geometry.vision_hidden_size} wide, not ViT-B's {VIT_BASE_WIDTH}: pass "
                "--vision_num_attention_heads (it cannot be read off the weights).")
        vision_num_attention_heads = VIT_BASE_HEADS
    if image_size is not None and image_size != geometry.image_size:
        raise utils.CheckpointError(
            f"visual_encoder.pos_embed holds a {geometry.grid_size}x{geometry.grid_size} grid of {geometry.patch_size}-"
            f"pixel patches ({geometry.image_size} px images), but --image_size is {image_size}. Pass --image_size "
            f"{geometry.image_size}; to fine-tune a pre-training checkpoint at another size, convert it with --kind "
            "pretraining --head vqa --image_size N, which interpolates the position embeddings as the authors do.")
    spec = HEAD_SPECS[kind]
    vision = {"hidden_size": geometry.vision_hidden_size, "intermediate_size": geometry.vision_intermediate_size,
              "num_hidden_layers": geometry.vision_num_hidden_layers, "num_attention_heads": vision_num_attention_heads,
              "image_size": geometry.image_size, "patch_size": geometry.patch_size, "layer_norm_eps": VIT_LAYER_NORM_EPS,
              "drop_path_rate": spec.drop_path_rate}
    fields = {"projection_dim": geometry.projection_dim, "queue_size": geometry.queue_size} if kind == "pretraining" else {}
    # init_tokenizer appends [DEC] (bos) and [ENC] to the WordPiece vocabulary: the word table's last two rows
    return utils.config_for_model("miss", vision_config=vision, text_config=bert, **fields, **spec.quirks,
                                  bos_token_id=geometry.vocab_size - 2, enc_token_id=geometry.vocab_size - 1)


def head_auto_class(head):
    """transformers' Auto class of `head` (importing medvlp_hf registers MISS with it)."""
    import transformers

    import medvlp_hf  # noqa: F401

    return getattr(transformers, HEAD_SPECS[head].auto_class)


def convert_state_dict(state_dict: dict, kind: str, original_config: dict | None = None, head: str | None = None,
                       image_size: int | None = None, vision_num_attention_heads: int | None = None):
    """Original state dict -> medvlp-hf model (eval mode) of `head` (default: the kind's own). The kind's own head
    takes the checkpoint's fp32 tensors as its parameters (no copy): do not modify `state_dict` afterwards.
    `image_size`: of the checkpoint (checked against its grid), or of the VQA model `head="vqa"` builds from a
    pre-training checkpoint (default 480)."""
    if kind not in HEAD_SPECS:
        raise ValueError(f"kind {kind!r}: choose one of {KINDS}.")
    head = head or kind
    if head not in HEADS[kind]:
        raise ValueError(f"a {kind} checkpoint converts to the heads {HEADS[kind]}, not {head!r}.")
    geometry = infer_geometry(kind, state_dict)
    table = original_key_table(kind, geometry)
    utils.check_key_table(state_dict, table, f"original MISS {kind}", kind_hint(kind, state_dict))
    utils.check_position_ids(state_dict, table)
    own_size = image_size if head == kind else None
    config = build_config(kind, geometry, original_config, vision_num_attention_heads, own_size)
    model = utils.build_on_meta(head_auto_class(kind), config)
    model.config.architectures = [type(model).__name__]
    model = utils.fill_model(model, utils.renamed_weights(state_dict, table, keep_tied=False),
                             model.all_tied_weights_keys, f" Update original_key_table in {SCRIPT}.")
    if head == kind:
        return model
    return initialise_head(model, head, image_size or RELEASED_IMAGE_SIZE[head])


def initialise_head(pretraining_model, head, image_size):
    """The `head` model the authors' fine-tuning builds from a pre-training model (`from_pretraining`: weights of the
    same name, position embeddings interpolated bicubically to `image_size`), with the head's released config."""
    spec = HEAD_SPECS[head]
    model_class = head_auto_class(head)._model_mapping[type(pretraining_model.config)]
    model = model_class.from_pretraining(pretraining_model, image_size=image_size, drop_path_rate=spec.drop_path_rate)
    for name, value in spec.quirks.items():
        setattr(model.config, name, value)
    model.config.architectures = [model_class.__name__]
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Parity cases: what a record runs for each head
# --------------------------------------------------------------------------------------------------

PARITY_BATCH = 3
PARITY_TEXT_WORDS = (8, 5, 3)  # words per caption / question (the shorter ones padded)
PARITY_ANSWER_WORDS = (2, 1, 3)
PARITY_CANDIDATE_WORDS = (1, 2, 1, 3, 2)  # candidate answers of the ranking case, distinct first words
PARITY_RANK_K = 3
PARITY_GENERATION = {"num_beams": 3, "max_new_tokens": 9, "min_length": 1}  # miss_vqa.py: max_length=10 with [DEC]
WORD = re.compile(r"[a-z][a-z0-9]*")  # vocabulary entries a BERT tokenizer gives back unchanged from their text


def reductions(size):
    """A large last dimension (vocabulary logits, similarities to a 57,600-entry queue) is kept as argmax + top-5 +
    logsumexp + every 97th entry, a small one in full."""
    return ["full"] if size <= 1000 else ["argmax", "top5", "logsumexp", "stride97"]


def parity_cases(head, config) -> list:
    """The cases a `head` record runs (inputs named as the head's keyword arguments)."""
    full = {"reduce": ["full"]}
    vocabulary = {"reduce": reductions(config.text_config.vocab_size)}
    images = {name: name for name in ("input_ids", "attention_mask", "pixel_values")}
    if head == "pretraining":
        similarity = {"reduce": reductions(PARITY_BATCH + config.queue_size)}
        outputs = {name: {"field": name, **full} for name in ("loss", "itc_loss", "itm_loss", "lm_loss", "itm_logits")}
        outputs.update(logits={"field": "logits", **vocabulary},
                       logits_per_image={"field": "logits_per_image", **similarity},
                       logits_per_text={"field": "logits_per_text", **similarity})
        negatives = {name: name for name in ("negative_image_indices", "negative_text_indices")}
        # the original's forward updates the momentum encoders first (`_momentum_update`)
        return [parity.ParityCase("itc_itm_lm", "forward", {**images, **negatives}, outputs, {"alpha": config.alpha},
                                  prepare=["momentum_step"])]
    return [parity.ParityCase("answer_loss", "forward", {**images, "labels": "answer_labels"},
                              {"loss": {"field": "loss", **full}, "logits": {"field": "logits", **vocabulary}}),
            parity.ParityCase("beam_search", "generate", images,
                              {"sequences": {"field": "sequences", **full},
                               "sequences_scores": {"field": "sequences_scores", **full}},
                              {**PARITY_GENERATION, "output_scores": True, "return_dict_in_generate": True}),
            parity.ParityCase("answer_ranking", "rank_answers",
                              {**images, "answer_input_ids": "candidate_ids", "answer_attention_mask": "candidate_mask"},
                              {name: {"field": name, **full} for name in ("scores", "top_k_indices", "answer_indices")},
                              {"k": PARITY_RANK_K})]


def parity_inputs(head, config, tokenizer, seed=0) -> dict:
    """Seeded inputs of `parity_cases(head, config)` (record tensor names), texts as `tokenizer` writes them: random
    whole words of its vocabulary (`[CLS] w.. [SEP]`, right-padded), so the authors' code, which tokenises text
    itself, rebuilds exactly these ids. Pixel values are N(0, 1) rounded to float16, which the record stores (half the
    size; the model computes in float32). Pre-training adds one ITM hard negative per text and per image (never the
    pair itself); VQA adds answers as labels (-100 at [CLS] and padding) and candidate answers with distinct first
    words."""
    generator = torch.Generator().manual_seed(seed)
    words = sorted(i for token, i in tokenizer.get_vocab().items() if WORD.fullmatch(token))

    def texts(lengths, distinct_words=False):
        count = sum(lengths)
        draw = torch.randperm(len(words), generator=generator)[:count] if distinct_words else \
            torch.randint(len(words), (count,), generator=generator)
        chosen = [words[i] for i in draw.tolist()]
        starts = [sum(lengths[:n]) for n in range(len(lengths))]
        text = [tokenizer.decode(chosen[s: s + n]) for s, n in zip(starts, lengths)]
        encoded = tokenizer(text, padding="longest", return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"]

    size = config.vision_config.image_size
    pixel_values = torch.randn(PARITY_BATCH, 3, size, size, generator=generator).half()
    input_ids, attention_mask = texts(PARITY_TEXT_WORDS)
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
    if head == "pretraining":
        for name in ("negative_image_indices", "negative_text_indices"):
            offsets = torch.randint(1, PARITY_BATCH, (PARITY_BATCH,), generator=generator)
            tensors[name] = (torch.arange(PARITY_BATCH) + offsets) % PARITY_BATCH
    else:
        answers, answer_mask = texts(PARITY_ANSWER_WORDS)
        tensors["answer_labels"] = answers.masked_fill(answer_mask == 0, -100).index_fill(1, torch.tensor([0]), -100)
        tensors["candidate_ids"], tensors["candidate_mask"] = texts(PARITY_CANDIDATE_WORDS, distinct_words=True)
    return {case.input_key(argument): tensors[name] for case in parity_cases(head, config)
            for argument, name in case.inputs.items()}


def parity_config_fields(head, config) -> dict:
    """Config fields a reference depends on beyond the weights and inputs (checked before a record is run)."""
    names = ["label_smoothing"] + (["momentum"] if head == "pretraining" else list(HEAD_SPECS[head].quirks))
    return {name: getattr(config, name) for name in names}


def parity_record(model, head, tokenizer, reference_dir, checkpoint_sha256):
    """The record saved with the model: the harness's `reference_dir`, checked (ParityRecordError, or
    ParityMismatchError listing the outputs that differ), or, without one, the model's own outputs on `parity_inputs`.
    Running a pre-training record updates the momentum encoders (as the original's forward does): save the model
    first."""
    if reference_dir is None:
        record = parity.self_record(model, parity_cases(head, model.config),
                                    parity_inputs(head, model.config, tokenizer), producer=SCRIPT,
                                    checkpoint_sha256=checkpoint_sha256)
        record.config = parity_config_fields(head, model.config)
        record.reference["note"] = PARITY_VERIFIED_BY_TESTS
        return record
    return parity.reference_record(model, reference_dir, checkpoint_sha256, f"--head {head}")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def build_processor(config, tokenizer_dir=None):
    """The MISS processor of a converted model: the bundled bert-base-uncased tokenizer (or the `vocab.txt` in
    `tokenizer_dir`) with `[DEC]`/`[ENC]`, which must fill the word table exactly, and the released image
    preprocessing at the model's image size."""
    import medvlp_hf

    vocab_size = config.text_config.vocab_size
    try:
        if tokenizer_dir is None:
            processor = medvlp_hf.default_processor(config)
        else:
            processor = utils.processor_class(config).from_model_config(config, tokenizer_dir)
    except ValueError as error:
        raise utils.CheckpointError(f"{error} The checkpoint's word table has {vocab_size} rows; pass the folder of "
                                    "the vocab.txt it was trained with (without [DEC]/[ENC]) as --tokenizer_dir.") from error
    if len(processor.tokenizer) != vocab_size:
        raise utils.CheckpointError(
            f"the tokenizer has {len(processor.tokenizer)} tokens with [DEC] and [ENC] but the checkpoint's word table "
            f"has {vocab_size}; pass the folder of the vocab.txt it was trained with as --tokenizer_dir.")
    image_size = config.vision_config.image_size
    processor.image_processor = type(processor.image_processor).as_released(size=image_size)
    return processor


def build_parser(prog=None):
    parser = utils.converter_parser(__doc__, prog)
    parser.add_argument("--checkpoint", required=True, help="original checkpoint_XX.pth ({'model': state_dict, ...}) "
                                                            "or a state dict file")
    parser.add_argument("--kind", required=True, choices=KINDS, help="which original model wrote the checkpoint")
    parser.add_argument("--head", choices=KINDS, help="the medvlp-hf head to build (default: the kind's own; "
                                                      "`vqa` from a pre-training checkpoint as the authors fine-tune)")
    parser.add_argument("--image_size", type=int,
                        help="the checkpoint's image size (default: read off its position-embedding grid), or with "
                             "--head vqa the VQA model's (default 480: the position embeddings are interpolated)")
    parser.add_argument("--config", help="the original BERT config.json (configs/med_config.json; default BERT-base)")
    parser.add_argument("--vision_num_attention_heads", type=int,
                        help="ViT attention heads, for a ViT that is not ViT-B/16's 768 wide (default 12)")
    parser.add_argument("--tokenizer_dir", help="folder with the WordPiece vocab.txt the model was trained with "
                                                "(default: the bundled bert-base-uncased; [DEC] and [ENC] are added)")
    utils.add_output_arguments(parser, "miss")
    return parser


def main(argv=None, prog=None):
    """Convert, save, check parity; returns the output folder (nothing is left behind when a step fails)."""
    return utils.run_converter(build_parser, convert, argv, prog)


def convert(args, staging, command):
    """The conversion `main` runs into the folder `staging`; returns the model and its parity record."""
    head = args.head or args.kind
    loaded = utils.load_checkpoint(args.checkpoint)
    original_config = json.loads(Path(args.config).read_text()) if args.config else loaded.config
    model = convert_state_dict(loaded.state_dict, args.kind, original_config, head, args.image_size,
                               args.vision_num_attention_heads)
    processor = build_processor(model.config, args.tokenizer_dir)
    model.save_pretrained(staging)  # before the parity check, which runs a pre-training model's momentum update
    checkpoint_sha256 = utils.sha256_files(loaded.files)
    record = parity_record(model, head, processor.tokenizer, args.reference, checkpoint_sha256)
    provenance = utils.conversion_provenance(
        args.checkpoint, checkpoint_sha256, f"{ORIGINAL_REPOSITORY}@{ORIGINAL_COMMIT}", SCRIPT, command,
        [args.dataset or DEFAULT_DATASETS[head]])
    utils.finish_conversion(staging, record, processor, provenance, not args.no_card, args.push_to_hub)
    return model, record


if __name__ == "__main__":
    main()
