"""Convert the authors' MedViLL checkpoints (github.com/SuperSupermoon/MedViLL, commit dd51e72) to medvlp-hf.

    medvlp convert medvill --checkpoint PATH --kind KIND --out DIR [--reference RECORD_DIR]
    (or, from a checkout: python conversion/convert_medvill_original_checkpoint.py ...)

PATH is the file the original code wrote (read with `torch.load(weights_only=True)`, or safetensors) or its
directory (`pytorch_model.bin`/`model.safetensors` + `config.json`):
- pretraining: `main.py` -> `save_pretrained` dir of `MedViLL` (keys `enc.*`, `mlm.*`, `itm.*`);
- vqa / report_generation: `finetune.py` -> `model.{epoch}.bin` of the vendored `BertForPreTrainingLossMask`
  (no prefix; `ans_classifier.*` or `cls.*`); pass the `config.json` that sits next to the pretraining weights;
- retrieval: `retrieval.py` -> `save_pretrained` dir of `CXRBertForRetrieval` (`enc.*`, `itm.*`);
- classification: `cls.py` -> `checkpoint.pt`/`model_best.pt` (`{"state_dict": MultimodalBertClf weights, ...}`).

Every original key is looked up in an explicit table (`original_key_table`): renamed, recognised as a duplicate of
a shared module (checked equal, then dropped), the tied MLM decoder (dropped when equal to the word embeddings), an
unused module, or an optional buffer; anything else, or anything absent, is an error that names the key. The config
fields that reproduce the original numerics (position/segment scheme, LayerNorm eps, padding segment, BAR padding
visibility, VQA pooling) are set per kind (`KIND_SPECS`).

Parity: `--reference DIR` is a record the parity harness (`conversion/parity/medvill/`, which runs the authors' code)
made on the same checkpoint file; the converted model must reproduce it (`torch.testing.assert_close(rtol=1e-5,
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

SCRIPT = "medvlp_hf/conversion/convert_medvill_original_checkpoint.py"
ORIGINAL_REPOSITORY = "SuperSupermoon/MedViLL"
ORIGINAL_COMMIT = "dd51e72"
# The repository's config.json (downstream_task/report_generation_and_vqa/config.json): BERT-base.
BERT_BASE = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12,
}
# Config fields that can be read off the weights (checked against config.json when both exist).
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
                "type_vocab_size")
VENDORED_LAYER_NORM_EPS = 1e-5  # BertLayerNorm(..., eps=1e-5) hard-coded in the vendored pytorch_pretrained_bert
RESNET_STAGE_OFFSET = 4  # nn.Sequential(*resnet.children()[:-2]): 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4..7 layer1..4
DEFAULT_DATASETS = {"pretraining": "mimic_cxr", "vqa": "vqa_rad", "report_generation": "mimic_cxr",
                    "retrieval": "mimic_cxr", "classification": "mimic_cxr"}
PARITY_VERIFIED_BY_TESTS = (
    "what medvlp-hf's tests do verify for this converter: every kind against the authors' code on tiny random "
    "checkpoints (every output in full), and at the released geometry (ResNet-50, 512x512 images, 768-wide BERT "
    "layers, 2 of them; vocabulary logits through argmax, top-5, logsumexp and every 97th entry), within rtol 1e-5 / "
    "atol 1e-4 with identical argmax and tokens, on the default (contiguous) ResNet path; the opt-in channels-last "
    "path (config.resnet_channels_last) puts a few of 1.7M full-vocabulary logits up to 1.12x over that bound")


@dataclass(frozen=True)
class KindSpec:
    auto_class: str  # the Auto class that maps a MedViLL config to this kind's head
    prefix: str  # of the backbone keys
    transformers_bert: bool  # built on transformers' BertModel (eps from config.json, position_ids buffer)
    image_word_embeddings: bool  # img_embeddings also holds the shared word table
    quirks: dict = field(default_factory=dict)


KIND_SPECS = {
    "pretraining": KindSpec("AutoModelForPreTraining", "enc.", True, False, dict(
        position_scheme="pretraining", padding_token_type_id=1, prefix_attends_text_padding=True,
        freeze_image_encoder=True)),
    "retrieval": KindSpec("AutoModelForRetrieval", "enc.", True, False, dict(
        position_scheme="pretraining", padding_token_type_id=1, freeze_image_encoder=True)),
    "classification": KindSpec("AutoModelForImageTextClassification", "enc.", True, True, dict(
        position_scheme="consecutive", padding_token_type_id=0, freeze_image_encoder=False)),
    "vqa": KindSpec("AutoModelForVisualQuestionAnswering", "", False, True, dict(
        position_scheme="downstream", padding_token_type_id=0, vqa_pooling="cls_sep_product",
        freeze_image_encoder=True)),
    "report_generation": KindSpec("AutoModelForImageTextToText", "", False, True, dict(
        position_scheme="downstream", padding_token_type_id=0, freeze_image_encoder=True)),
}
KINDS = tuple(KIND_SPECS)


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


def original_key_table(kind: str, geometry: Geometry) -> list:
    """Every key of the original `kind` checkpoint (`KeyEntry`: shape, medvlp-hf name, role)."""
    spec = KIND_SPECS[kind]
    return [*_embedding_entries(spec, geometry), *_resnet_entries(spec.prefix, geometry),
            *_encoder_entries(spec.prefix, geometry), *_head_entries(kind, geometry)]


def _embedding_entries(spec, g):
    txt, img, emb = f"{spec.prefix}txt_embeddings", f"{spec.prefix}img_embeddings", "medvill.embeddings"
    tables = {"word_embeddings": g.vocab_size, "position_embeddings": g.max_position_embeddings,
              "token_type_embeddings": g.type_vocab_size}
    entries = [utils.KeyEntry(f"{txt}.{name}.weight", f"{emb}.{name}.weight", (rows, g.hidden_size), module="embedding")
               for name, rows in tables.items()]
    entries += utils.layer_norm_entries(f"{txt}.LayerNorm", f"{emb}.layer_norm", g.hidden_size)
    entries += utils.linear_entries(f"{img}.img_embeddings", f"{emb}.image_projection", g.hidden_size,
                                    g.image_feature_size)
    shared = ["position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"]
    if spec.image_word_embeddings:
        shared.append("word_embeddings.weight")
    by_name = {e.original: e for e in entries}
    entries += [utils.KeyEntry(f"{img}.{name}", None, by_name[f"{txt}.{name}"].shape, "shared", f"{txt}.{name}",
                               module=by_name[f"{txt}.{name}"].module) for name in shared]
    if spec.transformers_bert:
        entries.append(utils.KeyEntry(f"{txt}.position_ids", None, (1, g.max_position_embeddings), "optional",
                                      dtype=torch.int64, module="buffer"))
    return entries


def _resnet_entries(prefix, g):
    resnet, target = f"{prefix}img_encoder.model", "medvill.image_encoder"
    entries = [utils.KeyEntry(f"{resnet}.0.weight", f"{target}.conv1.weight", (g.resnet_stem_width, 3, 7, 7), module="conv"),
               *utils.batch_norm_entries(f"{resnet}.1", f"{target}.bn1", g.resnet_stem_width)]
    in_channels = g.resnet_stem_width
    for stage, (width, depth) in enumerate(zip(g.resnet_widths, g.resnet_depths)):
        for block in range(depth):
            original = f"{resnet}.{RESNET_STAGE_OFFSET + stage}.{block}"
            new = f"{target}.layer{stage + 1}.{block}"
            out_channels = 4 * width
            convs = {"1": (width, in_channels, 1, 1), "2": (width, width, 3, 3), "3": (out_channels, width, 1, 1)}
            for i, shape in convs.items():
                entries.append(utils.KeyEntry(f"{original}.conv{i}.weight", f"{new}.conv{i}.weight", shape, module="conv"))
                entries += utils.batch_norm_entries(f"{original}.bn{i}", f"{new}.bn{i}", shape[0])
            if block == 0:
                entries.append(utils.KeyEntry(f"{original}.downsample.0.weight", f"{new}.downsample.0.weight",
                                              (out_channels, in_channels, 1, 1), module="conv"))
                entries += utils.batch_norm_entries(f"{original}.downsample.1", f"{new}.downsample.1", out_channels)
            in_channels = out_channels
    return entries


def _encoder_entries(prefix, g):
    h, i = g.hidden_size, g.intermediate_size
    entries = []
    for n in range(g.num_hidden_layers):
        layer, new = f"{prefix}encoder.layer.{n}", f"medvill.encoder.layers.{n}"
        for name in ("query", "key", "value"):
            entries += utils.linear_entries(f"{layer}.attention.self.{name}", f"{new}.attention.{name}", h, h)
        entries += utils.linear_entries(f"{layer}.attention.output.dense", f"{new}.attention.output", h, h)
        entries += utils.layer_norm_entries(f"{layer}.attention.output.LayerNorm", f"{new}.attention_layer_norm", h)
        entries += utils.linear_entries(f"{layer}.intermediate.dense", f"{new}.intermediate", i, h)
        entries += utils.linear_entries(f"{layer}.output.dense", f"{new}.output", h, i)
        entries += utils.layer_norm_entries(f"{layer}.output.LayerNorm", f"{new}.output_layer_norm", h)
    return [*entries, *utils.linear_entries(f"{prefix}pooler.dense", "medvill.pooler.dense", h, h)]


def _vocabulary_head(original, target, g, word):
    return [*utils.linear_entries(f"{original}.transform.dense", f"{target}.transform.dense", g.hidden_size, g.hidden_size),
            *utils.layer_norm_entries(f"{original}.transform.LayerNorm", f"{target}.transform.layer_norm", g.hidden_size),
            utils.KeyEntry(f"{original}.bias", f"{target}.bias", (g.vocab_size,)),
            utils.KeyEntry(f"{original}.decoder.weight", f"{target}.decoder.weight", (g.vocab_size, g.hidden_size),
                           "tied", word, module="embedding")]


def _head_entries(kind, g):
    h = g.hidden_size
    word = f"{KIND_SPECS[kind].prefix}txt_embeddings.word_embeddings.weight"
    if kind == "pretraining":
        return [*_vocabulary_head("mlm.predictions", "mlm_head", g, word), *utils.linear_entries("itm.linear", "itm_head", 2, h)]
    if kind == "retrieval":
        return utils.linear_entries("itm.linear", "itm_head", 2, h)
    if kind == "report_generation":
        return _vocabulary_head("cls.predictions", "mlm_head", g, word)
    if kind == "vqa":
        return [*utils.linear_entries("ans_classifier.0", "answer_classifier.0", 2 * h, h),
                *utils.linear_entries("ans_classifier.2", "answer_classifier.2", g.num_labels, 2 * h)]
    # classification: MultimodalBertEncoder also builds `enc.clf`, which its forward never calls
    return [*utils.linear_entries("clf", "classifier", g.num_labels, h),
            utils.KeyEntry("enc.clf.weight", None, (g.num_labels, h), "unused"),
            utils.KeyEntry("enc.clf.bias", None, (g.num_labels,), "unused")]


def seeded_checkpoint(kind: str, geometry: Geometry, seed: int) -> dict:
    """An original-layout `kind` checkpoint with seeded random values (`conversion_utils.seeded_state_dict`), as
    the parity fixtures use; keys shared by two kinds get the same values for the same seed."""
    return utils.seeded_state_dict(original_key_table(kind, geometry), seed)


# --------------------------------------------------------------------------------------------------
# Reading a checkpoint's geometry
# --------------------------------------------------------------------------------------------------


def infer_geometry(kind: str, state_dict: dict) -> Geometry:
    """Sizes read off the weights, so tiny and base checkpoints convert alike."""
    p = KIND_SPECS[kind].prefix

    def shape(key):
        if key not in state_dict:
            raise utils.CheckpointError(
                f"checkpoint has no key {key!r}, which every MedViLL {kind} checkpoint has.{_kind_hint(kind, state_dict)}")
        return tuple(state_dict[key].shape)

    vocab_size, hidden_size = shape(f"{p}txt_embeddings.word_embeddings.weight")
    layers = _indices(state_dict, rf"{re.escape(p)}encoder\.layer\.(\d+)\.")
    resnet = f"{p}img_encoder.model"
    depths = tuple(len(_indices(state_dict, rf"{re.escape(resnet)}\.{RESNET_STAGE_OFFSET + s}\.(\d+)\.conv1\.weight"))
                   for s in range(4))
    if not layers or 0 in depths:
        raise utils.CheckpointError(
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


def build_config(kind: str, geometry: Geometry, original_config: dict | None, image_size: int,
                 num_pretraining_image_tokens: int | None, attention_mask_type: str, tie_word_embeddings: bool,
                 id2label: dict | None):
    """The MedViLL config (found through AutoConfig) reproducing the original numerics of `kind`."""
    bert = dict(BERT_BASE)
    if original_config is not None:
        bert.update({k: original_config[k] for k in BERT_BASE if k in original_config})
    elif geometry.hidden_size != BERT_BASE["hidden_size"]:
        raise utils.CheckpointError(
            f"hidden size {geometry.hidden_size} is not BERT-base's: pass the original config.json with --config "
            "(the number of attention heads cannot be read off the weights).")
    for name in SHAPE_FIELDS:
        if original_config is not None and name in original_config and original_config[name] != getattr(geometry, name):
            raise utils.CheckpointError(
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
            raise utils.CheckpointError(f"{len(id2label)} label names for a head with {geometry.num_labels} outputs.")
        labels = {"id2label": id2label, "label2id": {name: int(i) for i, name in id2label.items()}}
    return utils.config_for_model(
        "medvill", **bert, **spec.quirks, **labels,
        head_layer_norm_eps=VENDORED_LAYER_NORM_EPS,
        image_size=image_size,
        resnet_stem_width=geometry.resnet_stem_width,
        resnet_widths=list(geometry.resnet_widths),
        resnet_depths=list(geometry.resnet_depths),
        num_pretraining_image_tokens=num_pretraining_image_tokens,
        attention_mask_type=attention_mask_type,
        tie_word_embeddings=tie_word_embeddings,
    )


def head_auto_class(kind):
    """transformers' Auto class of `kind`'s head, or medvlp-hf's where transformers has none."""
    import transformers

    import medvlp_hf

    name = KIND_SPECS[kind].auto_class
    return getattr(transformers, name, None) or getattr(medvlp_hf, name)


def convert_state_dict(state_dict: dict, kind: str, original_config: dict | None = None, image_size: int = 512,
                       num_pretraining_image_tokens: int | None = None, attention_mask_type: str = "bar",
                       id2label: dict | None = None):
    """Original state dict -> medvlp-hf model (eval mode) of the head for `kind`. The model takes the
    checkpoint's fp32 tensors as its parameters (no copy): do not modify `state_dict` afterwards."""
    if kind not in KIND_SPECS:
        raise ValueError(f"kind {kind!r}: choose one of {KINDS}.")
    geometry = infer_geometry(kind, state_dict)
    table = original_key_table(kind, geometry)
    utils.check_key_table(state_dict, table, f"original MedViLL {kind}", _kind_hint(kind, state_dict))
    tie = utils.tied_entries_match(state_dict, table)
    config = build_config(kind, geometry, original_config, image_size, num_pretraining_image_tokens,
                          attention_mask_type, tie, id2label)
    model = utils.build_on_meta(head_auto_class(kind), config)
    model.config.architectures = [type(model).__name__]
    tied_targets = [e.target for e in table if e.role == "tied"] if tie else []
    return utils.fill_model(model, utils.renamed_weights(state_dict, table, keep_tied=not tie), tied_targets,
                            f" Update original_key_table in {SCRIPT}.")


# --------------------------------------------------------------------------------------------------
# Parity cases: what a record runs for each kind
# --------------------------------------------------------------------------------------------------

PARITY_BATCH = 2
PARITY_TEXT_LENGTH = 8  # words per text stream, before the two [SEP]
PARITY_DECODING_STEPS = 8
FIRST_WORD_ID = 104  # after [PAD], [unused*], [UNK], [CLS], [SEP], [MASK] in the BERT vocabulary


def vocabulary_reductions(config):
    """Vocabulary-sized logits: kept whole for small vocabularies, else argmax + top-5 + logsumexp + every 97th."""
    return ["full"] if config.vocab_size <= 1000 else ["argmax", "top5", "logsumexp", "stride97"]


def parity_cases(kind, config) -> list:
    """The cases a `kind` record runs (inputs named as the head's keyword arguments)."""
    text = {name: name for name in ("input_ids", "attention_mask", "pixel_values")}
    vocabulary = vocabulary_reductions(config)
    if kind == "pretraining":
        return [parity.ParityCase("mlm_itm", "forward", {**text, "image_token_indices": "image_token_indices"},
                                  {"logits": {"field": "logits", "reduce": vocabulary},
                                   "itm_logits": {"field": "itm_logits", "reduce": ["full"]}})]
    if kind == "report_generation":
        return [parity.ParityCase("masked_lm", "forward", text, {"logits": {"field": "logits", "reduce": vocabulary}}),
                parity.ParityCase("greedy", "generate", {"pixel_values": "pixel_values"},
                                  {"sequences": {"field": "sequences", "reduce": ["full"]},
                                   "logits": {"field": "logits", "reduce": vocabulary}},
                                  {"max_new_tokens": PARITY_DECODING_STEPS, "do_sample": False, "num_beams": 1,
                                   "output_logits": True, "return_dict_in_generate": True})]
    if kind == "retrieval":
        return [parity.ParityCase("matching", "forward", text, {"logits": {"field": "logits", "reduce": ["full"]},
                                                                "scores": {"field": "scores", "reduce": ["full"]}})]
    name = "answers" if kind == "vqa" else "diagnosis"
    return [parity.ParityCase(name, "forward", text, {"logits": {"field": "logits", "reduce": ["full", "argmax"]}})]


def parity_inputs(kind, config, seed=0) -> dict:
    """Seeded inputs of `parity_cases(kind, config)` (record tensor names). Text streams are `[SEP] w.. [SEP]`
    with 8 and 5 words (the second padded), except in report generation, which masks the 2nd and 4th of 8 words
    in both (the released s2s mask lets padding rows see nothing of the text, so their outputs are not comparable).
    Pixel values are N(0, 1) rounded to float16, which the record stores (half the size; the model computes in
    float32)."""
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    pixel_values = torch.randn(PARITY_BATCH, config.num_channels, size, size, generator=generator).half()
    lengths = [PARITY_TEXT_LENGTH, PARITY_TEXT_LENGTH - (0 if kind == "report_generation" else 3)]
    input_ids = torch.full((PARITY_BATCH, PARITY_TEXT_LENGTH + 2), config.pad_token_id)
    for row, length in enumerate(lengths):
        words = torch.randint(FIRST_WORD_ID, config.vocab_size, (length,), generator=generator)
        input_ids[row, : length + 2] = torch.cat([torch.tensor([config.sep_token_id]), words,
                                                  torch.tensor([config.sep_token_id])])
    attention_mask = (torch.arange(input_ids.shape[1])[None] < torch.tensor(lengths)[:, None] + 2).long()
    if kind == "report_generation":
        input_ids[:, [2, 4]] = config.mask_token_id
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
    if kind == "pretraining":
        cells = torch.randperm(config.num_image_tokens, generator=generator)[: config.num_pretraining_image_tokens]
        tensors["image_token_indices"] = cells.sort().values
    return {case.input_key(argument): tensors[name] for case in parity_cases(kind, config)
            for argument, name in case.inputs.items()}


def parity_config_fields(kind, config) -> dict:
    """Config fields a reference depends on beyond the weights (checked before a record is run)."""
    return {"attention_mask_type": config.attention_mask_type} if kind == "pretraining" else {}


def parity_record(model, kind, reference_dir, checkpoint_sha256):
    """The record saved with the model: the harness's `reference_dir`, checked (ParityRecordError, or
    ParityMismatchError listing the outputs that differ), or, without one, the model's own outputs on `parity_inputs`."""
    if reference_dir is None:
        record = parity.self_record(model, parity_cases(kind, model.config), parity_inputs(kind, model.config),
                                    producer=SCRIPT, checkpoint_sha256=checkpoint_sha256)
        record.config = parity_config_fields(kind, model.config)
        record.reference["note"] = PARITY_VERIFIED_BY_TESTS
        return record
    return parity.reference_record(model, reference_dir, checkpoint_sha256, f"--kind {kind}")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def build_processor(config, tokenizer_dir=None):
    """The MedViLL processor at the model's image size: the bundled bert-base-uncased tokenizer, or the
    `vocab.txt` in `tokenizer_dir`; its vocabulary must fit the word table."""
    import medvlp_hf

    if tokenizer_dir is None:
        processor = medvlp_hf.default_processor(config)
    else:
        processor = utils.processor_class(config).from_model_config(config, tokenizer_dir)
    if len(processor.tokenizer) != config.vocab_size:
        raise utils.CheckpointError(
            f"the tokenizer has {len(processor.tokenizer)} tokens but the checkpoint's word table has "
            f"{config.vocab_size}; pass the folder of the matching vocab.txt with --tokenizer_dir.")
    return processor


def build_parser(prog=None):
    parser = utils.converter_parser(__doc__, prog)
    parser.add_argument("--checkpoint", required=True, help="original weights file or its directory")
    parser.add_argument("--kind", required=True, choices=KINDS, help="which original model wrote the checkpoint")
    parser.add_argument("--config", help="the original BERT config.json (default: the one in the checkpoint "
                                         "directory, else BERT-base)")
    parser.add_argument("--image_size", type=int, default=512, help="input resolution the model was trained at")
    parser.add_argument("--num_pretraining_image_tokens", type=int,
                        help="grid cells sampled per pre-training forward (default min(180, grid cells))")
    parser.add_argument("--attention_mask_type", default="bar", choices=["bar", "bidirectional", "s2s", "bi_s2s",
                                                                         "non_crossing"],
                        help="pre-training mask of the released variant (MedViLL = bar)")
    parser.add_argument("--label_names", help="JSON file: list of answer / class names in head order (e.g. the "
                                              "original cache/trainval_label2ans.pkl list, written as JSON)")
    parser.add_argument("--tokenizer_dir", help="folder with the WordPiece vocab.txt (default: the bundled "
                                                "bert-base-uncased)")
    utils.add_output_arguments(parser, "medvill")
    return parser


def main(argv=None, prog=None):
    """Convert, check parity, and save; returns the output folder (nothing is left behind when a step fails)."""
    return utils.run_converter(build_parser, convert, argv, prog)


def convert(args, staging, command):
    """The conversion `main` runs into the folder `staging`; returns the model and its parity record."""
    loaded = utils.load_checkpoint(args.checkpoint)
    original_config = json.loads(Path(args.config).read_text()) if args.config else loaded.config
    id2label = dict(enumerate(json.loads(Path(args.label_names).read_text()))) if args.label_names else None
    model = convert_state_dict(loaded.state_dict, args.kind, original_config, args.image_size,
                               args.num_pretraining_image_tokens, args.attention_mask_type, id2label)
    checkpoint_sha256 = utils.sha256_files(loaded.files)
    record = parity_record(model, args.kind, args.reference, checkpoint_sha256)
    provenance = utils.conversion_provenance(
        args.checkpoint, checkpoint_sha256, f"{ORIGINAL_REPOSITORY}@{ORIGINAL_COMMIT}", SCRIPT, command,
        [args.dataset or DEFAULT_DATASETS[args.kind]])
    model.save_pretrained(staging)
    utils.finish_conversion(staging, record, build_processor(model.config, args.tokenizer_dir), provenance,
                            not args.no_card, args.push_to_hub)
    return model, record


if __name__ == "__main__":
    main()
