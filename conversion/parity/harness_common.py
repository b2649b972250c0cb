"""What the parity harnesses (`conversion/parity/<model>/`) share besides `stand_ins.py`, which their scripts import
from this folder: reading the authors' functions' locals, the transformers 4 behaviour that their copies of HF's BERT
(ALBEF's `xbert.py`, BLIP's `med.py`) rely on, and the provenance and compact form of the records they write.
"""

import contextlib
import datetime
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path

from safetensors.torch import save_file

BERT_MASK_VALUE = -10000.0  # the additive attention-mask constant of the transformers 4 versions the originals pin


@contextlib.contextmanager
def captured_locals(names_by_function):
    """Yield {function `__qualname__`: calls}: while the block runs, every return of each function appends
    {name: value} of its locals `names_by_function[function]` (`sys.setprofile`, so their code runs unchanged)."""
    wanted = {function.__code__: (function.__qualname__, names) for function, names in names_by_function.items()}
    calls = {name: [] for name, _ in wanted.values()}
    previous = sys.getprofile()

    def profile(frame, event, argument):
        if event == "return" and frame.f_code in wanted:
            name, names = wanted[frame.f_code]
            calls[name].append({local: frame.f_locals[local] for local in names if local in frame.f_locals})

    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


def restore_bert_helpers():
    """transformers 5 removed what their BERT copies call (../shared/reference/originals.md §1.3):
    `apply_chunking_to_forward`, `prune_linear_layer`, `find_pruneable_heads_and_indices` in
    `transformers.modeling_utils` (shim 1; head pruning, never used here, fails loudly) and
    `PreTrainedModel.invert_attention_mask`/`get_head_mask` (shim 2, with transformers 4's -10000)."""
    import transformers.modeling_utils as modeling_utils
    from transformers import PreTrainedModel, pytorch_utils

    modeling_utils.apply_chunking_to_forward = pytorch_utils.apply_chunking_to_forward
    modeling_utils.prune_linear_layer = pytorch_utils.prune_linear_layer
    modeling_utils.find_pruneable_heads_and_indices = _head_pruning
    PreTrainedModel.invert_attention_mask = _invert_attention_mask
    PreTrainedModel.get_head_mask = lambda self, head_mask, num_hidden_layers: [None] * num_hidden_layers


def _head_pruning(*args, **kwargs):
    raise NotImplementedError("find_pruneable_heads_and_indices (head pruning) is not shimmed: the harness never prunes "
                              "heads")


def _invert_attention_mask(self, mask):
    extended = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    return (1.0 - extended.to(self.dtype)) * BERT_MASK_VALUE


def build_bert_offline(bert_pretrained_model):
    """On their `BertPreTrainedModel` class: `from_pretrained('bert-base-uncased', config=...)` builds the model from the
    config (offline; the weights are loaded afterwards), and `init_weights` runs as in transformers 4 (shim 3:
    initialise, tie the LM head to the word embeddings)."""

    def build_from_config(cls, name, *args, config=None, **kwargs):
        return cls(config, *args, **kwargs)

    def init_weights(self):
        self.apply(self._init_weights)
        output = self.get_output_embeddings()
        if output is not None:
            output.weight = self.get_input_embeddings().weight

    bert_pretrained_model.from_pretrained = classmethod(build_from_config)
    bert_pretrained_model.init_weights = init_weights


def reference_provenance(repository, commit, producer, packages, checkpoint_sha256=None):
    """Where a record's expected outputs come from: their repository and commit, the harness command `producer`, the
    environment (with the versions of the extra `packages` their code imports) and, when given, the checkpoint's
    sha256."""
    from medvlp_hf.conversion import parity

    versions = {name: importlib.metadata.version(name) for name in packages}
    reference = {"implementation": "original", "repository": repository, "commit": commit, "producer": producer,
                 "created": datetime.date.today().isoformat(), "environment": {**parity.environment(), **versions}}
    if checkpoint_sha256 is not None:
        reference["checkpoint_sha256"] = checkpoint_sha256
    return reference


def state_dict_sha256(state_dict):
    """sha256 of `state_dict` saved as the tests save it (`model.safetensors`), which the converters hash."""
    from medvlp_hf.conversion import conversion_utils

    with tempfile.TemporaryDirectory() as folder:
        save_file(state_dict, Path(folder) / "model.safetensors")
        return conversion_utils.sha256_file(Path(folder) / "model.safetensors")


def write_expected_outputs(record, folder, **meta):
    """A released-geometry fixture: only the record's expected outputs (`expected.safetensors`) and `reference.json`
    (architecture, reference, config, tolerance and `meta`); the tests regenerate weights and inputs from the seeds."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {key: value for key, value in record.tensors.items() if key.startswith("expected.")}
    save_file(expected, folder / "expected.safetensors")
    meta = {"architecture": record.architecture, "reference": record.reference, "config": record.config,
            "tolerance": record.tolerance, **meta}
    (folder / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
