"""Steps every original-checkpoint converter shares; a converter (`convert_<model>_original_checkpoint.py`) holds
only its key table and what is special to its model.

- Reading the authors' files without running their code: `torch.load(weights_only=True)` (memory-mapped when the
  file allows it), safetensors, sharded and `save_pretrained` directories, and the containers training scripts
  wrap state dicts in (`{"model": sd, "optimizer": ...}` of ALBEF/BLIP/M2I2/MISS, `{"state_dict": sd}` of Lightning).
- The key table: one `KeyEntry` per original key, checked exactly (missing, unexpected, shapes, shared copies), so
  a wrong file fails with the names of the keys at fault, never with a silently half-loaded model.
- The medvlp-hf head is built on the meta device through its Auto class and takes the checkpoint's own tensors
  (`load_state_dict(assign=True)`): no second copy in memory, and nothing may stay unfilled.
- Seeded original-layout checkpoints (from the key table alone) for parity fixtures and tests.
- Hashes, the model card with provenance and parity, and saving a converted folder without leaving half a folder.
"""

import argparse
import contextlib
import hashlib
import json
import math
import shlex
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

# Weight files of a checkpoint directory, in the order they are looked for (transformers' names first).
WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILE_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Keys under which training scripts store the weights next to optimizer state, epoch, config...
STATE_DICT_CONTAINERS = ("state_dict", "model", "module")
ROLES = ("weight", "shared", "tied", "unused", "optional")
MODULE_KINDS = ("linear", "conv", "embedding", "norm", "batch_norm", "buffer")


class CheckpointError(ValueError):
    """The file is not the original checkpoint the converter was asked for; the message names what is wrong."""


@dataclass(frozen=True)
class KeyEntry:
    """One key of an original checkpoint.

    role: `weight` (becomes `target`), `shared` (a second name of the tensor `source`, e.g. a module registered
    under two parents; checked equal, then dropped), `tied` (an output layer tied to `source`; kept untied only
    when it differs), `unused` (a module the original forward never calls; dropped) or `optional` (a buffer only
    some versions save; dropped). module: what the tensor belongs to (`MODULE_KINDS`), which decides how
    `seeded_state_dict` fills it.
    """

    original: str
    target: str | None
    shape: tuple
    role: str = "weight"
    source: str | None = None
    dtype: torch.dtype = torch.float32
    module: str = "linear"

    def __post_init__(self):
        if self.role not in ROLES or self.module not in MODULE_KINDS:
            raise ValueError(f"{self.original}: role {self.role!r} / module {self.module!r}; use {ROLES} / {MODULE_KINDS}.")
        if (self.role in ("weight", "tied")) != (self.target is not None) or (self.role in ("shared", "tied")) != bool(self.source):
            raise ValueError(f"{self.original}: `weight` and `tied` entries (only) have a target, `shared` and `tied` "
                             "entries (only) a source.")


def linear_entries(original, target, out_features, in_features, bias=True):
    entries = [KeyEntry(f"{original}.weight", f"{target}.weight", (out_features, in_features))]
    if bias:
        entries.append(KeyEntry(f"{original}.bias", f"{target}.bias", (out_features,)))
    return entries


def layer_norm_entries(original, target, size):
    return [KeyEntry(f"{original}.{name}", f"{target}.{name}", (size,), module="norm") for name in ("weight", "bias")]


def timm_vit_entries(original, target, width, intermediate, depth, grid_size, patch_size):
    """A timm `VisionTransformer` (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks`, `norm`; BLIP's `vit.py`,
    ALBEF's, MAE's encoder) -> transformers' BLIP ViT names (`embeddings`, `encoder.layers`, `post_layernorm`)."""
    entries = [KeyEntry(f"{original}.cls_token", f"{target}.embeddings.class_embedding", (1, 1, width),
                        module="embedding"),
               KeyEntry(f"{original}.pos_embed", f"{target}.embeddings.position_embedding",
                        (1, grid_size**2 + 1, width), module="embedding"),
               KeyEntry(f"{original}.patch_embed.proj.weight", f"{target}.embeddings.patch_embedding.weight",
                        (width, 3, patch_size, patch_size), module="conv"),
               KeyEntry(f"{original}.patch_embed.proj.bias", f"{target}.embeddings.patch_embedding.bias", (width,))]
    entries += timm_block_entries(f"{original}.blocks", f"{target}.encoder.layers", width, intermediate, depth)
    return [*entries, *layer_norm_entries(f"{original}.norm", f"{target}.post_layernorm", width)]


def timm_block_entries(original, target, width, intermediate, depth):
    """`depth` timm ViT blocks (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1/fc2`) -> BLIP's ViT layer names."""
    entries = []
    for n in range(depth):
        block, layer = f"{original}.{n}", f"{target}.{n}"
        entries += [*layer_norm_entries(f"{block}.norm1", f"{layer}.layer_norm1", width),
                    *linear_entries(f"{block}.attn.qkv", f"{layer}.self_attn.qkv", 3 * width, width),
                    *linear_entries(f"{block}.attn.proj", f"{layer}.self_attn.projection", width, width),
                    *layer_norm_entries(f"{block}.norm2", f"{layer}.layer_norm2", width),
                    *linear_entries(f"{block}.mlp.fc1", f"{layer}.mlp.fc1", intermediate, width),
                    *linear_entries(f"{block}.mlp.fc2", f"{layer}.mlp.fc2", width, intermediate)]
    return entries


def batch_norm_entries(original, target, channels):
    entries = [KeyEntry(f"{original}.{name}", f"{target}.{name}", (channels,), module="batch_norm")
               for name in ("weight", "bias", "running_mean", "running_var")]
    entries.append(KeyEntry(f"{original}.num_batches_tracked", f"{target}.num_batches_tracked", (), dtype=torch.int64,
                            module="buffer"))
    return entries


# --------------------------------------------------------------------------------------------------
# Reading the authors' files
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadedCheckpoint:
    """state_dict: name -> tensor. config: the `config.json` found next to the weights, if any. files: what was read.
    training_config: the `config` entry a training script saved beside the weights (`{'model': sd, 'config': {...}}`
    of ALBEF/BLIP/M2I2/MISS: their YAML settings), when it is a mapping."""

    state_dict: dict
    config: dict | None
    files: list
    training_config: dict | None = None


def load_checkpoint(path, weight_file_names=WEIGHT_FILE_NAMES) -> LoadedCheckpoint:
    """Read a weights file (torch pickle or safetensors) or a directory holding one (or a sharded index).

    Pickles are read with `torch.load(weights_only=True)`, so a file that would run code is refused rather
    than executed; zip-format pickles are memory-mapped. Raises FileNotFoundError / CheckpointError.
    """
    path = Path(path)
    config = None
    if path.is_dir():
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
        files = _weight_files(path, weight_file_names)
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    state_dict, training_config = {}, None
    for file in files:
        weights, saved_config = _read_weights(file)
        state_dict.update(weights)
        training_config = saved_config or training_config
    return LoadedCheckpoint(state_dict, config, files, training_config)


def _weight_files(folder, weight_file_names):
    for name in INDEX_FILE_NAMES:
        if (folder / name).is_file():
            weight_map = json.loads((folder / name).read_text())["weight_map"]
            return [folder / shard for shard in dict.fromkeys(weight_map.values())]
    for name in weight_file_names:
        if (folder / name).is_file():
            return [folder / name]
    raise FileNotFoundError(f"{folder} holds none of {list(weight_file_names) + list(INDEX_FILE_NAMES)}; pass the "
                            "weights file itself.")


def _read_weights(file):
    """(state dict, the training config saved beside it or None)."""
    if file.suffix == ".safetensors":
        return load_file(file), None
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except Exception as error:  # torch raises UnpicklingError/RuntimeError/EOFError for files it will not read
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else repr(error))
        raise CheckpointError(
            f"torch.load(weights_only=True) cannot read {file}: {reason} If the file holds Python objects besides "
            "tensors (e.g. an argparse.Namespace), load it once yourself in a trusted environment and save only "
            "the state dict (`torch.save(checkpoint['model'], 'weights.pth')`)."
        ) from error
    training_config = loaded.get("config") if isinstance(loaded, dict) else None
    return unwrap_state_dict(loaded, file), training_config if isinstance(training_config, dict) else None


def unwrap_state_dict(loaded, source="checkpoint", containers=STATE_DICT_CONTAINERS) -> dict:
    """The state dict itself, or the one a training script stored under `state_dict` / `model` / `module`
    beside optimizer state, epoch or config. Raises CheckpointError naming the keys it found."""
    if isinstance(loaded, dict) and loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return dict(loaded)
    if isinstance(loaded, dict):
        for key in containers:
            if isinstance(loaded.get(key), dict):
                return unwrap_state_dict(loaded[key], f"{source}[{key!r}]", ())
        found = sorted(map(str, loaded))[:20]
        raise CheckpointError(f"{source} is not a state dict: its top-level keys are {found}; expected tensors, or "
                              f"one of {list(containers)} holding them.")
    raise CheckpointError(f"{source} holds a {type(loaded).__name__}, not a state dict (a mapping of names to tensors).")


# --------------------------------------------------------------------------------------------------
# The key table
# --------------------------------------------------------------------------------------------------


def check_key_table(state_dict, table, description, hint=""):
    """The exact key set (optional keys aside), every shape, and every shared copy equal to its source.
    Raises CheckpointError naming the keys; `hint` is appended (e.g. 'these keys look like a VQA checkpoint')."""
    expected = {e.original for e in table if e.role != "optional"}
    allowed = {e.original for e in table}
    missing = sorted(expected - state_dict.keys())
    unexpected = sorted(state_dict.keys() - allowed)
    if missing or unexpected:
        raise CheckpointError(f"not the {description} layout: missing keys {missing}, unexpected keys {unexpected}.{hint}")
    wrong = [f"{e.original}: {tuple(state_dict[e.original].shape)} (expected {e.shape})"
             for e in table if e.original in state_dict and tuple(state_dict[e.original].shape) != tuple(e.shape)]
    if wrong:
        raise CheckpointError(f"unexpected tensor shapes in the {description} checkpoint: {wrong}.")
    differing = [e.original for e in table if e.role == "shared" and not torch.equal(state_dict[e.original],
                                                                                         state_dict[e.source])]
    if differing:
        raise CheckpointError(f"{differing} should repeat the tensors of {[e.source for e in table if e.original in differing]} "
                              "(one module registered twice in the original model) but differ.")


def check_position_ids(state_dict, table):
    """Every `position_ids` buffer of the table that the checkpoint holds counts 0..n-1, as the original registers it:
    the converted model computes its positions itself, so other values would silently change the numbers."""
    wrong = [e.original for e in table if e.original.endswith("position_ids") and e.original in state_dict
             and not torch.equal(state_dict[e.original].flatten(), torch.arange(state_dict[e.original].numel()))]
    if wrong:
        raise CheckpointError(f"{wrong} should count 0, 1, 2, ... (the position ids the original model registers) but "
                              "hold other values; the checkpoint was edited or is not an original one.")


def tied_entries_match(state_dict, table) -> bool:
    """Whether every `tied` tensor equals its source (then the converted model ties them too)."""
    return all(torch.equal(state_dict[e.original], state_dict[e.source]) for e in table if e.role == "tied")


def renamed_weights(state_dict, table, keep_tied) -> dict:
    """{medvlp-hf name: tensor} for every `weight` entry (and `tied` ones when `keep_tied`), cast to the entry's
    dtype; tensors already in that dtype are used as they are (no copy)."""
    renamed = {}
    for entry in table:
        if entry.role == "weight" or (entry.role == "tied" and keep_tied):
            tensor = state_dict[entry.original]
            renamed[entry.target] = tensor if tensor.dtype == entry.dtype else tensor.to(entry.dtype)
    return renamed


# --------------------------------------------------------------------------------------------------
# Building and filling the medvlp-hf model
# --------------------------------------------------------------------------------------------------


def config_for_model(model_type, **fields):
    """The registered config class of `model_type` (`AutoConfig.for_model`); importing medvlp_hf registers it."""
    import medvlp_hf  # noqa: F401
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **fields)


def build_on_meta(auto_class, config):
    """The head `auto_class` maps `config` to, its parameters on the meta device (no memory, no initialisation). Its
    buffers are built as the model builds them: those it saves are replaced by the checkpoint's, and those it does not
    save (e.g. BERT's `position_ids`) would otherwise stay on the meta device, without values."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return auto_class.from_config(config)


def fill_model(model, weights, tied_targets=(), fix_hint=""):
    """Load `weights` into a meta-device `model` by assignment (the tensors become its parameters), tie, and
    require that every parameter and buffer was filled: anything left on the meta device or unknown to the
    model is a key-table bug and raises RuntimeError. Returns the model in eval mode."""
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    model.tie_weights()
    unfilled = sorted(set(missing) - set(tied_targets))
    unfilled += [name for name, tensor in model.state_dict().items() if tensor.is_meta and name not in unfilled]
    if unfilled or unexpected:
        raise RuntimeError(f"{type(model).__name__} and the conversion key table disagree: not filled {unfilled}, "
                           f"unknown {sorted(unexpected)}.{fix_hint}")
    return model.eval()


def processor_class(config):
    """The processor class registered for `config` with AutoProcessor (to build one from tokenizer files other than
    the bundled ones `medvlp_hf.default_processor` uses)."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    return PROCESSOR_MAPPING[type(config)]


# --------------------------------------------------------------------------------------------------
# Seeded original-layout checkpoints
# --------------------------------------------------------------------------------------------------


def seeded_state_dict(table, seed) -> dict:
    """An original-layout checkpoint with O(1) random values, reproducible from `seed` and the key table alone.

    Every key draws from its own generator, seeded with sha256(f"{seed}/{key}"), so a key has the same value in
    every checkpoint that has it (a retrieval checkpoint equals the matching part of a pre-training one) and the
    values do not depend on the order of the table. By `entry.module`: linear/conv weights N(0, 1/fan_in),
    biases 0.1 N(0, 1), embeddings N(0, 1), norm and batch-norm scales 1 + 0.1 N(0, 1), running means
    0.1 N(0, 1), running variances U(0.5, 1.5), `num_batches_tracked` an integer below 10,000, `position_ids`
    0..n-1, other integer buffers 0. `shared`/`tied` entries repeat their source.
    """
    state = {}
    for entry in table:
        if entry.role in ("shared", "tied"):
            continue
        state[entry.original] = _seeded_tensor(entry, seed)
    for entry in table:
        if entry.role in ("shared", "tied"):
            state[entry.original] = state[entry.source].clone()
    return {entry.original: state[entry.original] for entry in table}


def _seeded_tensor(entry, seed):
    digest = hashlib.sha256(f"{seed}/{entry.original}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    shape, name = tuple(entry.shape), entry.original.rsplit(".", 1)[-1]
    if not entry.dtype.is_floating_point:
        if name == "num_batches_tracked":
            return torch.randint(0, 10_000, shape, generator=generator, dtype=entry.dtype)
        if name == "position_ids":
            return torch.arange(shape[-1], dtype=entry.dtype).expand(shape).clone()
        return torch.zeros(shape, dtype=entry.dtype)
    normal = torch.randn(shape, generator=generator)
    if entry.module == "batch_norm" and name == "running_var":
        return torch.rand(shape, generator=generator) + 0.5
    if entry.module == "batch_norm" and name == "running_mean":
        return 0.1 * normal
    if name == "bias":
        return 0.1 * normal
    if entry.module in ("norm", "batch_norm"):
        return 1 + 0.1 * normal
    if entry.module == "embedding":
        return normal
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return normal / math.sqrt(fan_in)


# --------------------------------------------------------------------------------------------------
# Provenance and saving
# --------------------------------------------------------------------------------------------------


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths) -> str:
    """sha256 of one file, or of the concatenated hashes of several (a sharded checkpoint)."""
    paths = list(paths)
    if len(paths) == 1:
        return sha256_file(paths[0])
    return hashlib.sha256("".join(sha256_file(path) for path in paths).encode()).hexdigest()


@contextlib.contextmanager
def output_folder(out, overwrite=False):
    """Yield a fresh folder next to `out` to write into, and move it into place only when the block succeeds: a
    failed conversion leaves `out` as it was and no half-written folder. Raises FileExistsError when `out` is not
    empty and `overwrite` is false."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out or pass --overwrite to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    staging.rename(out)


def render_conversion_card(model_type, record, repo_id=None):
    """The model card of a converted checkpoint from its parity record: provenance (`record.conversion`: source
    file and hash, script, exact command, training datasets) and parity (status, per-output differences,
    tolerance, what the reference was)."""
    from medvlp_hf.hub import render_model_card

    from .parity import card_parity_fields

    provenance = {key: record.conversion[key] for key in ("source_checkpoint", "script", "command")}
    return render_model_card(model_type, architecture=record.architecture, datasets=record.conversion["datasets"],
                             repo_id=repo_id, conversion={**provenance, **card_parity_fields(record)})


def converter_parser(doc, prog=None):
    """A converter's argument parser: its description is the module docstring `doc` without its second paragraph (the
    command-line example, which `prog` replaces in the usage line)."""
    return argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=doc.split("\n\n", 1)[0] + "\n\n" + doc.split("\n\n", 2)[2])


def run_converter(build_parser, convert, argv=None, prog=None):
    """A converter's `main`: parse `argv` with `build_parser(prog)`, run `convert(args, staging, command)` (which
    writes the converted folder into `staging` and returns the model and its parity record) in a staging folder that
    replaces `--out` only when it succeeds, upload with `--push_to_hub`, and report. Returns the output folder."""
    from medvlp_hf.hub import push_to_hub

    from .parity import describe_reference

    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or f"python {Path(sys.argv[0]).as_posix()}"
    args = build_parser(prog).parse_args(argv)
    with output_folder(args.out, args.overwrite) as staging:
        model, record = convert(args, staging, shlex.join([*shlex.split(prog), *argv]))
    out = Path(args.out)
    if args.push_to_hub:
        push_to_hub(out, args.push_to_hub)
    print(f"converted {args.kind} checkpoint {args.checkpoint} -> {out} ({type(model).__name__}); parity "
          f"{record.status}: {describe_reference(record)}")
    return out


def add_output_arguments(parser, harness):
    """The command-line options every converter has for what it writes: --out, --reference (a record the parity
    harness `conversion/parity/<harness>` made), --overwrite, --push_to_hub, --dataset, --no_card."""
    parser.add_argument("--out", required=True, help="output folder (model, processor, parity record, README.md)")
    parser.add_argument("--reference", metavar="RECORD_DIR",
                        help=f"parity record the harness (conversion/parity/{harness}) made on this checkpoint with the "
                             "authors' code; the conversion fails unless the model reproduces it")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--push_to_hub", metavar="REPO", help="also upload the folder to this Hub repository")
    parser.add_argument("--dataset", help="training data named on the model card (default per head)")
    parser.add_argument("--no_card", action="store_true", help="do not write README.md")


def finish_conversion(folder, record, processor, provenance, card=True, repo_id=None):
    """Write what a converted folder holds besides the weights: the processor, the parity record with the conversion's
    `provenance` (source_checkpoint, script, command, datasets) and, with `card`, the model card."""
    from medvlp_hf.hub import save_model_card

    from .parity import write_record

    record.conversion = provenance
    processor.save_pretrained(folder)
    write_record(record, folder)
    if card:
        save_model_card(render_conversion_card(record.model_type, record, repo_id), folder)


def conversion_provenance(checkpoint, checkpoint_sha256, original, script, command, datasets) -> dict:
    """How a folder was made, as its record and card show it: the source file with its hash and the original
    repository@commit (`original`), the converter script, the exact command, the training datasets."""
    return {"source_checkpoint": f"{Path(checkpoint).name} (sha256 {checkpoint_sha256[:16]}…, {original})",
            "script": script, "command": command, "datasets": list(datasets)}
