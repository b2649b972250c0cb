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

from medvlp_hf import MedViLLConfig


def base_parser(description: str, model: str = "MedViLL") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
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
    """Prints `name: value`, and whether it reaches `target` (a lower bound) when one is given."""
    verdict = "" if target is None else f"  (target >= {target:g}: {'met' if value >= target else 'MISSED'})"
    print(f"{name}: {value:.2f}{verdict}")


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
