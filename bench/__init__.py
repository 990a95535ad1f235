"""Benchmarks: each stage's throughput against a reference implementation and a hardware bound.

The synthetic inputs they share with the tests live in ``tests/fixtures`` (and
``tests/test_inference_fixture.py``); ``tests/`` is put on the import path here, since
fixtures are not part of the installed product.
"""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
