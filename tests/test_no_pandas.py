"""No command imports pandas unless a connector needs it (issue 12).

pyarrow imports pandas (0.3-0.8 s) whenever `pa.array`, `pa.scalar`, `pa.table(<stream>)` or
`pyarrow.dataset` is used, to ask whether its input is a pandas object. On a lake of Delta
tables and Parquet files nothing needs pandas: plan, run (erase, purge, verify), status and
sweep must finish without it in `sys.modules`. Feast and MLflow need it and may import it.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import contextlib, io, json, sys
from erasure.cli import run_cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = run_cli(sys.argv[1:])
print(json.dumps({"exit": code, "pandas": "pandas" in sys.modules, "out": out.getvalue()}))
"""


def _child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_delta_and_parquet_commands_never_import_pandas(lake):
    cfg = str(lake.config)
    plan = _child("--config", cfg, "plan", "--subject-id", "42", "--json")
    assert plan["exit"] == 0 and not plan["pandas"]
    planned = json.loads(plan["out"])
    assert any(t["rows"] for t in planned["targets"]), "the plan found the subject's rows"

    sub = _child("--config", cfg, "request", "submit", "--subject-id", "42", "--json")
    rid = json.loads(sub["out"])["request_id"]
    # a batch too: many keys take the one-pass count and the MERGE of an Arrow key table
    batch = lake.root / "batch.txt"
    batch.write_text("".join(f"{i}\n" for i in range(100, 140)))
    assert _child("--config", cfg, "request", "submit", "--subjects-file", str(batch))["exit"] == 0
    run = _child("--config", cfg, "run", "--pending", "--json")
    assert run["exit"] == 0 and not run["pandas"], run["out"][-2000:]
    assert json.loads(run["out"])["status"] == "completed"

    status = _child("--config", cfg, "status", rid, "--json")
    assert status["exit"] == 0 and not status["pandas"]
    assert json.loads(status["out"])["status"] == "completed"

    sweep = _child("--config", cfg, "sweep", "--json")
    assert sweep["exit"] == 0 and not sweep["pandas"], sweep["out"][-2000:]
    assert json.loads(sweep["out"])["status"] == "clean"


def test_array_of_builds_what_pa_array_builds():
    import pyarrow as pa
    import pytest

    from connectors.keymatch import array_of

    cases = [
        ([1, -2, 2 ** 63 - 1, -2 ** 63], pa.int64()),
        ([0, 127, -128], pa.int8()),
        ([1, 65535], pa.uint16()),
        ([2 ** 31 - 1, -2 ** 31], pa.int32()),
        ([True, False, True, True, False, False, False, False, True], pa.bool_()),
        (["a", "", "ünïcødé", "o'brien@example.com", "x" * 1000], pa.string()),
        (["a", "ß"], pa.large_string()),
        ([], pa.string()),
        ([], pa.int64()),
    ]
    for values, typ in cases:
        got = array_of(values, typ)
        got.validate(full=True)
        assert got.type == typ and got.equals(pa.array(values, type=typ)), (values, typ)
    # what does not fit goes to pa.array, which raises or converts exactly as before
    for values, typ in [([2 ** 63], pa.int64()), ([300], pa.int8()), ([-1], pa.uint8())]:
        with pytest.raises((OverflowError, pa.ArrowInvalid)):
            pa.array(values, type=typ)
        with pytest.raises((OverflowError, pa.ArrowInvalid)):
            array_of(values, typ)
    assert array_of([1, None], pa.int64()).null_count == 1
    assert array_of(["a", None], pa.string()).to_pylist() == ["a", None]
