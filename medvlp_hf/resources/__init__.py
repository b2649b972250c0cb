"""Files shipped with the package (tokenizer vocabularies) so nothing is downloaded at run time."""
from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parent


def bert_base_uncased_vocab_file() -> Path:
    """The bert-base-uncased WordPiece vocab used by MedViLL, M2I2 and MISS."""
    return RESOURCES_DIR / "bert-base-uncased" / "vocab.txt"
