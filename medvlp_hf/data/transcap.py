"""TransCap, "Transfer and Caption" (MISS, Chen et al. 2024, §3.4 and appendix A.3): image-caption pairs for
vision-language pre-training from a labelled image-only dataset (classification, segmentation).

Every image gets an attribute dictionary with the paper's keys, modality, plane, shape, size, organ, location and
pathology, built from the dataset's labels and metadata by a `TransCapSpec` (each attribute from a named column or a
dataset-level constant; absent when the dataset does not say). Each attribute value has several phrasings (a
`Phrasebook`: a local language model's rewritings or built-in templates). At training time a `datasets` transform
composes a caption per access by sampling the attributes, their phrasings and their order, so every epoch sees new
captions (the original samples one of five fixed LLM captions per image, `describe1..5` in its RSNA CSV).

    pairs = apply_transcap(dataset_dict, spec)                  # templates, offline
    pairs = apply_transcap(dataset_dict, spec, pipeline=llm)    # phrasings from a local text-generation pipeline
    pairs["train"][0]["caption"]   # 'Cardiomegaly is seen. This is a posteroanterior (PA) view.'

Generating phrasings takes a while with a real model: build them once and keep them,

    phrasebook = build_phrasebook(attribute_values(add_transcap_attributes(dataset_dict, spec)), pipeline=llm)
    phrasebook.save("phrasings.json")   # later: apply_transcap(dataset_dict, spec, Phrasebook.load("phrasings.json"))

Age and sex are not paper attributes; a spec includes them only when asked (`DEMOGRAPHIC_ATTRIBUTES`).

Negatives. Two images with the same pathology get interchangeable captions, so a caption of one is no true negative
for the other. `apply_transcap` therefore writes the pathology set as a multi-hot `labels` vector, the form of the
zoo's CheXpert labels, and MedViLL's pre-training draws its image-report matching negatives from images with another
label set (`LabelConditionedNegatives`, chosen by `medvlp_hf.training.pretraining.negatives_for` whenever a `labels`
column exists). MISS draws its ITM hard negatives inside the batch and excludes only the pair itself
(`miss_pretrain.py`); its TransCap loader (`data/rsna_dataset.py`) gives the model no labels, so that draw stays the
original's and may pair an image with the caption of another image with the same findings.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from datasets import Dataset, DatasetDict, Features, List, Sequence, Value

from .errors import DataFormatError
from .randomness import WorkerSeededGenerator
from .transcap_phrasebook import Phrasebook, build_phrasebook

ATTRIBUTES = ("modality", "plane", "shape", "size", "organ", "location", "pathology")
DEMOGRAPHIC_ATTRIBUTES = ("age", "sex")
ATTRIBUTES_COLUMN, CAPTION_COLUMN, LABELS_COLUMN = "attributes", "caption", "labels"
_POSITIVE_FLAGS = ("1", "1.0", "true")


@dataclass(frozen=True)
class AttributeSource:
    """Where one attribute of every image comes from: exactly one of

    - `column`: a column whose cell holds the raw value(s): a string (split at `separator` when it lists several),
      a number, or a list; cells in `missing` (and None) mean the dataset does not say;
    - `constant`: the same value for every image (NIH ChestX-ray14: modality "X-ray", organ "chest");
    - `flags`: {column: value} for multi-hot label columns (CheXpert CSV): the values whose cell is 1.

    `values` maps raw cell text to the attribute value ("PA" -> "posteroanterior"); a raw value it lacks is an error
    naming the row, and one it maps to None is left out. Without `values` the raw text is the value.
    """

    column: str | None = None
    constant: str | None = None
    flags: Mapping[str, str] | None = None
    values: Mapping[str, str | None] | None = None
    separator: str | None = None
    missing: tuple[str, ...] = ("",)

    def __post_init__(self):
        given = [name for name in ("column", "constant", "flags") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"an AttributeSource takes exactly one of column, constant or flags; got {given or 'none'}")
        if self.constant is not None and not str(self.constant).strip():
            raise ValueError("an AttributeSource constant must be a non-empty string")

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,) if self.column is not None else tuple(self.flags or ())

    def read(self, row: Mapping) -> list[str]:
        """The attribute's values for one row (empty when the dataset does not say)."""
        if self.constant is not None:
            return [str(self.constant).strip()]
        if self.flags is not None:
            raw = [value for column, value in self.flags.items() if _is_positive(row[column])]
        else:
            raw = [text for text in _cell_texts(row[self.column], self.separator) if text not in self.missing]
        return list(dict.fromkeys(value for value in map(self._translate, raw) if value))

    def _translate(self, raw: str) -> str | None:
        if self.values is None:
            return raw
        if raw not in self.values:
            raise DataFormatError(
                f"{self.column or 'flags'} value {raw!r} has no entry in the attribute's `values` "
                f"({sorted(self.values)}); add it (None leaves it out)"
            )
        return self.values[raw]


def _cell_texts(cell, separator: str | None) -> list[str]:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    if isinstance(cell, (list, tuple)):
        return [text for item in cell for text in _cell_texts(item, None)]
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    texts = str(cell).split(separator) if separator else [str(cell)]
    return [text.strip() for text in texts]


def _is_positive(cell) -> bool:
    return cell is not None and str(cell).strip().lower() in _POSITIVE_FLAGS


@dataclass(frozen=True)
class TransCapSpec:
    """How a labelled dataset's columns become TransCap attribute dictionaries: {attribute: AttributeSource}.

    Attributes are the paper's (`ATTRIBUTES`) and, only when listed, `DEMOGRAPHIC_ATTRIBUTES`. Example, CheXpert:

        TransCapSpec({"modality": AttributeSource(constant="X-ray"), "organ": AttributeSource(constant="chest"),
                      "plane": AttributeSource(column="AP/PA", values={"AP": "anteroposterior", "PA":
                      "posteroanterior"}, missing=("", "LL", "RL")),
                      "pathology": AttributeSource(flags={"Cardiomegaly": "cardiomegaly", "No Finding": "no finding"})})
    """

    attributes: Mapping[str, AttributeSource]

    def __post_init__(self):
        known = ATTRIBUTES + DEMOGRAPHIC_ATTRIBUTES
        unknown = [name for name in self.attributes if name not in known]
        if unknown or not self.attributes:
            raise ValueError(f"a TransCapSpec maps some of the attributes {known} to sources; got {list(self.attributes)}")

    @property
    def names(self) -> tuple[str, ...]:
        """The spec's attributes in the paper's order (then age, sex)."""
        return tuple(name for name in ATTRIBUTES + DEMOGRAPHIC_ATTRIBUTES if name in self.attributes)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(column for source in self.attributes.values() for column in source.columns))

    def with_attributes(self, **sources: AttributeSource) -> TransCapSpec:
        return TransCapSpec({**self.attributes, **sources})

    def attribute_dictionary(self, row: Mapping) -> dict[str, list[str]]:
        """{attribute: values} for one raw row, in the paper's order, without the attributes the row lacks."""
        dictionary = {}
        for name in self.names:
            try:
                values = self.attributes[name].read(row)
            except DataFormatError as error:
                raise DataFormatError(f"{name}: {error}") from None
            if values:
                dictionary[name] = values
        return dictionary


def attribute_dictionary(example: Mapping, column: str = ATTRIBUTES_COLUMN) -> dict[str, list[str]]:
    """The attribute dictionary stored in a row by `add_transcap_attributes` (absent attributes left out)."""
    return _present(example[column])


def _present(stored: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    return {name: list(values) for name, values in stored.items() if values}


def _stored(dataset: Dataset, column: str) -> list[dict]:
    """The stored attribute structs of every row, read without a format transform and without the images."""
    return list(dataset.select_columns([column]).with_format(None)[column])


def add_transcap_attributes(dataset: Dataset | DatasetDict, spec: TransCapSpec, column: str = ATTRIBUTES_COLUMN,
                            id_column: str = "id") -> Dataset | DatasetDict:
    """`dataset` with a struct column `column` = {attribute: [values]} ([] where absent) for the spec's attributes.

    Raises DataFormatError naming the split, row and id of a row with a value the spec cannot map or with no
    attribute at all, and ValueError when a column the spec reads is missing.
    """
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: _with_attributes(part, spec, column, id_column, f"split {split!r}, ")
                            for split, part in dataset.items()})
    return _with_attributes(dataset, spec, column, id_column, "")


def _with_attributes(dataset: Dataset, spec: TransCapSpec, column: str, id_column: str, where: str) -> Dataset:
    absent = [name for name in spec.columns if name not in dataset.column_names]
    if absent:
        raise ValueError(f"the TransCap spec reads column(s) {absent}, which the dataset lacks "
                         f"(columns: {dataset.column_names})")
    if column in dataset.column_names:
        raise ValueError(f"the dataset already has a {column!r} column; pass another `column`")
    read = [name for name in (*spec.columns, id_column) if name in dataset.column_names]
    rows = []
    for index, row in enumerate(dataset.select_columns(list(dict.fromkeys(read))).with_format(None)):
        row_name = f"{where}row {index}" + (f" (id {row[id_column]!r})" if id_column in row else "")
        try:
            dictionary = spec.attribute_dictionary(row)
        except DataFormatError as error:
            raise DataFormatError(f"{row_name}: {error}") from None
        if not dictionary:
            raise DataFormatError(f"{row_name}: the TransCap spec finds no attribute for this row")
        rows.append({name: dictionary.get(name, []) for name in spec.names})
    feature = Features({name: List(Value("string")) for name in spec.names})
    return dataset.add_column(column, rows, feature=feature)


def attribute_values(dataset: Dataset | DatasetDict, column: str = ATTRIBUTES_COLUMN) -> dict[str, list[str]]:
    """{attribute: sorted distinct values} over every row (of every split): what a phrasebook must cover."""
    parts = dataset.values() if isinstance(dataset, DatasetDict) else [dataset]
    found: dict[str, set[str]] = {}
    for part in parts:
        for dictionary in _stored(part, column):
            for name, values in dictionary.items():
                found.setdefault(name, set()).update(values)
    return {name: sorted(values) for name, values in found.items() if values}


def add_label_vectors(dataset: DatasetDict, attribute: str = "pathology", attributes_column: str = ATTRIBUTES_COLUMN,
                      column: str = LABELS_COLUMN) -> DatasetDict:
    """`dataset` with a `column` of float multi-hot vectors: 1.0 at the positions of a row's `attribute` values among
    `attribute_values(dataset)[attribute]` (sorted, over every split), 0.0 elsewhere. Two rows have equal vectors iff
    they have the same set of values, which is what label-conditioned negatives compare (`chexpert.label_set`).

    Returns `dataset` unchanged when no row has the attribute; raises ValueError when `column` exists already.
    """
    names = attribute_values(dataset, attributes_column).get(attribute)
    if names is None:
        return dataset
    position = {name: index for index, name in enumerate(names)}
    parts = {}
    for split, part in dataset.items():
        if column in part.column_names:
            raise ValueError(f"split {split!r} already has a {column!r} column; pass label_attribute=None to keep it")
        vectors = []
        for dictionary in _stored(part, attributes_column):
            vector = [0.0] * len(names)
            for value in dictionary.get(attribute) or ():
                vector[position[value]] = 1.0
            vectors.append(vector)
        parts[split] = part.add_column(column, vectors, feature=Sequence(Value("float32"), length=len(names)))
    return DatasetDict(parts)


def compose_caption(attributes: Mapping[str, Iterable[str]], phrasebook: Phrasebook, rng: random.Random,
                    keep_probability: float = 0.5, always: Iterable[str] = ("pathology",)) -> str:
    """One caption for an attribute dictionary: the `always` attributes (when present), each other one with
    `keep_probability` (at least one attribute in all), in random order, each value in a random phrasing."""
    present = [name for name, values in attributes.items() if values]
    chosen = [name for name in present if name in always or rng.random() < keep_probability]
    if not chosen:
        chosen = [rng.choice(present)]
    rng.shuffle(chosen)
    sentences = []
    for name in chosen:
        values = list(attributes[name])
        rng.shuffle(values)
        sentences += [rng.choice(phrasebook.phrasings(name, value)) for value in values]
    return " ".join(sentences)


def describe(attributes: Mapping[str, Iterable[str]], phrasebook: Phrasebook) -> str:
    """The reference caption: every attribute in order, each value in its first phrasing."""
    return " ".join(phrasebook.phrasings(name, value)[0] for name, values in attributes.items() for value in values)


class TransCapCaptions:
    """A `datasets` transform (`Dataset.with_transform`) that writes a freshly composed caption into every row.

    Without `key_column`, captions are drawn from a generator seeded by `seed` (inside a DataLoader worker, by
    (seed, worker seed)): each access, hence each epoch, gives new captions, reproducibly for a given access order.
    With `key_column`, a row's caption depends only on (seed, its key), the same at every access: evaluation data
    scored identically at every evaluation.
    """

    def __init__(self, phrasebook: Phrasebook, seed: int = 0, keep_probability: float = 0.5,
                 always: Iterable[str] = ("pathology",), key_column: str | None = None,
                 attributes_column: str = ATTRIBUTES_COLUMN, caption_column: str = CAPTION_COLUMN):
        if not 0.0 <= keep_probability <= 1.0:
            raise ValueError(f"keep_probability={keep_probability} must be in [0, 1]")
        unknown = [name for name in always if name not in ATTRIBUTES + DEMOGRAPHIC_ATTRIBUTES]
        if unknown:
            raise ValueError(f"always={list(always)} names unknown attribute(s) {unknown}")
        self.phrasebook = phrasebook
        self.seed = seed
        self.keep_probability = keep_probability
        self.always = frozenset(always)
        self.key_column = key_column
        self.attributes_column = attributes_column
        self.caption_column = caption_column
        self._random = WorkerSeededGenerator(seed)

    def _generators(self, batch: Mapping, size: int) -> list[random.Random]:
        if self.key_column is not None:
            return [random.Random(f"{self.seed}/{key}") for key in self._column(batch, self.key_column)]
        shared = random.Random(int(torch.randint(2**62, (), generator=self._random.get())))
        return [shared] * size

    def _column(self, batch: Mapping, name: str) -> list:
        if name not in batch:
            raise KeyError(f"the TransCap transform needs the {name!r} column; the batch has {sorted(batch)}")
        return batch[name]

    def __call__(self, batch: dict) -> dict:
        dictionaries = self._column(batch, self.attributes_column)
        generators = self._generators(batch, len(dictionaries))
        batch[self.caption_column] = [
            compose_caption(_present(dictionary), self.phrasebook, rng, self.keep_probability, self.always)
            for dictionary, rng in zip(dictionaries, generators, strict=True)
        ]
        return batch


def with_transcap_captions(dataset: Dataset, phrasebook: Phrasebook, seed: int = 0, keep_probability: float = 0.5,
                           always: Iterable[str] = ("pathology",), fixed: bool = False, key_column: str = "id",
                           attributes_column: str = ATTRIBUTES_COLUMN,
                           caption_column: str = CAPTION_COLUMN) -> Dataset:
    """`dataset` (with an attributes column) with a `caption_column` holding the reference caption (`describe`) and
    a `TransCapCaptions` transform that replaces it at every access (`fixed=True`: one caption per row and seed,
    keyed by `key_column`). The image column stays an `Image()` column, decoded lazily as before.

    Raises ValueError when the phrasebook lacks a value of the dataset or the caption column exists already.
    """
    phrasebook.check_covers(attribute_values(dataset, attributes_column))
    if caption_column in dataset.column_names:
        raise ValueError(f"the dataset already has a {caption_column!r} column; pass another `caption_column`")
    if fixed and key_column not in dataset.column_names:
        raise ValueError(f"fixed captions are keyed by the {key_column!r} column, which the dataset lacks")
    references = [describe(_present(dictionary), phrasebook) for dictionary in _stored(dataset, attributes_column)]
    transform = TransCapCaptions(phrasebook, seed, keep_probability, always, key_column if fixed else None,
                                 attributes_column, caption_column)
    return dataset.add_column(caption_column, references, feature=Value("string")).with_transform(transform)


def apply_transcap(dataset_dict: DatasetDict, spec: TransCapSpec, phrasebook: Phrasebook | None = None,
                   pipeline=None, seed: int = 0, keep_probability: float = 0.5, always: Iterable[str] = ("pathology",),
                   fixed_splits: Iterable[str] = ("validation", "test"), num_variants: int = 5,
                   key_column: str = "id", label_attribute: str | None = "pathology",
                   **generate_kwargs) -> DatasetDict:
    """TransCap in one call: attributes (`add_transcap_attributes`), the `label_attribute`'s value sets as `labels`
    vectors for label-conditioned negatives (`add_label_vectors`; None: no `labels` column), a phrasebook over every
    split's values (the one given, else `build_phrasebook` with `pipeline`, `num_variants` and `generate_kwargs`),
    then captions (`with_transcap_captions`) drawn with `seed` (the run's seed): new ones at every access, except the
    `fixed_splits` (one caption per row and seed, so every evaluation sees the same pairs). Returns the DatasetDict
    with `attributes`, `labels` and `caption` columns.

    Raises ValueError when the phrasebook lacks a value of the data (naming each missing entry) or when both a
    phrasebook and a pipeline are given."""
    with_attributes = add_transcap_attributes(dataset_dict, spec, id_column=key_column)
    if label_attribute is not None:
        with_attributes = add_label_vectors(with_attributes, label_attribute)
    values = attribute_values(with_attributes)
    if phrasebook is None:
        phrasebook = build_phrasebook(values, pipeline, num_variants=num_variants, **generate_kwargs)
    elif pipeline is not None or generate_kwargs:
        raise ValueError("pass either a phrasebook or a pipeline (and its generation arguments) to build one")
    else:
        phrasebook.check_covers(values)
    fixed_splits = frozenset(fixed_splits)
    return DatasetDict({
        split: with_transcap_captions(part, phrasebook, seed, keep_probability, always, split in fixed_splits,
                                      key_column)
        for split, part in with_attributes.items()
    })
