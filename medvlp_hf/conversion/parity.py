"""Parity records: fixed inputs, the outputs a reference implementation gave on them, and how close a converted
model came. A converter writes one into every folder it saves (`parity.json` + `parity.safetensors`); `medvlp verify`
re-runs it; the model card shows it.

A record is model-agnostic: each case names a method of the model (`forward`, `generate`, ...), its tensor
keyword arguments (record tensors `inputs.<name>`, which cases may share; floating ones are cast to the model's
dtype), JSON keyword arguments, methods to call first (`prepare`, e.g. the momentum-encoder update the original
runs at the start of its forward), and which output fields to keep. A field is an attribute of the returned `ModelOutput` or
an index into a returned tuple; a tuple of per-step tensors (`generate(output_logits=True).logits`) is stacked on
dimension 1. Large outputs are kept as reductions over their last dimension, so a vocabulary-sized logit tensor
costs a few kilobytes while still pinning every prediction:

- `full`: the tensor; `argmax`: indices (compared exactly); `top5`: the five largest values, sorted;
  `logsumexp`; `stride<N>`: every N-th entry (`x[..., ::N]`).

Floating outputs pass when `|actual - expected| <= atol + rtol * |expected|` everywhere and infinities sit where the
reference has them (as `torch.testing.assert_close`), integer outputs (argmax, generated tokens) when they are identical.
"""

import datetime
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RECORD_JSON = "parity.json"
RECORD_TENSORS = "parity.safetensors"
FORMAT = "medvlp-hf parity record"
VERSION = 1
DEFAULT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-4}
IMPLEMENTATIONS = ("original", "converted")
_REDUCTION = re.compile(r"full|argmax|top5|logsumexp|stride([1-9][0-9]*)")


class ParityRecordError(ValueError):
    """A folder has no parity record, or one that cannot be read or does not fit the model."""


class ParityMismatchError(ValueError):
    """A converted model does not reproduce the reference outputs of its parity record."""


@dataclass
class ParityCase:
    """name: unique within the record. method: `forward` or the name of a model method. inputs: {keyword
    argument: record tensor name}. kwargs: other keyword arguments (JSON values). outputs: {output name: {"field":
    attribute or tuple index, "reduce": [reductions]}}. prepare: names of model methods called without arguments
    before the case runs; they may change the model's state (a momentum update), so a model is checked once, and
    saved before it is checked."""

    name: str
    method: str
    inputs: list
    outputs: dict
    kwargs: dict = field(default_factory=dict)
    prepare: list = field(default_factory=list)

    def __post_init__(self):
        for output, spec in self.outputs.items():
            for reduction in spec["reduce"]:
                if not _REDUCTION.fullmatch(reduction):
                    raise ValueError(f"case {self.name!r}, output {output!r}: unknown reduction {reduction!r}; use full, "
                                     "argmax, top5, logsumexp or stride<N>.")

    def input_key(self, argument):
        return f"inputs.{self.inputs[argument]}"

    def output_keys(self):
        return [f"{self.name}.{output}.{reduction}" for output, spec in self.outputs.items() for reduction in spec["reduce"]]


@dataclass
class ParityRecord:
    """reference: where the expected outputs come from: `implementation` (`original`: the authors' code, run by the
    parity harness; `converted`: this model itself at conversion time) plus provenance (repository, commit,
    producer, created, environment, checkpoint_sha256, name, sha256, note). config: config fields the reference
    assumes (checked before running). results: per output, filled by `check_record`; checked: when and where.
    conversion: how the folder was made (source_checkpoint, script, command, datasets), which its card shows."""

    model_type: str
    architecture: str
    cases: list
    tensors: dict
    reference: dict
    config: dict = field(default_factory=dict)
    tolerance: dict = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    results: dict = field(default_factory=dict)
    checked: dict = field(default_factory=dict)
    conversion: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.reference.get("implementation") not in IMPLEMENTATIONS:
            raise ParityRecordError(f"reference['implementation'] must be one of {IMPLEMENTATIONS}.")
        for case in self.cases:
            missing = [case.input_key(name) for name in case.inputs if case.input_key(name) not in self.tensors]
            missing += [f"expected.{key}" for key in case.output_keys() if f"expected.{key}" not in self.tensors]
            if missing:
                raise ParityRecordError(f"parity record case {case.name!r} lacks the tensors {missing}.")

    @property
    def status(self):
        """`passed` / `failed` against the original implementation, else `not verified`."""
        if not self.results:
            return "not verified"
        if not all(result["passed"] for result in self.results.values()):
            return "failed"
        return "passed" if self.reference["implementation"] == "original" else "not verified"

    def expected(self, key):
        return self.tensors[f"expected.{key}"]


# --------------------------------------------------------------------------------------------------
# Running and comparing
# --------------------------------------------------------------------------------------------------


def run_case(model, case, tensors) -> dict:
    """{`<case>.<output>.<reduction>`: tensor} of `model` on the case's inputs (no gradients)."""
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    inputs = {}
    for name in case.inputs:
        tensor = tensors[case.input_key(name)].to(device)
        inputs[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    method = model if case.method == "forward" else getattr(model, case.method)
    with torch.no_grad():
        for name in case.prepare:
            getattr(model, name)()
        output = method(**inputs, **case.kwargs)
    kept = {}
    for name, spec in case.outputs.items():
        value = _field(output, spec["field"], case.name)
        for reduction in spec["reduce"]:
            kept[f"{case.name}.{name}.{reduction}"] = reduce(value.detach().cpu(), reduction)
    return kept


def _field(output, field_name, case_name):
    try:
        value = output[field_name] if isinstance(field_name, int) else getattr(output, field_name)
    except (AttributeError, IndexError, KeyError, TypeError) as error:
        raise ParityRecordError(f"case {case_name!r}: the model's output has no field {field_name!r}.") from error
    if isinstance(value, (tuple, list)):
        value = torch.stack(list(value), dim=1)
    return value


def reduce(tensor, reduction):
    """One reduction over the last dimension (see the module docstring)."""
    if reduction == "full":
        return tensor.contiguous()
    if reduction == "argmax":
        return tensor.argmax(-1)
    if reduction == "top5":
        return tensor.float().topk(min(5, tensor.shape[-1]), dim=-1).values
    if reduction == "logsumexp":
        return tensor.float().logsumexp(-1)
    return tensor[..., :: int(_REDUCTION.fullmatch(reduction).group(1))].contiguous()


def compare(actual, expected, tolerance) -> dict:
    """{"compare", "max_abs_diff", "passed"} of one output; integer tensors must be identical."""
    exact = not expected.is_floating_point()
    if actual.shape != expected.shape:
        return {"compare": "equal" if exact else "allclose", "max_abs_diff": None, "passed": False,
                "note": f"shape {tuple(actual.shape)} instead of {tuple(expected.shape)}"}
    finite = expected.isfinite()
    difference = (actual.double()[finite] - expected.double()[finite]).abs()
    max_abs_diff = float(difference.max()) if difference.numel() else 0.0
    if exact:
        return {"compare": "equal", "max_abs_diff": max_abs_diff, "passed": bool(torch.equal(actual, expected))}
    bound = tolerance["atol"] + tolerance["rtol"] * expected.double()[finite].abs()
    passed = bool((difference <= bound).all()) and torch.equal(actual[~finite], expected[~finite])
    return {"compare": "allclose", "max_abs_diff": max_abs_diff, "passed": passed}


def check_record(model, record) -> dict:
    """Run every case on `model` and compare with the record's expected outputs; stores and returns the results
    ({`<case>.<output>.<reduction>`: compare(...)}). Raises ParityRecordError when the model's config differs
    from what the reference assumed."""
    check_config(model.config, record)
    results = {}
    for case in record.cases:
        for key, actual in run_case(model, case, record.tensors).items():
            results[key] = compare(actual, record.expected(key), record.tolerance)
    record.results = results
    record.checked = {"date": _today(), "environment": environment()}
    return results


def check_config(config, record):
    differing = {name: (getattr(config, name, None), value) for name, value in record.config.items()
                 if getattr(config, name, None) != value}
    if differing:
        details = ", ".join(f"{name}={have!r} (reference: {want!r})" for name, (have, want) in differing.items())
        raise ParityRecordError(f"the model's config differs from the one the parity reference was made with: {details}.")


def self_record(model, cases, tensors, producer, checkpoint_sha256=None) -> "ParityRecord":
    """A record whose expected outputs are `model`'s own (parity with the original stays `not verified`): it lets
    `medvlp verify` detect later changes of the saved weights or of the code that runs them."""
    expected = {}
    for case in cases:
        expected.update({f"expected.{key}": value for key, value in run_case(model, case, tensors).items()})
    reference = {"implementation": "converted", "producer": producer, "created": _today(),
                 "environment": environment(), "checkpoint_sha256": checkpoint_sha256}
    return ParityRecord(model.config.model_type, type(model).__name__, list(cases), {**tensors, **expected}, reference)


def failures(results) -> list:
    return [f"{key} (max |diff| {result['max_abs_diff']:.3g})" if result["max_abs_diff"] is not None
            else f"{key} ({result['note']})" for key, result in results.items() if not result["passed"]]


def checked_reference(model, reference_dir, checkpoint_sha256, fix) -> "ParityRecord":
    """The record a parity harness made with the original code (`reference_dir`) for the checkpoint a converter just
    converted into `model`, checked on it: it must have been made on the same file (ParityRecordError), for the same
    head (ParityRecordError ending with `fix`, e.g. which options choose the head), and the model must reproduce it
    (ParityMismatchError listing the outputs that differ). Returns the record with its results and its own name and
    hash added."""
    record = read_record(reference_dir)
    made_on = record.reference.get("checkpoint_sha256")
    if made_on and made_on != checkpoint_sha256:
        raise ParityRecordError(
            f"the parity reference {reference_dir} was made on a checkpoint with sha256 {made_on[:16]}…, not on this "
            f"one ({checkpoint_sha256[:16]}…); run the harness on the file you convert.")
    if record.architecture != type(model).__name__:
        raise ParityRecordError(f"the parity reference {reference_dir} is for {record.architecture}, but this "
                                f"conversion makes a {type(model).__name__} ({fix}).")
    failed = failures(check_record(model, record))
    if failed:
        raise ParityMismatchError(
            f"the converted model does not reproduce the original implementation's outputs in {reference_dir} (rtol "
            f"{record.tolerance['rtol']:g}, atol {record.tolerance['atol']:g}): {failed}. Nothing was saved.")
    record.reference.update(name=Path(reference_dir).name, sha256=record_sha256(reference_dir))
    return record


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def write_record(record, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({key: tensor.contiguous() for key, tensor in record.tensors.items()}, folder / RECORD_TENSORS)
    meta = asdict(record)
    meta.pop("tensors")
    meta["cases"] = [asdict(case) for case in record.cases]
    meta = {"format": FORMAT, "version": VERSION, "status": record.status, **meta}
    (folder / RECORD_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    return folder / RECORD_JSON


def read_record(folder) -> "ParityRecord":
    """The record in `folder`; ParityRecordError with what is missing otherwise."""
    folder = Path(folder)
    meta_path, tensor_path = folder / RECORD_JSON, folder / RECORD_TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise ParityRecordError(
            f"{folder} has no parity record ({RECORD_JSON} + {RECORD_TENSORS}): only folders written by a medvlp-hf "
            "converter have one (`medvlp convert ...`).")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ParityRecordError(f"{meta_path} is not a {FORMAT} version {VERSION}.")
    cases = [ParityCase(**case) for case in meta["cases"]]
    fields = {name: meta[name] for name in ("model_type", "architecture", "reference", "config", "tolerance",
                                            "results", "checked", "conversion")}
    return ParityRecord(cases=cases, tensors=load_file(tensor_path), **fields)


def record_sha256(folder) -> str:
    from .conversion_utils import sha256_file

    return sha256_file(Path(folder) / RECORD_TENSORS)


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def describe_reference(record) -> str:
    """What the expected outputs are (for cards and `medvlp verify`), plus the record's note if it has one."""
    note = record.reference.get("note")
    return _reference_source(record) + (f"; {note}" if note else "")


def _reference_source(record):
    reference = record.reference
    if reference["implementation"] == "converted":
        return ("the converted model's own outputs at conversion time (no reference from the original "
                "implementation was given, so parity with it is not verified for this checkpoint)")
    where = f"{reference.get('repository', 'the original repository')}@{reference.get('commit', '?')}"
    made = f", recorded by `{reference['producer']}`" if reference.get("producer") else ""
    name = f" as `{reference['name']}`" if reference.get("name") else ""
    digest = f" (sha256 {reference['sha256'][:16]}…)" if reference.get("sha256") else ""
    on = " on the same checkpoint" if reference.get("checkpoint_sha256") else ""
    return f"the original implementation ({where}) run{on}{made}{name}{digest}, {reference.get('created', 'undated')}"


def describe_comparisons(record) -> str:
    """Which outputs are compared through reductions rather than in full (a reduction sees only part of a tensor)."""
    words = {"full": "in full", "argmax": "argmax (identical)", "top5": "top-5 values", "logsumexp": "logsumexp"}
    reduced = {f"{case.name}.{name}": spec["reduce"] for case in record.cases for name, spec in case.outputs.items()
               if "full" not in spec["reduce"]}
    if not reduced:
        return "every output is compared in full"
    phrases = {", ".join(words.get(r, f"every {r[len('stride'):]}th entry") for r in reductions)
               for reductions in reduced.values()}
    return f"{', '.join(reduced)} compared through {'; '.join(sorted(phrases))}, the other outputs in full"


def card_parity_fields(record) -> dict:
    """The `conversion=` fields of `render_model_card` that come from the record."""
    return {"parity_status": record.status,
            "max_abs_diffs": {key: result["max_abs_diff"] for key, result in record.results.items()
                              if record.reference["implementation"] == "original"},
            "tolerance": dict(record.tolerance),
            "reference": f"{describe_reference(record)}. Outputs: {describe_comparisons(record)}"}


def environment() -> dict:
    """Versions that decide the numbers: Python, platform, torch, transformers, medvlp-hf."""
    from medvlp_hf.cli import environment_report

    report = environment_report()
    return {name: report[name] for name in ("python", "platform", "torch", "transformers", "medvlp-hf")}


def _today():
    return datetime.date.today().isoformat()
