"""CheXbert labeler: local-only loading, checkpoint layout, class/column mapping, tokenisation, padding."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from medvlp_hf.metrics import CHEXPERT_OBSERVATIONS  # noqa: E402
from medvlp_hf.metrics.chexbert_labeler import CHEXBERT_OBSERVATIONS  # noqa: E402
from medvlp_hf.metrics.chexbert_labeler import CheXbertLabeler  # noqa: E402
from medvlp_hf.metrics.chexbert_labeler import CheXbertModel  # noqa: E402

TINY = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)


def _tiny_config():
    return transformers.BertConfig(**TINY)


def _save_checkpoint(model, path, extra_keys=()):
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    state["module.bert.embeddings.position_ids"] = torch.arange(512)[None]
    for key in extra_keys:
        state[key] = torch.zeros(1)
    torch.save({"model_state_dict": state, "epoch": 3}, path)


def test_missing_weights_never_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        CheXbertLabeler(tmp_path / "chexbert.pth")


def test_wrong_checkpoint_is_named(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "chexbert.pth"
    _save_checkpoint(CheXbertModel(_tiny_config()), path, extra_keys=("module.extra_head.weight",))
    with pytest.raises(ValueError, match="extra_head.weight"):
        CheXbertLabeler(path, bert_config=_tiny_config())


def test_head_classes_map_to_chexpert_labels_and_columns(tmp_path):
    torch.manual_seed(0)
    model = CheXbertModel(_tiny_config())
    with torch.no_grad():
        for index, head in enumerate(model.linear_heads):
            head.weight.zero_()
            head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(index % head.out_features), head.out_features) * 5.0)
    path = tmp_path / "chexbert.pth"
    _save_checkpoint(model, path)
    labels = CheXbertLabeler(path, bert_config=_tiny_config())(["No pleural effusion.", "Cardiomegaly."])
    # classes: 0 blank -> NaN, 1 positive -> 1, 2 negative -> 0, 3 uncertain -> -1
    class_to_label = {0: np.nan, 1: 1.0, 2: 0.0, 3: -1.0}
    for index, name in enumerate(CHEXBERT_OBSERVATIONS):
        classes = 2 if name == "No Finding" else 4
        expected = class_to_label[index % classes]
        column = labels[:, CHEXPERT_OBSERVATIONS.index(name)]
        assert np.array_equal(column, [expected, expected], equal_nan=True), name


def test_tokenisation_truncation_and_batch_padding(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "chexbert.pth"
    _save_checkpoint(CheXbertModel(_tiny_config()), path)
    labeler = CheXbertLabeler(path, bert_config=_tiny_config(), batch_size=3)
    assert labeler.encode("  No pleural\n effusion. ") == [101, 2053, 20228, 11236, 2389, 1041, 4246, 14499, 1012, 102]
    assert labeler.encode("") == [101, 102]
    long_ids = labeler.encode("effusion " * 600)
    assert len(long_ids) == 512 and long_ids[0] == 101 and long_ids[-1] == 102
    texts = ["No pneumothorax.", "Large right pleural effusion with adjacent atelectasis.", "", "effusion " * 600, "Edema."]
    assert labeler(texts).shape == (5, 14)
    batched = torch.cat(labeler.logits(texts), dim=1)
    one_by_one = torch.cat([torch.cat(labeler.logits([text]), dim=1) for text in texts])
    assert batched.shape == (5, 13 * 4 + 2)
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])
