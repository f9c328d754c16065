"""A table partitioned by the subject's key column keeps the key in its folder names
(`user_id=424242/part-0.parquet`). Those paths are what the plan, the verification and the
sweep record as files and residue: the key must not reach the ledger or any output with them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

ERASURE = str(Path(sys.executable).with_name("erasure"))
SUBJECT = "424242"


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ERASURE, "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=300)


def test_a_key_in_partition_folders_is_never_recorded_in_plain_text(tmp_path):
    table = tmp_path / "tables" / "events"
    write_deltalake(str(table), pa.table({"user_id": pa.array([int(SUBJECT), 7, 8], pa.int64()),
                                          "v": ["a", "b", "c"]}), partition_by=["user_id"])
    assert (table / f"user_id={SUBJECT}").is_dir()
    cfg = tmp_path / "erasure.toml"
    cfg.write_text('[ledger]\npath = ".erasure/ledger.db"\n[keys]\npath = ".erasure/keys/s.key"\n'
                   '[lineage]\nstore = ".erasure/lineage.db"\n[[roots]]\nnamespace = "file"\n'
                   f'name = "{table}"\ncolumn = "user_id"\n[delta]\nresidue = "purge"\n')
    outputs = []
    plan = _cli(cfg, "plan", "--subject-id", SUBJECT, "--json")
    assert plan.returncode == 0, plan.stderr
    (target,) = json.loads(plan.stdout)["targets"]
    assert target["rows"] == 1 and target["files"], target
    assert all(f.startswith("user_id=<subject>/") for f in target["files"]), target
    outputs.append(plan.stdout + plan.stderr)
    sub = _cli(cfg, "request", "submit", "--subject-id", SUBJECT, "--json")
    rid = json.loads(sub.stdout)["request_id"]
    for args in (("run", rid, "--json"), ("status", rid, "--json"), ("verify", rid, "--json"),
                 ("sweep", "--json")):
        res = _cli(cfg, *args)
        assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr[-2000:])
        outputs.append(res.stdout + res.stderr)
    assert json.loads(outputs[2])["status"] == "completed"
    assert not (table / f"user_id={SUBJECT}").exists()
    assert [SUBJECT in o for o in outputs] == [False] * len(outputs)
    stored = b"".join(f.read_bytes() for f in (tmp_path / ".erasure").rglob("*") if f.is_file())
    assert SUBJECT.encode() not in stored
