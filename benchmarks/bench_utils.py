"""Shared pieces of the benchmark scripts: interleaved timing, tables, memory readings.

Timings on a shared CPU drift, so every script runs the cases it compares round-robin (A, B, A, B, ..)
and reports each ratio as the median of the per-round ratios. Scripts import this module before torch:
OpenMP threads must sleep rather than spin at barriers on a shared machine (as in tests and CI), and
libgomp reads that policy only when torch first loads it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from medvlp_hf import M2I2Config, MedViLLConfig

# M2I2 geometries of the M2I2 scripts (`--geometry`): "cpu" is hidden 384 with 6 ViT and 6 text layers (3 of them fusion
# layers, so a 3-layer answer decoder) and 64-wide heads as in the released model, which these CPUs train and rank with
# in seconds; "base" the released widths and depths; "tiny" the test preset.
M2I2_GEOMETRIES = {
    "cpu": {
        "vision_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
                          "num_attention_heads": 6},
        "text_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
                        "num_attention_heads": 6, "fusion_layer": 3},
        "mim_decoder_config": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                               "num_attention_heads": 8},
        "queue_size": 4096,
    },
    "base": {},
    "tiny": None,
}


def base_parser(description: str, model: str = "MedViLL", geometries: tuple | None = None) -> argparse.ArgumentParser:
    """The options every script has, and the model size: `--preset` (MedViLL's presets) or, given `geometries`,
    `--geometry` (one of them, the first by default)."""
    parser = argparse.ArgumentParser(description=description)
    if geometries:
        parser.add_argument("--geometry", default=geometries[0], choices=geometries, help=f"{model} size")
    else:
        parser.add_argument("--preset", default="base", choices=["base", "small", "tiny"], help=f"{model} size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds per case (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser


def setup(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def build(model_class, args, **overrides):
    """A randomly initialised model of `args.preset` size, seeded for reproducible weights."""
    torch.manual_seed(args.seed)
    return model_class(MedViLLConfig.from_preset(args.preset, **overrides))


def m2i2_config(geometry: str, vision_config: dict | None = None, **fields) -> M2I2Config:
    """The `M2I2_GEOMETRIES` config, `vision_config` fields merged into the geometry's and other fields set."""
    preset, geometry_fields = ("tiny", {}) if M2I2_GEOMETRIES[geometry] is None else ("base", M2I2_GEOMETRIES[geometry])
    vision = {**geometry_fields.get("vision_config", {}), **(vision_config or {})}
    return M2I2Config.from_preset(preset, **{**geometry_fields, **fields, "vision_config": vision})


def never_end_report(model) -> None:
    """Make [SEP] (the end-of-report token) unreachable so every decoder runs the full length."""
    with torch.no_grad():
        model.mlm_head.bias[model.config.sep_token_id] = -1e4


def time_rounds(cases: dict, repeats: int) -> dict:
    """Seconds per round for each case, the cases interleaved round by round (warm up before calling)."""
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(numerator: list, denominator: list) -> float:
    """Median over rounds of numerator / denominator (both measured in the same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def print_table(headers, rows) -> None:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


def seconds(values: list) -> str:
    """`median (min..max)` of a list of timings."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}..{max(values):.3f})"


def report_ratio(name: str, value: float, target: float | None = None) -> None:
    """Prints `name: value` (two decimals, or two significant digits below 0.01, which two decimals would show as 0),
    and whether it reaches `target` (a lower bound) when one is given."""
    verdict = "" if target is None else f"  (target >= {target:g}: {'met' if value >= target else 'MISSED'})"
    print(f"{name}: {value:.2f}{verdict}" if abs(value) >= 0.01 else f"{name}: {value:.2g}{verdict}")


def describe_machine() -> None:
    """One line on the conditions of the run; printed at its start and end (the load moves)."""
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), "
        f"load average {load}"
    )


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process from /proc (`VmHWM` = peak since the last `reset_peak_rss`)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status; the memory figures need Linux.")


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim`; nothing to do without glibc) so RSS counts
    live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS counter: the next `rss_mb("VmHWM")` is the peak from now on."""
    release_free_heap()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_memory_mb(run) -> dict:
    """Runs `run()` and returns the process's peak RSS during it and the peak above the RSS before it.
    Call after a warm-up, so one-time buffers (kernels, gradients, optimizer state) are not counted."""
    reset_peak_rss()
    before = rss_mb()
    run()
    peak = rss_mb("VmHWM")
    return {"peak_mb": peak, "added_mb": peak - before}


class Trainee:
    """A model in training mode, its AdamW optimizer and one batch. `step(checkpointing)` is one training step in that
    mode as Trainer runs it: forward, backward, optimizer step, then the model's `momentum_step()` where it has one (as
    `MomentumUpdateCallback` calls it). Checkpointing is non-reentrant, on every layer that supports it."""

    def __init__(self, model, batch: dict, lr: float = 3e-5):
        self.model = model.train()
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        self.batch = batch

    def set_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.activation_checkpointing_disable()

    def step(self, checkpointing: bool) -> None:
        self.set_checkpointing(checkpointing)
        self.optimizer.zero_grad(set_to_none=True)
        self.model(**self.batch).loss.backward()
        self.optimizer.step()
        if hasattr(self.model, "momentum_step"):
            self.model.momentum_step()

    def activation_mb(self, checkpointing: bool) -> float:
        """RSS growth from before the forward to after it: what the autograd graph keeps for backward."""
        self.set_checkpointing(checkpointing)
        self.optimizer.zero_grad(set_to_none=True)
        release_free_heap()
        before = rss_mb()
        loss = self.model(**self.batch).loss
        release_free_heap()
        held = rss_mb() - before
        loss.backward()
        return held

    def loss_and_gradients(self, checkpointing: bool, seed: int) -> tuple:
        """The loss and every parameter's gradient of one forward and backward from torch's RNG seeded with `seed`
        (dropout and whatever the model draws), without an optimizer step."""
        self.set_checkpointing(checkpointing)
        self.optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        loss = self.model(**self.batch).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in self.model.named_parameters() if p.grad is not None}


CHECKPOINTING_MODES = {"no checkpointing": False, "gradient checkpointing": True}


def compare_checkpointing(trainee: Trainee, batch_size: int, repeats: int, title: str,
                          activation_target: float | None = None) -> None:
    """Times `trainee`'s step with and without gradient checkpointing round by round, measures the activations each
    keeps, each step's peak RSS, and prints the table and the ratios."""
    cases = {name: (lambda enabled=enabled: trainee.step(enabled)) for name, enabled in CHECKPOINTING_MODES.items()}
    for run in cases.values():
        run()
    times = time_rounds(cases, repeats)
    activations = {name: trainee.activation_mb(enabled) for name, enabled in CHECKPOINTING_MODES.items()}
    memory = {name: peak_memory_mb(run) for name, run in cases.items()}

    print(f"\n== {title}, {repeats} round(s) ==")
    print_table(
        ["mode", "seconds median (min..max)", "samples/s", "activations MB", "step +MB", "peak RSS MB"],
        [
            [
                name,
                seconds(times[name]),
                f"{batch_size / statistics.median(times[name]):.2f}",
                f"{activations[name]:.0f}",
                f"{memory[name]['added_mb']:.0f}",
                f"{memory[name]['peak_mb']:.0f}",
            ]
            for name in CHECKPOINTING_MODES
        ],
    )
    plain, checkpointed = (activations[name] for name in CHECKPOINTING_MODES)
    report_ratio("checkpointing / plain samples/s", ratio(times["no checkpointing"], times["gradient checkpointing"]))
    if plain > 0:
        report_ratio("activation memory cut by checkpointing", 1 - checkpointed / plain, target=activation_target)
    else:
        print("activation memory cut by checkpointing: n/a (no measurable activation memory at this size)")
