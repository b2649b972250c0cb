"""The `medvlp` command: help without heavy imports, env, convert, verify (passing and failing), card."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import medvlp_cli
from medvlp_hf.conversion import parity
from tests.models.medvill.conversion_fixtures import RECORDS, convert_arguments

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "transformers", "medvlp_hf")
IMPORTS_AT_EXIT = """
import atexit, sys
atexit.register(lambda: print("HEAVY", [name for name in {heavy!r} if name in sys.modules]))
import medvlp_cli
sys.exit(medvlp_cli.main(sys.argv[1:]))
"""


def run_medvlp(*args, timeout=120):
    """`medvlp ARGS` in a fresh interpreter, as the console script runs it."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", IMPORTS_AT_EXIT.format(heavy=HEAVY_MODULES), *args],
                          capture_output=True, text=True, timeout=timeout, env=environment, cwd=REPO_ROOT)


@pytest.mark.parametrize("args", [["--help"], ["env", "--help"], ["convert", "--help"], ["verify", "--help"],
                                  ["card", "--help"], ["env", "--no_torch"]])
def test_help_answers_without_importing_torch_transformers_or_the_models(args):
    result = run_medvlp(*args)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_top_level_help_names_every_command():
    result = run_medvlp("--help")
    for command in ("env", "convert MODEL", "verify DIR", "card DIR"):
        assert f"medvlp {command}" in result.stdout


def test_convert_help_lists_the_converters():
    result = run_medvlp("convert", "--help")
    assert "medvill      Convert the authors' MedViLL checkpoints" in result.stdout
    assert "m2i2         Convert the authors' M2I2 checkpoints" in result.stdout
    assert "`medvlp convert MODEL --help`" in result.stdout


def test_converter_help_lists_its_options():
    result = run_medvlp("convert", "medvill", "--help", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: medvlp convert medvill")
    for option in ("--checkpoint", "--kind {pretraining,retrieval,classification,vqa,report_generation}", "--reference"):
        assert option in result.stdout


def test_env_reports_versions_and_offline_settings(capsys):
    assert medvlp_cli.main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["torch"] == torch.__version__.split("+")[0] or report["torch"] == torch.__version__
    assert report["HF_HUB_OFFLINE"] == "1"  # tests/conftest.py
    assert report["medvlp_hf location"] == str(REPO_ROOT / "medvlp_hf")
    assert report["cuda"] in ("not available",) or "device" in report["cuda"]
    assert medvlp_cli.main(["env"]) == 0
    assert "transformers" in capsys.readouterr().out


def test_unknown_converter_and_missing_command_are_usage_errors(capsys):
    assert medvlp_cli.main(["convert", "nosuchmodel", "--out", "x"]) == 2
    assert "no converter for 'nosuchmodel'; available: m2i2, medvill" in capsys.readouterr().err
    assert medvlp_cli.main([]) == 2


def test_a_failing_conversion_is_reported_without_a_traceback(tmp_path, capsys):
    arguments = convert_arguments("vqa", tmp_path, tmp_path / "hf", "--kind", "pretraining")
    assert medvlp_cli.main(["convert", "medvill", *arguments]) == 1
    error = capsys.readouterr().err
    assert "medvlp convert medvill: CheckpointError" in error and "look like a vqa checkpoint" in error
    assert not (tmp_path / "hf").exists()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny VQA checkpoint converted with `medvlp convert` against the harness's reference."""
    folder = tmp_path_factory.mktemp("cli")
    arguments = convert_arguments("vqa", folder, folder / "hf", "--reference", str(RECORDS / "vqa"))
    assert medvlp_cli.main(["convert", "medvill", *arguments]) == 0
    return folder / "hf"


def test_verify_passes_on_a_freshly_converted_folder(converted, capsys):
    assert medvlp_cli.main(["verify", str(converted), "--require_original"]) == 0
    out = capsys.readouterr().out
    assert "answers.logits.full" in out and "MISMATCH" not in out
    assert "passed: the folder reproduces the original implementation's outputs" in out
    assert "SuperSupermoon/MedViLL@dd51e72" in out


def test_verify_json_reports_every_output(converted, capsys):
    assert medvlp_cli.main(["verify", str(converted), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and set(report["results"]) == {"answers.logits.full", "answers.logits.argmax"}


def test_verify_fails_on_tampered_weights(converted, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in converted.iterdir():
        (tampered / path.name).write_bytes(path.read_bytes())
    weights = load_file(tampered / "model.safetensors")
    weights["answer_classifier.2.bias"] = weights["answer_classifier.2.bias"] + 1e-3
    save_file(weights, tampered / "model.safetensors", metadata={"format": "pt"})
    assert medvlp_cli.main(["verify", str(tampered)]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "answers.logits.full (max |diff| 0.001)" in captured.err
    assert "MISMATCH" in captured.out


def test_verify_without_a_record_cannot_verify(converted, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in converted.iterdir():
        if not path.name.startswith("parity."):
            (plain / path.name).write_bytes(path.read_bytes())
    assert medvlp_cli.main(["verify", str(plain)]) == 2
    assert "has no parity record (parity.json + parity.safetensors)" in capsys.readouterr().err


def test_verify_of_a_self_recorded_folder_requires_the_flag_to_fail(tmp_path, capsys):
    out = tmp_path / "hf"
    assert medvlp_cli.main(["convert", "medvill", *convert_arguments("classification", tmp_path, out)]) == 0
    capsys.readouterr()
    assert medvlp_cli.main(["verify", str(out)]) == 0
    assert "parity with it is not verified" in capsys.readouterr().out
    assert medvlp_cli.main(["verify", str(out), "--require_original"]) == 1
    assert "--require_original" in capsys.readouterr().err


def test_card_prints_and_rewrites_the_converters_card(converted, tmp_path, capsys):
    folder = tmp_path / "card"
    folder.mkdir()
    for path in converted.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    written = (folder / "README.md").read_text()
    assert medvlp_cli.main(["card", str(folder)]) == 0
    assert capsys.readouterr().out.rstrip("\n") == written.rstrip("\n")
    (folder / "README.md").unlink()
    assert medvlp_cli.main(["card", str(folder), "--write", "--dataset", "iu_xray"]) == 0
    card = (folder / "README.md").read_text()
    assert "**Passed**" in card and "IU X-ray (Open-I" in card and "medvlp convert medvill" in card


def test_card_of_a_folder_without_record_is_an_error(tmp_path, capsys):
    assert medvlp_cli.main(["card", str(tmp_path)]) == 2
    assert "no parity record" in capsys.readouterr().err


def test_m2i2_converts_and_verifies_a_pretraining_record_with_its_momentum_update(tmp_path, capsys):
    """The M2I2 pre-training record runs the momentum update before its forward (as the original's forward does): the
    converter checks it, and `medvlp verify` re-runs it on the saved folder (the weights before the update)."""
    from tests.models.m2i2 import conversion_fixtures as m2i2

    arguments = m2i2.convert_arguments("pretraining", tmp_path, tmp_path / "hf", "--reference",
                                       str(m2i2.RECORDS / "pretraining"))
    assert medvlp_cli.main(["convert", "m2i2", *arguments]) == 0
    assert "parity passed" in capsys.readouterr().out
    assert medvlp_cli.main(["verify", str(tmp_path / "hf"), "--require_original"]) == 0
    out = capsys.readouterr().out
    assert "itc_itm_mlm_mim.mim_predictions.full" in out and "MISMATCH" not in out
    assert "pengfeiliHEU/M2I2@807326d" in out


def test_records_in_the_repository_are_readable():
    for kind_folder in RECORDS.iterdir():
        record = parity.read_record(kind_folder)
        assert record.reference["implementation"] == "original" and record.reference["commit"] == "dd51e72"
