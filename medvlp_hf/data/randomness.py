"""Random numbers for code that runs inside DataLoader workers (collators, dataset transforms)."""
from __future__ import annotations

import torch


class WorkerSeededGenerator:
    """A `torch.Generator` seeded by `seed`; inside a DataLoader worker, one seeded by (seed, the worker's seed).

    Every worker gets a copy of the object that owns this, and copies of one generator would draw the same numbers
    in every worker. The worker's seed is new at every epoch unless the workers are persistent (and then their
    generators carry on), so draws differ across epochs either way and stay reproducible under `set_seed`.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._worker_seed = None

    def get(self) -> torch.Generator:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self._generator = torch.Generator().manual_seed((self.seed * 1_000_003 + worker.seed) % 2**63)
        return self._generator
