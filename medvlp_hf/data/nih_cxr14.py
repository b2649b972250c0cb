"""NIH ChestX-ray14 (Wang et al. 2017): a labelled image-only chest X-ray set, and its TransCap spec.

Layout: the label table `Data_Entry_2017_v2020.csv` (or `Data_Entry_2017.csv`, or the sample's
`Data_Entry_2017_v2020_sample.csv`) with `Image Index, Finding Labels` (pipe-separated findings or `No Finding`),
`Follow-up #, Patient ID, Patient Age, Patient Gender` (M/F), `View Position` (PA/AP) and the original size and pixel
spacing (whose unquoted headers `OriginalImage[Width,Height]` read as two columns each); images `images/<Image Index>`.
Splits come from a `split` column when the table has one, else from the release's `train_val_list.txt` (-> train)
and `test_list.txt` (-> test).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from datasets import DatasetDict, Features, Image, List, Value

from .errors import DataFormatError
from .records import ImageResolver, RecordCollector, build_dataset_dict, canonical_split, group_by_split, read_lines
from .schema import INT, STRING
from .transcap import AttributeSource, TransCapSpec, apply_transcap
from .transcap_phrasebook import Phrasebook

NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
VIEW_POSITIONS = ("PA", "AP")
SEXES = ("M", "F")
CSV_NAMES = ("Data_Entry_2017_v2020_sample.csv", "Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
OFFICIAL_SPLIT_LISTS = {"train": "train_val_list.txt", "test": "test_list.txt"}
COLUMNS = {
    "Image Index": "id", "Finding Labels": "finding_labels", "Follow-up #": "follow_up", "Patient ID": "patient_id",
    "Patient Age": "patient_age", "Patient Gender": "patient_gender", "View Position": "view_position",
    "OriginalImage[Width": "original_width", "Height]": "original_height",
    "OriginalImagePixelSpacing[x": "pixel_spacing_x", "y]": "pixel_spacing_y",
}
FLOAT = Value("float64")
FEATURES = Features({
    "id": STRING, "image": Image(), "finding_labels": List(STRING), "follow_up": INT, "patient_id": STRING,
    "patient_age": INT, "patient_gender": STRING, "view_position": STRING, "original_width": INT,
    "original_height": INT, "pixel_spacing_x": FLOAT, "pixel_spacing_y": FLOAT,
})

NIH_CXR14_TRANSCAP = TransCapSpec({
    "modality": AttributeSource(constant="X-ray"),
    "plane": AttributeSource(column="view_position", values={"PA": "posteroanterior", "AP": "anteroposterior"}),
    "organ": AttributeSource(constant="chest"),
    "pathology": AttributeSource(
        column="finding_labels",
        values={**{name: name.lower().replace("_", " ") for name in NIH_FINDINGS}, NO_FINDING: "no finding"},
    ),
})
"""NIH ChestX-ray14's TransCap attributes: modality and organ are the dataset's constants, the plane is the view
position, the pathology the findings; it says nothing about shape, size or location."""
NIH_CXR14_DEMOGRAPHICS = {
    "age": AttributeSource(column="patient_age"),
    "sex": AttributeSource(column="patient_gender", values={"M": "male", "F": "female"}),
}
"""Age and sex, for `NIH_CXR14_TRANSCAP.with_attributes(**NIH_CXR14_DEMOGRAPHICS)` (not paper attributes)."""


def load_nih_cxr14(data_dir: str | os.PathLike, csv_file: str | os.PathLike | None = None,
                   verify_images: bool = False, on_error: str = "raise") -> DatasetDict:
    """Load NIH ChestX-ray14 as a DatasetDict (`train`/`validation` for the sample's `split` column, `train`/`test`
    from the official lists) with an `Image()` column, `finding_labels` (list of the 14 finding names, or
    `["No Finding"]`) and the metadata columns of `FEATURES`.

    Raises FileNotFoundError for a missing table, image or split list, DataFormatError naming the line and image of
    a bad record (unknown finding or view, non-numeric age; `on_error="skip"` drops and counts them).
    """
    root = Path(data_dir)
    table = Path(csv_file) if csv_file is not None else _find_table(root)
    with open(table, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        absent = [name for name in COLUMNS if name not in (reader.fieldnames or [])]
        if absent:
            raise DataFormatError(f"{table} lacks the NIH ChestX-ray14 column(s) {absent}")
        rows = list(reader)
    split_of = None if "split" in (reader.fieldnames or []) else _official_splits(root, table)
    resolve = ImageResolver(verify=verify_images)
    collector = RecordCollector(table, on_error)
    for line, row in enumerate(rows, 2):
        collector.add(f"line {line} ({row.get('Image Index')})",
                      lambda row=row: _record(row, root / "images", resolve, split_of))
    return build_dataset_dict(group_by_split(collector.finish()), FEATURES)


def _find_table(root: Path) -> Path:
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"no NIH ChestX-ray14 label table in {root}: expected one of {CSV_NAMES} (or csv_file=)")


def _official_splits(root: Path, table: Path) -> dict[str, str]:
    lists = {split: root / name for split, name in OFFICIAL_SPLIT_LISTS.items()}
    absent = [str(path) for path in lists.values() if not path.is_file()]
    if absent:
        raise FileNotFoundError(f"{table} has no `split` column and the official split lists {absent} are missing")
    return {name: split for split, path in lists.items() for _, name in read_lines(path)}


def _record(row: dict, image_root: Path, resolve, split_of: dict[str, str] | None) -> dict:
    image_id = row["Image Index"].strip()
    if not image_id:
        raise DataFormatError("empty Image Index")
    findings = [name.strip() for name in row["Finding Labels"].split("|")]
    unknown = [name for name in findings if name not in NIH_FINDINGS and name != NO_FINDING]
    if unknown:
        raise DataFormatError(f"unknown finding(s) {unknown} in {row['Finding Labels']!r}; expected "
                              f"{NO_FINDING!r} or some of {', '.join(NIH_FINDINGS)} joined by '|'")
    if NO_FINDING in findings and len(findings) > 1:
        raise DataFormatError(f"Finding Labels {row['Finding Labels']!r} mixes {NO_FINDING!r} with findings")
    if len(set(findings)) < len(findings):
        raise DataFormatError(f"Finding Labels {row['Finding Labels']!r} repeats a finding")
    view, sex = row["View Position"].strip(), row["Patient Gender"].strip()
    if view not in VIEW_POSITIONS:
        raise DataFormatError(f"View Position {view!r} is not one of {VIEW_POSITIONS}")
    if sex not in SEXES:
        raise DataFormatError(f"Patient Gender {sex!r} is not one of {SEXES}")
    if split_of is None:
        split = canonical_split(row["split"])
    elif image_id in split_of:
        split = split_of[image_id]
    else:
        raise DataFormatError(f"{image_id} is in neither of {list(OFFICIAL_SPLIT_LISTS.values())}")
    return {
        "id": image_id,
        "image": resolve(image_root / image_id),
        "finding_labels": findings,
        "follow_up": _number(row, "Follow-up #", int),
        "patient_id": row["Patient ID"].strip(),
        "patient_age": _number(row, "Patient Age", int),
        "patient_gender": sex,
        "view_position": view,
        "original_width": _number(row, "OriginalImage[Width", int),
        "original_height": _number(row, "Height]", int),
        "pixel_spacing_x": _number(row, "OriginalImagePixelSpacing[x", float),
        "pixel_spacing_y": _number(row, "y]", float),
        "_split": split,
    }


def _number(row: dict, column: str, kind: type) -> int | float:
    text = (row[column] or "").strip()
    try:
        number = kind(text)
    except ValueError:
        raise DataFormatError(f"{column} {text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if number < 0:
        raise DataFormatError(f"{column} {text!r} is negative")
    return number


def load_transcap_nih(data_dir: str | os.PathLike, pipeline=None,
                      phrasebook: Phrasebook | str | os.PathLike | None = None, demographics: bool = False,
                      seed: int = 0, keep_probability: float = 0.5, **kwargs) -> DatasetDict:
    """NIH ChestX-ray14 as TransCap image-caption pairs (`apply_transcap` with `NIH_CXR14_TRANSCAP`, plus age and sex
    when `demographics`): `caption` is composed anew at every access of a train row, fixed per row elsewhere, drawn
    with `seed` (pass the run's seed); `labels` is the multi-hot finding set (positions in the sorted pathology
    values, `attribute_values(pairs)["pathology"]`) for label-conditioned negatives.

    `phrasebook`: a `Phrasebook` or the path of a phrasebook JSON file (`Phrasebook.load`: e.g. phrasings written
    once by a local text-generation pipeline); default: built from `pipeline`, else from the built-in templates.
    `kwargs` go to `apply_transcap` (e.g. `num_variants`, generation arguments for `pipeline`).

    Raises DataFormatError for a malformed phrasebook file and ValueError when it lacks a value of the data.
    """
    spec = NIH_CXR14_TRANSCAP.with_attributes(**NIH_CXR14_DEMOGRAPHICS) if demographics else NIH_CXR14_TRANSCAP
    if phrasebook is not None and not isinstance(phrasebook, Phrasebook):
        phrasebook = Phrasebook.load(phrasebook)
    return apply_transcap(load_nih_cxr14(data_dir), spec, phrasebook=phrasebook, pipeline=pipeline, seed=seed,
                          keep_probability=keep_probability, **kwargs)
