"""Imported by every example script before torch: OpenMP threads that wait for work sleep instead of spinning.

libgomp's default spin-waiting assumes dedicated cores. On a CPU shared with other processes (a 2-core CI or
laptop machine), spinning threads keep the cores their own team needs and torch runs several times slower:
one MedViLL `small` VQA training step took 9.0 s with the default and 1.45 s with OMP_WAIT_POLICY=PASSIVE,
measured side by side while one other process was busy. The policy is read once, when torch loads OpenMP, so it
must be set before the first `import torch`. A value already in the environment is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
