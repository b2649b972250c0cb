"""Command-line arguments shared by the example scripts (`HfArgumentParser` dataclasses next to
`TrainingArguments`), and the parser that applies each script's own defaults."""

import argparse
import dataclasses
import json
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments

from ..auto import ZOO_MODEL_TYPES, config_class_for


def _scratch_choices() -> str:
    """'medvill --config tiny|small|base' for each zoo model type: the presets its config class offers."""
    return "; ".join(f"{model_type} --config {'|'.join(config_class_for(model_type).preset_names)}"
                     for model_type in ZOO_MODEL_TYPES)


@dataclass
class ModelArguments:
    """Where the model comes from (a checkpoint, or a preset trained from scratch) and how it is adapted."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A local folder or Hub id of a saved checkpoint (the offline cache is honoured). "
                  "Leave empty to train from scratch with --model_type and --config."},
    )
    model_type: str | None = field(
        default=None,
        metadata={"help": f"Model family to train from scratch, with --config: {_scratch_choices()}."},
    )
    config: str | None = field(
        default=None,
        metadata={"help": "Size preset of --model_type when training from scratch: tiny (about 1-2 M parameters: tests "
                  "and the quick demo), small (trains on a CPU), base (the paper's model)."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config fields, e.g. 'hidden_dropout_prob=0,image_size=128' "
                  "(JSON values such as lists are allowed)."},
    )
    processor_name_or_path: str | None = field(
        default=None, metadata={"help": "Processor folder/Hub id when it differs from --model_name_or_path."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Hub cache folder for downloaded checkpoints."})
    model_revision: str = field(default="main", metadata={"help": "Checkpoint revision (branch, tag or commit)."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow checkpoints whose model code is not part of medvlp-hf."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Re-initialise head weights whose shape differs from the checkpoint's (e.g. another "
                  "answer vocabulary)."},
    )
    freeze_batch_norm: bool = field(
        default=False,
        metadata={"help": "Keep the image encoder's BatchNorm layers in inference mode while training: running "
                  "statistics are used and never updated. Results then no longer depend on how a batch is split "
                  "over processes or accumulation steps. Implied by --peft."},
    )
    peft: str | None = field(
        default=None,
        metadata={"help": "Train PEFT adapters instead of all weights: lora (on the model's `lora_target_modules`) or "
                  "ia3 (learnt scaling vectors on the model's `ia3_target_modules`; MISS: the released "
                  "models/peft_miss.py, IA3 on key/value/output.dense of the text encoder and decoder, the image "
                  "encoder trained in full).", "choices": ["lora", "ia3"]},
    )
    lora: bool = field(default=False, metadata={"help": "Same as --peft lora."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={"help": "Comma-separated module names to adapt; default: the model's `lora_target_modules` "
                  "(MedViLL: the attention query/value projections)."},
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "After training, merge the adapters into the weights and save a plain checkpoint in "
                  "output_dir (the adapter itself goes to output_dir/adapter)."},
    )
    merge_lora: bool = field(default=False, metadata={"help": "Same as --merge_adapter."})
    train_attention_only: bool = field(
        default=False,
        metadata={"help": "Train the image encoder in full (the model's `image_encoder_modules`) and, elsewhere, only "
                  "the weights whose name contains 'attention' (self- and cross-attention with their output blocks); "
                  "everything else stays frozen. MISS: the released SLAKE recipe (train_slake.py)."},
    )

    def __post_init__(self):
        if self.model_name_or_path is None:
            self._check_scratch_model()
        elif self.model_type is not None or self.config is not None:
            raise ValueError("--model_type and --config build a model from scratch; they cannot be combined with "
                             "--model_name_or_path, whose config.json names the model (use --config_overrides to "
                             "change a checkpoint's config).")
        if self.lora:
            if self.peft not in (None, "lora"):
                raise ValueError(f"--lora means --peft lora; it cannot be combined with --peft {self.peft}.")
            self.peft = "lora"
        self.lora = self.peft == "lora"
        self.merge_adapter = self.merge_adapter or self.merge_lora
        if self.merge_adapter and self.peft is None:
            raise ValueError("--merge_adapter (--merge_lora) merges the adapters of a PEFT run; add --lora or "
                             "--peft ia3.")
        if self.peft is not None and self.model_name_or_path is None:
            raise ValueError(f"--peft {self.peft} adapts a trained checkpoint: pass --model_name_or_path (adapters on a "
                             "randomly initialised model would leave the random base weights frozen).")
        if self.peft is not None and self.train_attention_only:
            raise ValueError("--train_attention_only trains part of the model's own weights and --peft trains adapters "
                             "instead of them; use one of the two.")
        if self.peft is not None:
            self.freeze_batch_norm = True

    def _check_scratch_model(self):
        if self.model_type is None or self.config is None:
            raise ValueError("Say which model to train: --model_name_or_path PATH_OR_HUB_ID, or --model_type TYPE "
                             f"--config PRESET to train from scratch ({_scratch_choices()}).")
        if self.model_type not in ZOO_MODEL_TYPES:
            raise ValueError(f"--model_type {self.model_type!r} is not a medvlp-hf model; choose one of "
                             f"{ZOO_MODEL_TYPES}.")
        presets = config_class_for(self.model_type).preset_names
        if self.config not in presets:
            raise ValueError(f"--config {self.config!r} is not a {self.model_type} preset; choose one of {presets}.")


@dataclass
class DataArguments:
    """Which dataset, where it is, and how much of it to use."""

    dataset: str = field(default="demo", metadata={"help": "Dataset name: the script's description lists them."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of the dataset in its original layout."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split for --do_eval; default 'validation' when the dataset has one, else 'test'."}
    )
    predict_split: str = field(default="test", metadata={"help": "Split for --do_predict."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N prediction rows."})
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Text-stream length limit in tokens (default: the processor's)."}
    )
    organ: str = field(default="all", metadata={"help": "VQA-RAD organ filter: all, CHEST, HEAD or ABD."})
    language: str = field(default="en", metadata={"help": "SLAKE question language: en or zh."})
    transcap_phrasebook: str | None = field(
        default=None,
        metadata={"help": "TransCap datasets (transcap_nih): a phrasebook JSON file, {attribute: {value: [sentences]}} "
                  "(or Phrasebook.save's {\"phrasings\": ...}), e.g. phrasings written once by a local "
                  "text-generation pipeline; default: the built-in template phrasings."},
    )
    dataset_license: str | None = field(
        default=None,
        metadata={"help": "Licence of the training data, needed by --push_to_hub for datasets the model-card "
                  "templates do not know."},
    )

    def __post_init__(self):
        if self.transcap_phrasebook is not None and not self.dataset.startswith("transcap_"):
            raise ValueError(f"--transcap_phrasebook gives the phrasings of a TransCap dataset; --dataset "
                             f"{self.dataset} has its own texts. Drop it, or use --dataset transcap_nih.")
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}.")


# The TrainingArguments a first run needs, in the order --help shows them; --help-all lists every one. The help
# texts that transformers writes for its own example scripts are replaced where they would mislead here.
COMMON_TRAINING_OPTIONS = {
    "output_dir": "Folder for the trained model, its processor, checkpoints and the *_results.json files.",
    "do_train": "Train on the training split.",
    "do_eval": "Evaluate on --eval_split: <output_dir>/eval_results.json and eval_predictions.jsonl.",
    "do_predict": "Predict on --predict_split: predict_results.json and predict_predictions.jsonl.",
    "num_train_epochs": None,
    "max_steps": None,
    "learning_rate": None,
    "per_device_train_batch_size": None,
    "per_device_eval_batch_size": None,
    "gradient_accumulation_steps": None,
    "seed": None,
    "bf16": None,
    "save_strategy": None,
    "resume_from_checkpoint": "A checkpoint-<step> folder, or 'last' for the newest one in --output_dir: training "
                              "continues exactly where it stopped.",
    "logging_steps": None,
    "log_level": "passive: the run's own messages and warnings; info or debug: everything transformers reports too.",
    "push_to_hub": "At the end of the run, upload the model, its processor and a model card with the evaluation "
                   "results in one commit (to HF_ENDPOINT).",
    "hub_model_id": "Hub repository for --push_to_hub (default: the --output_dir folder's name).",
}
_USAGE = ("%(prog)s --output_dir DIR (--model_name_or_path PATH_OR_HUB_ID | --model_type TYPE --config PRESET) "
          "[--dataset NAME] [--do_train] [--do_eval] [--do_predict] [OPTIONS] | %(prog)s ARGS.json")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The script's docstring as written; each option once (not its dashed alias) with its default when it has one."""

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return f"{action.option_strings[0]} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def _section(dataclass_type, title, names=None, help_texts=None):
    """A display-only copy of `dataclass_type` whose options (`names` in that order, default all) form the help
    section `title` (HfArgumentParser's `_argument_group_name`), with the help of `help_texts` where it has one."""
    if names is None and help_texts is None:
        return type(dataclass_type.__name__, (dataclass_type,), {"_argument_group_name": title})
    hints = typing.get_type_hints(dataclass_type)
    fields = {f.name: f for f in dataclasses.fields(dataclass_type) if f.init}
    kept = []
    for name in names or fields:
        original = fields[name]
        help_text = (help_texts or {}).get(name) or original.metadata.get("help")
        kept.append((name, hints[name], field(default=original.default, default_factory=original.default_factory,
                                              metadata={**original.metadata, "help": help_text})))
    return dataclasses.make_dataclass(dataclass_type.__name__, kept, kw_only=True,
                                      namespace={"_argument_group_name": title})


def help_text(task_arguments, defaults, description=None, show_all=False) -> str:
    """--help: the script's description, then its own options, medvlp-hf's model and data options, and the common
    TrainingArguments; `show_all` (--help-all) lists every TrainingArguments option instead."""
    sections = [_section(task, "options of this script") for task in task_arguments]
    sections += [_section(ModelArguments, "model (medvlp-hf)"), _section(DataArguments, "data (medvlp-hf)")]
    training_title = "training (transformers TrainingArguments" + (")" if show_all else ", the common ones)")
    names = None if show_all else list(COMMON_TRAINING_OPTIONS)
    sections.append(_section(TrainingArguments, training_title, names, COMMON_TRAINING_OPTIONS))
    epilog = None if show_all else (
        "Every other transformers TrainingArguments option works too (--warmup_steps, --weight_decay, "
        "--gradient_checkpointing, --eval_strategy, --report_to, ...): --help-all lists them. All options can also "
        "come from one JSON file: %(prog)s args.json."
    )
    parser = HfArgumentParser(sections, description=description, epilog=epilog, usage=_USAGE,
                              formatter_class=_HelpFormatter, add_help=False)
    _add_help_options(parser, lambda show_all: "")
    parser.set_defaults(**defaults)
    return parser.format_help()


class _HelpAction(argparse.Action):
    def __init__(self, option_strings, dest, text, help):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)
        self.text = text

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(self.text())
        parser.exit()


def _add_help_options(parser, text):
    parser.add_argument("-h", "--help", action=_HelpAction, text=lambda: text(False),
                        help="Show the options a run needs, then exit.")
    parser.add_argument("--help-all", action=_HelpAction, text=lambda: text(True),
                        help="Show every option, all transformers TrainingArguments included, then exit.")


def parse_arguments(task_arguments=(), argv=None, description=None, **defaults):
    """Parse (ModelArguments, DataArguments, *task_arguments, TrainingArguments) from `argv` (default:
    sys.argv) or from a single `.json` file, with `defaults` replacing the library defaults. `-h/--help` prints
    `description` (the script's docstring) and the options a run needs; `--help-all` every option.

    `remove_unused_columns` is always off: the task collators read raw dataset columns (images, questions).
    `use_cpu` defaults to on when torch sees no accelerator: without it, transformers leaves processes started
    by torchrun on a CPU-only machine unaware of each other (each trains alone on the full data).
    """
    parser = HfArgumentParser([ModelArguments, DataArguments, *task_arguments, TrainingArguments], add_help=False)
    defaults = {"remove_unused_columns": False, "use_cpu": not torch.accelerator.is_available(), **defaults}
    _add_help_options(parser, lambda show_all: help_text(task_arguments, defaults, description, show_all))
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        values = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        parsed = parser.parse_dict({**defaults, **values})
    else:
        parser.set_defaults(**defaults)
        parsed = parser.parse_args_into_dataclasses(args=argv)
    training_args = parsed[-1]
    if training_args.remove_unused_columns:
        raise ValueError("--remove_unused_columns must stay off: the collators build inputs from the raw dataset "
                         "columns (image, question, report).")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != training_args.world_size:
        raise RuntimeError(f"the launcher started {launched} processes but transformers set up "
                           f"{training_args.world_size}; on a machine without GPUs pass --use_cpu true.")
    return parsed
