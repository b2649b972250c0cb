"""A saved MedViLL loads in a fresh process with plain transformers (trust_remote_code), never importing
medvlp_hf, and gives the same outputs."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from medvlp_hf import MedViLLForReportGeneration, MedViLLForVQA
from tests.models.medvill.inputs import pixel_batch, text_batch, tiny_config

LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["medvlp_hf"] = None  # any import of the package now fails
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering
    folder, kind, inputs_file, out_file = sys.argv[1:]
    inputs = torch.load(inputs_file)
    auto = AutoModelForVisualQuestionAnswering if kind == "vqa" else AutoModelForImageTextToText
    model = auto.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        if kind == "vqa":
            result = model(**inputs).logits
        else:
            result = model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=6, do_sample=False)
    torch.save(result, out_file)
    print("loaded", type(model).__name__, "medvlp_hf imported:", sys.modules.get("medvlp_hf") is not None)
    """
)


def run_fresh(tmp_path, folder, kind, inputs):
    torch.save(inputs, tmp_path / "inputs.pt")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), kind, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "medvlp_hf imported: False" in result.stdout
    return torch.load(tmp_path / "out.pt")


def test_remote_code_vqa_and_generation(tmp_path):
    generator = torch.Generator().manual_seed(0)
    config = tiny_config(num_labels=3)
    input_ids, attention_mask = text_batch((3, 2), generator)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
              "pixel_values": pixel_batch(config, 2, generator)}

    torch.manual_seed(0)
    vqa = MedViLLForVQA(config).eval()
    vqa.save_pretrained(tmp_path / "vqa")
    saved = json.loads((tmp_path / "vqa" / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForVisualQuestionAnswering"] == "modeling_medvill.MedViLLForVQA"
    assert (tmp_path / "vqa" / "modeling_medvill.py").is_file()
    with torch.no_grad():
        expected = vqa(**inputs).logits
    assert torch.equal(run_fresh(tmp_path, tmp_path / "vqa", "vqa", inputs), expected)

    torch.manual_seed(0)
    generator_model = MedViLLForReportGeneration(tiny_config()).eval()
    generator_model.save_pretrained(tmp_path / "rg")
    expected_tokens = generator_model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=6, do_sample=False)
    assert torch.equal(run_fresh(tmp_path, tmp_path / "rg", "rg", inputs), expected_tokens)
