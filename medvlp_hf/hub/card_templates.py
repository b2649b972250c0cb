"""Read the model-card templates shipped inside the package (`medvlp_hf/hub/templates/`).

`card.md` is the layout every card shares; `models/<model_type>.md` holds one model's facts (paper,
citation, heads with their pipeline tag and usage snippet) as YAML front matter plus its own prose
sections; `datasets.json` names each known dataset and its licence. Adding a model's card means adding
one `models/<model_type>.md`; no code changes.
"""
import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
MODEL_TEMPLATES_DIR = TEMPLATES_DIR / "models"

REQUIRED_FIELDS = ("model_type", "display_name", "license", "tags", "paper", "code", "bibtex",
                   "default_architecture", "architectures")
REQUIRED_ARCHITECTURE_FIELDS = ("pipeline_tag", "head", "usage")
REQUIRED_SECTIONS = ("Model description", "Training data", "Limitations and bias")

_MODEL_TYPE = re.compile(r"[a-z0-9_]+")
_FRONT_MATTER = re.compile(r"\A---\n(.*?\n)---\n", flags=re.S)


@dataclass(frozen=True)
class ModelTemplate:
    """One model's card facts (`metadata`, from the front matter) and prose (`sections`, by heading)."""

    metadata: dict
    sections: dict


def split_front_matter(text, source):
    """Return (metadata mapping, body) of a Markdown text that starts with `---` YAML front matter."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise ValueError(f"{source}: expected YAML front matter between '---' lines at the top.")
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: the front matter is not valid YAML: {err}") from err
    if not isinstance(metadata, dict):
        raise ValueError(f"{source}: the front matter must be a YAML mapping, got {type(metadata).__name__}.")
    return metadata, text[match.end():]


def available_model_types():
    return sorted(path.stem for path in MODEL_TEMPLATES_DIR.glob("*.md"))


@lru_cache(maxsize=None)
def load_model_template(model_type):
    """Parse and check `models/<model_type>.md`; errors name the file and what is missing."""
    known = isinstance(model_type, str) and _MODEL_TYPE.fullmatch(model_type)
    path = MODEL_TEMPLATES_DIR / f"{model_type}.md"
    if not known or not path.is_file():
        raise ValueError(
            f"unknown model_type {model_type!r}: model cards exist for {available_model_types()}. "
            f"To add one, write {MODEL_TEMPLATES_DIR}/<model_type>.md following medvill.md."
        )
    metadata, body = split_front_matter(path.read_text(encoding="utf-8"), path)
    _require(metadata, REQUIRED_FIELDS, path)
    if metadata["model_type"] != model_type:
        raise ValueError(f"{path}: model_type is {metadata['model_type']!r}, expected {model_type!r}.")
    for name, architecture in metadata["architectures"].items():
        _require(architecture, REQUIRED_ARCHITECTURE_FIELDS, f"{path} (architecture {name})")
    if metadata["default_architecture"] not in metadata["architectures"]:
        raise ValueError(f"{path}: default_architecture is not one of its architectures.")
    sections = _sections(body)
    missing = [title for title in REQUIRED_SECTIONS if not sections.get(title)]
    if missing:
        raise ValueError(f"{path}: missing or empty '## ' sections {missing}.")
    return ModelTemplate(metadata=metadata, sections=sections)


@lru_cache(maxsize=None)
def load_layout():
    return string.Template((TEMPLATES_DIR / "card.md").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def load_dataset_info():
    """Known datasets: id -> {"name", "license", "url"}."""
    return json.loads((TEMPLATES_DIR / "datasets.json").read_text(encoding="utf-8"))


def _sections(body):
    """Split Markdown at '## ' headings into {heading: text}."""
    sections, title, lines = {}, None, []
    for line in body.splitlines():
        if line.startswith("## "):
            if title is not None:
                sections[title] = "\n".join(lines).strip()
            title, lines = line[3:].strip(), []
        else:
            lines.append(line)
    if title is not None:
        sections[title] = "\n".join(lines).strip()
    return sections


def _require(mapping, fields, source):
    if not isinstance(mapping, dict):
        raise ValueError(f"{source}: expected a mapping with fields {list(fields)}.")
    missing = [field for field in fields if not mapping.get(field)]
    if missing:
        raise ValueError(f"{source}: missing fields {missing}.")
