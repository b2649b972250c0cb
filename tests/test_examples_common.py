"""Helpers for the example-script tests (no tests here): run a script in-process or under torchrun with a tiny
preset (MedViLL's by default) on a few synthetic demo rows, and read what it wrote."""

import importlib.util
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
# the config overrides that turn dropout off, per model type (MISS and M2I2 keep the text towers' fields in text_config)
NO_DROPOUT = {
    "medvill": "hidden_dropout_prob=0,attention_probs_dropout_prob=0",
    "miss": "text_config.hidden_dropout_prob=0,text_config.attention_probs_dropout_prob=0",
    "m2i2": "text_config.hidden_dropout_prob=0,text_config.attention_probs_dropout_prob=0",
}


@cache
def example(name):
    """The module of examples/run_<name>.py (examples/ is not a package; its scripts import their sibling
    cpu_threads.py, found through sys.path as when a script is run)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    path = EXAMPLES / f"run_{name}.py"
    spec = importlib.util.spec_from_file_location(f"run_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_args(output_dir, *extra, model=None, model_type="medvill", train=16, evaluate=8, batch_size=4,
              dropout=False):
    """Command line of a quick run on the demo set: from scratch with the tiny preset of `model_type`, or from the
    checkpoint folder `model` (of `model_type`; extra arguments come last and win)."""
    source = ["--model_type", model_type, "--config", "tiny"] if model is None else ["--model_name_or_path", str(model)]
    args = [
        "--dataset", "demo", *source,
        "--output_dir", str(output_dir),
        "--max_train_samples", str(train), "--max_eval_samples", str(evaluate), "--max_predict_samples", str(evaluate),
        "--num_train_epochs", "1", "--per_device_train_batch_size", str(batch_size),
        "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "1",
        "--save_strategy", "no", "--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--seed", "0",
    ]
    if not dropout:
        args += ["--config_overrides", NO_DROPOUT[model_type]]
    return args + [str(item) for item in extra]


def run_example(name, output_dir, *extra, **options):
    """Run examples/run_<name>.py in this process; returns its metrics."""
    return example(name).main(tiny_args(output_dir, *extra, **options))


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
    # --multi_gpu is what starts several processes on a CPU machine; --cpu would silently run one
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}


def run_example_distributed(name, output_dir, *extra, launcher="torchrun", **options):
    """Run examples/run_<name>.py in 2 processes (gloo on CPU) with `torchrun --standalone` or `accelerate launch`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [*LAUNCHERS[launcher], str(EXAMPLES / f"run_{name}.py"), *tiny_args(output_dir, *extra, **options)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{launcher} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def step_losses(output_dir):
    """{step: training loss} from the trainer_state.json log history (logging every step)."""
    history = read_json(Path(output_dir) / "trainer_state.json")["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def weights(output_dir):
    return load_file(str(Path(output_dir) / "model.safetensors"))
