#!/usr/bin/env python
"""Compare two fixture folders of a parity harness (`conversion/parity/<model>/`) tensor by tensor: integer tensors must
be identical, floating ones within `torch.testing.assert_close(rtol=1e-5, atol=1e-4)`; meta.json files must be equal.
Prints the largest difference of every file and exits non-zero on any mismatch. Original-layout checkpoints an older
fixture folder committed (`original_checkpoint.safetensors`, `head_weights.safetensors`) are inputs, not outputs, and
are skipped.

    python conversion/parity/compare_fixtures.py tests/fixtures/medvill /tmp/regenerated
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

RTOL, ATOL = 1e-5, 1e-4


def compare_tensors(name, expected, actual):
    problems, largest = [], 0.0
    if expected.keys() != actual.keys():
        problems.append(f"{name}: keys differ: missing {sorted(expected.keys() - actual.keys())}, "
                        f"extra {sorted(actual.keys() - expected.keys())}")
    for key in sorted(expected.keys() & actual.keys()):
        want, have = expected[key], actual[key]
        if want.shape != have.shape or want.dtype != have.dtype:
            problems.append(f"{name}:{key}: {tuple(have.shape)} {have.dtype} instead of {tuple(want.shape)} {want.dtype}")
        elif not want.is_floating_point():
            if not torch.equal(want, have):
                problems.append(f"{name}:{key}: integer values differ")
        else:
            largest = max(largest, float((want.double() - have.double()).abs().max()) if want.numel() else 0.0)
            try:
                torch.testing.assert_close(have, want, rtol=RTOL, atol=ATOL)
            except AssertionError as error:
                problems.append(f"{name}:{key}: {str(error).splitlines()[0]}")
    return problems, largest


def main(expected_dir, actual_dir):
    expected_dir, actual_dir = Path(expected_dir), Path(actual_dir)
    problems = []
    for path in sorted(expected_dir.rglob("*.safetensors")):
        relative = path.relative_to(expected_dir)
        if relative.name == "original_checkpoint.safetensors" or relative.name == "head_weights.safetensors":
            continue
        if not (actual_dir / relative).exists():
            problems.append(f"{relative}: missing")
            continue
        found, largest = compare_tensors(str(relative), load_file(path), load_file(actual_dir / relative))
        problems += found
        print(f"{str(relative):<55} max |diff| {largest:.3g}")
    for path in sorted(expected_dir.rglob("meta.json")):
        relative = path.relative_to(expected_dir)
        if (actual_dir / relative).exists() and json.loads(path.read_text()) != json.loads((actual_dir / relative).read_text()):
            problems.append(f"{relative}: differs")
    print("\n".join(problems) if problems else "all tensors within rtol 1e-5 / atol 1e-4, integers identical, meta equal")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
