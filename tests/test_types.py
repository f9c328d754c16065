"""Issue 10, item 7: the type checker runs in `make test`.

mypy checks erasure/ and connectors/ with the configuration in pyproject.toml ([tool.mypy]:
the files, Python 3.11, untyped function bodies checked, and the third-party libraries that
ship no types listed one by one). Any error fails this test with mypy's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_passes_on_erasure_and_connectors():
    res = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (
        f"mypy exited {res.returncode}:\n{res.stdout}{res.stderr}")
