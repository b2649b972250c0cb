"""Image-caption datasets: ROCO, MedICaT and the ALBEF-style caption JSON."""
import pytest

from medvlp_hf.data import DataFormatError, load_image_caption_json, load_medicat, load_roco
from tests.test_data_support import write_image, write_json, write_jsonl


def _roco(root):
    captions = {
        "train": ["ROCO_00001\t Computed tomography of the chest showing a mass.", "ROCO_00002\t CT scan."],
        "validation": ["ROCO_00003\t Chest radiograph with effusion."],
        "test": ["ROCO_00004\t MRI of the brain, axial view."],
    }
    for split, lines in captions.items():
        folder = root / "data" / split / "radiology"
        folder.mkdir(parents=True)
        (folder / "captions.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            write_image(folder / "images" / f"{line.split(chr(9))[0]}.jpg", mode="RGB")
    return root / "data"


def test_roco_release_layout(tmp_path):
    data = load_roco(_roco(tmp_path))
    assert data.num_rows == {"train": 2, "validation": 1, "test": 1}
    assert data["train"]["id"] == ["ROCO_00001", "ROCO_00002"]
    assert data["train"]["caption"][0] == "Computed tomography of the chest showing a mass."
    assert data["train"][0]["image"].mode == "RGB"
    assert load_roco(tmp_path / "data", min_caption_words=3).num_rows == {"train": 1, "validation": 1, "test": 1}


def test_roco_flat_folder_and_bad_line(tmp_path):
    root = _roco(tmp_path) / "train" / "radiology"
    assert load_roco(root).num_rows == {"train": 2}
    (root / "captions.txt").write_text("ROCO_00001\t fine caption\nROCO_00002 no tab here\n")
    with pytest.raises(DataFormatError, match=r"captions.txt, line 2: expected '<ROCO id>\\t<caption>'"):
        load_roco(root)
    assert load_roco(root, on_error="skip")["train"]["id"] == ["ROCO_00001"]


def _medicat(root, count=10):
    records = []
    for i in range(count):
        records.append({"pdf_hash": f"hash{i}", "fig_uri": f"{i}-Figure1-1.png", "s2_caption": f"Figure {i}. CT.",
                        "radiology": i != 3, "fig_key": f"Figure {i}"})
        write_image(root / "release" / "figures" / f"hash{i}_{i}-Figure1-1.png")
    write_jsonl(root / "release" / "s2_full_figures_oa_nonroco_combined_medical_top4_public.jsonl", records)
    return root


def test_medicat_radiology_figures_and_seeded_split(tmp_path):
    root = _medicat(tmp_path)
    data = load_medicat(root, validation_size=2, test_size=3, seed=1)
    assert data.num_rows == {"train": 4, "validation": 2, "test": 3}
    ids = [i for split in data.values() for i in split["id"]]
    assert sorted(ids) == sorted(f"hash{i}_{i}-Figure1-1.png" for i in range(10) if i != 3)
    assert data["train"]["id"] == sorted(data["train"]["id"], key=lambda name: int(name[4:].split("_")[0]))
    again = load_medicat(root, validation_size=2, test_size=3, seed=1)
    assert again["test"]["id"] == data["test"]["id"]
    other = load_medicat(root, validation_size=2, test_size=3, seed=2)
    assert other["test"]["id"] != data["test"]["id"]
    everything = load_medicat(root / "release", radiology_only=False, validation_size=0, test_size=0)
    assert everything.num_rows == {"train": 10}
    assert everything["train"]["caption"][0] == "Figure 0. CT."
    with pytest.raises(ValueError, match="at most the 9 figures"):
        load_medicat(root, validation_size=5, test_size=5)


def test_image_caption_json_expands_caption_lists(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    write_image(tmp_path / "images" / "sub" / "b.jpg", mode="RGB")
    records = [{"image": "a.png", "caption": "first caption"}, {"image": "sub/b.jpg", "caption": ["one", "two"]}]
    path = write_json(tmp_path / "clef2022_train.json", records)
    data = load_image_caption_json(path, tmp_path / "images")
    assert data["train"]["id"] == ["a.png", "sub/b.jpg", "sub/b.jpg"]
    assert data["train"]["caption"] == ["first caption", "one", "two"]
    both = load_image_caption_json({"train": path, "validation": path}, tmp_path / "images")
    assert both.num_rows == {"train": 3, "validation": 3}
    write_json(path, [*records, {"image": "a.png", "caption": []}])
    with pytest.raises(DataFormatError, match=r"clef2022_train.json, record 2: field 'caption'"):
        load_image_caption_json(path, tmp_path / "images")
