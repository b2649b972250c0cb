"""Files shipped with the package (tokenizer vocabularies) so nothing is downloaded at run time."""
from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parent


def tokenizer_dir(name: str) -> Path:
    """The folder of bundled tokenizer files `name` (a processor's `default_tokenizer`)."""
    folder = RESOURCES_DIR / name
    if not folder.is_dir():
        bundled = sorted(path.name for path in RESOURCES_DIR.iterdir() if path.is_dir() and not path.name.startswith("_"))
        raise FileNotFoundError(f"no bundled tokenizer {name!r}; medvlp-hf ships {bundled}.")
    return folder


def bert_base_uncased_vocab_file() -> Path:
    """The bert-base-uncased WordPiece vocab used by MedViLL, M2I2 and MISS."""
    return tokenizer_dir("bert-base-uncased") / "vocab.txt"
