"""push_to_hub against a local fake Hub (tests/fake_hub.py): what lands in the repo, and the refusals."""
import socket

import huggingface_hub.hf_api
import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load
from transformers import BertConfig, BertModel, ViTImageProcessor

from tests.fake_hub import FakeHub
from medvlp_hf.hub import push_to_hub, render_model_card
from medvlp_hf.hub.publish import HubConnectionError

REPO = "medzoo-test/medvill-tiny"


@pytest.fixture
def online(monkeypatch):
    """Tests run offline; a push needs the (local) network, so lift the flag for this test only."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(online):
    with FakeHub() as server:
        yield server
    assert server.unhandled == [], f"the client used endpoints the fake Hub lacks: {server.unhandled}"


@pytest.fixture(scope="module")
def card():
    return render_model_card("medvill", architecture="MedViLLForVQA", repo_id=REPO, datasets=["demo"],
                             training_command="python examples/run_vqa.py --dataset demo --config tiny")


def tiny_model():
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, max_position_embeddings=16))


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "checkpoint"
    tiny_model().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def local_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("xet_installed", [True, False])
def test_push_folder_uploads_model_processor_and_card(hub, checkpoint, card, monkeypatch, xet_installed):
    # huggingface_hub takes a pipelined upload path when hf_xet is installed and create_commit otherwise
    monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: xet_installed)
    info = push_to_hub(checkpoint, REPO, card=card, endpoint=hub.endpoint, commit_message="first upload")
    remote = hub.files(REPO)
    assert remote == local_files(checkpoint)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(remote)
    assert remote["README.md"].decode() == card
    assert hub.commits(REPO) == [(info.oid, "first upload")]
    if not xet_installed:  # create_commit validates the card's metadata with the Hub first
        assert hub.requests.index("POST /api/validate-yaml") < hub.requests.index(f"POST /api/models/{REPO}/commit/main")


def test_second_push_reuses_the_repo_and_adds_a_commit(hub, checkpoint, card):
    first = push_to_hub(checkpoint, REPO, card=card, endpoint=hub.endpoint)
    second = push_to_hub(checkpoint, REPO, card=card.replace("first", "second"), endpoint=hub.endpoint,
                         commit_message="update card")
    assert [oid for oid, _ in hub.commits(REPO)] == [first.oid, second.oid] and first.oid != second.oid
    assert hub.commits(REPO)[1][1] == "update card"


def test_folder_without_card_uses_its_readme(hub, checkpoint, card):
    (checkpoint / "README.md").write_text(card, encoding="utf-8")
    push_to_hub(checkpoint, REPO, endpoint=hub.endpoint)
    assert hub.files(REPO)["README.md"].decode() == card


def test_push_model_object_with_processor(hub, card):
    model = tiny_model()
    push_to_hub(model, REPO, card=card, processor=ViTImageProcessor(), endpoint=hub.endpoint, private=True)
    remote = hub.files(REPO)
    weights = load(remote["model.safetensors"])
    expected = model.state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    assert "preprocessor_config.json" in remote and remote["README.md"].decode() == card
    assert hub.repos[("model", REPO)]["private"] == "private"


def test_refuses_offline_mode(checkpoint, card):
    assert constants.HF_HUB_OFFLINE
    with FakeHub() as server:
        with pytest.raises(RuntimeError, match="offline mode is on"):
            push_to_hub(checkpoint, REPO, card=card, endpoint=server.endpoint)
        assert server.repos == {} and server.unhandled == []


def test_unreachable_endpoint_gives_a_connection_error(online, checkpoint, card):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HubConnectionError, match=rf"could not reach the Hub at http://127.0.0.1:{port}"):
        push_to_hub(checkpoint, REPO, card=card, endpoint=f"http://127.0.0.1:{port}")


@pytest.mark.parametrize("remove, message", [
    ("config.json", "no model config"),
    ("model.safetensors", r"no \*.safetensors weights"),
    ("preprocessor_config.json", "no processor"),
])
def test_incomplete_folder_is_refused_before_any_request(hub, checkpoint, card, remove, message):
    (checkpoint / remove).unlink()
    with pytest.raises(ValueError, match=message):
        push_to_hub(checkpoint, REPO, card=card, endpoint=hub.endpoint)
    assert hub.repos == {} and not (checkpoint / "README.md").exists()


def test_missing_card_processor_or_folder(hub, checkpoint, tmp_path, card):
    with pytest.raises(ValueError, match="pass card=render_model_card"):
        push_to_hub(checkpoint, REPO, endpoint=hub.endpoint)
    with pytest.raises(ValueError, match="needs processor="):
        push_to_hub(tiny_model(), REPO, card=card, endpoint=hub.endpoint)
    with pytest.raises(ValueError, match="only for a model object"):
        push_to_hub(checkpoint, REPO, card=card, processor=ViTImageProcessor(), endpoint=hub.endpoint)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        push_to_hub(tmp_path / "nowhere", REPO, card=card, endpoint=hub.endpoint)
    assert hub.repos == {}
