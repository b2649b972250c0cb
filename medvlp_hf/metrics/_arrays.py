"""Turn metric inputs (lists, numpy arrays, torch tensors) into numpy arrays without importing torch."""
import numpy as np


def as_numpy(values, dtype=None) -> np.ndarray:
    """A numpy copy of ``values``; torch tensors are detached and moved to the CPU first."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if str(values.dtype) == "torch.bfloat16":
            values = values.float()
        values = values.numpy()
    return np.asarray(values, dtype=dtype)
