"""SLAKE and PathVQA loaders on tiny fixtures in their official on-disk layouts."""
import logging

import PIL.Image
import pytest

from medvlp_hf.data import DataFormatError, load_pathvqa, load_slake
from tests.test_data_support import write_image, write_json


def _slake_record(qid, lang="en", **overrides):
    record = {
        "img_id": 102, "img_name": "xmlab102/source.jpg", "question": "Which organ is abnormal?",
        "answer": "Lung", "q_lang": lang, "location": "Lung", "modality": "X-Ray", "answer_type": "OPEN",
        "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": qid,
    }
    return {**record, **overrides}


def _slake(root, train):
    write_image(root / "imgs" / "xmlab102" / "source.jpg", mode="RGB")
    write_json(root / "train.json", train)
    write_json(root / "validate.json", [_slake_record(10, answer_type="CLOSED", answer="Yes")])
    write_json(root / "test.json", [_slake_record(20), _slake_record(21, lang="zh", answer="肺")])
    return root


def test_slake_english_by_default(tmp_path):
    root = _slake(tmp_path, [_slake_record(1), _slake_record(2, lang="zh", question="哪个器官?"), _slake_record(3)])
    data = load_slake(root)
    assert data.num_rows == {"train": 2, "validation": 1, "test": 1}
    assert data["train"]["qid"] == [1, 3]
    row = data["validation"][0]
    assert (row["answer"], row["answer_type"], row["modality"]) == ("Yes", "CLOSED", "X-Ray")
    assert row["triple"] == ["vhead", "_", "_"]
    assert isinstance(row["image"], PIL.Image.Image)
    assert load_slake(root, language=None).num_rows == {"train": 3, "validation": 1, "test": 2}
    assert load_slake(root, language="zh")["test"]["answer"] == ["肺"]


def test_slake_bad_record_named_and_skippable(tmp_path, caplog):
    root = _slake(tmp_path, [_slake_record(1), _slake_record(2, img_name="xmlab9/source.jpg")])
    with pytest.raises(DataFormatError, match=r"train.json, record 1: image file not found: .*xmlab9"):
        load_slake(root)
    with caplog.at_level(logging.WARNING, logger="medvlp_hf.data"):
        assert load_slake(root, on_error="skip")["train"]["qid"] == [1]
    assert "skipped 1 bad record(s)" in caplog.text
    with pytest.raises(ValueError, match="language"):
        load_slake(root, language="fr")


def _pathvqa_item(img_id, questions, answers):
    return {"img_id": img_id, "labelf": {"pvqa": answers}, "sentf": {"pvqa": questions}}


def _pathvqa(root, train_items):
    for split, img_id in (("train", "train_0001"), ("val", "val_0001"), ("test", "test_0001")):
        write_image(root / "images" / split / f"{img_id}.jpg", mode="RGB")
    write_json(root / "qas" / "pvqa_train.json", train_items)
    write_json(root / "qas" / "pvqa_val.json", [_pathvqa_item("val_0001", ["Is this an artery?"], [{"no": 1}])])
    write_json(root / "qas" / "pvqa_test.json", [_pathvqa_item("test_0001", ["What is present?"], [{"fibrin": 1}])])
    return root


def test_pathvqa_lxmert_format(tmp_path):
    item = _pathvqa_item(
        "train_0001",
        ["What is shown?", "Is there necrosis?", "Where is it?"],
        [{"granuloma": 1}, {"Yes": 1}, {"lung": 0.3, "liver": 0.9}],
    )
    data = load_pathvqa(_pathvqa(tmp_path, [item]))
    assert data.num_rows == {"train": 3, "validation": 1, "test": 1}
    train = data["train"]
    assert train["answer"] == ["granuloma", "Yes", "liver"]
    assert train["answer_type"] == ["OPEN", "CLOSED", "OPEN"]
    assert train["qid"] == [0, 1, 2] and set(train["img_id"]) == {"train_0001"}
    assert data["validation"]["answer_type"] == ["CLOSED"]


@pytest.mark.parametrize(
    "item, message",
    [
        (_pathvqa_item("train_0001", ["q1", "q2"], [{"a": 1}]), "2 questions but 1 answer dicts"),
        (_pathvqa_item("train_0001", ["q1"], [{}]), "expected {answer: score}"),
        ({"img_id": "train_0001", "sentf": {"pvqa": ["q"]}}, "missing field 'labelf'"),
    ],
)
def test_pathvqa_bad_items_are_named(tmp_path, item, message):
    root = _pathvqa(tmp_path, [item])
    with pytest.raises(DataFormatError, match=message) as error:
        load_pathvqa(root)
    assert "pvqa_train.json, item 0" in str(error.value)
