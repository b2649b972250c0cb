"""Every downstream script fine-tunes a run_pretraining.py checkpoint under strict loading: only the head's
`new_head_modules` may be missing from it, every other weight comes from the checkpoint, and a config that
disagrees with the checkpoint's weights stops the run with an error naming them."""

import json

import pytest
import torch

from tests.test_examples_common import run_example, weights


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints") / "pretrained"
    run_example("pretraining", folder, "--do_train", "--max_steps", "2")
    return folder


@pytest.mark.parametrize(
    "script, carried_head, extra",
    [
        ("report_generation", "mlm_head.", ("--max_new_tokens", "4")),  # the pre-training MLM head, same name
        ("retrieval", "itm_head.", ()),  # the pre-training matching head
        ("classification", None, ()),  # a new classifier
    ],
)
def test_downstream_script_starts_from_the_pretrained_weights(tmp_path, pretrained, script, carried_head, extra):
    out = tmp_path / script
    run_example(script, out, "--do_train", "--max_steps", "1", "--learning_rate", "1e-9", *extra, model=pretrained)
    before, after = weights(pretrained), weights(out)
    carried = [name for name in before if name.startswith(("medvill.", carried_head or "medvill.")) and name in after]
    assert any(name.startswith("medvill.encoder.") for name in carried)
    assert carried_head is None or any(name.startswith(carried_head) for name in carried)
    for name in carried:
        if "running_" in name or "num_batches_tracked" in name:  # BatchNorm statistics move in the train step
            continue
        torch.testing.assert_close(after[name], before[name], atol=1e-6, rtol=0, msg=name)


def test_config_that_disagrees_with_the_checkpoint_stops_the_run(tmp_path, pretrained):
    with pytest.raises(ValueError, match=r"lacks \d+ weight\(s\).*medvill\.encoder\.layers\.2\..*config\.json"):
        run_example("vqa", tmp_path / "vqa", "--do_train", "--max_steps", "1",
                    "--config_overrides", "num_hidden_layers=3", model=pretrained)
    assert not (tmp_path / "vqa" / "model.safetensors").exists()


def test_vqa_checkpoint_gets_a_new_answer_classifier_for_new_answers(tmp_path):
    """--ignore_mismatched_sizes re-initialises the answer layer whose size changed, and nothing else."""
    trained = tmp_path / "trained"
    run_example("vqa", trained, "--do_train", "--max_steps", "1")
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["yes", "no", "left"]))
    out = tmp_path / "new-answers"
    with pytest.raises(RuntimeError, match="size mismatch|ignore_mismatched_sizes"):
        run_example("vqa", out, "--do_train", "--max_steps", "1", "--answer_list", answers, model=trained)
    run_example("vqa", out, "--do_train", "--max_steps", "1", "--learning_rate", "1e-9", "--answer_list", answers,
                "--ignore_mismatched_sizes", model=trained)
    before, after = weights(trained), weights(out)
    assert after["answer_classifier.2.weight"].shape[0] == 3
    torch.testing.assert_close(after["answer_classifier.0.weight"], before["answer_classifier.0.weight"],
                               atol=1e-6, rtol=0)
