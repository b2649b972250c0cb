"""MIMIC-CXR-JPG (Johnson et al. 2019): split/CheXpert/metadata CSVs, JPEG images and the free-text reports.

Layout: `mimic-cxr-2.0.0-{split,chexpert,metadata}.csv` (or `.csv.gz`), images
`files/p10/p10000032/s50414267/<dicom_id>.jpg`, reports `files/p10/p10000032/s50414267.txt` (the reports
ship in the separate MIMIC-CXR package; point `reports_dir` at it when it is elsewhere). One row per image
(`dicom_id`); its study's report and CheXpert labels are repeated for every image of the study.
"""
from __future__ import annotations

import csv
import gzip
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from datasets import DatasetDict

from .chexpert import CHEXPERT_LABELS, NUM_CHEXPERT_LABELS, apply_label_policy
from .errors import DataFormatError
from .records import ImageResolver, RecordCollector, build_dataset_dict, canonical_split, group_by_split
from .report_sections import check_section, extract_sections, select_report_text
from .schema import LABELS, STRING, report_features

logger = logging.getLogger("medvlp_hf.data")
PREFIX = "mimic-cxr-2.0.0"
FEATURES = report_features(
    findings=STRING, impression=STRING, labels=LABELS, study_id=STRING, subject_id=STRING, view_position=STRING,
)


def load_mimic_cxr(
    data_dir: str | os.PathLike,
    views: Iterable[str] | None = ("AP", "PA"),
    section: str = "longer",
    uncertain: str = "zeros",
    blank: str = "zeros",
    reports_dir: str | os.PathLike | None = None,
    drop_empty_reports: bool = True,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Load MIMIC-CXR-JPG as `train`/`validation`/`test` (the official split file).

    Args:
        views: keep images whose `ViewPosition` is one of these (None keeps every view).
        section: report text for the `report` column: "longer" of Findings/Impression (MedViLL),
            "findings", "impression" or "both".
        uncertain, blank: CheXpert policy for -1 and blank cells (see `chexpert.apply_label_policy`).
        reports_dir: root holding `files/pXX/...txt` (default `data_dir`).
        drop_empty_reports: leave out images whose chosen section is empty (the count is logged).
    """
    reader = _MimicReader(
        root=Path(data_dir),
        report_root=Path(reports_dir) if reports_dir is not None else Path(data_dir),
        view_filter=None if views is None else frozenset(view.upper() for view in views),
        section=check_section(section),
        unlabeled=apply_label_policy([None] * NUM_CHEXPERT_LABELS, uncertain, blank),
        drop_empty_reports=drop_empty_reports,
        resolve=ImageResolver(verify=verify_images),
    )
    reader.views_by_dicom = {
        row["dicom_id"]: row.get("ViewPosition") or "" for row in _read_csv(reader.root, "metadata", ["dicom_id"])
    }
    reader.labels_by_study = {
        row["study_id"]: apply_label_policy([row.get(name) for name in CHEXPERT_LABELS], uncertain, blank)
        for row in _read_csv(reader.root, "chexpert", ["study_id", *CHEXPERT_LABELS])
    }
    collector = RecordCollector(_csv_path(reader.root, "split"), on_error)
    for line, row in enumerate(_read_csv(reader.root, "split", ["dicom_id", "study_id", "subject_id", "split"]), 2):
        collector.add(f"line {line} (dicom_id {row.get('dicom_id')})", lambda row=row: reader.record(row))
    rows = collector.finish()
    if reader.empty_reports:
        logger.warning(
            "left out %d image(s) whose report has no %s text (drop_empty_reports=True)",
            reader.empty_reports, section,
        )
    return build_dataset_dict(group_by_split(rows), FEATURES)


def _csv_path(root: Path, kind: str) -> Path:
    for name in (f"{PREFIX}-{kind}.csv", f"{PREFIX}-{kind}.csv.gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"MIMIC-CXR file {PREFIX}-{kind}.csv(.gz) not found in {root}")


def _read_csv(root: Path, kind: str, required: list[str]) -> list[dict]:
    path = _csv_path(root, kind)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in required if name not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(f"{path} lacks the column(s) {missing}")
        return list(reader)


def _study_folder(subject_id: str, study_id: str) -> Path:
    return Path("files") / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


@dataclass
class _MimicReader:
    """What turning one split-csv row into a dataset row needs: lookups, options and a report cache."""

    root: Path
    report_root: Path
    view_filter: frozenset[str] | None
    section: str
    unlabeled: list[float]
    drop_empty_reports: bool
    resolve: ImageResolver
    views_by_dicom: dict[str, str] = field(default_factory=dict)
    labels_by_study: dict[str, list[float]] = field(default_factory=dict)
    reports: dict[Path, tuple[str, str]] = field(default_factory=dict)
    empty_reports: int = 0

    def record(self, row: dict) -> dict | None:
        dicom_id, study_id, subject_id = (row[key].strip() for key in ("dicom_id", "study_id", "subject_id"))
        if not (dicom_id and study_id.isdigit() and subject_id.isdigit()):
            raise DataFormatError(f"bad ids dicom_id={dicom_id!r} study_id={study_id!r} subject_id={subject_id!r}")
        view = self.views_by_dicom.get(dicom_id, "")
        if self.view_filter is not None and view.upper() not in self.view_filter:
            return None
        folder = _study_folder(subject_id, study_id)
        findings, impression = self._report(self.report_root / f"{folder}.txt")
        report = select_report_text(findings, impression, self.section)
        if self.drop_empty_reports and not report:
            self.empty_reports += 1
            return None
        return {
            "id": dicom_id,
            "image": self.resolve(self.root / folder / f"{dicom_id}.jpg"),
            "report": report,
            "findings": findings,
            "impression": impression,
            "labels": self.labels_by_study.get(study_id, self.unlabeled),
            "study_id": study_id,
            "subject_id": subject_id,
            "view_position": view,
            "_split": canonical_split(row["split"]),
        }

    def _report(self, path: Path) -> tuple[str, str]:
        if path not in self.reports:
            if not path.is_file():
                raise DataFormatError(f"report file not found: {path}")
            sections = extract_sections(path.read_text(encoding="utf-8", errors="replace"))
            self.reports[path] = (sections.get("FINDINGS", ""), sections.get("IMPRESSION", ""))
        return self.reports[path]
