"""Model-card rendering: Hub metadata, required sections, provenance, and input validation."""
import math
import re
import shutil

import pytest
import yaml
from huggingface_hub import ModelCard

from medvlp_hf.hub import card_templates, render_model_card, save_model_card

TRAIN_CMD = "python examples/run_vqa.py --dataset vqa_rad --model_type medvill --config small --output_dir OUT"
CONVERSION = {
    "source_checkpoint": "pt_model/model.50.bin",
    "script": "conversion/convert_medvill_original_checkpoint.py",
    "command": "python conversion/convert_medvill_original_checkpoint.py --checkpoint pt_model/model.50.bin --kind vqa --out OUT",
    "parity_status": "passed",
    "max_abs_diffs": {"vqa_logits": 3.2e-6, "pixel_values": 0.0},
    "tolerance": 1e-4,
}
EVAL = [
    {"dataset": "vqa_rad", "split": "test", "metric": "accuracy", "metric_name": "Closed accuracy", "value": 0.75},
    {"dataset": "vqa_rad", "split": "test", "metric": "accuracy", "metric_name": "Open accuracy", "value": 0.4},
]
SECTIONS = ["Model description", "Intended use", "How to use", "Training data", "Training procedure",
            "Evaluation results", "Parity with the original implementation", "Limitations and bias", "Citation"]


def vqa_card(**overrides):
    kwargs = dict(architecture="MedViLLForVQA", repo_id="org/medvill-vqa-rad", base_model="org/medvill-base",
                  datasets=["vqa_rad"], eval_results=EVAL, training_command=TRAIN_CMD)
    kwargs.update(overrides)
    return render_model_card("medvill", **kwargs)


def front_matter(card):
    match = re.match(r"\A---\n(.*?\n)---\n", card, flags=re.S)
    assert match is not None
    return yaml.safe_load(match.group(1))


def section(card, title):
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, flags=re.S | re.M)
    assert match is not None, title
    return match.group(1)


def test_front_matter_has_the_hub_fields():
    meta = front_matter(vqa_card())
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "visual-question-answering"
    assert meta["license"] == "mit"
    assert meta["datasets"] == ["vqa_rad"]
    assert meta["base_model"] == "org/medvill-base"
    assert meta["tags"][:3] == ["medical", "vision-language", "medvill"]
    assert meta["model-index"] == [{
        "name": "medvill-vqa-rad",
        "results": [{
            "task": {"type": "visual-question-answering"},
            "dataset": {"name": "VQA-RAD", "type": "vqa_rad", "split": "test"},
            "metrics": [
                {"type": "accuracy", "value": 0.75, "name": "Closed accuracy"},
                {"type": "accuracy", "value": 0.4, "name": "Open accuracy"},
            ],
        }],
    }]


def test_huggingface_hub_parses_the_card_back():
    data = ModelCard(vqa_card()).data
    assert [(r.dataset_type, r.dataset_split, r.metric_name, r.metric_value) for r in data.eval_results] == [
        ("vqa_rad", "test", "Closed accuracy", 0.75), ("vqa_rad", "test", "Open accuracy", 0.4)]
    assert data.pipeline_tag == "visual-question-answering"


def test_sections_in_order_and_clinical_warning():
    card = vqa_card()
    assert re.findall(r"^## (.+)$", card, flags=re.M) == SECTIONS
    assert "not for clinical use" in card.split("## Model description")[0].lower()
    assert "not for clinical use" in section(card, "Intended use").lower()


def test_provenance_evaluation_and_citation_sections():
    card = vqa_card(conversion=CONVERSION)
    procedure = section(card, "Training procedure")
    assert f"```bash\n{CONVERSION['command']}\n```" in procedure
    assert f"```bash\n{TRAIN_CMD}\n```" in procedure
    assert procedure.index(CONVERSION["command"]) < procedure.index(TRAIN_CMD)
    parity = section(card, "Parity with the original implementation")
    assert "**Passed** (tolerance 0.0001)" in parity
    assert "| vqa_logits | 3.2e-06 |" in parity and "| pixel_values | 0 |" in parity
    rows = [line for line in section(card, "Evaluation results").splitlines() if line.startswith("| visual")]
    assert rows == ["| visual-question-answering | VQA-RAD | test | Closed accuracy | 0.7500 |",
                    "| visual-question-answering | VQA-RAD | test | Open accuracy | 0.4000 |"]
    data = section(card, "Training data")
    assert "| VQA-RAD | `vqa_rad` | CC0 1.0" in data
    assert "PhysioNet Credentialed Health Data License" in data
    citation = section(card, "Citation")
    assert "@article{moon2022medvill," in citation
    assert "Moon, Jong Hak and Lee, Hyungyung and Shin, Woncheol and Kim, Young-Hak and Choi, Edward" in citation


def test_parity_states_without_and_with_failed_conversion():
    assert "Not applicable" in section(vqa_card(), "Parity with the original implementation")
    failed = vqa_card(conversion={**CONVERSION, "parity_status": "failed", "max_abs_diffs": {"vqa_logits": 0.3}})
    assert "**Failed** (tolerance 0.0001)" in section(failed, "Parity with the original implementation")
    unverified = render_model_card("medvill", datasets=["mimic_cxr"], conversion={
        **CONVERSION, "parity_status": "not verified", "max_abs_diffs": {}})
    assert "**Not verified**" in section(unverified, "Parity with the original implementation")
    assert "The original weights were trained on MIMIC-CXR." in section(unverified, "Model description")


@pytest.mark.parametrize("architecture", sorted(card_templates.load_model_template("medvill").metadata["architectures"]))
def test_every_head_has_its_pipeline_tag_and_a_valid_usage_snippet(architecture):
    head = card_templates.load_model_template("medvill").metadata["architectures"][architecture]
    card = render_model_card("medvill", architecture=architecture, repo_id="org/m", datasets=["demo"],
                             training_command="python examples/run_vqa.py --dataset demo")
    assert front_matter(card)["pipeline_tag"] == head["pipeline_tag"]
    snippet = re.search(r"```python\n(.*?)```", card, flags=re.S).group(1)
    compile(snippet, f"usage of {architecture}", "exec")
    assert 'from_pretrained("org/m")' in snippet and "$repo_id" not in snippet
    assert f"`{architecture}`" in section(card, "Model description")


def test_defaults_without_repo_id_and_extra_tags():
    card = render_model_card("medvill", datasets="demo", training_command="python examples/run_pretraining.py",
                             tags=["radiology", "my-tag"])
    meta = front_matter(card)
    assert meta["pipeline_tag"] == "feature-extraction"  # the default head is pre-training
    assert meta["tags"] == ["medical", "vision-language", "medvill", "chest-x-ray", "radiology", "my-tag"]
    assert "model-index" not in meta and "base_model" not in meta
    assert 'from_pretrained("path/to/checkpoint")' in card
    assert "No evaluation results were recorded" in card


def test_dataset_licence_supplied_by_the_caller():
    card = vqa_card(datasets=["vqa_rad", "hospital/cxr-2024"], dataset_licenses={"hospital/cxr-2024": "internal use only"})
    assert "| hospital/cxr-2024 | `hospital/cxr-2024` | internal use only | - |" in section(card, "Training data")
    assert front_matter(card)["datasets"] == ["vqa_rad", "hospital/cxr-2024"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(architecture="MedViLLForSegmentation"), "is not a medvill head"),
    (dict(pipeline_tag="text-to-speech"), "does not fit MedViLL"),
    (dict(license="MIT License"), "Hub licence id"),
    (dict(datasets=["chexpert"]), "has no recorded licence"),
    (dict(datasets=[]), "must name the training data"),
    (dict(training_command=None), "say how the checkpoint was produced"),
    (dict(training_command="  "), "non-empty command line"),
    (dict(repo_id="not a repo id"), "Repo id must"),
    (dict(eval_results=[{**EVAL[0], "value": "0.75"}]), "must be a finite number"),
    (dict(eval_results=[{**EVAL[0], "value": math.nan}]), "must be a finite number"),
    (dict(eval_results=[{**EVAL[0], "value": math.inf}]), "must be a finite number"),
    (dict(eval_results=[{**EVAL[0], "value": True}]), "must be a finite number"),
    (dict(eval_results=[{"dataset": "vqa_rad", "metric": "accuracy", "value": 0.5}]), "missing keys ['split']"),
    (dict(eval_results=[{**EVAL[0], "score": 1.0}]), "unknown keys ['score']"),
    (dict(eval_results=[{**EVAL[0], "split": ""}]), "must be a non-empty string"),
    (dict(eval_results=["accuracy=0.75"]), "must be a dict"),
    (dict(conversion={**CONVERSION, "parity_status": "ok"}), "parity_status'] must be one of"),
    (dict(conversion={**CONVERSION, "max_abs_diffs": {"vqa_logits": 2e-3}}), "exceed the tolerance"),
    (dict(conversion={**CONVERSION, "max_abs_diffs": {"vqa_logits": -1.0}}), "finite number >= 0"),
    (dict(conversion={**CONVERSION, "max_abs_diffs": {}}), "max_abs_diffs'] is empty"),
    (dict(conversion={k: v for k, v in CONVERSION.items() if k != "script"}), "missing keys ['script']"),
    (dict(conversion={**CONVERSION, "command": ""}), "conversion['command'] must be a non-empty string"),
    (dict(conversion={**CONVERSION, "tolerance": "1e-4"}), "conversion['tolerance'] must be a finite number"),
    (dict(conversion=["pt_model/model.50.bin"]), "conversion must be a dict"),
])
def test_bad_inputs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        vqa_card(**kwargs)


@pytest.mark.parametrize("model_type", ["not_a_model", "../card", 3])
def test_unknown_model_type(model_type):
    with pytest.raises(ValueError, match="model_type"):
        render_model_card(model_type, datasets=["demo"], training_command="x")


def test_save_model_card(tmp_path):
    card = vqa_card()
    path = save_model_card(card, tmp_path / "out")
    assert path == tmp_path / "out" / "README.md" and path.read_text(encoding="utf-8") == card
    with pytest.raises(ValueError, match="front matter"):
        save_model_card("# a card without metadata", tmp_path)
    with pytest.raises(ValueError, match="non-empty card"):
        save_model_card("", tmp_path)


@pytest.fixture
def template_dir(tmp_path, monkeypatch):
    """A private copy of the model templates, so a test can add or break one."""
    folder = tmp_path / "models"
    shutil.copytree(card_templates.MODEL_TEMPLATES_DIR, folder)
    monkeypatch.setattr(card_templates, "MODEL_TEMPLATES_DIR", folder)
    card_templates.load_model_template.cache_clear()
    yield folder
    card_templates.load_model_template.cache_clear()


def test_a_new_model_only_needs_a_template(template_dir):
    text = (template_dir / "medvill.md").read_text(encoding="utf-8")
    (template_dir / "newmodel.md").write_text(text.replace("model_type: medvill", "model_type: newmodel")
                                              .replace("display_name: MedViLL", "display_name: NewModel"))
    card = render_model_card("newmodel", datasets=["demo"], training_command="python train.py")
    assert "newmodel" in front_matter(card)["tags"] and "`model_type: newmodel`" in card


def test_broken_template_names_the_file_and_the_gap(template_dir):
    text = (template_dir / "medvill.md").read_text(encoding="utf-8")
    (template_dir / "broken.md").write_text(text.replace("model_type: medvill", "model_type: broken")
                                            .split("## Limitations and bias")[0])
    with pytest.raises(ValueError, match=r"broken\.md: missing or empty '## ' sections \['Limitations and bias'\]"):
        render_model_card("broken", datasets=["demo"], training_command="x")
    (template_dir / "nobib.md").write_text(text.replace("model_type: medvill", "model_type: nobib")
                                           .replace("bibtex: |", "bibtex_missing: |"))
    with pytest.raises(ValueError, match=r"nobib\.md: missing fields \['bibtex'\]"):
        render_model_card("nobib", datasets=["demo"], training_command="x")


def test_citation_matches_the_paper_text(data_dir):
    paper = data_dir.parent / "papers" / "medvill.txt"
    if not paper.is_file():
        pytest.skip(f"paper text not found at {paper}")
    head = " ".join(paper.read_text(encoding="utf-8").split()[:40])
    meta = card_templates.load_model_template("medvill").metadata
    assert meta["paper"]["title"] in head
    assert ", ".join(meta["paper"]["authors"]) in head.replace("∗", "").replace(", and ", ", ")


def test_parity_with_relative_tolerance_and_reference():
    """rtol/atol as in torch.testing.assert_close: a max |diff| above atol can pass (large values), so the card
    cannot re-check it; the reference sentence says what the outputs were compared with."""
    conversion = {**CONVERSION, "tolerance": {"rtol": 1e-5, "atol": 1e-4}, "max_abs_diffs": {"mlm_logits": 6e-4},
                  "reference": "the original implementation (SuperSupermoon/MedViLL@dd51e72) run on the same checkpoint"}
    parity = section(vqa_card(conversion=conversion), "Parity with the original implementation")
    assert "**Passed** (tolerance rtol 1e-05, atol 0.0001; integer outputs identical)" in parity
    assert "Reference: the original implementation (SuperSupermoon/MedViLL@dd51e72) run on the same checkpoint." in parity
    assert "| mlm_logits | 0.0006 |" in parity
    for bad, message in [({"rtol": 1e-5}, "exactly 'rtol' and 'atol'"), ({"rtol": -1, "atol": 0}, "finite numbers >= 0")]:
        with pytest.raises(ValueError, match=message):
            vqa_card(conversion={**conversion, "tolerance": bad})
    with pytest.raises(ValueError, match="conversion\\['reference'\\] must say what the outputs were compared with"):
        vqa_card(conversion={**conversion, "reference": " "})
