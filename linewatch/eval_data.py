"""Where the public evaluation data (NAB, the MVTec-layout image sets) lives.

It is not shipped with the package: a checkout finds it in ``shared/eval`` beside the repository
(where CI puts it), and ``LINEWATCH_EVAL_DIR`` points anywhere else. Benchmarks and tests that
need it resolve it here, so no path of one machine is written into the code.
"""

from __future__ import annotations

import os
from pathlib import Path

EVAL_DIR = Path(os.environ.get("LINEWATCH_EVAL_DIR") or Path(__file__).resolve().parents[2] / "shared" / "eval")
NAB_DIR = EVAL_DIR / "nab"
IMAGES_DIR = EVAL_DIR / "images"
