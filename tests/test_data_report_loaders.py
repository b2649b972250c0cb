"""Report datasets: MIMIC-CXR-JPG, IU X-ray (R2Gen annotation.json and Open-I XML), MedViLL report JSONL."""
import csv
import gzip
import logging
import math

import PIL.Image
import pytest

from medvlp_hf.data import (
    CHEXPERT_LABELS, DataFormatError, load_iu_xray, load_mimic_cxr, load_report_jsonl,
)
from medvlp_hf.data.report_sections import extract_sections, select_report_text
from tests.test_data_support import write_image, write_json, write_jsonl

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 FINDINGS:

 The heart is enlarged.  Mild pulmonary
 edema.

 IMPRESSION:

 Cardiomegaly.
"""


def test_report_sections():
    sections = extract_sections(REPORT)
    assert sections["FINDINGS"] == "The heart is enlarged. Mild pulmonary edema."
    assert sections["IMPRESSION"] == "Cardiomegaly."
    assert sections["INDICATION"] == "___F with cough"
    assert select_report_text("long findings", "short", "longer") == "long findings"
    assert select_report_text("", "impression only", "longer") == "impression only"
    assert select_report_text("a", "b", "both") == "a b"
    with pytest.raises(ValueError, match="section"):
        select_report_text("a", "b", "summary")


def _write_csv(path, header, rows):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


STUDIES = {  # dicom_id: (subject, study, split, view)
    "d1": ("10000032", "50000001", "train", "PA"),
    "d2": ("10000032", "50000001", "train", "LATERAL"),
    "d3": ("10000033", "50000002", "validate", "AP"),
    "d4": ("11000001", "50000003", "test", "PA"),
    "d5": ("10000034", "50000004", "train", "AP"),
}
REPORTS = {
    "50000001": REPORT,
    "50000002": "FINDINGS: Lungs are clear.\nIMPRESSION: No acute cardiopulmonary process.\n",
    "50000003": "FINAL REPORT\nComparison made with prior.\n",
    "50000004": "IMPRESSION: Stable.\n",
}


def _mimic(root):
    _write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"],
               [[d, study, subject, split] for d, (subject, study, split, _) in STUDIES.items()])
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
               [[d, subject, study, view] for d, (subject, study, _, view) in STUDIES.items()])
    labels = {"50000001": {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "0.0"},
              "50000002": {"No Finding": "1.0"}}
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", *CHEXPERT_LABELS],
               [["x", study, *(values.get(name, "") for name in CHEXPERT_LABELS)] for study, values in labels.items()])
    for dicom_id, (subject, study, _, _) in STUDIES.items():
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        write_image(folder / f"s{study}" / f"{dicom_id}.jpg")
        (folder / f"s{study}.txt").write_text(REPORTS[study])
    return root


def test_mimic_cxr_rows_views_sections_and_labels(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="medvlp_hf.data"):
        data = load_mimic_cxr(_mimic(tmp_path))
    assert "left out 1 image(s) whose report has no longer text" in caplog.text
    assert data.num_rows == {"train": 2, "validation": 1}
    first = data["train"][0]
    assert (first["id"], first["study_id"], first["subject_id"], first["view_position"]) == (
        "d1", "50000001", "10000032", "PA")
    assert first["report"] == "The heart is enlarged. Mild pulmonary edema."
    assert first["impression"] == "Cardiomegaly."
    assert isinstance(first["image"], PIL.Image.Image)
    assert first["labels"] == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert data["train"][1]["labels"] == [0.0] * 14 and data["train"][1]["report"] == "Stable."
    assert data["validation"][0]["labels"][CHEXPERT_LABELS.index("No Finding")] == 1.0


def test_mimic_cxr_options(tmp_path):
    root = _mimic(tmp_path)
    everything = load_mimic_cxr(root, views=None, section="impression", drop_empty_reports=False)
    assert everything.num_rows == {"train": 3, "validation": 1, "test": 1}
    assert everything["train"]["report"][0] == "Cardiomegaly."
    assert everything["test"]["report"] == [""]
    kept = load_mimic_cxr(root, uncertain="keep", blank="keep")["train"][0]["labels"]
    assert kept[1] == 1.0 and kept[3] == -1.0 and kept[9] == 0.0 and math.isnan(kept[0])
    assert load_mimic_cxr(root, uncertain="ones")["train"][0]["labels"][3] == 1.0


def test_mimic_cxr_errors_name_the_file(tmp_path):
    root = _mimic(tmp_path)
    (root / "files" / "p10" / "p10000033" / "s50000002.txt").unlink()
    with pytest.raises(DataFormatError, match=r"split.csv, line 4 \(dicom_id d3\): report file not found"):
        load_mimic_cxr(root)
    assert load_mimic_cxr(root, on_error="skip").num_rows == {"train": 2}
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", "Atelectasis"], [])
    with pytest.raises(DataFormatError, match="chexpert.csv lacks the column"):
        load_mimic_cxr(root)


def _r2gen_item(study, split):
    return {"id": study, "report": f"report of {study}.", "image_path": [f"{study}/0.png", f"{study}/1.png"],
            "split": split}


def _r2gen(root):
    for study in ("CXR1", "CXR2", "CXR3", "CXR4"):
        for index in range(2):
            write_image(root / "images" / study / f"{index}.png", seed=index)
    annotation = {
        "train": [_r2gen_item("CXR1", "train")],
        "val": [_r2gen_item("CXR2", "val")],
        "test": [_r2gen_item("CXR3", "test")],
        "extra": [_r2gen_item("CXR4", "test"), {"id": "CXR1", "report": "x.", "image_path": ["CXR1/0.png"]}],
    }
    write_json(root / "annotation.json", annotation)
    return root


def test_r2gen_annotation_uses_each_items_split(tmp_path):
    data = load_iu_xray(_r2gen(tmp_path))
    assert data.num_rows == {"train": 1, "validation": 1, "test": 2, "extra": 1}
    assert data["test"]["id"] == ["CXR3", "CXR4"]
    row = data["train"][0]
    assert row["report"] == "report of CXR1." and len(row["image_paths"]) == 2
    assert row["image_paths"][1].endswith("CXR1/1.png")
    per_image = load_iu_xray(tmp_path, per_image=True)
    assert per_image.num_rows["train"] == 2
    assert per_image["train"][0]["image"].tobytes() != per_image["train"][1]["image"].tobytes()


def test_r2gen_bad_item_is_named(tmp_path):
    root = _r2gen(tmp_path)
    write_json(root / "annotation.json", {"train": [{"id": "CXR1", "report": "x", "image_path": []}]})
    with pytest.raises(DataFormatError, match=r"annotation.json, train\[0\]: field 'image_path'"):
        load_iu_xray(root)


OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="CXR{n}"/>
  <MedlineCitation Owner="" Status="">
    <Article PubModel="">
      <Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">Positive TB test</AbstractText>
        <AbstractText Label="FINDINGS">{findings}</AbstractText>
        <AbstractText Label="IMPRESSION">{impression}</AbstractText>
      </Abstract>
    </Article>
  </MedlineCitation>
  <MeSH><major>normal</major></MeSH>
  {images}
</eCitation>
"""


def _openi(root):
    reports = {1: ("The heart is normal in size. The lungs are clear.", "Normal chest x-XXXX.", 2),
               2: ("", "No acute disease.", 1), 10: ("Clear lungs.", "Normal.", 0)}
    for n, (findings, impression, count) in reports.items():
        ids = [f"CXR{n}_1_IM-000{n}-{1000 + i}" for i in range(count)]
        images = "\n".join(f'<parentImage id="{image_id}"><figureId>F{i}</figureId></parentImage>'
                           for i, image_id in enumerate(ids))
        for image_id in ids:
            write_image(root / "NLMCXR_png" / f"{image_id}.png")
        (root / "ecgen-radiology").mkdir(parents=True, exist_ok=True)
        (root / "ecgen-radiology" / f"{n}.xml").write_text(
            OPENI_XML.format(n=n, findings=findings, impression=impression, images=images))
    return root


def test_openi_xml_reports(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="medvlp_hf.data"):
        data = load_iu_xray(_openi(tmp_path))
    assert "left out 1 Open-I report(s) without images" in caplog.text
    train = data["train"]
    assert train["id"] == ["CXR1", "CXR2"]
    assert train["report"] == ["The heart is normal in size. The lungs are clear.", "No acute disease."]
    assert train["impression"][0] == "Normal chest x-XXXX." and train["mesh"][0] == ["normal"]
    assert [len(paths) for paths in train["image_paths"]] == [2, 1]
    assert train["image_paths"][0][0].endswith("NLMCXR_png/CXR1_1_IM-0001-1000.png")
    assert load_iu_xray(tmp_path, per_image=True, section="findings").num_rows == {"train": 2}


def test_openi_malformed_xml_is_named(tmp_path):
    root = _openi(tmp_path)
    (root / "ecgen-radiology" / "2.xml").write_text("<eCitation><unclosed>")
    with pytest.raises(DataFormatError, match=r"ecgen-radiology, 2.xml: not well-formed XML"):
        load_iu_xray(root)
    assert load_iu_xray(root, on_error="skip")["train"]["id"] == ["CXR1"]


OPENI_RECORDS = [
    {"id": "1420", "label": "''", "text": "No focal consolidation.", "img": "data/preprocessed/openi/test/1420.jpg"},
    {"id": "2944", "label": "'Enlarged Cardiomediastinum', 'Lung Lesion', 'Lung Opacity'",
     "text": "Large masslike opacity.", "img": "data/preprocessed/openi/test/2944.jpg"},
]
MIMIC_RECORD = {"id": "s55512076", "split": "test", "label": "'Cardiomegaly', 'Edema'", "text": "Severe cardiomegaly.",
                "img": "data/preprocessed/mimic/test/s55512076.jpg"}


def test_report_jsonl_folder_of_split_files(tmp_path):
    for record in [*OPENI_RECORDS, MIMIC_RECORD]:
        write_image(tmp_path / "repo" / record["img"])
    write_jsonl(tmp_path / "jsonl" / "Test.jsonl", OPENI_RECORDS)
    write_jsonl(tmp_path / "jsonl" / "Valid.jsonl", [MIMIC_RECORD])
    data = load_report_jsonl(tmp_path / "jsonl", image_root=tmp_path / "repo")
    assert data.num_rows == {"test": 2, "validation": 1}
    test = data["test"]
    assert test["id"] == ["1420", "2944"] and test["report"][1] == "Large masslike opacity."
    assert test["labels"][0] == [0.0] * 14
    assert {i for i, v in enumerate(test["labels"][1]) if v} == {4, 6, 7}
    assert data["validation"][0]["labels"][1] == 1.0 and data["validation"][0]["labels"][3] == 1.0
    single = load_report_jsonl({"train": tmp_path / "jsonl" / "Test.jsonl"}, image_root=tmp_path / "repo")
    assert single.num_rows == {"train": 2}


def test_report_jsonl_bad_lines_are_named(tmp_path, caplog):
    write_image(tmp_path / OPENI_RECORDS[0]["img"])
    bad_label = {**OPENI_RECORDS[0], "label": "'Cardiomegally'"}
    path = write_jsonl(tmp_path / "Train.jsonl", [OPENI_RECORDS[0], "{not json", bad_label])
    with pytest.raises(DataFormatError, match=r"Train.jsonl, line 2: not valid JSON"):
        load_report_jsonl(path)
    with caplog.at_level(logging.WARNING, logger="medvlp_hf.data"):
        data = load_report_jsonl(path, on_error="skip")
    assert data.num_rows == {"train": 1}
    assert "skipped 2 bad record(s)" in caplog.text
