"""examples/run_pretraining.py end to end on a few synthetic demo rows (MedViLL, MISS and M2I2 on matching pairs), and
a downstream run starting from it."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForPreTraining, AutoModelForVisualQuestionAnswering, AutoProcessor

import medvlp_hf.data
from medvlp_hf.data import PreTrainingCollator, attribute_values, build_phrasebook, load_demo, load_transcap_nih
from tests.test_examples_common import NO_DROPOUT, read_json, read_jsonl, run_example, step_losses, weights


def test_pretrain_then_fine_tune_vqa_from_the_checkpoint(tmp_path):
    pretrained = tmp_path / "pretrained"
    run_example("pretraining", pretrained, "--do_train", "--do_eval", "--max_steps", "3",
                "--config_overrides", "attention_mask_type=bi_s2s")
    results = read_json(pretrained / "eval_results.json")
    rows = read_jsonl(pretrained / "eval_predictions.jsonl")
    assert len(rows) == results["eval_samples"] == 8
    assert results["eval_masked_tokens"] == sum(row["masked_tokens"] for row in rows) > 0
    assert results["eval_mlm_accuracy"] == pytest.approx(
        sum(row["masked_correct"] for row in rows) / results["eval_masked_tokens"]
    )
    matched = np.array([row["match_probability"] > 0.5 for row in rows]) == np.array([row["itm_label"] for row in rows])
    assert results["eval_itm_accuracy"] == pytest.approx(matched.mean())
    assert {row["itm_label"] for row in rows} <= {0, 1}

    model = AutoModelForPreTraining.from_pretrained(pretrained)
    assert model.config.attention_mask_type == "bi_s2s"

    vqa = tmp_path / "vqa"
    run_example("vqa", vqa, "--do_train", "--do_eval", "--max_steps", "1", "--learning_rate", "1e-9", model=pretrained)
    fine_tuned = AutoModelForVisualQuestionAnswering.from_pretrained(vqa)
    assert fine_tuned.config.num_labels == 9
    encoder = {name: tensor for name, tensor in weights(pretrained).items() if name.startswith("medvill.encoder.")}
    for name, tensor in encoder.items():
        torch.testing.assert_close(weights(vqa)[name], tensor, atol=1e-6, rtol=0, msg=name)
    assert read_json(vqa / "eval_results.json")["eval_samples"] == 8


MISS = {"model_type": "miss"}
LM_ONLY = NO_DROPOUT["miss"] + ',pretraining_objectives=["lm"]'


def pretrain_on_matching_pairs(out, model_type):
    """Pre-train `model_type` on 16 demo pairs in micro-batches of 4 accumulated 2 by 2 (2 optimizer steps of 8, so
    the feature queue holds 16 momentum features, none from the evaluation forwards), evaluate on 8; checks the
    queue, and that the ITC and ITM metrics are the means of the prediction rows. Returns (eval results, rows)."""
    metrics = run_example("pretraining", out, "--do_train", "--do_eval", "--gradient_accumulation_steps", "2",
                          model_type=model_type)
    assert int(weights(out)["feature_queue.queue_ptr"]) == 16
    assert read_json(out / "trainer_state.json")["global_step"] == 2
    results = read_json(out / "eval_results.json")
    rows = read_jsonl(out / "eval_predictions.jsonl")
    assert len(rows) == results["eval_samples"] == 8 and metrics["eval_loss"] == results["eval_loss"]
    mean = lambda key: sum(row[key] for row in rows) / len(rows)  # noqa: E731
    assert results["eval_itc_image_to_text_accuracy"] == pytest.approx(mean("itc_image_to_text_right"))
    assert results["eval_itc_text_to_image_accuracy"] == pytest.approx(mean("itc_text_to_image_right"))
    itm = ("itm_pair_right", "itm_negative_image_right", "itm_negative_caption_right")
    assert results["eval_itm_accuracy"] == pytest.approx(sum(mean(key) for key in itm) / 3)
    return results, rows


def test_miss_pretrains_on_matching_pairs_with_one_momentum_update_per_optimizer_step(tmp_path):
    """ITC, ITM and LM from plain (image, caption) pairs, one momentum update per optimizer step."""
    out = tmp_path / "miss"
    results, rows = pretrain_on_matching_pairs(out, **MISS)
    tokens = sum(row["lm_tokens"] for row in rows)
    assert results["eval_lm_tokens"] == tokens > 0
    assert results["eval_lm_loss"] == pytest.approx(sum(row["lm_loss_sum"] for row in rows) / tokens)
    assert results["eval_lm_accuracy"] == pytest.approx(sum(row["lm_right_tokens"] for row in rows) / tokens)

    model = AutoModelForPreTraining.from_pretrained(out).eval()
    collator = PreTrainingCollator(AutoProcessor.from_pretrained(out), mlm_probability=None)
    batch = collator([load_demo(num_train=0, num_test=8)["test"][i] for i in range(8)])
    with torch.no_grad():
        output = model(**batch)
    assert results["eval_lm_loss"] == pytest.approx(float(output.lm_loss), rel=1e-5)  # one batch of 8: the same mean
    assert results["eval_itm_accuracy"] == pytest.approx(float((output.itm_logits.argmax(-1) == output.itm_labels)
                                                               .float().mean()))


def test_miss_lm_loss_is_a_token_mean_under_gradient_accumulation(tmp_path):
    """The collator gives the captions' LM labels, so Trainer counts the target tokens of the accumulated batch and
    2 x 2 micro-batches train exactly like batches of 4, although their captions have different token counts."""
    # plain SGD: Adam would scale the rounding noise of gradients that softmax makes zero (key biases) up to lr-sized
    # steps
    common = ("--do_train", "--max_steps", "3", "--config_overrides", LM_ONLY, "--optim", "sgd", "--learning_rate", "0.5")
    run_example("pretraining", tmp_path / "batch4", *common, batch_size=4, **MISS)
    run_example("pretraining", tmp_path / "accumulated", *common, "--gradient_accumulation_steps", "2", batch_size=2,
                **MISS)
    processor = AutoProcessor.from_pretrained(tmp_path / "batch4")
    reports = load_demo(num_train=16, num_test=0)["train"]["report"]
    halves = [processor(text=reports[i:i + 2], return_labels=True)["labels"].ne(-100).sum() for i in (0, 2)]
    assert halves[0] != halves[1], "micro-batches with different token counts, or the test proves nothing"
    assert step_losses(tmp_path / "accumulated") == pytest.approx(step_losses(tmp_path / "batch4"), rel=1e-5)
    reference = weights(tmp_path / "batch4")
    for name, tensor in weights(tmp_path / "accumulated").items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_miss_pretraining_refuses_a_split_that_ends_with_a_lone_example(tmp_path):
    with pytest.raises(ValueError, match="the eval split .* ends with a batch of 1 at --per_device_eval_batch_size 8"):
        run_example("pretraining", tmp_path / "lone", "--do_eval", evaluate=9, **MISS)


@pytest.mark.real_data
def test_miss_pretrains_on_transcap_captions_of_nih_chest_xrays(tmp_path, data_dir, monkeypatch):
    """--seed draws the captions and --transcap_phrasebook gives their phrasings (the loader sees both)."""
    loads = []

    def recorded(*args, **kwargs):
        loads.append(kwargs)
        return load_transcap_nih(*args, **kwargs)

    monkeypatch.setattr(medvlp_hf.data, "load_transcap_nih", recorded)
    phrasebook = tmp_path / "phrasings.json"
    build_phrasebook(attribute_values(load_transcap_nih(data_dir / "nih_cxr14_sample"))).save(phrasebook)
    out = tmp_path / "transcap"
    run_example("pretraining", out, "--dataset", "transcap_nih", "--data_dir", data_dir / "nih_cxr14_sample",
                "--transcap_phrasebook", phrasebook, "--seed", "7", "--do_train", "--do_eval", "--max_steps", "2",
                **MISS)
    assert loads == [{"phrasebook": str(phrasebook), "seed": 7}]
    rows = read_jsonl(out / "eval_predictions.jsonl")
    assert len(rows) == 8 and all(row["id"].endswith(".png") and row["lm_tokens"] > 0 for row in rows)
    assert read_json(out / "eval_results.json")["eval_lm_tokens"] == sum(row["lm_tokens"] for row in rows)


M2I2 = {"model_type": "m2i2"}


def test_m2i2_pretrains_its_four_objectives_with_one_momentum_update_per_optimizer_step(tmp_path):
    """ITC, ITM, MLM (masked inside the model) and MIM from plain (image, caption) pairs, one momentum update per
    optimizer step; each objective's metric is the evaluation batch's own value, recomputed here."""
    out = tmp_path / "m2i2"
    results, rows = pretrain_on_matching_pairs(out, **M2I2)
    tokens = sum(row["mlm_tokens"] for row in rows)
    assert results["eval_mlm_tokens"] == tokens > 0
    assert results["eval_mlm_accuracy"] == pytest.approx(sum(row["mlm_right_tokens"] for row in rows) / tokens)

    model = AutoModelForPreTraining.from_pretrained(out).eval()
    batch = PreTrainingCollator(AutoProcessor.from_pretrained(out), mlm_probability=None)(
        [load_demo(num_train=0, num_test=8)["test"][i] for i in range(8)]
    )
    assert "labels" not in batch  # the MLM masking is drawn inside the model
    with torch.no_grad():
        output = model(**batch)  # evaluation: the model draws its masks from a generator seeded with 0, as in the run
    assert results["eval_loss"] == pytest.approx(float(output.loss), rel=1e-5)  # one batch of 8
    assert results["eval_mim_loss"] == pytest.approx(float(output.mim_loss), rel=1e-5)
    assert results["eval_mim_patches"] == int(output.mim_patch_mask.sum()) > 0
    masked = output.mlm_labels != -100
    assert results["eval_mlm_tokens"] == int(masked.sum())
    hard_ce = torch.nn.functional.cross_entropy(output.logits[masked], output.mlm_labels[masked])
    assert results["eval_mlm_loss"] == pytest.approx(float(hard_ce), rel=1e-5)
    assert results["eval_itm_accuracy"] == pytest.approx(float((output.itm_logits.argmax(-1) == output.itm_labels)
                                                               .float().mean()))
    assert results["eval_itc_text_to_image_accuracy"] == pytest.approx(
        float((output.logits_per_text.argmax(-1) == torch.arange(8)).float().mean()))


def test_m2i2_pretrains_on_the_image_caption_json_dataset(tmp_path):
    """ALBEF's `[{"image", "caption"}]` lists as --dataset image_caption_json: train.json / validation.json in
    --data_dir, images relative to it; a record with a caption list gives one pair per caption."""
    data = tmp_path / "captions"
    (data / "images").mkdir(parents=True)
    demo = load_demo(num_train=6, num_test=0)["train"]
    records = []
    for index, row in enumerate(demo):
        row["image"].save(data / "images" / f"{index}.png")
        records.append({"image": f"images/{index}.png", "caption": row["report"]})
    records[0]["caption"] = [records[0]["caption"], "no acute cardiopulmonary process"]
    (data / "train.json").write_text(json.dumps(records[:4]), encoding="utf-8")
    (data / "validation.json").write_text(json.dumps(records[4:]), encoding="utf-8")
    out = tmp_path / "m2i2"
    run_example("pretraining", out, "--dataset", "image_caption_json", "--data_dir", data, "--do_train", "--do_eval",
                "--per_device_eval_batch_size", "2", batch_size=5, **M2I2)
    assert read_json(out / "train_results.json")["train_samples"] == 5
    assert [row["id"] for row in read_jsonl(out / "eval_predictions.jsonl")] == ["images/4.png", "images/5.png"]
    with pytest.raises(FileNotFoundError, match="image_caption_json reads train.json, validation.json, test.json"):
        run_example("pretraining", out, "--dataset", "image_caption_json", "--data_dir", tmp_path, "--do_train",
                    **M2I2)
