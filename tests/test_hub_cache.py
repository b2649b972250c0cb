"""seed_hub_cache: a copied-in folder is found offline by the Hub's own download and loading code."""
import json
import os

import pytest
import torch
from huggingface_hub import constants, hf_hub_download, scan_cache_dir, snapshot_download, try_to_load_from_cache
from safetensors.torch import load_file, save_file

from medvlp_hf.hub import seed_hub_cache

REPO = "hospital-a/medvill-tiny"


@pytest.fixture(autouse=True)
def offline():
    assert constants.HF_HUB_OFFLINE, "these tests prove offline resolution; conftest must set HF_HUB_OFFLINE=1"


def write_checkpoint(folder, scale=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) * scale, "bias": torch.ones(3) * scale}
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "medvill", "scale": scale}))
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\n")
    return tensors


def file_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_offline_download_finds_every_seeded_file(tmp_path):
    source, cache = tmp_path / "usb", tmp_path / "cache"
    tensors = write_checkpoint(source)
    snapshot = seed_hub_cache(source, REPO, cache_dir=cache)

    downloaded = snapshot_download(REPO, cache_dir=cache, local_files_only=True)
    assert os.path.samefile(downloaded, snapshot)
    assert file_bytes(snapshot) == file_bytes(source)
    config = hf_hub_download(REPO, "config.json", cache_dir=cache)
    assert json.loads(open(config).read())["model_type"] == "medvill"
    weights = load_file(hf_hub_download(REPO, "model.safetensors", cache_dir=cache))
    assert all(torch.equal(weights[name], tensors[name]) for name in tensors)
    assert hf_hub_download(REPO, "tokenizer/vocab.txt", cache_dir=cache).endswith("tokenizer/vocab.txt")
    assert try_to_load_from_cache(REPO, "missing.json", cache_dir=cache) is None


def test_layout_is_the_hub_cache_layout(tmp_path):
    source, cache = tmp_path / "usb", tmp_path / "cache"
    write_checkpoint(source)
    snapshot = seed_hub_cache(source, REPO, cache_dir=cache)
    repo_dir = cache / "models--hospital-a--medvill-tiny"
    assert snapshot.parent == repo_dir / "snapshots" and len(snapshot.name) == 40
    assert (repo_dir / "refs" / "main").read_text() == snapshot.name
    pointer = snapshot / "model.safetensors"
    assert pointer.is_symlink() and not os.path.isabs(os.readlink(pointer))
    assert pointer.resolve().parent == (repo_dir / "blobs").resolve()
    info = scan_cache_dir(cache)
    (repo,) = info.repos
    assert repo.repo_id == REPO and repo.repo_type == "model"
    assert repo.size_on_disk == sum(len(b) for b in file_bytes(source).values())
    (revision,) = repo.revisions
    assert revision.commit_hash == snapshot.name and revision.refs == frozenset({"main"})


def test_transformers_from_pretrained_loads_offline(tmp_path):
    from transformers import AutoModel, BertConfig, BertModel

    source, cache = tmp_path / "saved", tmp_path / "cache"
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=16))
    model.save_pretrained(source)
    seed_hub_cache(source, "hospital-a/tiny-bert", cache_dir=cache)
    loaded = AutoModel.from_pretrained("hospital-a/tiny-bert", cache_dir=cache)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.state_dict().items())


def test_reseeding_is_deterministic_and_updates_main(tmp_path):
    source, cache = tmp_path / "usb", tmp_path / "cache"
    write_checkpoint(source)
    first = seed_hub_cache(source, REPO, cache_dir=cache)
    assert seed_hub_cache(source, REPO, cache_dir=cache) == first
    tensors = write_checkpoint(source, scale=2.0)
    second = seed_hub_cache(source, REPO, cache_dir=cache)
    assert second != first and first.is_dir()
    weights = load_file(hf_hub_download(REPO, "model.safetensors", cache_dir=cache))
    assert torch.equal(weights["bias"], tensors["bias"])
    old = load_file(hf_hub_download(REPO, "model.safetensors", cache_dir=cache, revision=first.name))
    assert torch.equal(old["bias"], torch.ones(3))


def test_tags_and_pinned_commits(tmp_path):
    source, cache = tmp_path / "usb", tmp_path / "cache"
    write_checkpoint(source)
    tagged = seed_hub_cache(source, REPO, cache_dir=cache, revision="v1.0")
    assert (cache / "models--hospital-a--medvill-tiny" / "refs" / "v1.0").read_text() == tagged.name
    assert hf_hub_download(REPO, "config.json", cache_dir=cache, revision="v1.0").startswith(str(tagged))
    commit = "0123456789abcdef0123456789abcdef01234567"
    pinned = seed_hub_cache(source, REPO, cache_dir=cache, revision=commit)
    assert pinned.name == commit and not (cache / "models--hospital-a--medvill-tiny" / "refs" / commit).exists()
    assert hf_hub_download(REPO, "config.json", cache_dir=cache, revision=commit).startswith(str(pinned))


def test_default_cache_dir_and_skipped_folders(tmp_path, monkeypatch):
    source = tmp_path / "usb"
    write_checkpoint(source)
    (source / ".git").mkdir()
    (source / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    snapshot = seed_hub_cache(source, REPO)
    assert snapshot.is_relative_to(tmp_path / "default-cache")
    assert sorted(file_bytes(snapshot)) == ["config.json", "model.safetensors", "tokenizer/vocab.txt"]


@pytest.mark.parametrize("folder, kwargs, error, message", [
    ("missing", {}, FileNotFoundError, "is not a folder"),
    ("usb", dict(repo_id="bad id with spaces"), ValueError, "Repo id must"),
    ("usb", dict(repo_type="bucket"), ValueError, "repo_type must be one of"),
    ("usb", dict(revision="../escape"), ValueError, "invalid revision"),
])
def test_bad_inputs(tmp_path, folder, kwargs, error, message):
    write_checkpoint(tmp_path / "usb")
    args = {"repo_id": REPO, "cache_dir": tmp_path / "cache", **kwargs}
    with pytest.raises(error, match=message):
        seed_hub_cache(tmp_path / folder, **args)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        seed_hub_cache(tmp_path / "empty", REPO, cache_dir=tmp_path / "cache")
