"""TransCap (MISS §3.4, appendix A.3): NIH ChestX-ray14 sample rows -> attribute dictionaries -> captions composed
at every access from template phrasings or from a text-generation pipeline (a tiny random GPT-2 built here: its
garbage is rejected, a forced good sentence is kept), and the pre-training collator on the result."""
import csv
import json
import logging
import re

import pytest
import torch
from datasets import Dataset, DatasetDict, Image
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, pipeline

from medvlp_hf.data import (
    NIH_CXR14_DEMOGRAPHICS, NIH_CXR14_TRANSCAP, AttributeSource, DataFormatError, LabelConditionedNegatives,
    Phrasebook, PreTrainingCollator, RandomNegatives, TransCapSpec, add_transcap_attributes, apply_transcap,
    attribute_dictionary, attribute_values, build_phrasebook, load_nih_cxr14, load_transcap_nih,
    with_transcap_captions,
)
from medvlp_hf.data.transcap_phrasebook import REPHRASE_PROMPT, clean_phrasing, rejection_reason
from medvlp_hf.data.transcap_templates import indefinite_article, template_phrasings
from medvlp_hf.hub import render_model_card
from medvlp_hf.training import text_column
from medvlp_hf.training.arguments import DataArguments
from medvlp_hf.training.datasets import PRETRAINING, load_task_dataset
from medvlp_hf.training.pretraining import negatives_for
from tests.test_data_support import medvill_processor, write_image

SAMPLE = "nih_cxr14_sample"
CSV_NAME = "Data_Entry_2017_v2020_sample.csv"
# Real rows of the sample (Image Index -> expected attribute dictionary).
EXPECTED = {
    "00000001_001.png": {"modality": ["X-ray"], "plane": ["posteroanterior"], "organ": ["chest"],
                         "pathology": ["cardiomegaly", "emphysema"]},
    "00000002_000.png": {"modality": ["X-ray"], "plane": ["posteroanterior"], "organ": ["chest"],
                         "pathology": ["no finding"]},
    "00000004_000.png": {"modality": ["X-ray"], "plane": ["anteroposterior"], "organ": ["chest"],
                         "pathology": ["mass", "nodule"]},
    "00000013_044.png": {"modality": ["X-ray"], "plane": ["posteroanterior"], "organ": ["chest"],
                         "pathology": ["cardiomegaly", "mass", "pleural thickening"]},
    "00000116_018.png": {"modality": ["X-ray"], "plane": ["anteroposterior"], "organ": ["chest"],
                         "pathology": ["consolidation", "effusion"]},
}
NIH_VALUES = {
    "modality": ["X-ray"], "plane": ["anteroposterior", "posteroanterior"], "organ": ["chest"],
    "pathology": ["atelectasis", "cardiomegaly", "consolidation", "edema", "effusion", "emphysema", "fibrosis",
                  "hernia", "infiltration", "mass", "no finding", "nodule", "pleural thickening", "pneumonia",
                  "pneumothorax"],
}


@pytest.fixture(scope="module")
def nih(data_dir):
    return load_nih_cxr14(data_dir / SAMPLE)


@pytest.fixture(scope="module")
def pairs(data_dir):
    return load_transcap_nih(data_dir / SAMPLE)


def _row(dataset, image_id):
    return dataset[dataset.with_format(None)["id"].index(image_id)]


def _sentence_sources(phrasebook, values):
    """{phrasing: (attribute, value)} for every phrasing of `values`; fails if two values share a phrasing."""
    sources = {}
    for attribute, items in values.items():
        for value in items:
            for sentence in phrasebook.phrasings(attribute, value):
                assert sources.setdefault(sentence, (attribute, value)) == (attribute, value), sentence
    return sources


def _parse_caption(caption, sources):
    """The (attribute, value) of each sentence of a caption; every sentence must be a known phrasing."""
    sentences = re.split(r"(?<=\.) ", caption)
    assert all(sentence in sources for sentence in sentences), (caption, [s for s in sentences if s not in sources])
    return [sources[sentence] for sentence in sentences]


def test_nih_sample_loads_with_its_splits_images_and_metadata(nih):
    assert nih.num_rows == {"train": 600, "validation": 200}
    assert isinstance(nih["train"].features["image"], Image)
    row = _row(nih["train"], "00000001_001.png")
    assert {key: value for key, value in row.items() if key != "image"} == {
        "id": "00000001_001.png", "finding_labels": ["Cardiomegaly", "Emphysema"], "follow_up": 1, "patient_id": "1",
        "patient_age": 58, "patient_gender": "M", "view_position": "PA", "original_width": 2894,
        "original_height": 2729, "pixel_spacing_x": 0.14300000000000002, "pixel_spacing_y": 0.14300000000000002,
    }
    assert row["image"].size == (64, 64)
    assert _row(nih["validation"], "00000116_018.png")["finding_labels"] == ["Consolidation", "Effusion"]


def _copy_sample(data_dir, tmp_path, rows=4, edit=None, drop_split=False):
    """The first `rows` records of the sample (one edited by `edit(row)`) with small stand-in images."""
    with open(data_dir / SAMPLE / CSV_NAME, newline="") as handle:
        lines = list(csv.reader(handle))
    header, records = lines[0], lines[1 : rows + 1]
    if edit is not None:
        edit(records[1], header)
    if drop_split:
        header, records = header[:-1], [record[:-1] for record in records]
    with open(tmp_path / CSV_NAME, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *records])
    for record in records:
        write_image(tmp_path / "images" / record[0])
    return tmp_path


def _set(column, value):
    def edit(record, header):
        record[header.index(column)] = value
    return edit


@pytest.mark.parametrize(("column", "value", "message"), [
    ("Finding Labels", "Cardiomegaly|Tumour", r"unknown finding\(s\) \['Tumour'\]"),
    ("Finding Labels", "No Finding|Mass", r"Finding Labels 'No Finding\|Mass' mixes 'No Finding' with findings"),
    ("View Position", "LL", r"View Position 'LL' is not one of \('PA', 'AP'\)"),
    ("Patient Age", "fifty", "Patient Age 'fifty' is not an integer"),
])
def test_nih_loader_names_the_bad_record(data_dir, tmp_path, column, value, message):
    root = _copy_sample(data_dir, tmp_path, edit=_set(column, value))
    with pytest.raises(DataFormatError, match=rf"{CSV_NAME}, line 3 \(00000001_001.png\): {message}"):
        load_nih_cxr14(root)
    assert list(load_nih_cxr14(root, on_error="skip")["train"]["id"]) == [
        "00000001_000.png", "00000001_002.png", "00000002_000.png"]


def test_nih_loader_missing_image_and_official_split_lists(data_dir, tmp_path):
    root = _copy_sample(data_dir, tmp_path, drop_split=True)
    with pytest.raises(FileNotFoundError, match="no `split` column and the official split lists"):
        load_nih_cxr14(root)
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000001_002.png\n")
    (root / "test_list.txt").write_text("00000002_000.png\n")
    assert load_nih_cxr14(root).num_rows == {"train": 3, "test": 1}
    (root / "images" / "00000001_002.png").unlink()
    with pytest.raises(DataFormatError, match=r"line 4 \(00000001_002.png\): image file not found"):
        load_nih_cxr14(root)


def test_attribute_dictionaries_of_real_rows(nih):
    with_attributes = add_transcap_attributes(nih, NIH_CXR14_TRANSCAP)
    for image_id, expected in EXPECTED.items():
        split = "validation" if image_id.startswith("00000116") else "train"
        row = _row(with_attributes[split].select_columns(["id", "attributes"]), image_id)
        assert attribute_dictionary(row) == expected
        assert set(row["attributes"]) == {"modality", "plane", "organ", "pathology"}
    assert attribute_values(with_attributes) == NIH_VALUES

    asked = add_transcap_attributes(nih, NIH_CXR14_TRANSCAP.with_attributes(**NIH_CXR14_DEMOGRAPHICS))
    row = _row(asked["train"].select_columns(["id", "attributes"]), "00000001_001.png")
    assert attribute_dictionary(row) == {**EXPECTED["00000001_001.png"], "age": ["58"], "sex": ["male"]}


def test_captions_state_exactly_the_attributes_present(nih):
    with_attributes = add_transcap_attributes(nih, NIH_CXR14_TRANSCAP)
    phrasebook = build_phrasebook(NIH_VALUES)
    sources = _sentence_sources(phrasebook, NIH_VALUES)
    every = with_transcap_captions(with_attributes["train"], phrasebook, keep_probability=1.0)
    some = with_transcap_captions(with_attributes["train"], phrasebook)
    sampled_attributes = set()
    for index in range(0, 600, 7):
        expected = attribute_dictionary(every[index])
        stated = _parse_caption(every[index]["caption"], sources)
        assert sorted(stated) == sorted((name, value) for name, values in expected.items() for value in values)
        stated = _parse_caption(some[index]["caption"], sources)
        assert len(stated) == len(set(stated))
        assert {pair for pair in stated} <= {(name, value) for name, values in expected.items() for value in values}
        assert {value for name, value in stated if name == "pathology"} == set(expected["pathology"])
        sampled_attributes.add(frozenset(name for name, _ in stated))
        for caption in (every[index]["caption"], some[index]["caption"]):
            assert not re.search(r"\d|year|male|female|\bsex\b|\bage\b|shape|size|located", caption), caption
            other_plane = {"posteroanterior": r"posteroanterior|\bPA\b", "anteroposterior": r"anteroposterior|\bAP\b"}
            (plane,) = expected["plane"]
            assert not re.search(other_plane["posteroanterior" if plane == "anteroposterior" else "anteroposterior"],
                                 caption), caption
    assert len(sampled_attributes) == 8  # pathology with every subset of modality, plane, organ


def test_demographics_appear_only_when_asked(data_dir):
    asked = load_transcap_nih(data_dir / SAMPLE, demographics=True, keep_probability=1.0)
    caption = _row(asked["train"], "00000001_001.png")["caption"]
    assert "58" in caption and re.search(r"\bmale\b", caption), caption


def test_train_captions_change_at_every_access_and_repeat_with_the_seed(pairs, data_dir):
    train = pairs["train"]
    first, second = list(train["caption"]), list(train["caption"])
    assert sum(a == b for a, b in zip(first, second, strict=True)) < 0.1 * len(first)
    again = load_transcap_nih(data_dir / SAMPLE)["train"]
    assert list(again["caption"]) == first and list(again["caption"]) == second
    other_seed = load_transcap_nih(data_dir / SAMPLE, seed=1)["train"]
    assert sum(a == b for a, b in zip(list(other_seed["caption"]), first, strict=True)) < 0.1 * len(first)
    assert isinstance(train.features["image"], Image) and train[0]["image"].size == (64, 64)


def test_dataloader_workers_draw_new_captions_each_epoch(pairs):
    """Each worker copies the transform; its generator is re-seeded from (seed, worker seed), which torch draws anew
    for every epoch from the main process's seed."""
    subset = pairs["train"].select(range(64))

    def epochs():
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(subset, batch_size=8, num_workers=2,
                                             collate_fn=lambda rows: [row["caption"] for row in rows])
        return [[caption for batch in loader for caption in batch] for _ in range(2)]

    first, second = epochs()
    assert sum(a == b for a, b in zip(first, second, strict=True)) < 0.2 * len(first)
    assert epochs() == [first, second]


def test_evaluation_captions_are_fixed_per_row(pairs, data_dir):
    validation = pairs["validation"]
    captions = list(validation["caption"])
    assert list(validation["caption"]) == captions
    assert validation[5]["caption"] == captions[5] == validation.select([5])[0]["caption"]
    other = load_transcap_nih(data_dir / SAMPLE, seed=1)["validation"]
    assert sum(a == b for a, b in zip(list(other["caption"]), captions, strict=True)) < 0.1 * len(captions)


def test_phrasebook_coverage_and_save_load(nih, tmp_path):
    with_attributes = add_transcap_attributes(nih, NIH_CXR14_TRANSCAP)
    partial = Phrasebook.from_templates({name: values for name, values in NIH_VALUES.items() if name != "plane"})
    with pytest.raises(ValueError, match=r"no phrasings for 2 attribute value\(s\) of the dataset: "
                                         r"phrasings\['plane'\]\['anteroposterior'\], phrasings\['plane'\]\['poster"):
        with_transcap_captions(with_attributes["train"], partial)
    phrasebook = build_phrasebook(NIH_VALUES)
    phrasebook.save(tmp_path / "phrasebook.json")
    loaded = Phrasebook.load(tmp_path / "phrasebook.json")
    assert loaded.to_dict() == phrasebook.to_dict()
    assert loaded.phrasings("plane", "posteroanterior") == template_phrasings("plane", "posteroanterior")
    (tmp_path / "bad.json").write_text('{"phrasings": {"plane": {"posteroanterior": []}}}')
    with pytest.raises(DataFormatError, match=r"bad.json: phrasings\['plane'\]\['posteroanterior'\] must be a "
                                              "non-empty list of non-empty sentences, got \\[\\]"):
        Phrasebook.load(tmp_path / "bad.json")


def test_template_phrasings_read_as_sentences():
    assert template_phrasings("plane", "anteroposterior")[:2] == ("This is an anteroposterior view.", "This is an AP view.")
    assert "This is an X-ray image." in template_phrasings("modality", "X-ray")
    assert "This is a CT image." in template_phrasings("modality", "CT")
    assert "There is a pneumothorax." in template_phrasings("pathology", "pneumothorax")
    assert "This is a normal study." in template_phrasings("pathology", "no finding")
    assert not any("no finding" in s.lower() and "shows" not in s for s in template_phrasings("pathology", "no finding"))
    assert [indefinite_article(word) for word in ("MRI", "CT", "80", "57", "ultrasound", "frontal", "11")] == [
        "an", "a", "an", "a", "an", "a", "an"]


def test_generated_text_is_cleaned_and_checked():
    assert clean_phrasing('\n  1. "the heart is enlarged. Also more"\nnext') == "The heart is enlarged."
    assert clean_phrasing("- cardiomegaly is present") == "Cardiomegaly is present."
    assert clean_phrasing("   \n ") == ""
    conflicts = ("posteroanterior", "pa", "anteroposterior", "ap", "effusion")
    good = "The chest radiograph shows cardiomegaly."
    assert rejection_reason(good, "pathology", "cardiomegaly", conflicts) is None
    assert rejection_reason("There is no cardiomegaly.", "pathology", "cardiomegaly") == "negates or hedges the value"
    assert rejection_reason("Cardiomegaly may be present.", "pathology", "cardiomegaly") == "negates or hedges the value"
    assert rejection_reason("An AP view shows cardiomegaly.", "pathology", "cardiomegaly", conflicts) == (
        "mentions 'ap', which not every row has")
    assert rejection_reason("The heart looks big today.", "pathology", "cardiomegaly").startswith("does not state")
    assert rejection_reason("Rewritten sentence shows cardiomegaly.", "pathology", "cardiomegaly") == (
        "echoes the prompt")
    assert rejection_reason("Cardiomegaly.", "pathology", "cardiomegaly") == "fewer than 3 words"
    assert rejection_reason("cardiomegaly " * 8, "pathology", "cardiomegaly") == "repetitive"
    assert rejection_reason("Cardiomegaly 12 34 56 78 90 ##.", "pathology", "cardiomegaly").startswith("not prose")
    assert rejection_reason("The study is normal, without effusion.", "pathology", "no finding", conflicts) == (
        "mentions 'effusion', which not every row has")
    assert rejection_reason("No abnormality is seen on this film.", "pathology", "no finding", conflicts) is None


def _tiny_generator(data_dir, chat=False):
    """A randomly initialised 1-layer GPT-2 with the roberta-base byte-level BPE, as a text-generation pipeline."""
    folder = data_dir / "tokenizers" / "roberta-base"
    tokenizer = GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), eos_token="</s>",
                              bos_token="<s>", unk_token="<unk>")
    if chat:
        tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}<assistant>"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.eos_token_id)
    return pipeline("text-generation", model=GPT2LMHeadModel(config).eval(), tokenizer=tokenizer)


def test_random_language_model_output_is_rejected_and_templates_used(data_dir, nih, caplog):
    generator = _tiny_generator(data_dir)
    values = {"plane": NIH_VALUES["plane"], "pathology": ["cardiomegaly", "no finding"]}
    with caplog.at_level(logging.WARNING, logger="medvlp_hf.data"):
        phrasebook = build_phrasebook(values, generator, num_variants=4, max_new_tokens=12)
    pairs_ = [(name, value) for name, items in values.items() for value in items]
    assert list(phrasebook.llm_fallbacks) == pairs_
    assert all(phrasebook.phrasings(*pair) == template_phrasings(*pair) for pair in pairs_)
    assert "no usable phrasing for 4 of 4 attribute value(s)" in caplog.text
    assert "plane='anteroposterior'" in caplog.text

    torch.manual_seed(0)
    small = DatasetDict({split: part.select(range(20)) for split, part in nih.items()})
    result = apply_transcap(small, NIH_CXR14_TRANSCAP, pipeline=generator, num_variants=2, max_new_tokens=8)
    assert result.num_rows == {"train": 20, "validation": 20}
    assert all(caption for caption in result["train"]["caption"])


@pytest.mark.parametrize("chat", [False, True], ids=["plain-prompt", "chat-template"])
def test_a_good_generated_phrasing_is_kept_and_the_others_fall_back(data_dir, chat):
    """The pipeline's own `sequence_bias` forces the random model to write one sentence after the prompt's last
    token (':' of the plain prompt, '>' of the chat template's): it states cardiomegaly, so only that value gets it;
    the other values keep their templates."""
    generator = _tiny_generator(data_dir, chat=chat)
    tokenizer = generator.tokenizer
    forced = tokenizer(" The chest radiograph shows cardiomegaly.\n", add_special_tokens=False)["input_ids"]
    prompt = REPHRASE_PROMPT.format(sentence="x")
    if chat:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False)
    chain = [tokenizer(prompt, add_special_tokens=False)["input_ids"][-1], *forced]
    bias = {tuple(chain[i : i + 2]): 100.0 for i in range(len(chain) - 1)}
    values = {"plane": NIH_VALUES["plane"], "pathology": ["cardiomegaly", "effusion"]}
    phrasebook = build_phrasebook(values, generator, num_variants=3, max_new_tokens=len(forced) + 4,
                                  sequence_bias=bias)
    assert phrasebook.phrasings("pathology", "cardiomegaly") == ("The chest radiograph shows cardiomegaly.",)
    assert set(phrasebook.llm_fallbacks) == {("plane", "anteroposterior"), ("plane", "posteroanterior"),
                                             ("pathology", "effusion")}
    assert phrasebook.phrasings("pathology", "effusion") == template_phrasings("pathology", "effusion")


def test_a_spec_for_another_labelled_dataset():
    """A CheXpert-style table: a view column with values to skip, multi-hot label columns, a numeric age."""
    table = Dataset.from_dict({
        "Path": ["p1.jpg", "p2.jpg", "p3.jpg"], "AP/PA": ["AP", "", "LL"],
        "Cardiomegaly": [1.0, None, -1.0], "Edema": [1.0, 0.0, None], "No Finding": [None, 1.0, None],
        "Age": [63.0, 41.0, 70.0],
    })
    spec = TransCapSpec({
        "modality": AttributeSource(constant="X-ray"),
        "plane": AttributeSource(column="AP/PA", values={"AP": "anteroposterior", "PA": "posteroanterior", "LL": None}),
        "pathology": AttributeSource(flags={"Cardiomegaly": "cardiomegaly", "Edema": "edema",
                                            "No Finding": "no finding"}),
        "age": AttributeSource(column="Age"),
    })
    rows = add_transcap_attributes(table, spec, id_column="Path")
    assert [attribute_dictionary(row) for row in rows.select_columns(["attributes"])] == [
        {"modality": ["X-ray"], "plane": ["anteroposterior"], "pathology": ["cardiomegaly", "edema"], "age": ["63"]},
        {"modality": ["X-ray"], "pathology": ["no finding"], "age": ["41"]},
        {"modality": ["X-ray"], "age": ["70"]},
    ]
    strict = spec.with_attributes(plane=AttributeSource(column="AP/PA", values={"AP": "anteroposterior"}, missing=()))
    with pytest.raises(DataFormatError, match=r"row 1 \(id 'p2.jpg'\): plane: AP/PA value '' has no entry"):
        add_transcap_attributes(table, strict, id_column="Path")
    with pytest.raises(DataFormatError, match=r"row 2 \(id 'p3.jpg'\): the TransCap spec finds no attribute"):
        add_transcap_attributes(table, TransCapSpec({"pathology": spec.attributes["pathology"]}), id_column="Path")
    with pytest.raises(ValueError, match=r"reads column\(s\) \['View'\]"):
        add_transcap_attributes(table, TransCapSpec({"plane": AttributeSource(column="View")}))
    with pytest.raises(ValueError, match="exactly one of column, constant or flags"):
        AttributeSource(column="View", constant="X-ray")
    with pytest.raises(ValueError, match="some of the attributes"):
        TransCapSpec({"colour": AttributeSource(constant="grey")})


def test_pretraining_collator_takes_a_transcap_batch(pairs):
    train = pairs["train"]
    examples = [train[i] for i in range(4)]
    processor = medvill_processor(image_size=32)
    collator = PreTrainingCollator(processor, negatives=RandomNegatives(train, text_column="caption"),
                                   text_column="caption", seed=0)
    batch = collator(examples)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["input_ids"].shape == batch["labels"].shape and batch["itm_labels"].shape == (4,)
    plain = PreTrainingCollator(processor, mlm_probability=None, text_column="caption")(examples)
    decoded = processor.tokenizer.batch_decode(plain["input_ids"], skip_special_tokens=True)
    assert [text.replace(" ", "") for text in decoded] == [
        processor.tokenizer.decode(processor.tokenizer(example["caption"])["input_ids"], skip_special_tokens=True)
        .replace(" ", "") for example in examples
    ]


def _pathologies(caption, sources):
    return {value for attribute, value in _parse_caption(caption, sources) if attribute == "pathology"}


def test_transcap_nih_is_a_pretraining_dataset_with_label_conditioned_negatives(data_dir):
    """A caption of an image with the same findings is no true negative: MedViLL's matching negatives come from
    images with another finding set, read from the `labels` vectors TransCap writes."""
    dataset_dict = load_task_dataset(DataArguments(dataset="transcap_nih", data_dir=str(data_dir / SAMPLE)),
                                     PRETRAINING, seed=0)
    train = dataset_dict["train"]
    assert text_column(train) == "caption"
    pathologies = NIH_VALUES["pathology"]
    assert attribute_values(train)["pathology"] == pathologies
    row = _row(train, "00000001_001.png")
    assert row["labels"] == [1.0 if name in ("cardiomegaly", "emphysema") else 0.0 for name in pathologies]
    negatives = negatives_for(train, "caption")
    assert isinstance(negatives, LabelConditionedNegatives)

    sources = _sentence_sources(build_phrasebook(NIH_VALUES), NIH_VALUES)
    collator = PreTrainingCollator(medvill_processor(image_size=32), negatives=negatives, text_column="caption",
                                   seed=0)
    examples = [train[index] for index in range(40)]
    normal = sum(example["attributes"]["pathology"] == ["no finding"] for example in examples)
    assert normal >= 10  # enough images that share a finding set for a random draw to pair them
    drawn = [(example, *collator.pair_text(example)) for example in examples for _ in range(5)]
    mismatched = [(example, caption) for example, caption, match in drawn if match == 0]
    assert len(mismatched) > 60
    for example, caption in mismatched:
        assert _pathologies(caption, sources) != set(example["attributes"]["pathology"]), (example["id"], caption)
    for example, caption, match in drawn:
        if match == 1:
            assert _pathologies(caption, sources) == set(example["attributes"]["pathology"])


def test_no_labels_column_when_asked_or_when_the_spec_has_no_pathology(nih):
    small = DatasetDict({split: part.select(range(10)) for split, part in nih.items()})
    assert "labels" not in apply_transcap(small, NIH_CXR14_TRANSCAP, label_attribute=None)["train"].column_names
    plane_only = TransCapSpec({"plane": NIH_CXR14_TRANSCAP.attributes["plane"]})
    pairs_ = apply_transcap(small, plane_only)
    assert "labels" not in pairs_["train"].column_names
    assert isinstance(negatives_for(pairs_["train"], "caption"), RandomNegatives)
    with pytest.raises(ValueError, match="already has a 'labels' column; pass label_attribute=None"):
        apply_transcap(DatasetDict({"train": small["train"].add_column("labels", [[1.0]] * 10)}), NIH_CXR14_TRANSCAP)


def test_negative_pools_read_captions_and_labels_without_decoding_images(tmp_path):
    """The captions are computed by a transform from the whole row; reading them for a negative pool must not
    decode every image of the split (hours on the full NIH set). The image files here do not exist."""
    rows = {"id": ["a", "b", "c"], "image": [str(tmp_path / f"{name}.png") for name in "abc"],
            "finding": ["Mass", "No Finding", "Mass"]}
    table = Dataset.from_dict(rows).cast_column("image", Image())
    spec = TransCapSpec({"pathology": AttributeSource(column="finding", values={"Mass": "mass",
                                                                                 "No Finding": "no finding"})})
    train = apply_transcap(DatasetDict({"train": table}), spec)["train"]
    with pytest.raises(FileNotFoundError):
        train[0]
    negatives = negatives_for(train, "caption")
    assert isinstance(negatives, LabelConditionedNegatives) and len(negatives.texts) == 3
    generator = torch.Generator().manual_seed(0)
    assert {negatives.sample_index({"labels": [1.0, 0.0]}, generator) for _ in range(20)} == {1}


def _caption_epochs(train, epochs=2):
    return [list(train["caption"]) for _ in range(epochs)]


def test_transcap_captions_follow_the_run_seed(data_dir):
    """`load_task_dataset(..., seed=training_args.seed)`: the per-epoch draw repeats under a seed, changes with it,
    and differs from epoch to epoch; a loader without the seed is refused."""
    arguments = DataArguments(dataset="transcap_nih", data_dir=str(data_dir / SAMPLE))

    def draws(seed):
        return _caption_epochs(load_task_dataset(arguments, PRETRAINING, seed=seed)["train"])

    first, second = draws(3)
    assert draws(3) == [first, second]
    assert sum(a == b for a, b in zip(first, second, strict=True)) < 0.1 * len(first)
    other_first, _ = draws(4)
    assert sum(a == b for a, b in zip(first, other_first, strict=True)) < 0.1 * len(first)
    with pytest.raises(ValueError, match="draws its captions at random while training: pass the run's seed"):
        load_task_dataset(arguments, PRETRAINING)


def _own_phrasings():
    """Phrasings no template writes, one sentence per value: {attribute: {value: [sentence]}}."""
    return {attribute: {value: [f"Reader noted {attribute} {value}."] for value in values}
            for attribute, values in NIH_VALUES.items()}


def test_a_phrasebook_file_gives_the_captions(data_dir, tmp_path):
    path = tmp_path / "phrasings.json"
    path.write_text(json.dumps(_own_phrasings()))
    arguments = DataArguments(dataset="transcap_nih", data_dir=str(data_dir / SAMPLE), transcap_phrasebook=str(path))
    pairs_ = load_task_dataset(arguments, PRETRAINING, seed=0)
    sources = _sentence_sources(Phrasebook(_own_phrasings()), NIH_VALUES)
    for split in ("train", "validation"):
        for caption, attributes in zip(pairs_[split]["caption"], pairs_[split]["attributes"], strict=True):
            assert set(_parse_caption(caption, sources)) <= {
                (name, value) for name, values in attributes.items() for value in values}
    path.write_text(json.dumps({"phrasings": _own_phrasings(), "llm_fallbacks": [["plane", "posteroanterior"]]}))
    assert Phrasebook.load(path).llm_fallbacks == (("plane", "posteroanterior"),)
    assert _row(load_transcap_nih(data_dir / SAMPLE, phrasebook=path)["validation"], "00000116_018.png")["caption"]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"is not a JSON file \(Expecting property name.*\); a phrasebook file is \{\"phrasings\""),
    ('["This is a PA view."]', r"holds a JSON list, not an object; a phrasebook file is"),
    ('{"phrasings": {}, "notes": "x"}', r"has unknown top-level key\(s\) \['notes'\]"),
    ('{"pathologies": {"mass": ["A mass."]}}',
     r"phrasings\['pathologies'\]: 'pathologies' is not a TransCap attribute; use one of \['modality', 'plane'"),
    ('{"plane": ["This is a PA view."]}', r"phrasings\['plane'\] must map each value to a list of sentences"),
    ('{"plane": {"posteroanterior": "This is a PA view."}}',
     r"phrasings\['plane'\]\['posteroanterior'\] must be a non-empty list of non-empty sentences, got 'This is"),
    ('{"plane": {"posteroanterior": ["  "]}}', r"phrasings\['plane'\]\['posteroanterior'\] must be a non-empty"),
    ('{"phrasings": {}, "llm_fallbacks": ["plane"]}', r"llm_fallbacks must be a list of \[attribute, value\] pairs"),
])
def test_a_malformed_phrasebook_file_is_named_with_its_entry(data_dir, tmp_path, content, message):
    path = tmp_path / "phrasings.json"
    path.write_text(content)
    arguments = DataArguments(dataset="transcap_nih", data_dir=str(data_dir / SAMPLE), transcap_phrasebook=str(path))
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(path))}:? .*{message}"):
        load_task_dataset(arguments, PRETRAINING, seed=0)


def test_a_phrasebook_file_must_cover_every_value_and_is_for_transcap_only(data_dir, tmp_path):
    phrasings = _own_phrasings()
    del phrasings["pathology"]["hernia"], phrasings["plane"]["anteroposterior"]
    path = tmp_path / "phrasings.json"
    path.write_text(json.dumps(phrasings))
    with pytest.raises(ValueError, match=rf"the phrasebook {re.escape(str(path))} has no phrasings for 2 attribute "
                                         r"value\(s\) of the dataset: phrasings\['plane'\]\['anteroposterior'\], "
                                         r"phrasings\['pathology'\]\['hernia'\]; add a list of sentences for each"):
        load_transcap_nih(data_dir / SAMPLE, phrasebook=path)
    with pytest.raises(FileNotFoundError, match="phrasebook file not found"):
        load_transcap_nih(data_dir / SAMPLE, phrasebook=tmp_path / "absent.json")
    with pytest.raises(ValueError, match="--transcap_phrasebook gives the phrasings of a TransCap dataset; --dataset "
                                         "mimic_cxr has its own texts"):
        DataArguments(dataset="mimic_cxr", transcap_phrasebook=str(path))


def test_model_cards_know_the_transcap_and_medicat_licences():
    card = render_model_card("miss", datasets=["transcap_nih", "medicat"], training_command="python x.py")
    assert "NIH ChestX-ray14: no restrictions on use" in card and "NIH Clinical Center" in card
    assert "non-commercial use only" in card
