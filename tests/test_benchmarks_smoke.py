"""Each benchmark script runs end to end at tiny size and prints its comparison lines. Only the printed
ratios' presence and the correctness checks (identical tokens, answers, ranking scores and gradients) are asserted,
never a speed: the machines are shared."""

import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--repeats", "1", "--threads", "1"]
CASES = {
    "bench_generation.py": (
        ["--preset", "tiny", "--new-tokens", "6", "--batch-size", "3"],
        ["cached / uncached speedup", "beam 3 / greedy time", "batch 3 / batch 1 per-sample throughput"],
        ["identical tokens: True", "new tokens per run: {'uncached': 6, 'greedy': 6, 'beam': 6}",
         "left-padded batch rows equal one-by-one decoding: True"],
    ),
    "bench_decoding_step.py": (
        ["--preset", "tiny", "--steps", "3", "--batch-sizes", "1", "2"],
        ["batch 1 step speed, both fast paths / stock", "batch 2 step speed, both fast paths / stock"],
        ["tokens identical in every variant: True"],
    ),
    "bench_forward.py": (
        ["--preset", "tiny", "--batch-size", "2", "--text-length", "11"],
        ["sdpa / eager speed", "transformer FLOP rate (sdpa) / matmul rate", "channels-last / contiguous ResNet speed"],
        ["batch 2 x 16 joint tokens"],
    ),
    "bench_miss_vqa.py": (
        ["--preset", "tiny", "--layers", "2", "--new-tokens", "3", "--batch-size", "3"],
        ["cached / uncached speedup", "batch 1 per-sample throughput, MISS / BLIP",
         "batch 3 per-sample throughput, MISS / BLIP"],
        ["cached and uncached tokens identical: True", "new tokens per run: 3", "batch 1: identical answers: True",
         "batch 3: identical answers: True"],
    ),
    "bench_training.py": (
        ["--preset", "tiny", "--batch-size", "2", "--question-length", "6"],
        ["checkpointing / plain samples/s"],
        ["activation memory cut by checkpointing: ", "gradient checkpointing  "],
    ),
    "bench_m2i2_ranking.py": (
        ["--geometry", "tiny", "--batch-size", "3", "--ks", "2", "6", "--candidates", "6"],
        ["k=2 throughput, shared / re-encoded", "k=2 throughput, shared / tiled",
         "k=6 throughput, shared / re-encoded"],
        [f"k={k}: shared vs {reference}: same top-k candidates: True, same answers: True, scores equal within 1e-4: "
         "True" for k in (2, 6) for reference in ("tiled", "re-encoded")],
    ),
    "bench_m2i2_pretraining.py": (
        ["--geometry", "tiny", "--batch-size", "2", "--caption-length", "6"],
        ["checkpointing / plain samples/s"],
        ["checkpointed loss and gradients equal to plain: True", "activation memory cut by checkpointing: ",
         "gradient checkpointing  "],
    ),
}


@pytest.mark.parametrize("script", CASES)
def test_benchmark_prints_its_ratios(script, monkeypatch, capsys):
    arguments, ratios, lines = CASES[script]
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [script, *TINY, *arguments])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    output = capsys.readouterr().out
    for name in ratios:
        value = re.search(rf"^\s*{re.escape(name)}: ([0-9.]+)", output, re.MULTILINE)
        assert value and float(value.group(1)) > 0, f"{name!r} missing from:\n{output}"
    for line in lines:
        assert line in output, f"{line!r} missing from:\n{output}"
