"""examples/run_vqa.py with a generative model (the tiny MISS preset) on synthetic demo rows: answers written by
`generate()` and scored against the references by question id, and the released MISS fine-tuning recipes (--peft ia3,
--train_attention_only)."""

from collections import Counter

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

from medvlp_hf import MedViLLConfig, MedViLLForVQA, MISSConfig, MISSForVQA
from medvlp_hf.data import load_demo
from medvlp_hf.metrics import normalize_vqa_answer, vqa_accuracy
from medvlp_hf.training import ModelArguments, apply_peft, train_attention_only
from tests.test_examples_common import example, read_json, read_jsonl, run_example, weights
from tests.test_examples_vqa import eval_rows

MISS = {"model_type": "miss"}
# enough steps at a high rate for the tiny decoder to write real answers (after 40 steps: "no" to every question)
LEARN = ("--max_steps", "40", "--learning_rate", "1e-2", "--warmup_steps", "0")


def generated_answers(folder, rows, **generation):
    """The answers the model saved in `folder` writes with `generate()` for `rows`, in one padded batch."""
    model = AutoModelForVisualQuestionAnswering.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(images=[row["image"] for row in rows], text=[row["question"] for row in rows],
                       text_kind="question", return_tensors="pt")
    ids = model.generate(**inputs, **generation)
    return model, [answer.strip() for answer in processor.batch_decode(ids, skip_special_tokens=True)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MISS VQA model trained from scratch on 16 demo questions, evaluated on 8."""
    out = tmp_path_factory.mktemp("miss") / "vqa"
    metrics = run_example("vqa", out, "--do_train", "--do_eval", "--do_predict", *LEARN, **MISS)
    return out, metrics


def test_answers_are_written_by_generate_with_the_released_settings(trained):
    out, metrics = trained
    rows = read_jsonl(out / "eval_predictions.jsonl")
    model, answers = generated_answers(out, eval_rows(8))
    assert isinstance(model, MISSForVQA)
    assert (model.generation_config.num_beams, model.generation_config.max_new_tokens) == (3, 9)  # max_length=10
    assert answers == [row["prediction"] for row in rows]
    assert sum(row["score"] for row in rows) > 0, "the trained model answers some questions right"
    assert {"eval_loss", "eval_yes_no_accuracy", "eval_yes_no_count"} <= metrics.keys()
    assert read_json(out / "predict_results.json")["predict_samples"] == 8


def test_metrics_are_the_predictions_scored_by_question_id(trained):
    out, _ = trained
    results = read_json(out / "eval_results.json")
    rows = read_jsonl(out / "eval_predictions.jsonl")
    references = eval_rows(8)
    expected = vqa_accuracy({row["qid"]: row["prediction"] for row in reversed(rows)},
                            [row["answer"] for row in references], [row["answer_type"] for row in references],
                            question_ids=[row["qid"] for row in references])
    for name in ("closed", "open"):
        assert results[f"eval_{name}_accuracy"] == pytest.approx(expected[f"{name}_accuracy"])
        assert results[f"eval_{name}_count"] == expected[f"{name}_count"]
    assert results["eval_overall_accuracy"] == pytest.approx(expected["accuracy"])
    assert results["eval_overall_accuracy"] == pytest.approx(sum(row["score"] for row in rows) / 8)
    assert results["eval_yes_no_accuracy"] == pytest.approx(expected["yes_no_accuracy"])
    assert all(row["score"] == float(normalize_vqa_answer(row["prediction"]) == normalize_vqa_answer(row["answer"]))
               for row in rows)


def test_baseline_is_the_most_common_training_answer_of_the_question_type(trained):
    out, _ = trained
    results = read_json(out / "eval_results.json")
    train = load_demo(num_train=16, num_test=0)["train"]
    for answer_type, kind in (("CLOSED", "closed"), ("OPEN", "open")):
        counts = Counter(a for a, t in zip(train["answer"], train["answer_type"]) if t == answer_type)
        majority = counts.most_common(1)[0][0]
        expected = [row["answer"] == majority for row in eval_rows(8) if row["answer_type"] == answer_type]
        assert results[f"eval_baseline_{kind}_accuracy"] == pytest.approx(sum(expected) / len(expected)), kind


def test_generation_options_override_the_released_settings(tmp_path, trained):
    folder, _ = trained
    out = tmp_path / "greedy"
    run_example("vqa", out, "--do_eval", "--num_beams", "1", "--max_new_tokens", "1", model=folder, **MISS)
    _, answers = generated_answers(folder, eval_rows(8), num_beams=1, max_new_tokens=1)
    assert [row["prediction"] for row in read_jsonl(out / "eval_predictions.jsonl")] == answers
    assert all(len(answer.split()) <= 1 for answer in answers)


@pytest.fixture(scope="module")
def base_checkpoint(trained):
    return trained[0]


def test_ia3_reproduces_the_released_peft_variant(tmp_path, base_checkpoint):
    """models/peft_miss.py: IA3 (key, value, output.dense; output.dense as feed-forward) on the text encoder and
    decoder, which are the only towers it wraps, so the ViT trains in full."""
    out = tmp_path / "ia3"
    run_example("vqa", out, "--peft", "ia3", "--merge_adapter", "--do_train", "--do_eval", "--max_steps", "3",
                "--learning_rate", "1e-2", model=base_checkpoint, **MISS)
    adapter = read_json(out / "adapter" / "adapter_config.json")
    assert adapter["peft_type"] == "IA3"
    assert sorted(adapter["target_modules"]) == ["key", "output.dense", "value"]
    assert adapter["feedforward_modules"] == ["output.dense"] and adapter["modules_to_save"] == ["vision_model"]
    vectors = [name for name in load_file(out / "adapter" / "adapter_model.safetensors") if "ia3_l" in name]
    per_layer = ("attention.self.key", "attention.self.value", "crossattention.self.key", "crossattention.self.value",
                 "attention.output.dense", "crossattention.output.dense", "layer.{}.output.dense")
    expected = {f"{tower}.encoder.layer.{i}.{part.format(i).removeprefix(f'layer.{i}.')}"
                for tower in ("text_encoder", "text_decoder.bert") for i in range(2) for part in per_layer}
    assert {name.split("base_model.model.")[1].rsplit(".ia3_l", 1)[0] for name in vectors} == expected

    base, merged = weights(base_checkpoint), weights(out)
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    scaled = (".key.", ".value.", ".output.dense.")
    assert any(name.startswith("vision_model.") for name in changed) and any(".key.weight" in n for n in changed)
    assert all(name.startswith("vision_model.") or any(part in name for part in scaled) for name in changed)
    adapter_model = PeftModel.from_pretrained(AutoModelForVisualQuestionAnswering.from_pretrained(base_checkpoint),
                                              out / "adapter")
    rows = eval_rows(8)
    processor = AutoProcessor.from_pretrained(out)
    inputs = processor(images=[row["image"] for row in rows], text=[row["question"] for row in rows],
                       text_kind="question", return_tensors="pt")
    merged_model = AutoModelForVisualQuestionAnswering.from_pretrained(out).eval()
    assert torch.equal(merged_model.generate(**inputs), adapter_model.eval().generate(**inputs))
    assert processor.batch_decode(merged_model.generate(**inputs), skip_special_tokens=True) == [
        row["prediction"] for row in read_jsonl(out / "eval_predictions.jsonl")
    ]


def test_attention_only_trains_the_vit_and_the_text_attention(tmp_path, base_checkpoint):
    """train_slake.py: the ViT trains in full, the text encoder and decoder only where 'attention' is in the name."""
    out = tmp_path / "attention"
    run_example("vqa", out, "--train_attention_only", "--do_train", "--max_steps", "2", "--learning_rate", "1e-2",
                model=base_checkpoint, **MISS)
    base, trained = weights(base_checkpoint), weights(out)
    changed = {name for name in base if not torch.equal(base[name], trained[name])}
    assert all(name.startswith("vision_model.") or "attention" in name for name in changed), sorted(changed)
    for part in ("vision_model.encoder.layers.0.mlp.fc1.weight", "text_encoder.encoder.layer.0.crossattention.self.key",
                 "text_decoder.bert.encoder.layer.1.attention.self.query", "attention.output.dense"):
        assert any(part in name for name in changed), part
    for frozen in ("text_encoder.embeddings.word_embeddings.weight", "text_decoder.cls.predictions.bias",
                   "text_encoder.encoder.layer.0.intermediate.dense.weight", "text_decoder.bert.encoder.layer.0.output.dense.weight"):
        assert frozen not in changed, frozen


def test_recipes_are_model_facts_and_refuse_models_without_them():
    model = MISSForVQA(MISSConfig.from_preset("tiny"))
    trained = train_attention_only(model)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == set(trained)
    assert all(name.startswith("vision_model.") or "attention" in name for name in trained)
    with pytest.raises(ValueError, match="names no image encoder"):
        train_attention_only(MedViLLForVQA(MedViLLConfig.from_preset("tiny", num_labels=3)))
    with pytest.raises(ValueError, match="names no IA3 target modules"):
        apply_peft(MedViLLForVQA(MedViLLConfig.from_preset("tiny", num_labels=3)),
                   ModelArguments(model_name_or_path="x", peft="ia3"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_type": "miss", "config": "tiny", "peft": "ia3"}, "--peft ia3 adapts a trained checkpoint"),
        ({"model_name_or_path": "x", "lora": True, "peft": "ia3"}, "--lora means --peft lora"),
        ({"model_name_or_path": "x", "merge_adapter": True}, "add --lora or --peft ia3"),
        ({"model_name_or_path": "x", "peft": "ia3", "train_attention_only": True}, "use one of the two"),
    ],
)
def test_recipe_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelArguments(**kwargs)


# The examples/README.md record: MISS trained from scratch on VQA-RAD on 2 shared CPU cores (about 19 minutes).
VQA_RAD_RECIPE = ("--dataset", "vqa_rad", "--model_type", "miss", "--config", "tiny", "--config_overrides",
                  "vision_config.image_size=64", "--learning_rate", "2e-3", "--num_train_epochs", "10",
                  "--dataloader_num_workers", "1", "--do_train", "--do_eval", "--eval_strategy", "epoch",
                  "--disable_tqdm", "true")


@pytest.mark.slow
@pytest.mark.real_data
def test_miss_from_scratch_beats_the_majority_answer_on_vqa_rad_closed_questions(tmp_path, data_dir):
    metrics = example("vqa").main([*VQA_RAD_RECIPE, "--data_dir", str(data_dir / "vqa_rad"),
                                   "--output_dir", str(tmp_path / "miss-vqa-rad")])
    assert (metrics["eval_closed_count"], metrics["eval_open_count"]) == (272, 179)
    assert metrics["eval_baseline_closed_accuracy"] == pytest.approx(133 / 272)  # always "no": 0.489
    assert metrics["eval_closed_accuracy"] > metrics["eval_baseline_closed_accuracy"]
    assert metrics["eval_yes_no_accuracy"] > metrics["eval_baseline_yes_no_accuracy"]
