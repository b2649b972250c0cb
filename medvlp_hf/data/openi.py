"""Open-I / IU X-ray reports as distributed by NLM: one XML per report (`ecgen-radiology/<N>.xml`).

The report text is in `MedlineCitation/Article/Abstract/AbstractText[@Label]` (FINDINGS, IMPRESSION,
...), the images are named by `parentImage@id` (`<id>.png` in the image folder) and MeSH terms by
`MeSH/major`. There is no official split: everything is returned as `train`.
"""
from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from datasets import DatasetDict, Sequence

from .errors import DataFormatError
from .records import ImageResolver, RecordCollector, build_dataset_dict
from .report_sections import check_section, clean_text, select_report_text
from .schema import STRING, report_features

logger = logging.getLogger("medvlp_hf.data")
FEATURES = report_features(findings=STRING, impression=STRING, mesh=Sequence(STRING), image_paths=Sequence(STRING))


def load_openi_xml(
    xml_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    section: str = "longer",
    per_image: bool = False,
    drop_empty_reports: bool = True,
    verify_images: bool = False,
    on_error: str = "raise",
) -> DatasetDict:
    """Read every `*.xml` of `xml_dir` (numeric file order); reports without images are left out (counted).

    `section` picks the `report` text ("longer" of Findings/Impression as in MedViLL, "findings",
    "impression", "both"); `per_image` gives one row per image instead of per report.
    """
    check_section(section)
    xml_root, image_root = Path(xml_dir), Path(image_dir)
    files = sorted(xml_root.glob("*.xml"), key=lambda file: (len(file.stem), file.stem))
    if not files:
        raise FileNotFoundError(f"no Open-I report XML files (*.xml) in {xml_root}")
    resolve = ImageResolver(verify=verify_images)
    collector = RecordCollector(xml_root, on_error)
    left_out = {"without images": 0, "with empty text": 0}
    for file in files:
        collector.add(
            file.name,
            lambda file=file: _records(file, image_root, resolve, section, per_image, drop_empty_reports, left_out),
        )
    rows = collector.finish()
    for reason, count in left_out.items():
        if count:
            logger.warning("left out %d Open-I report(s) %s in %s", count, reason, xml_root)
    return build_dataset_dict({"train": rows}, FEATURES)


def _records(file: Path, image_root: Path, resolve, section, per_image, drop_empty_reports, left_out) -> list[dict]:
    try:
        root = ElementTree.parse(file).getroot()
    except ElementTree.ParseError as error:
        raise DataFormatError(f"not well-formed XML: {error}") from error
    texts = {}
    for element in root.iter("AbstractText"):
        label = (element.get("Label") or "").strip().upper()
        texts[label] = clean_text("".join(element.itertext()))
    findings, impression = texts.get("FINDINGS", ""), texts.get("IMPRESSION", "")
    report = select_report_text(findings, impression, section)
    image_ids = [element.get("id", "").strip() for element in root.iter("parentImage")]
    if any(not image_id for image_id in image_ids):
        raise DataFormatError("a parentImage element has no id")
    if not image_ids:
        left_out["without images"] += 1
        return []
    if drop_empty_reports and not report:
        left_out["with empty text"] += 1
        return []
    uid = root.find("uId")
    report_id = uid.get("id", file.stem) if uid is not None else file.stem
    mesh = [clean_text(element.text or "") for element in root.iter("major") if (element.text or "").strip()]
    paths = [image_root / f"{image_id}.png" for image_id in image_ids]
    images = [resolve(path) for path in paths]
    chosen = range(len(images)) if per_image else [0]
    return [
        {
            "id": report_id, "image": images[i], "report": report, "findings": findings,
            "impression": impression, "mesh": mesh, "image_paths": [str(path) for path in paths],
        }
        for i in chosen
    ]
