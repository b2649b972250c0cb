"""Command-line arguments shared by the example scripts (`HfArgumentParser` dataclasses next to
`TrainingArguments`), and the parser that applies each script's own defaults."""

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments

SCRATCH_PRESETS = ("tiny", "small", "base")


@dataclass
class ModelArguments:
    """Where the model comes from (a checkpoint, or a preset trained from scratch) and how it is adapted."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A local folder or Hub id of a saved checkpoint (the offline cache is honoured). "
                  "Leave empty to train from scratch with --model_type and --config."},
    )
    model_type: str = field(default="medvill", metadata={"help": "Model family when training from scratch."})
    config: str | None = field(
        default=None,
        metadata={"help": f"Size preset when training from scratch: one of {SCRATCH_PRESETS} (tiny is for tests, "
                  "small trains on a CPU, base is the paper's model)."},
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
                  "over processes or accumulation steps. Implied by --lora."},
    )
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (PEFT) instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={"help": "Comma-separated module names to adapt; default: the model's attention query/value "
                  "projections (see medvlp_hf.training.lora.LORA_TARGET_MODULES)."},
    )
    merge_lora: bool = field(
        default=False,
        metadata={"help": "After training, merge the adapters into the weights and save a plain checkpoint in "
                  "output_dir (the adapter itself goes to output_dir/adapter)."},
    )

    def __post_init__(self):
        if self.model_name_or_path is None and self.config is None:
            raise ValueError("Say which model to train: --model_name_or_path PATH_OR_HUB_ID, or --model_type "
                             f"medvill --config {{{','.join(SCRATCH_PRESETS)}}} to train from scratch.")
        if self.model_name_or_path is not None and self.config is not None:
            raise ValueError("--config builds a model from scratch; it cannot be combined with --model_name_or_path "
                             "(use --config_overrides to change a checkpoint's config).")
        if self.config is not None and self.config not in SCRATCH_PRESETS:
            raise ValueError(f"--config {self.config!r} is not a preset; choose one of {SCRATCH_PRESETS}.")
        if self.merge_lora and not self.lora:
            raise ValueError("--merge_lora merges LoRA adapters; add --lora.")
        if self.lora and self.model_name_or_path is None:
            raise ValueError("--lora adapts a trained checkpoint: pass --model_name_or_path (LoRA on a randomly "
                             "initialised model would leave the random base weights frozen).")
        if self.lora:
            self.freeze_batch_norm = True


@dataclass
class DataArguments:
    """Which dataset, where it is, and how much of it to use."""

    dataset: str = field(default="demo", metadata={"help": "Dataset name (see --help of the script for the list)."})
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
    dataset_license: str | None = field(
        default=None,
        metadata={"help": "Licence of the training data, needed by --push_to_hub for datasets the model-card "
                  "templates do not know."},
    )

    def __post_init__(self):
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}.")


def parse_arguments(task_arguments=(), argv=None, **defaults):
    """Parse (ModelArguments, DataArguments, *task_arguments, TrainingArguments) from `argv` (default:
    sys.argv) or from a single `.json` file, with `defaults` replacing the library defaults.

    `remove_unused_columns` is always off: the task collators read raw dataset columns (images, questions).
    `use_cpu` defaults to on when torch sees no accelerator: without it, transformers leaves processes started
    by torchrun on a CPU-only machine unaware of each other (each trains alone on the full data).
    """
    parser = HfArgumentParser([ModelArguments, DataArguments, *task_arguments, TrainingArguments])
    defaults = {"remove_unused_columns": False, "use_cpu": not torch.accelerator.is_available(), **defaults}
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
