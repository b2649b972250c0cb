#!/usr/bin/env python
"""`python conversion/convert_m2i2_original_checkpoint.py ...` from a checkout: the M2I2 converter of this checkout's
`medvlp_hf` (same as `medvlp convert m2i2 ...`; the code is medvlp_hf/conversion/)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medvlp_hf.conversion.convert_m2i2_original_checkpoint import main  # noqa: E402

if __name__ == "__main__":
    main()
