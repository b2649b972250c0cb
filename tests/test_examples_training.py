"""Unit checks of the Trainer pieces the example scripts share (medvlp_hf.training)."""

import ast
import importlib
import inspect
import json
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import EvalPrediction

from medvlp_hf import MedViLLConfig, MedViLLForVQA, config_class_for, default_processor
from medvlp_hf.auto import ZOO_MODEL_TYPES
from medvlp_hf.data import demo_answers, load_demo, load_vqa_rad
from medvlp_hf.metrics.vqa import normalize_answer_types
from medvlp_hf.training import (
    DataArguments, ModelArguments, build_processor, freeze_batch_norm_statistics, load_config, load_task_dataset,
    parse_arguments, parse_config_overrides, run_splits,
)
from medvlp_hf.training.generative_vqa import generative_vqa_metrics
from medvlp_hf.training.vqa import (
    VQAArguments, accuracy_summary, answer_head_is_new, freeform_rows, majority_answers, resolve_answers, set_answers,
    start_answer_logits_at_uniform_prior, vqa_metrics,
)
from tests.test_examples_common import EXAMPLES, REPO_ROOT, example


def test_config_overrides_take_the_type_of_the_field():
    reference = MedViLLConfig.from_preset("tiny")
    overrides = parse_config_overrides(
        "hidden_dropout_prob=0,num_hidden_layers=3,freeze_image_encoder=true,attention_mask_type=s2s,"
        "resnet_widths=[8,8,16,32],classification_pos_weight=[1.5,2]",
        reference,
    )
    assert overrides == {
        "hidden_dropout_prob": 0.0, "num_hidden_layers": 3, "freeze_image_encoder": True, "attention_mask_type": "s2s",
        "resnet_widths": [8, 8, 16, 32], "classification_pos_weight": [1.5, 2],
    }
    assert type(overrides["hidden_dropout_prob"]) is float
    with pytest.raises(ValueError, match="has no field 'hidden_dims'"):
        parse_config_overrides("hidden_dims=3", reference)
    with pytest.raises(ValueError, match="true or false"):
        parse_config_overrides("freeze_image_encoder=maybe", reference)
    with pytest.raises(ValueError, match="key=value"):
        parse_config_overrides("hidden_size", reference)


def test_dotted_config_overrides_set_sub_config_fields(tmp_path):
    """MISS keeps its towers' fields in vision_config / text_config: 'text_config.x=...' reaches them, from a preset
    and from a saved checkpoint, and leaves the sub-config's other fields as they were."""
    reference = config_class_for("miss").from_preset("tiny")
    overrides = parse_config_overrides("text_config.hidden_dropout_prob=0,vision_config.image_size=48,queue_size=64",
                                       reference)
    assert overrides == {"text_config": {"hidden_dropout_prob": 0.0}, "vision_config": {"image_size": 48},
                         "queue_size": 64}
    scratch_config = load_config(ModelArguments(model_type="miss", config="tiny", config_overrides="vision_config."
                                                "image_size=48,text_config.hidden_dropout_prob=0"))
    assert (scratch_config.vision_config.image_size, scratch_config.vision_config.patch_size) == (48, 8)
    assert scratch_config.text_config.hidden_dropout_prob == 0.0 and scratch_config.text_config.hidden_size == 32
    reference.save_pretrained(tmp_path)
    loaded = load_config(ModelArguments(model_name_or_path=str(tmp_path), config_overrides="text_config.num_hidden_"
                                        "layers=3"))
    assert loaded.text_config.num_hidden_layers == 3 and loaded.text_config.hidden_size == 32
    assert loaded.vision_config.to_dict() == reference.vision_config.to_dict()
    with pytest.raises(ValueError, match="MISSConfig has no sub-config 'image_config'"):
        parse_config_overrides("image_config.size=3", reference)
    with pytest.raises(ValueError, match="MISSTextConfig has no field 'hidden_dims'"):
        parse_config_overrides("text_config.hidden_dims=3", reference)


def scratch(preset, **kwargs):
    return ModelArguments(model_type="medvill", config=preset, **kwargs)


def test_scratch_presets_get_width_scaled_initialisation_unless_overridden():
    """The CPU presets carry initializer_range = hidden_size ** -0.5 themselves; --config_overrides still wins."""
    tiny = load_config(scratch("tiny"))
    assert type(tiny) is config_class_for("medvill")
    assert tiny.initializer_range == pytest.approx(tiny.hidden_size**-0.5) == pytest.approx(32**-0.5)
    assert load_config(scratch("small")).initializer_range == pytest.approx(256**-0.5)
    assert load_config(scratch("base")).initializer_range == 0.02
    overridden = load_config(scratch("tiny", config_overrides="initializer_range=0.02,image_size=96"))
    assert overridden.initializer_range == 0.02 and overridden.image_size == 96
    with pytest.raises(ValueError, match="num_pretraining_image_tokens"):  # the config's own validation runs
        load_config(scratch("small", config_overrides="image_size=64"))


def test_scratch_processor_is_the_model_types_default_processor():
    config = load_config(scratch("tiny"))
    processor = build_processor(scratch("tiny"), config)
    assert type(processor) is type(default_processor(config))
    assert processor.image_processor.size == {"height": config.image_size, "width": config.image_size}
    assert processor.tokenizer.vocab_size == config.vocab_size


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, r"Say which model to train.*--model_type TYPE --config PRESET.*medvill --config base\|small\|tiny"),
        ({"config": "tiny"}, "Say which model to train"),
        ({"model_type": "medvill"}, "Say which model to train"),
        ({"model_type": "bert", "config": "tiny"}, r"'bert' is not a medvlp-hf model; choose one of \['medvill'"),
        ({"model_name_or_path": "x", "config": "tiny"}, "cannot be combined"),
        ({"model_name_or_path": "x", "model_type": "medvill"}, "cannot be combined"),
        ({"model_type": "medvill", "config": "huge"}, r"'huge' is not a medvill preset; choose one of \('base'"),
        ({"model_type": "medvill", "config": "tiny", "lora": True}, "adapts a trained checkpoint"),
        ({"model_type": "medvill", "config": "tiny", "merge_lora": True}, "add --lora or --peft ia3"),
    ],
)
def test_model_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelArguments(**kwargs)


def test_scratch_model_type_has_no_default_and_the_error_lists_the_zoo(tmp_path):
    """--model_type is required from scratch: a default model family would hide which model a run trains."""
    with pytest.raises(ValueError, match="Say which model to train") as error:
        parse_arguments((), ["--config", "tiny", "--output_dir", str(tmp_path)])
    for model_type in ZOO_MODEL_TYPES:
        presets = "|".join(config_class_for(model_type).preset_names)
        assert f"{model_type} --config {presets}" in str(error.value)


def test_lora_implies_frozen_batch_norm():
    assert ModelArguments(model_name_or_path="x", lora=True).freeze_batch_norm


def test_frozen_batch_norm_uses_and_keeps_running_statistics_in_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    images = torch.randn(2, 3, 8, 8)
    expected = model.eval()(images)
    assert freeze_batch_norm_statistics(model) == 1
    model.train()
    torch.testing.assert_close(model(images), expected, rtol=0, atol=0)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_parse_arguments_applies_script_defaults_and_reads_a_json_file(tmp_path):
    model_args, data_args, training_args = parse_arguments(
        (), ["--model_type", "medvill", "--config", "tiny", "--output_dir", str(tmp_path)], learning_rate=5e-4,
        num_train_epochs=5,
    )
    assert (model_args.config, data_args.dataset, training_args.learning_rate) == ("tiny", "demo", 5e-4)
    assert training_args.num_train_epochs == 5 and not training_args.remove_unused_columns
    assert training_args.use_cpu == (not torch.accelerator.is_available())
    path = tmp_path / "args.json"
    path.write_text(json.dumps(
        {"model_type": "medvill", "config": "tiny", "output_dir": str(tmp_path), "learning_rate": 1e-3}
    ))
    _, _, from_file = parse_arguments((), [str(path)], learning_rate=5e-4, num_train_epochs=5)
    assert (from_file.learning_rate, from_file.num_train_epochs) == (1e-3, 5)
    with pytest.raises(ValueError, match="remove_unused_columns"):
        parse_arguments((), ["--model_type", "medvill", "--config", "tiny", "--output_dir", str(tmp_path),
                             "--remove_unused_columns", "true"])


def test_dataset_selection_errors_name_the_choices_and_splits_follow_the_phases(tmp_path):
    with pytest.raises(ValueError, match=r"not available for vqa; choose one of \['demo', 'pathvqa', 'slake', 'vqa_rad'\]"):
        load_task_dataset(DataArguments(dataset="mimic_cxr"), "vqa")
    with pytest.raises(ValueError, match="pass --data_dir"):
        load_task_dataset(DataArguments(dataset="vqa_rad"), "vqa")

    data_args = DataArguments(max_train_samples=5, max_eval_samples=3)
    dataset_dict = load_task_dataset(data_args, "vqa")
    assert (len(dataset_dict["train"]), len(dataset_dict["test"])) == (5, 3)
    _, _, training_args = parse_arguments(
        (), ["--model_type", "medvill", "--config", "tiny", "--output_dir", str(tmp_path), "--do_train", "--do_eval"]
    )
    splits, names = run_splits(dataset_dict, data_args, training_args)
    assert names == {"train": "train", "eval": "test"} and len(splits["eval"]) == 3
    with pytest.raises(ValueError, match="no 'validation' split"):
        run_splits(dataset_dict, DataArguments(eval_split="validation"), training_args)


def test_answer_vocabulary_comes_from_the_right_source(tmp_path):
    dataset_dict = load_demo(num_train=12, num_test=2)
    from_scratch = scratch("tiny")
    config = MedViLLConfig.from_preset("tiny")
    assert resolve_answers(config, from_scratch, DataArguments(), VQAArguments(), dataset_dict) == demo_answers()

    listed = tmp_path / "answers.json"
    listed.write_text(json.dumps(["yes", "no", 3]))
    assert resolve_answers(config, from_scratch, DataArguments(), VQAArguments(answer_list=str(listed)),
                           dataset_dict) == [
        "yes", "no", "3",
    ]
    rad = tmp_path / "vqa_rad"
    rad.mkdir()
    (rad / "answer_all_list.json").write_text(json.dumps(["no", "yes", "axial"]))
    rad_args = DataArguments(dataset="vqa_rad", data_dir=str(rad))
    assert resolve_answers(config, from_scratch, rad_args, VQAArguments(), dataset_dict) == ["no", "yes", "axial"]
    pathvqa = DataArguments(dataset="pathvqa", data_dir=str(tmp_path))
    train_answers = dataset_dict["train"]["answer"]
    frequent = resolve_answers(config, from_scratch, pathvqa, VQAArguments(min_answer_count=2), dataset_dict)
    assert frequent and all(train_answers.count(answer) >= 2 for answer in frequent)

    trained = MedViLLConfig.from_preset("tiny")
    set_answers(trained, ["left", "right"])
    checkpoint = ModelArguments(model_name_or_path="some/checkpoint")
    assert resolve_answers(trained, checkpoint, rad_args, VQAArguments(), dataset_dict) == ["left", "right"]
    assert not answer_head_is_new(checkpoint, trained, ["left", "right"])
    assert answer_head_is_new(checkpoint, trained, ["no", "yes", "axial"])
    assert answer_head_is_new(from_scratch, config, demo_answers())


def test_new_answer_classifier_starts_at_the_uniform_prior():
    config = MedViLLConfig.from_preset("tiny", num_labels=458)
    model = MedViLLForVQA(config)
    start_answer_logits_at_uniform_prior(model)
    torch.testing.assert_close(torch.sigmoid(model.answer_classifier[2].bias), torch.full((458,), 1 / 458))


def imported_objects(path, package):
    """(name, object) for every name `path` imports, relative imports resolved against `package`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module("." * node.level + (node.module or ""), package if node.level else None)
            for alias in node.names:
                target = getattr(module, alias.name, None)
                if target is None:  # a submodule
                    target = importlib.import_module(f"{module.__name__}.{alias.name}")
                yield f"{module.__name__}.{alias.name}", target


def test_training_code_and_examples_import_no_model_folder():
    """medvlp_hf.training and the example scripts find a model's facts through the Auto classes and the model's
    own attributes (presets, default processor, LoRA targets, new head modules), so a new zoo model needs no edit
    there: neither a medvlp_hf.models module nor a class defined in one is imported."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    sources = [(path, "medvlp_hf.training") for path in sorted((REPO_ROOT / "medvlp_hf" / "training").glob("*.py"))]
    sources += [(path, None) for path in sorted(EXAMPLES.glob("*.py"))]
    assert len(sources) > 15
    for path, package in sources:
        for name, target in imported_objects(path, package):
            defined_in = target.__name__ if inspect.ismodule(target) else getattr(target, "__module__", "") or ""
            assert not defined_in.startswith("medvlp_hf.models"), f"{path.name} imports {name} ({defined_in})"


def test_majority_baseline_gives_each_answer_type_its_most_common_known_training_answer():
    answers = ["no", "yes", "left", "right"]
    train = Dataset.from_dict({
        "answer": ["yes", "yes", "no", "yes", "no", "left", "right", "right", "tumour", "tumour", "tumour"],
        "answer_type": ["CLOSED"] * 5 + ["OPEN "] * 6,  # VQA-RAD writes "OPEN " with a space
    })
    baseline = majority_answers(train, answers)
    # "tumour" is the most common open answer but the classifier cannot give it
    assert baseline == {"CLOSED": answers.index("yes"), "OPEN": answers.index("right")}
    tie = Dataset.from_dict({"answer": ["yes", "no", "left"], "answer_type": ["CLOSED", "CLOSED", "CLOSED"]})
    assert majority_answers(tie, answers) == {"CLOSED": 0, "OPEN": 0}  # tie: lower id; no open answer: overall
    assert majority_answers(Dataset.from_dict({"answer": ["x"], "answer_type": ["OPEN"]}), answers) == {}

    evaluated = Dataset.from_dict({"answer_type": ["CLOSED", "CLOSED", "OPEN", "OPEN", "OPEN"]})
    targets = np.zeros((5, 4))
    for row, answer in enumerate(["yes", "no", "right", "left", "right"]):
        targets[row, answers.index(answer)] = 1.0
    logits = np.eye(4)[[1, 1, 2, 2, 2]]  # yes, yes, left, left, left
    metrics = vqa_metrics(evaluated, baseline)(EvalPrediction(predictions=logits, label_ids=targets))
    assert (metrics["closed_accuracy"], metrics["open_accuracy"], metrics["overall_accuracy"]) == (0.5, 1 / 3, 0.4)
    assert metrics["baseline_closed_accuracy"] == 0.5 and metrics["baseline_open_accuracy"] == pytest.approx(2 / 3)
    assert metrics["baseline_overall_accuracy"] == pytest.approx(3 / 5)
    assert "baseline_closed_accuracy" not in vqa_metrics(evaluated)(EvalPrediction(predictions=logits, label_ids=targets))


def freeform_split():
    """Six VQA-RAD-like test questions, four of them freeform (rows 0, 2, 3, 5)."""
    return Dataset.from_dict({
        "qid": [10, 11, 12, 13, 14, 15],
        "answer": ["yes", "no", "left", "no", "right", "axial"],
        "answer_type": ["CLOSED", "CLOSED", "OPEN", "CLOSED", "OPEN", "OPEN"],
        "phrase_type": ["freeform", "para", "freeform", "freeform", "para", "freeform"],
    })


def test_vqa_rad_freeform_accuracies_of_a_classifier_by_hand():
    answers = ["yes", "no", "left", "right", "axial"]
    split = freeform_split()
    targets = np.eye(5)[[answers.index(answer) for answer in split["answer"]]]
    logits = np.eye(5)[[0, 0, 2, 0, 3, 3]]  # yes (right), yes (wrong), left (right), yes (wrong), right (right), right
    metrics = vqa_metrics(split, {"CLOSED": 1, "OPEN": 4})(EvalPrediction(predictions=logits, label_ids=targets))
    # every question: closed 1/3, open 2/3, overall 3/6; freeform (rows 0, 2, 3, 5): closed 1/2, open 1/2, overall 2/4
    assert (metrics["closed_accuracy"], metrics["open_accuracy"], metrics["overall_accuracy"]) == pytest.approx(
        (1 / 3, 2 / 3, 1 / 2))
    assert (metrics["freeform_closed_accuracy"], metrics["freeform_open_accuracy"],
            metrics["freeform_overall_accuracy"]) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert (metrics["freeform_closed_count"], metrics["freeform_open_count"]) == (2, 2)
    # always "no" / "axial": freeform closed 1/2 (row 3), open 1/2 (row 5)
    assert (metrics["baseline_freeform_closed_accuracy"], metrics["baseline_freeform_open_accuracy"]) == (0.5, 0.5)
    assert metrics["baseline_closed_accuracy"] == pytest.approx(2 / 3)
    without = vqa_metrics(split.remove_columns("phrase_type"))(EvalPrediction(predictions=logits, label_ids=targets))
    assert not any(name.startswith("freeform_") for name in without)


def test_vqa_rad_freeform_accuracies_of_answer_texts_by_hand():
    split = freeform_split()
    answers = ["yes", "yes", "left", "no", "left", "the axial"]  # right, wrong, right, right, wrong, right (article)
    metrics = generative_vqa_metrics(split, list, {"CLOSED": "yes", "OPEN": "left"})(
        EvalPrediction(predictions=answers, label_ids=None))
    assert (metrics["closed_accuracy"], metrics["open_accuracy"]) == pytest.approx((2 / 3, 2 / 3))
    assert (metrics["freeform_closed_accuracy"], metrics["freeform_open_accuracy"],
            metrics["freeform_overall_accuracy"]) == pytest.approx((1.0, 1.0, 1.0))
    assert metrics["freeform_yes_no_accuracy"] == 1.0 and metrics["freeform_yes_no_count"] == 2
    # always "yes" / "left": freeform closed 1/2 (row 0), open 1/2 (row 2), overall 2/4
    assert (metrics["baseline_freeform_closed_accuracy"], metrics["baseline_freeform_open_accuracy"],
            metrics["baseline_freeform_overall_accuracy"]) == (0.5, 0.5, 0.5)
    summary = accuracy_summary({f"eval_{name}": value for name, value in {**metrics, "samples": 6}.items()}, "eval",
                               "test", {"CLOSED": "yes", "OPEN": "left"})
    assert "  freeform overall 1.000   baseline 0.500\n" in summary
    assert "  closed           0.667   baseline 0.333" in summary
    assert "the 4 questions of VQA-RAD's freeform test subset" in summary


@pytest.mark.real_data
def test_vqa_rad_test_split_has_the_308_freeform_questions_of_the_released_evaluation(data_dir):
    test = load_vqa_rad(data_dir / "vqa_rad")["test"]
    rows = freeform_rows(test)
    assert len(rows) == 308
    assert Counter(normalize_answer_types(test.select(rows)["answer_type"], 308)) == {"CLOSED": 185, "OPEN": 123}


@pytest.mark.parametrize("script", ["vqa", "classification", "pretraining", "report_generation", "retrieval"])
def test_help_shows_the_description_and_the_options_a_run_needs_first(script, capsys):
    module = example(script)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code in (0, None)
    short = capsys.readouterr().out
    assert short.index(module.__doc__.strip().splitlines()[0]) < short.index("model (medvlp-hf):")
    assert "Datasets:" in short and "demo" in short
    sections = [short.index(title) for title in ("model (medvlp-hf):", "data (medvlp-hf):", "training (transformers")]
    assert sections == sorted(sections)
    assert "--model_type" in short and "medvill --config base|small|tiny" in short
    assert f"--learning_rate LEARNING_RATE The initial learning rate for the optimizer. (default: " \
           f"{module.DEFAULTS['learning_rate']})" in " ".join(short.split())
    assert "--lr_scheduler_type" not in short and "--help-all lists them" in short
    with pytest.raises(SystemExit):
        module.main(["--help-all"])
    full = capsys.readouterr().out
    assert "--lr_scheduler_type" in full and "--ddp_backend" in full
    assert len(short.splitlines()) < len(full.splitlines()) / 2
