"""--lora on examples/run_vqa.py: adapters on the encoder's query/value projections plus the answer classifier,
saved as a PEFT adapter; --merge_lora also writes a plain checkpoint that reproduces the adapter model."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForVisualQuestionAnswering

from medvlp_hf import (
    MedViLLConfig, MedViLLForImageTextClassification, MedViLLForPreTraining, MedViLLForReportGeneration,
    MedViLLForRetrieval, MedViLLForVQA,
)
from medvlp_hf.training import ModelArguments, apply_lora, fully_trained_head_modules, lora_target_modules
from tests.test_examples_common import read_json, read_jsonl, run_example, weights
from tests.test_examples_vqa import eval_rows, vqa_batch

LORA = ("--lora", "--lora_r", "4", "--do_train", "--do_eval", "--max_steps", "3", "--learning_rate", "1e-2")


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A briefly trained tiny VQA checkpoint with its processor, the starting point of the LoRA runs."""
    folder = tmp_path_factory.mktemp("lora") / "base"
    run_example("vqa", folder, "--do_train", "--max_steps", "2")
    return folder


def logits_of(model, folder, rows):
    with torch.no_grad():
        return model.eval()(**vqa_batch(folder, model.config, rows)).logits


def test_merged_lora_checkpoint_equals_the_adapter_on_its_base(tmp_path, base_checkpoint):
    out = tmp_path / "merged"
    run_example("vqa", out, *LORA, "--merge_lora", model=base_checkpoint)

    adapter = read_json(out / "adapter" / "adapter_config.json")
    assert sorted(adapter["target_modules"]) == sorted(MedViLLForVQA.lora_target_modules)
    assert adapter["modules_to_save"] == ["answer_classifier"]
    assert adapter["base_model_name_or_path"] == str(base_checkpoint)

    base, merged = weights(base_checkpoint), weights(out)
    assert not [name for name in merged if "lora" in name]
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    trainable = ("attention.query.weight", "attention.value.weight", "answer_classifier.")
    assert any("attention.query.weight" in name for name in changed) and any("answer_classifier" in n for n in changed)
    # nothing else moved: LoRA freezes the weights and --lora freezes the BatchNorm running statistics
    assert all(any(part in name for part in trainable) for name in changed), sorted(changed)

    rows = eval_rows(8)
    merged_model = AutoModelForVisualQuestionAnswering.from_pretrained(out)
    adapter_model = PeftModel.from_pretrained(AutoModelForVisualQuestionAnswering.from_pretrained(base_checkpoint),
                                              out / "adapter")
    merged_logits = logits_of(merged_model, out, rows)
    torch.testing.assert_close(merged_logits, logits_of(adapter_model, out, rows), atol=1e-5, rtol=1e-5)
    base_logits = logits_of(AutoModelForVisualQuestionAnswering.from_pretrained(base_checkpoint), out, rows)
    assert (merged_logits - base_logits).abs().max() > 1e-3
    predictions = [merged_model.config.id2label[int(i)] for i in merged_logits.argmax(-1)]
    assert predictions == [row["prediction"] for row in read_jsonl(out / "eval_predictions.jsonl")]


def test_adapter_folder_loads_through_the_auto_class(tmp_path, base_checkpoint):
    out = tmp_path / "adapter"
    run_example("vqa", out, *LORA, model=base_checkpoint)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    rows = eval_rows(8)
    auto = AutoModelForVisualQuestionAnswering.from_pretrained(out)  # base from the adapter config + the adapter
    adapter_model = PeftModel.from_pretrained(AutoModelForVisualQuestionAnswering.from_pretrained(base_checkpoint), out)
    torch.testing.assert_close(logits_of(auto, out, rows), logits_of(adapter_model, out, rows), atol=1e-6, rtol=1e-6)
    predictions = [auto.config.id2label[int(i)] for i in logits_of(auto, out, rows).argmax(-1)]
    assert predictions == [row["prediction"] for row in read_jsonl(out / "eval_predictions.jsonl")]


@pytest.mark.parametrize(
    "head, trained",
    [
        (MedViLLForVQA, ["answer_classifier"]),
        (MedViLLForImageTextClassification, ["classifier"]),
        (MedViLLForRetrieval, ["itm_head"]),
        (MedViLLForPreTraining, ["itm_head"]),  # mlm_head holds the decoder tied to the word embeddings
        (MedViLLForReportGeneration, []),
    ],
)
def test_lora_trains_the_new_head_modules_except_tied_vocabulary_heads(head, trained):
    model = head(MedViLLConfig.from_preset("tiny"))
    assert fully_trained_head_modules(model) == trained
    assert set(trained) <= set(head.new_head_modules)
    peft_model = apply_lora(model, ModelArguments(model_name_or_path="x", lora=True, lora_r=2))
    assert peft_model.peft_config["default"].modules_to_save == trained
    assert sorted(peft_model.peft_config["default"].target_modules) == sorted(head.lora_target_modules)
    trainable = {name for name, parameter in peft_model.named_parameters() if parameter.requires_grad}
    assert trainable and all("lora_" in name or any(f".{m}." in name for m in trained) for name in trainable)
    assert any(".attention.query.lora_A." in name for name in trainable)
    for module in trained:
        assert any(f".{module}.modules_to_save." in name for name in trainable), module
    inner = peft_model.get_base_model()
    if "mlm_head" in head.new_head_modules:
        assert inner.mlm_head.decoder.weight is inner.medvill.embeddings.word_embeddings.weight
        assert not inner.mlm_head.decoder.weight.requires_grad


def test_an_untied_vocabulary_head_trains_in_full():
    model = MedViLLForReportGeneration(MedViLLConfig.from_preset("tiny", tie_word_embeddings=False))
    assert fully_trained_head_modules(model) == ["mlm_head"]


def test_lora_target_modules_come_from_the_model_or_the_command_line():
    model = MedViLLForVQA(MedViLLConfig.from_preset("tiny"))
    assert lora_target_modules(model, ModelArguments(model_name_or_path="x")) == ["query", "value"]
    custom = ModelArguments(model_name_or_path="x", lora_target_modules="key, dense")
    assert lora_target_modules(model, custom) == ["key", "dense"]
    plain = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="pass --lora_target_modules"):
        lora_target_modules(plain, ModelArguments(model_name_or_path="x"))
