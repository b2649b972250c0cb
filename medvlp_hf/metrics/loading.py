"""``load(name)``: the package's evaluate modules through ``evaluate.load`` on their packaged paths.

The Hub metric scripts (``evaluate.load("bleu")`` ...) cannot be reached offline; these files ship
inside the package. ``keep_in_memory`` defaults to True so no Arrow cache is written (evaluate copies
the module file under ``HF_HOME/modules``, nothing else is written).
"""
from pathlib import Path

MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
MODULE_FILES = {
    "vqa": "medvlp_vqa.py",
    "report_generation": "medvlp_report_generation.py",
    "clinical_efficacy": "medvlp_clinical_efficacy.py",
    "retrieval": "medvlp_retrieval.py",
    "classification": "medvlp_classification.py",
}


def module_path(name: str) -> Path:
    """Path of the evaluate module file for ``name`` (one of ``MODULE_FILES``)."""
    if name not in MODULE_FILES:
        raise KeyError(f"unknown metric {name!r}; available: {sorted(MODULE_FILES)}")
    return MODULES_DIR / MODULE_FILES[name]


def load(name: str, config_name: str = None, keep_in_memory: bool = True, **kwargs):
    """``evaluate.load`` of a packaged metric, e.g. ``load("vqa")`` or ``load("retrieval", "cross_modal")``."""
    import evaluate

    return evaluate.load(str(module_path(name)), config_name, keep_in_memory=keep_in_memory, **kwargs)
