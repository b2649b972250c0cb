"""--push_to_hub on the example scripts: the trained model, its processor and a model card with the evaluation
results go to the Hub in one commit (a local fake Hub here), and Trainer itself never goes online."""

import pytest
import yaml
from huggingface_hub import constants

from tests.fake_hub import FakeHub
from tests.test_examples_common import read_json, run_example

REPO = "medzoo-test/demo-vqa-tiny"


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        yield server
    # huggingface_hub's best-effort agent detection may fetch its registry once it is online; it is not part of a push
    unhandled = [request for request in server.unhandled if request != "GET /api/agent-harnesses"]
    assert unhandled == [], f"the client used endpoints the fake Hub lacks: {unhandled}"


def test_push_to_hub_uploads_model_processor_and_card_with_eval_results(tmp_path, hub):
    out = tmp_path / "vqa"
    run_example("vqa", out, "--do_train", "--do_eval", "--max_steps", "2", "--push_to_hub", "--hub_model_id", REPO)
    files = hub.files(REPO)
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json", "README.md"} <= set(files)
    assert not [name for name in files if name.startswith("checkpoint-")]
    assert len(hub.commits(REPO)) == 1

    card = files["README.md"].decode()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "visual-question-answering"
    assert metadata["datasets"] == ["demo"]
    results = {m["type"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    expected = read_json(out / "eval_results.json")
    assert results == pytest.approx({name: expected[f"eval_{name}"] for name in
                                     ("closed_accuracy", "open_accuracy", "overall_accuracy")})
    assert "python examples/run_vqa.py --dataset demo" in card
    assert "not for clinical use" in card.lower()

