"""--lora on examples/run_vqa.py: adapters on the encoder's query/value projections plus the answer classifier,
saved as a PEFT adapter; --merge_lora also writes a plain checkpoint that reproduces the adapter model."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForVisualQuestionAnswering

from medvlp_hf.training import LORA_TARGET_MODULES
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
    assert sorted(adapter["target_modules"]) == sorted(LORA_TARGET_MODULES["medvill"])
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
