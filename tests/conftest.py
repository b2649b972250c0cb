"""Test-wide setup: offline Hub, temp HF_HOME, data location."""
import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="medvlp-hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# libgomp's default spin-waiting makes torch 3-7x slower on a shared 2-core machine; must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MEDVLP_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir():
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR} (set MEDVLP_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def bert_vocab_file(data_dir):
    return data_dir / "tokenizers" / "bert-base-uncased" / "vocab.txt"


def pytest_generate_tests(metafunc):
    """Shared testers (tests/common): a test marked `@for_heads(kind)` runs once per head class of that kind of the
    test class's model tester."""
    kind = getattr(metafunc.function, "head_kind", None)
    if kind is None or metafunc.cls is None:
        return
    classes = metafunc.cls.tester.heads(kind)
    metafunc.parametrize("model_class", classes, ids=[model_class.__name__ for model_class in classes])
