"""What every parity harness needs before it imports an original code base here (shared by `conversion/parity/*/
shims.py`, which put this folder on `sys.path`): stand-in modules for imports the paths it runs never use, and
torchvision's operator schemas, since the registry's only torchvision 0.28.0 (the one that pairs with torch 2.13) is a
CUDA build whose extension needs them (../shared/reference/originals.md §1.1): `torchvision.models` and
`torchvision.transforms` then work on CPU; detection operators do not.
"""

import importlib.machinery
import sys
import types

import torch


def stub_module(name, **attributes):
    """Register an empty module `name` holding `attributes` (an import of it then succeeds without the package)."""
    stub = types.ModuleType(name)
    stub.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    stub.__dict__.update(attributes)
    sys.modules[name] = stub
    return stub


def define_torchvision_operator_schemas():
    """Define `torchvision::nms`/`qnms` before torchvision loads; keep the returned library alive while it is used."""
    library = torch.library.Library("torchvision", "FRAGMENT")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return library
