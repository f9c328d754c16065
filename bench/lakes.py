"""The sample lake the benchmarks start from, shared by bench_delta_erasure.py and
bench_pending.py (imported with bench/ on the path, as when a script here is run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def sample_lake(out: Path, rows: int) -> tuple[dict, float]:
    """The sample lake without Feast and MLflow, generated in a child process (Linux carries
    a parent's peak RSS into its children), and the seconds it took."""
    t0 = time.perf_counter()
    cmd = [PY, "-m", "sample_lake.generate", "--out", str(out), "--rows", str(rows),
           "--seed", "7", "--json", "--no-feast", "--no-mlflow"]
    info = json.loads(subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                     check=True).stdout)
    return info, time.perf_counter() - t0


def fresh_sample_lake(default_dir: str, default_rows: int) -> tuple[Path, int, dict, float]:
    """BENCH_DIR (default: `default_dir` in the repository) emptied, and the sample lake of
    BENCH_ROWS rows (default `default_rows`) generated in its `lake` folder:
    (the folder, the rows asked for, the generator's summary, the seconds it took)."""
    rows = int(os.environ.get("BENCH_ROWS", str(default_rows)))
    base = Path(os.environ.get("BENCH_DIR", ROOT / default_dir)).resolve()
    if base.exists():
        shutil.rmtree(base)
    info, seconds = sample_lake(base / "lake", rows)
    return base, rows, info, seconds
