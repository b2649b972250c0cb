"""Every example in README.md runs: the Python snippets here, the main-job command in test_examples_*."""

import re
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
