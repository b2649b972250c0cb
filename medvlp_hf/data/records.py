"""Loader plumbing: read files, validate raw records, resolve images, raise on (or skip and count) bad records.

Every loader builds its rows through a `RecordCollector`, so a bad record either raises an error that
names the file and the record, or, with `on_error="skip"`, is dropped and counted in one logged warning.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from datasets import Dataset, DatasetDict, Features

from .errors import DataFormatError, ImageDecodingError
from .imaging import is_dicom, load_dicom, load_image

logger = logging.getLogger("medvlp_hf.data")

ON_ERROR_CHOICES = ("raise", "skip")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "validation", "valid": "validation", "validate": "validation", "validation": "validation",
    "dev": "validation",
    "test": "test", "testing": "test",
}
_SPLIT_NAME = re.compile(r"^\w+$")


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error={on_error!r}; choose 'raise' (stop at the first bad record) or 'skip'")
    return on_error


def canonical_split(name) -> str:
    """'val'/'valid'/'validate' -> 'validation' etc.; other word-like names are kept as they are."""
    text = str(name).strip()
    alias = _SPLIT_ALIASES.get(text.lower())
    if alias is not None:
        return alias
    if not _SPLIT_NAME.match(text):
        raise DataFormatError(f"split name {name!r} is not usable as a dataset split (letters, digits, _)")
    return text


def require(raw, name: str, kinds: type | tuple[type, ...] = str):
    """`raw[name]`, checked to exist and to have one of `kinds` (bool never passes as int)."""
    if not isinstance(raw, Mapping):
        raise DataFormatError(f"record is a {type(raw).__name__}, expected a JSON object")
    if name not in raw or raw[name] is None:
        raise DataFormatError(f"missing field {name!r}")
    value = raw[name]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(kind.__name__ for kind in kinds)
        raise DataFormatError(f"field {name!r} is {value!r}, expected {expected}")
    return value


def require_text(raw, name: str) -> str:
    """A required non-empty string field, stripped."""
    value = require(raw, name, str).strip()
    if not value:
        raise DataFormatError(f"field {name!r} is empty")
    return value


def read_json(path: Path):
    """Parse a JSON file; a missing or malformed file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path} is not valid JSON: {error}") from error


def read_json_list(path: Path) -> list:
    """A JSON file whose top level must be a list of records."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path} must hold a JSON list of records, found {type(data).__name__}")
    return data


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped line) for every non-blank line of a text file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        return [(number, line.strip()) for number, line in enumerate(handle, 1) if line.strip()]


def parse_json_line(line: str):
    """One JSONL line as a record; a syntax error becomes a record error."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"not valid JSON: {error}") from error


class ImageResolver:
    """Turns an image path into a value for an `Image()` column, checking it once per path.

    Missing files are always caught. With `verify=True` every distinct file is fully decoded at load time,
    so corrupt or truncated images are reported (or skipped) before training. DICOM files cannot be read
    by `datasets.Image()`, so they are decoded here (see `imaging.load_dicom`) and stored as PNG bytes.
    """

    def __init__(self, verify: bool = False):
        self.verify = verify
        self._seen: dict[str, object] = {}

    def __call__(self, path) -> str | dict:
        key = os.path.abspath(path)
        if key not in self._seen:
            try:
                self._seen[key] = self._resolve(key)
            except (DataFormatError, ImageDecodingError) as error:
                self._seen[key] = error
        value = self._seen[key]
        if isinstance(value, Exception):
            raise value
        return value

    def _resolve(self, path: str) -> str | dict:
        if not os.path.isfile(path):
            raise DataFormatError(f"image file not found: {path}")
        if is_dicom(path):
            buffer = io.BytesIO()
            load_dicom(path).save(buffer, format="PNG")
            return {"path": path, "bytes": buffer.getvalue()}
        if self.verify:
            load_image(path)
        return path


class RecordCollector:
    """Builds the rows of one source file; a failing record raises (naming file and record) or is counted."""

    def __init__(self, source, on_error: str = "raise"):
        self.source = str(source)
        self.on_error = check_on_error(on_error)
        self.records: list[dict] = []
        self.skipped = 0
        self._first_problem: str | None = None

    def add(self, where: str, build: Callable[[], dict | list[dict] | None]) -> None:
        """Run `build` (one row, several rows, or None when the record is filtered out on purpose)."""
        try:
            built = build()
        except (DataFormatError, ImageDecodingError) as error:
            message = f"{self.source}, {where}: {error}"
            if self.on_error == "raise":
                raise type(error)(message) from error
            self.skipped += 1
            self._first_problem = self._first_problem or message
            return
        if isinstance(built, list):
            self.records.extend(built)
        elif built is not None:
            self.records.append(built)

    def finish(self) -> list[dict]:
        if self.skipped:
            logger.warning(
                "skipped %d bad record(s) of %s (on_error='skip'); first: %s",
                self.skipped, self.source, self._first_problem,
            )
        return self.records


def group_by_split(rows: list[dict], names: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """Rows tagged with a `_split` key -> {split: rows} (tag removed); `names` are present even when empty."""
    splits: dict[str, list[dict]] = {name: [] for name in names}
    for row in rows:
        splits.setdefault(row.pop("_split"), []).append(row)
    return splits


def build_dataset_dict(splits: Mapping[str, list[dict]], features: Features) -> DatasetDict:
    """One `Dataset` per split with exactly the columns of `features` (images stay undecoded paths)."""
    by_split = {}
    for split, records in splits.items():
        columns = {name: [record[name] for record in records] for name in features}
        by_split[split] = Dataset.from_dict(columns, features=features)
    return DatasetDict(by_split)
