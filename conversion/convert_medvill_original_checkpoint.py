#!/usr/bin/env python
"""Convert the authors' MedViLL checkpoints (github.com/SuperSupermoon/MedViLL, commit dd51e72) to medvlp-hf.

    python conversion/convert_medvill_original_checkpoint.py --checkpoint PATH [--config config.json] \
        --kind pretraining|vqa|report_generation|retrieval|classification --out DIR [--push_to_hub REPO]

PATH is the file the original code wrote (read with `torch.load(weights_only=True)`, or safetensors) or its
directory (`pytorch_model.bin`/`model.safetensors` + `config.json`):
- pretraining: `main.py` -> `save_pretrained` dir of `MedViLL` (keys `enc.*`, `mlm.*`, `itm.*`);
- vqa / report_generation: `finetune.py` -> `model.{epoch}.bin` of the vendored `BertForPreTrainingLossMask`
  (no prefix; `ans_classifier.*` or `cls.*`); pass the `config.json` that sits next to the pretraining weights;
- retrieval: `retrieval.py` -> `save_pretrained` dir of `CXRBertForRetrieval` (`enc.*`, `itm.*`);
- classification: `cls.py` -> `checkpoint.pt`/`model_best.pt` (`{"state_dict": MultimodalBertClf weights, ...}`).

Every original key is looked up in an explicit table (`original_key_table`): renamed, recognised as a
duplicate of a shared module (checked equal, then dropped), the tied MLM decoder (dropped when equal to the
word embeddings), an unused module, or an optional buffer; anything else, or anything absent, is an error
that names the key. The config fields that reproduce the original numerics (position/segment scheme,
LayerNorm eps, padding segment, BAR padding visibility, VQA pooling) are set per kind (`KIND_SPECS`).
"""
import argparse
import hashlib
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from medvlp_hf import (
    MedViLLConfig,
    MedViLLForImageTextClassification,
    MedViLLForPreTraining,
    MedViLLForReportGeneration,
    MedViLLForRetrieval,
    MedViLLForVQA,
)
from medvlp_hf.hub import push_to_hub, render_model_card, save_model_card
from medvlp_hf.models.medvill.processing_medvill import MedViLLProcessor
from medvlp_hf.resources import bert_base_uncased_vocab_file

SCRIPT = "conversion/convert_medvill_original_checkpoint.py"
ORIGINAL_COMMIT = "dd51e72"
WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")
# The repository's config.json (downstream_task/report_generation_and_vqa/config.json): BERT-base.
BERT_BASE = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12,
}
BERT_FIELDS = tuple(BERT_BASE)
# Config fields that can be read off the weights (checked against config.json when both exist).
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
                "type_vocab_size")
VENDORED_LAYER_NORM_EPS = 1e-5  # BertLayerNorm(..., eps=1e-5) hard-coded in the vendored pytorch_pretrained_bert
RESNET_STAGE_OFFSET = 4  # nn.Sequential(*resnet.children()[:-2]): 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4..7 layer1..4
BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
DEFAULT_DATASETS = {"pretraining": "mimic_cxr", "vqa": "vqa_rad", "report_generation": "mimic_cxr",
                    "retrieval": "mimic_cxr", "classification": "mimic_cxr"}


class MedViLLCheckpointError(ValueError):
    """The checkpoint does not have the layout the original code writes for the requested kind."""


@dataclass(frozen=True)
class KindSpec:
    model_class: type
    prefix: str  # of the backbone keys
    transformers_bert: bool  # built on transformers' BertModel (eps from config.json, position_ids buffer)
    image_word_embeddings: bool  # img_embeddings also holds the shared word table
    quirks: dict = field(default_factory=dict)


KIND_SPECS = {
    "pretraining": KindSpec(MedViLLForPreTraining, "enc.", True, False, dict(
        position_scheme="pretraining", padding_token_type_id=1, prefix_attends_text_padding=True,
        freeze_image_encoder=True)),
    "retrieval": KindSpec(MedViLLForRetrieval, "enc.", True, False, dict(
        position_scheme="pretraining", padding_token_type_id=1, freeze_image_encoder=True)),
    "classification": KindSpec(MedViLLForImageTextClassification, "enc.", True, True, dict(
        position_scheme="consecutive", padding_token_type_id=0, freeze_image_encoder=False)),
    "vqa": KindSpec(MedViLLForVQA, "", False, True, dict(
        position_scheme="downstream", padding_token_type_id=0, vqa_pooling="cls_sep_product",
        freeze_image_encoder=True)),
    "report_generation": KindSpec(MedViLLForReportGeneration, "", False, True, dict(
        position_scheme="downstream", padding_token_type_id=0, freeze_image_encoder=True)),
}
KINDS = tuple(KIND_SPECS)


@dataclass(frozen=True)
class Entry:
    """One original state-dict key. role: `weight` (renamed to `target`), `shared` (same tensor as
    `source`, a module shared between txt_ and img_embeddings), `tied` (MLM decoder = word embeddings when
    equal), `unused` (a module the original forward never calls) or `optional` (a buffer some versions save)."""

    original: str
    target: str | None
    shape: tuple
    role: str = "weight"
    source: str | None = None
    dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class Geometry:
    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    type_vocab_size: int
    intermediate_size: int
    num_hidden_layers: int
    resnet_stem_width: int
    resnet_widths: tuple
    resnet_depths: tuple
    num_labels: int | None

    @property
    def image_feature_size(self):
        return 4 * self.resnet_widths[-1]


# --------------------------------------------------------------------------------------------------
# The key table
# --------------------------------------------------------------------------------------------------


def original_key_table(kind: str, geometry: Geometry) -> list[Entry]:
    """Every key of the original `kind` checkpoint with its shape and its medvlp-hf name."""
    spec = KIND_SPECS[kind]
    return [*_embedding_entries(spec, geometry), *_resnet_entries(spec.prefix, geometry),
            *_encoder_entries(spec.prefix, geometry), *_head_entries(kind, geometry)]


def _linear(original, target, out_features, in_features):
    return [Entry(f"{original}.weight", f"{target}.weight", (out_features, in_features)),
            Entry(f"{original}.bias", f"{target}.bias", (out_features,))]


def _layer_norm(original, target, size):
    return [Entry(f"{original}.weight", f"{target}.weight", (size,)), Entry(f"{original}.bias", f"{target}.bias", (size,))]


def _embedding_entries(spec, g):
    txt, img, emb = f"{spec.prefix}txt_embeddings", f"{spec.prefix}img_embeddings", "medvill.embeddings"
    entries = [
        Entry(f"{txt}.word_embeddings.weight", f"{emb}.word_embeddings.weight", (g.vocab_size, g.hidden_size)),
        Entry(f"{txt}.position_embeddings.weight", f"{emb}.position_embeddings.weight",
              (g.max_position_embeddings, g.hidden_size)),
        Entry(f"{txt}.token_type_embeddings.weight", f"{emb}.token_type_embeddings.weight",
              (g.type_vocab_size, g.hidden_size)),
        *_layer_norm(f"{txt}.LayerNorm", f"{emb}.layer_norm", g.hidden_size),
        *_linear(f"{img}.img_embeddings", f"{emb}.image_projection", g.hidden_size, g.image_feature_size),
    ]
    shared = ["position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"]
    if spec.image_word_embeddings:
        shared.append("word_embeddings.weight")
    by_name = {e.original: e for e in entries}
    entries += [Entry(f"{img}.{name}", None, by_name[f"{txt}.{name}"].shape, "shared", f"{txt}.{name}")
                for name in shared]
    if spec.transformers_bert:
        entries.append(Entry(f"{txt}.position_ids", None, (1, g.max_position_embeddings), "optional",
                             dtype=torch.int64))
    return entries


def _batch_norm(original, target, channels):
    return [Entry(f"{original}.{name}", f"{target}.{name}", () if name == "num_batches_tracked" else (channels,),
                  dtype=torch.int64 if name == "num_batches_tracked" else torch.float32)
            for name in BN_BUFFERS]


def _resnet_entries(prefix, g):
    resnet, target = f"{prefix}img_encoder.model", "medvill.image_encoder"
    entries = [Entry(f"{resnet}.0.weight", f"{target}.conv1.weight", (g.resnet_stem_width, 3, 7, 7)),
               *_batch_norm(f"{resnet}.1", f"{target}.bn1", g.resnet_stem_width)]
    in_channels = g.resnet_stem_width
    for stage, (width, depth) in enumerate(zip(g.resnet_widths, g.resnet_depths)):
        for block in range(depth):
            original = f"{resnet}.{RESNET_STAGE_OFFSET + stage}.{block}"
            new = f"{target}.layer{stage + 1}.{block}"
            out_channels = 4 * width
            convs = {"1": (width, in_channels, 1, 1), "2": (width, width, 3, 3), "3": (out_channels, width, 1, 1)}
            for i, shape in convs.items():
                entries.append(Entry(f"{original}.conv{i}.weight", f"{new}.conv{i}.weight", shape))
                entries += _batch_norm(f"{original}.bn{i}", f"{new}.bn{i}", shape[0])
            if block == 0:
                entries.append(Entry(f"{original}.downsample.0.weight", f"{new}.downsample.0.weight",
                                     (out_channels, in_channels, 1, 1)))
                entries += _batch_norm(f"{original}.downsample.1", f"{new}.downsample.1", out_channels)
            in_channels = out_channels
    return entries


def _encoder_entries(prefix, g):
    h, i = g.hidden_size, g.intermediate_size
    entries = []
    for n in range(g.num_hidden_layers):
        layer, new = f"{prefix}encoder.layer.{n}", f"medvill.encoder.layers.{n}"
        for name in ("query", "key", "value"):
            entries += _linear(f"{layer}.attention.self.{name}", f"{new}.attention.{name}", h, h)
        entries += _linear(f"{layer}.attention.output.dense", f"{new}.attention.output", h, h)
        entries += _layer_norm(f"{layer}.attention.output.LayerNorm", f"{new}.attention_layer_norm", h)
        entries += _linear(f"{layer}.intermediate.dense", f"{new}.intermediate", i, h)
        entries += _linear(f"{layer}.output.dense", f"{new}.output", h, i)
        entries += _layer_norm(f"{layer}.output.LayerNorm", f"{new}.output_layer_norm", h)
    return [*entries, *_linear(f"{prefix}pooler.dense", "medvill.pooler.dense", h, h)]


def _vocabulary_head(original, target, g, word):
    return [*_linear(f"{original}.transform.dense", f"{target}.transform.dense", g.hidden_size, g.hidden_size),
            *_layer_norm(f"{original}.transform.LayerNorm", f"{target}.transform.layer_norm", g.hidden_size),
            Entry(f"{original}.bias", f"{target}.bias", (g.vocab_size,)),
            Entry(f"{original}.decoder.weight", f"{target}.decoder.weight", (g.vocab_size, g.hidden_size), "tied", word)]


def _head_entries(kind, g):
    h = g.hidden_size
    word = f"{KIND_SPECS[kind].prefix}txt_embeddings.word_embeddings.weight"
    if kind == "pretraining":
        return [*_vocabulary_head("mlm.predictions", "mlm_head", g, word), *_linear("itm.linear", "itm_head", 2, h)]
    if kind == "retrieval":
        return _linear("itm.linear", "itm_head", 2, h)
    if kind == "report_generation":
        return _vocabulary_head("cls.predictions", "mlm_head", g, word)
    if kind == "vqa":
        return [*_linear("ans_classifier.0", "answer_classifier.0", 2 * h, h),
                *_linear("ans_classifier.2", "answer_classifier.2", g.num_labels, 2 * h)]
    # classification: MultimodalBertEncoder also builds `enc.clf`, which its forward never calls
    return [*_linear("clf", "classifier", g.num_labels, h),
            Entry("enc.clf.weight", None, (g.num_labels, h), "unused"),
            Entry("enc.clf.bias", None, (g.num_labels,), "unused")]


# --------------------------------------------------------------------------------------------------
# Reading a checkpoint and inferring its geometry
# --------------------------------------------------------------------------------------------------


def load_original_checkpoint(path) -> tuple[dict, dict | None]:
    """(state dict, the config.json next to it or None). Accepts a weights file or its directory."""
    path = Path(path)
    config = None
    if path.is_dir():
        found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds none of {WEIGHT_FILES}; pass the weights file itself with --checkpoint.")
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        return load_file(path), config
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (pre-zip) serialisation cannot be memory-mapped
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    return unwrap_state_dict(loaded, path), config


def unwrap_state_dict(loaded, path="checkpoint"):
    """cls.py saves `{"epoch", "state_dict", "optimizer", ...}`; the other scripts save the state dict itself."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise MedViLLCheckpointError(f"{path} is not a state dict (a mapping of names to tensors).")
    return dict(loaded)


def infer_geometry(kind: str, state_dict: dict) -> Geometry:
    """Sizes read off the weights, so tiny and base checkpoints convert alike."""
    p = KIND_SPECS[kind].prefix

    def shape(key):
        if key not in state_dict:
            raise MedViLLCheckpointError(
                f"checkpoint has no key {key!r}, which every MedViLL {kind} checkpoint has.{_kind_hint(kind, state_dict)}")
        return tuple(state_dict[key].shape)

    vocab_size, hidden_size = shape(f"{p}txt_embeddings.word_embeddings.weight")
    layers = _indices(state_dict, rf"{re.escape(p)}encoder\.layer\.(\d+)\.")
    resnet = f"{p}img_encoder.model"
    depths = tuple(len(_indices(state_dict, rf"{re.escape(resnet)}\.{RESNET_STAGE_OFFSET + s}\.(\d+)\.conv1\.weight"))
                   for s in range(4))
    if not layers or 0 in depths:
        raise MedViLLCheckpointError(
            f"checkpoint lacks {p}encoder.layer.* or one of the four ResNet stages {resnet}.4-7.*."
            f"{_kind_hint(kind, state_dict)}")
    num_labels = None
    if kind == "vqa":
        num_labels = shape("ans_classifier.2.weight")[0]
    elif kind == "classification":
        num_labels = shape("clf.weight")[0]
    return Geometry(
        vocab_size=vocab_size, hidden_size=hidden_size,
        max_position_embeddings=shape(f"{p}txt_embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape(f"{p}txt_embeddings.token_type_embeddings.weight")[0],
        intermediate_size=shape(f"{p}encoder.layer.0.intermediate.dense.weight")[0],
        num_hidden_layers=len(layers),
        resnet_stem_width=shape(f"{resnet}.0.weight")[0],
        resnet_widths=tuple(shape(f"{resnet}.{RESNET_STAGE_OFFSET + s}.0.conv1.weight")[0] for s in range(4)),
        resnet_depths=depths, num_labels=num_labels)


def _indices(state_dict, pattern):
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


def _kind_hint(kind, state_dict):
    keys = list(state_dict)
    markers = {"pretraining": "mlm.", "vqa": "ans_classifier.", "report_generation": "cls.predictions.",
               "classification": "clf.", "retrieval": "itm."}
    guesses = [k for k, marker in markers.items() if any(key.startswith(marker) for key in keys)]
    if "pretraining" in guesses and "retrieval" in guesses:
        guesses.remove("retrieval")
    if guesses and kind not in guesses:
        return f" Its keys look like a {' or '.join(guesses)} checkpoint: check --kind."
    return ""


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


def check_layout(kind: str, state_dict: dict, table: list[Entry]) -> None:
    """The exact key set (optional buffers aside) and every shape; errors name the offending keys."""
    expected = {e.original for e in table if e.role != "optional"}
    allowed = expected | {e.original for e in table if e.role == "optional"}
    missing = sorted(expected - state_dict.keys())
    unexpected = sorted(state_dict.keys() - allowed)
    if missing or unexpected:
        raise MedViLLCheckpointError(
            f"not the original MedViLL {kind} layout: missing keys {missing}, unexpected keys {unexpected}."
            f"{_kind_hint(kind, state_dict)}")
    wrong = [f"{e.original}: {tuple(state_dict[e.original].shape)} (expected {e.shape})"
             for e in table if e.original in state_dict and tuple(state_dict[e.original].shape) != e.shape]
    if wrong:
        raise MedViLLCheckpointError(f"unexpected tensor shapes in the {kind} checkpoint: {wrong}.")
    differing = [e.original for e in table if e.role == "shared" and not torch.equal(state_dict[e.original],
                                                                                         state_dict[e.source])]
    if differing:
        raise MedViLLCheckpointError(
            f"{differing} should repeat the txt_embeddings tensors (one shared module in the original model) but differ.")


def build_config(kind: str, geometry: Geometry, original_config: dict | None, image_size: int,
                 num_pretraining_image_tokens: int | None, attention_mask_type: str, tie_word_embeddings: bool,
                 id2label: dict | None) -> MedViLLConfig:
    """MedViLLConfig reproducing the original numerics of `kind`."""
    bert = dict(BERT_BASE)
    if original_config is not None:
        bert.update({k: original_config[k] for k in BERT_FIELDS if k in original_config})
    elif geometry.hidden_size != BERT_BASE["hidden_size"]:
        raise MedViLLCheckpointError(
            f"hidden size {geometry.hidden_size} is not BERT-base's: pass the original config.json with --config "
            "(the number of attention heads cannot be read off the weights).")
    for name in SHAPE_FIELDS:
        if original_config is not None and name in original_config and original_config[name] != getattr(geometry, name):
            raise MedViLLCheckpointError(
                f"config.json says {name}={original_config[name]} but the weights have {getattr(geometry, name)}.")
        bert[name] = getattr(geometry, name)
    spec = KIND_SPECS[kind]
    if not spec.transformers_bert:
        bert["layer_norm_eps"] = VENDORED_LAYER_NORM_EPS  # config.json's 1e-12 is ignored by the vendored code
    grid_cells = (image_size // 32) ** 2
    if num_pretraining_image_tokens is None:
        num_pretraining_image_tokens = min(180, grid_cells)
    labels = {}
    if geometry.num_labels is not None:
        id2label = id2label or {i: f"LABEL_{i}" for i in range(geometry.num_labels)}
        if len(id2label) != geometry.num_labels:
            raise MedViLLCheckpointError(f"{len(id2label)} label names for a head with {geometry.num_labels} outputs.")
        labels = {"id2label": id2label, "label2id": {name: int(i) for i, name in id2label.items()}}
    return MedViLLConfig(
        **bert, **spec.quirks, **labels,
        head_layer_norm_eps=VENDORED_LAYER_NORM_EPS,
        image_size=image_size,
        resnet_stem_width=geometry.resnet_stem_width,
        resnet_widths=list(geometry.resnet_widths),
        resnet_depths=list(geometry.resnet_depths),
        num_pretraining_image_tokens=num_pretraining_image_tokens,
        attention_mask_type=attention_mask_type,
        tie_word_embeddings=tie_word_embeddings,
        architectures=[spec.model_class.__name__],
    )


def convert_state_dict(state_dict: dict, kind: str, original_config: dict | None = None, image_size: int = 512,
                       num_pretraining_image_tokens: int | None = None, attention_mask_type: str = "bar",
                       id2label: dict | None = None):
    """Original state dict -> medvlp-hf model (eval mode) of the head for `kind`. The model takes the
    checkpoint's fp32 tensors as its parameters (no copy): do not modify `state_dict` afterwards."""
    if kind not in KIND_SPECS:
        raise ValueError(f"kind {kind!r}: choose one of {KINDS}.")
    geometry = infer_geometry(kind, state_dict)
    table = original_key_table(kind, geometry)
    check_layout(kind, state_dict, table)
    tied = [e for e in table if e.role == "tied"]
    tie = all(torch.equal(state_dict[e.original], state_dict[e.source]) for e in tied)
    mapped = {e.target: _as_dtype(state_dict[e.original], e.dtype) for e in table
              if e.role == "weight" or (e.role == "tied" and not tie)}
    config = build_config(kind, geometry, original_config, image_size, num_pretraining_image_tokens,
                          attention_mask_type, tie, id2label)
    # Built without memory and filled with the checkpoint's own tensors (assign): no second copy of the weights.
    with torch.device("meta"):
        model = KIND_SPECS[kind].model_class(config)
    missing, unexpected = model.load_state_dict(mapped, strict=False, assign=True)
    model.tie_weights()
    tied_targets = {e.target for e in tied} if tie else set()
    unfilled = sorted(set(missing) - tied_targets) + [name for name, t in model.state_dict().items() if t.is_meta]
    if unfilled or unexpected:
        raise RuntimeError(
            f"medvlp-hf {type(model).__name__} and the conversion table disagree: not filled {unfilled}, "
            f"unknown {sorted(unexpected)}. Update original_key_table in {SCRIPT}.")
    return model.eval()


def _as_dtype(tensor, dtype):
    """fp32 weights (the original trains in fp32); other dtypes are cast, fp32 tensors are used as they are."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def build_processor(config: MedViLLConfig, vocab_file=None) -> MedViLLProcessor:
    """The MedViLL processor at the model's image size, with a vocabulary that fits the word table."""
    vocab_file = vocab_file or bert_base_uncased_vocab_file()
    processor = MedViLLProcessor.from_vocab_file(vocab_file, image_size=config.image_size)
    if len(processor.tokenizer) != config.vocab_size:
        raise MedViLLCheckpointError(
            f"the tokenizer vocabulary {vocab_file} has {len(processor.tokenizer)} tokens but the checkpoint's word "
            f"table has {config.vocab_size}; pass the matching vocab.txt with --vocab_file.")
    return processor


def render_card(model, checkpoint: str, command: str, dataset: str, repo_id: str | None = None):
    """Card with the conversion provenance (source file and hash, original commit, exact command)."""
    digest = _sha256(checkpoint)
    source = f"{Path(checkpoint).name} (sha256 {digest[:16]}…, SuperSupermoon/MedViLL@{ORIGINAL_COMMIT})" if digest \
        else f"{Path(checkpoint).name} (SuperSupermoon/MedViLL@{ORIGINAL_COMMIT})"
    return render_model_card(
        "medvill", architecture=type(model).__name__, datasets=[dataset], repo_id=repo_id,
        conversion={"source_checkpoint": source, "script": SCRIPT, "command": command,
                    "parity_status": "not verified", "max_abs_diffs": {}})


def _sha256(path):
    path = Path(path)
    if path.is_dir():
        path = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="original weights file or its directory")
    parser.add_argument("--config", help="the original BERT config.json (default: the one in the checkpoint "
                                         "directory, else BERT-base)")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--out", required=True, help="output directory (save_pretrained)")
    parser.add_argument("--push_to_hub", metavar="REPO", help="also upload to this Hub repository")
    parser.add_argument("--image_size", type=int, default=512, help="input resolution the model was trained at")
    parser.add_argument("--num_pretraining_image_tokens", type=int,
                        help="grid cells sampled per pre-training forward (default min(180, grid cells))")
    parser.add_argument("--attention_mask_type", default="bar", choices=["bar", "bidirectional", "s2s", "bi_s2s",
                                                                         "non_crossing"],
                        help="pre-training mask of the released variant (MedViLL = bar)")
    parser.add_argument("--label_names", help="JSON list of answer / class names in head order (e.g. the "
                                              "original cache/trainval_label2ans.pkl list, written as JSON)")
    parser.add_argument("--vocab_file", help="WordPiece vocab.txt (default: the bundled bert-base-uncased)")
    parser.add_argument("--dataset", help="training data named on the model card (default per kind)")
    parser.add_argument("--no_card", action="store_true", help="do not write README.md")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    state_dict, directory_config = load_original_checkpoint(args.checkpoint)
    original_config = json.loads(Path(args.config).read_text()) if args.config else directory_config
    id2label = None
    if args.label_names:
        id2label = dict(enumerate(json.loads(Path(args.label_names).read_text())))
    model = convert_state_dict(state_dict, args.kind, original_config, args.image_size,
                               args.num_pretraining_image_tokens, args.attention_mask_type, id2label)
    del state_dict
    processor = build_processor(model.config, args.vocab_file)
    out = Path(args.out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if not args.no_card:
        command = shlex.join(["python", SCRIPT, *(sys.argv[1:] if argv is None else argv)])
        save_model_card(render_card(model, args.checkpoint, command, args.dataset or DEFAULT_DATASETS[args.kind],
                                    args.push_to_hub), out)
    if args.push_to_hub:
        push_to_hub(out, args.push_to_hub)
    print(f"converted {args.kind} checkpoint {args.checkpoint} -> {out} ({type(model).__name__})")
    return out


if __name__ == "__main__":
    main()
