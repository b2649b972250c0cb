"""Parity records: reductions, the comparison rule, running cases on a model, status, files."""
import json

import pytest
import torch
from torch import nn
from transformers.utils import ModelOutput

from medvlp_hf.conversion import parity
from medvlp_hf.conversion.parity import ParityCase, ParityRecord

TOLERANCE = {"rtol": 1e-5, "atol": 1e-4}


def test_reductions_over_the_last_dimension():
    x = torch.tensor([[1.0, 5.0, 3.0, 2.0, 4.0, 0.0, 6.0]])
    assert parity.reduce(x, "argmax").tolist() == [6]
    assert parity.reduce(x, "top5").tolist() == [[6.0, 5.0, 4.0, 3.0, 2.0]]
    assert parity.reduce(x, "logsumexp").item() == pytest.approx(torch.logsumexp(x, -1).item())
    assert parity.reduce(x, "stride3").tolist() == [[1.0, 2.0, 6.0]]
    assert torch.equal(parity.reduce(x, "full"), x)
    with pytest.raises(ValueError, match="unknown reduction 'stride0'"):
        ParityCase("c", "forward", {}, {"y": {"field": "y", "reduce": ["stride0"]}})


def test_floats_pass_within_atol_plus_rtol_and_integers_must_be_identical():
    expected = torch.tensor([0.0, 100.0])
    assert parity.compare(expected + torch.tensor([9e-5, 1e-3]), expected, TOLERANCE)["passed"]  # 1e-3 <= 1e-4 + 1e-3
    result = parity.compare(expected + torch.tensor([1.1e-4, 0.0]), expected, TOLERANCE)
    assert not result["passed"] and result["max_abs_diff"] == pytest.approx(1.1e-4)
    assert not parity.compare(torch.tensor([float("nan"), 100.0]), expected, TOLERANCE)["passed"]
    assert parity.compare(torch.tensor([3, 4]), torch.tensor([3, 4]), TOLERANCE) == {
        "compare": "equal", "max_abs_diff": 0.0, "passed": True}
    assert not parity.compare(torch.tensor([3, 5]), torch.tensor([3, 4]), TOLERANCE)["passed"]
    shape = parity.compare(torch.zeros(3), torch.zeros(2), TOLERANCE)
    assert not shape["passed"] and shape["note"] == "shape (3,) instead of (2,)"


def test_infinities_must_sit_where_the_reference_has_them():
    """As torch.testing.assert_close: equal infinities pass (scores of candidates outside a top k), the difference is
    measured over the finite entries."""
    expected = torch.tensor([-float("inf"), -2.0, float("inf")])
    result = parity.compare(torch.tensor([-float("inf"), -2.00005, float("inf")]), expected, TOLERANCE)
    assert result["passed"] and result["max_abs_diff"] == pytest.approx(5e-5, rel=1e-2)  # float32 rounding
    assert not parity.compare(torch.tensor([-1e30, -2.0, float("inf")]), expected, TOLERANCE)["passed"]
    assert not parity.compare(torch.tensor([-float("inf"), -float("inf"), float("inf")]), expected, TOLERANCE)["passed"]
    assert not parity.compare(torch.tensor([float("inf"), -2.0, float("inf")]), expected, TOLERANCE)["passed"]


class Toy(nn.Module):
    """forward returns a ModelOutput; `steps` returns a tuple whose first item is a tuple of per-step tensors."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.config = type("Config", (), {"model_type": "toy", "mode": "a"})()

    def forward(self, x):
        return ModelOutput(logits=self.linear(x))

    def steps(self, x, n):
        return tuple(self.linear(x) * i for i in range(n)), x.dtype


def toy_record(model, implementation="original"):
    cases = [ParityCase("fwd", "forward", {"x": "x"}, {"logits": {"field": "logits", "reduce": ["full", "argmax"]}}),
             ParityCase("gen", "steps", {"x": "x"}, {"steps": {"field": 0, "reduce": ["top5"]}}, {"n": 3})]
    inputs = {"inputs.x": torch.randn(2, 3, generator=torch.Generator().manual_seed(0)).half()}
    record = parity.self_record(model, cases, inputs, producer="test")
    record.reference["implementation"] = implementation
    return record


def test_cases_run_methods_fields_and_tuple_stacking():
    model = Toy().double()
    record = toy_record(model)
    outputs = parity.run_case(model, record.cases[1], record.tensors)
    assert outputs["gen.steps.top5"].shape == (2, 3, 4)  # 3 steps stacked on dim 1; top-5 of 4 values keeps 4
    assert outputs["gen.steps.top5"].dtype == torch.float32  # reductions work in float32
    assert record.tensors["expected.fwd.logits.full"].dtype == torch.float64  # inputs were cast to the model's dtype


def test_prepare_methods_run_before_the_case_and_round_trip(tmp_path):
    """A case's `prepare` methods run (without arguments, in order) before it: the original's forward may start with
    a state update (MISS's momentum encoders) that the model does in a method of its own."""
    model = Toy()
    model.shift = lambda: model.linear.bias.add_(1.0)
    case = ParityCase("fwd", "forward", {"x": "x"}, {"logits": {"field": "logits", "reduce": ["full"]}},
                      prepare=["shift"])
    x = torch.randn(2, 3)
    expected = model.linear(x).detach() + 1.0
    torch.testing.assert_close(parity.run_case(model, case, {"inputs.x": x})["fwd.logits.full"], expected)
    record = ParityRecord("toy", "Toy", [case], {"inputs.x": x, "expected.fwd.logits.full": expected + 1.0},
                          {"implementation": "original"})
    parity.write_record(record, tmp_path)
    assert parity.read_record(tmp_path).cases[0].prepare == ["shift"]
    assert all(result["passed"] for result in parity.check_record(model, parity.read_record(tmp_path)).values())


def test_status_follows_the_reference_and_the_results():
    model = Toy()
    record = toy_record(model)
    assert record.status == "not verified"  # nothing checked yet
    parity.check_record(model, record)
    assert record.status == "passed" and record.checked["environment"]["torch"]
    with torch.no_grad():
        model.linear.bias += 1e-3
    parity.check_record(model, record)
    assert record.status == "failed" and parity.failures(record.results)[0].startswith("fwd.logits.full (max |diff| 0.001")
    own = toy_record(model, implementation="converted")
    parity.check_record(model, own)  # reproduced, but a record of the model's own outputs never claims parity
    assert all(result["passed"] for result in own.results.values()) and own.status == "not verified"


def test_config_fields_the_reference_assumed_are_checked():
    model = Toy()
    record = toy_record(model)
    record.config = {"mode": "b"}
    with pytest.raises(parity.ParityRecordError, match=r"mode='a' \(reference: 'b'\)"):
        parity.check_record(model, record)


def test_records_round_trip_and_missing_ones_are_explained(tmp_path):
    model = Toy()
    record = toy_record(model)
    parity.check_record(model, record)
    record.conversion = {"script": "s"}
    parity.write_record(record, tmp_path)
    meta = json.loads((tmp_path / parity.RECORD_JSON).read_text())
    assert meta["status"] == "passed" and meta["version"] == parity.VERSION
    loaded = parity.read_record(tmp_path)
    assert loaded.results == record.results and loaded.conversion == {"script": "s"}
    assert all(torch.equal(loaded.tensors[k], v) for k, v in record.tensors.items())
    (tmp_path / parity.RECORD_TENSORS).unlink()
    with pytest.raises(parity.ParityRecordError, match="has no parity record"):
        parity.read_record(tmp_path)


def test_a_record_must_hold_its_cases_tensors():
    case = ParityCase("fwd", "forward", {"x": "x"}, {"y": {"field": "y", "reduce": ["full"]}})
    with pytest.raises(parity.ParityRecordError, match=r"lacks the tensors \['inputs.x', 'expected.fwd.y.full'\]"):
        ParityRecord("toy", "Toy", [case], {}, {"implementation": "original"})


def test_descriptions_say_what_was_compared():
    record = toy_record(Toy())
    assert parity.describe_comparisons(record) == "gen.steps compared through top-5 values, the other outputs in full"
    record.reference.update(repository="org/repo", commit="abc1234", name="ref", sha256="f" * 64)
    assert parity.describe_reference(record).startswith("the original implementation (org/repo@abc1234) run, recorded by `test` as `ref` (sha256 ffff")
