"""Every example in README.md runs: the Python snippets and the main-job command, exactly as written."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def fenced_blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.mark.parametrize("snippet", fenced_blocks("python"), ids=lambda s: s.splitlines()[-1][:40])
def test_python_snippet_runs(snippet, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, str(README), "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "each snippet prints its result"


def test_ci_runs_the_readme_test_command():
    (command,) = fenced_blocks("bash test")
    assert command.strip() == "python -m pytest -q"
    assert "bash test" in (README.parent / ".ci" / "run").read_text()


def test_main_job_command_trains_and_reports_accuracy(tmp_path):
    (setup_block,) = [block for block in fenced_blocks("bash") if "examples/run_vqa.py" in block]
    (command,) = [line for line in setup_block.splitlines() if line.startswith("python examples/")]
    argv = shlex.split(command)
    argv[1] = str(README.parent / argv[1])
    result = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    output_dir = tmp_path / argv[argv.index("--output_dir") + 1]
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert {"eval_closed_accuracy", "eval_open_accuracy", "eval_overall_accuracy"} <= metrics.keys()
    output = result.stdout + result.stderr
    assert "eval_overall_accuracy" in output
    # It learns from the pixels: well above always giving the most common training answer of the question's type.
    for kind in ("closed", "open"):
        accuracy, baseline = metrics[f"eval_{kind}_accuracy"], metrics[f"eval_baseline_{kind}_accuracy"]
        assert accuracy >= baseline + 0.15, metrics
        assert f"{kind:<8}{accuracy:.3f}   baseline {baseline:.3f}" in output
    assert f"Written to {argv[argv.index('--output_dir') + 1]}: the trained model" in output
    # Nothing an offline newcomer cannot act on: no Hub invitation, no processor-config chatter, no per-save bars.
    for noise in ("huggingface.co", "size should be a dictionary", "Writing model shards", "WARNING"):
        assert noise not in output, noise
