"""VQA-RAD loader: the real MEVF split, the official release layout, quirks, organ filter, bad records."""
import logging
from collections import Counter

import PIL.Image
import pytest

from medvlp_hf.data import DataFormatError, ImageDecodingError, load_vqa_rad
from tests.test_data_support import write_image, write_json, write_truncated_jpeg


@pytest.fixture(scope="module")
def real_vqa_rad(data_dir):
    return load_vqa_rad(data_dir / "vqa_rad", verify_images=True)


def test_real_vqa_rad_loads_every_record_with_decodable_images(real_vqa_rad):
    assert real_vqa_rad.num_rows == {"train": 3064, "test": 451}
    for split, (closed, open_) in {"train": (1823, 1241), "test": (272, 179)}.items():
        assert Counter(real_vqa_rad[split]["answer_type"]) == {"CLOSED": closed, "OPEN": open_}
    assert all(isinstance(answer, str) and answer for answer in real_vqa_rad["train"]["answer"])
    assert "4" in real_vqa_rad["train"]["answer"] and "12" in real_vqa_rad["train"]["answer"]
    first = real_vqa_rad["train"][0]
    assert isinstance(first["image"], PIL.Image.Image) and first["image"].size[0] > 100
    assert (first["qid"], first["image_name"], first["answer"]) == (1, "synpic54610.jpg", "Yes")


def test_real_vqa_rad_organ_filter(data_dir):
    chest = load_vqa_rad(data_dir / "vqa_rad", organ="CHEST")
    assert chest.num_rows == {"train": 1088, "test": 174}
    assert set(chest["test"]["image_organ"]) == {"CHEST"}
    both = load_vqa_rad(data_dir / "vqa_rad", organ=["head", "abd"])
    assert both.num_rows == {"train": 977 + 999, "test": 119 + 158}
    with pytest.raises(ValueError, match="LUNG"):
        load_vqa_rad(data_dir / "vqa_rad", organ="lung")


def _record(number, **overrides):
    record = {
        "qid": number, "image_name": "synpic1.jpg", "image_organ": "CHEST", "answer": "Yes",
        "answer_type": "CLOSED", "question_type": "PRES", "question": "Is there a mass?", "phrase_type": "freeform",
    }
    return {**record, **overrides}


def _mevf_folder(root, train, test):
    write_image(root / "images" / "synpic1.jpg", mode="RGB")
    write_json(root / "trainset.json", train)
    write_json(root / "testset.json", test)
    return root


def test_mevf_quirks_are_normalised(tmp_path):
    root = _mevf_folder(
        tmp_path,
        [_record(1, answer_type="CLOSED "), _record(2, answer=4, answer_type="OPEN"), _record(3, answer=" no ")],
        [_record(4, image_organ="head")],
    )
    data = load_vqa_rad(root)
    assert data["train"]["answer_type"] == ["CLOSED", "OPEN", "CLOSED"]
    assert data["train"]["answer"] == ["Yes", "4", "no"]
    assert data["test"]["image_organ"] == ["HEAD"]
    assert load_vqa_rad(root, organ="CHEST").num_rows == {"train": 3, "test": 0}


def test_official_release_json_is_split_by_phrase_type(tmp_path):
    records = [
        _record("0", phrase_type="freeform", question_rephrase="NULL"),
        _record(1, phrase_type="test_freeform", answer=2, answer_type="OPEN"),
        _record(2, phrase_type="para", answer_type="CLOSED "),
        _record(3, phrase_type="test_para", image_organ="ABD"),
    ]
    write_json(tmp_path / "VQA_RAD Dataset Public.json", records)
    write_image(tmp_path / "VQA_RAD Image Folder" / "synpic1.jpg", mode="RGB")
    data = load_vqa_rad(tmp_path)
    assert data["train"]["qid"] == [0, 2] and data["test"]["qid"] == [1, 3]
    assert data["train"]["phrase_type"] == ["freeform", "para"]
    assert data["test"]["phrase_type"] == ["freeform", "para"]
    assert data["test"]["answer"] == ["2", "Yes"]
    assert load_vqa_rad(tmp_path / "VQA_RAD Dataset Public.json", organ="ABD").num_rows == {"train": 0, "test": 1}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"question": None}, "missing field 'question'"),
        ({"answer_type": "MAYBE"}, "not OPEN or CLOSED"),
        ({"answer": ""}, "'answer' is empty"),
        ({"image_name": "synpic404.jpg"}, "synpic404.jpg"),
        ({"qid": "q7"}, "not an integer"),
    ],
)
def test_bad_record_is_a_named_error(tmp_path, bad, message):
    root = _mevf_folder(tmp_path, [_record(1), _record(2, **bad)], [])
    with pytest.raises(DataFormatError, match=message) as error:
        load_vqa_rad(root)
    assert "trainset.json" in str(error.value) and "record 1 (qid" in str(error.value)


def test_skip_mode_drops_and_counts_bad_records(tmp_path, caplog):
    root = _mevf_folder(tmp_path, [_record(1), _record(2, question=None), "not a record", _record(4)], [])
    with caplog.at_level(logging.WARNING, logger="medvlp_hf.data"):
        data = load_vqa_rad(root, on_error="skip")
    assert data["train"]["qid"] == [1, 4]
    assert "skipped 2 bad record(s)" in caplog.text and "trainset.json" in caplog.text


def test_truncated_image_is_named_when_verifying(tmp_path, caplog):
    root = _mevf_folder(tmp_path, [_record(1), _record(2, image_name="cut.jpg")], [])
    write_truncated_jpeg(root / "images" / "cut.jpg")
    assert load_vqa_rad(root).num_rows["train"] == 2
    with pytest.raises(ImageDecodingError, match="cut.jpg"):
        load_vqa_rad(root, verify_images=True)
    with caplog.at_level(logging.WARNING, logger="medvlp_hf.data"):
        assert load_vqa_rad(root, verify_images=True, on_error="skip")["train"]["qid"] == [1]
    assert "skipped 1 bad record(s)" in caplog.text


def test_missing_files_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="trainset.json"):
        load_vqa_rad(tmp_path)
    write_json(tmp_path / "trainset.json", {"not": "a list"})
    with pytest.raises(DataFormatError, match="JSON list"):
        load_vqa_rad(tmp_path)
