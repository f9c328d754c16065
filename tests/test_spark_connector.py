"""Delta tables erased through Spark Connect (`[spark] remote`), against a real server:
Sail (the `pysail` package, a Spark Connect server without a JVM), started here on
127.0.0.1. The engine talks gRPC to it; nothing is mocked.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import files_holding, read_table

ERASURE = str(Path(sys.executable).with_name("erasure"))
USERS = 5000


@pytest.fixture(scope="module")
def sail():
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer("127.0.0.1", 0)
    server.start(background=True)
    host, port = server.listening_address
    yield f"sc://{host}:{port}"
    server.stop()


def _table(path: Path, commits: int = 4, per: int = 5000) -> None:
    """Two rows per user id in each commit (ids 1 to USERS, wrapping), an e-mail column (a
    plain-text trace)."""
    for c in range(commits):
        ids = [1 + (c * per + i) // 2 % USERS for i in range(per)]
        write_deltalake(str(path), pa.table({
            "user_id": pa.array(ids, pa.int64()),
            "email": [f"user{u}@example.com" for u in ids],
            "score": pa.array([i % 7 for i in range(per)], pa.int64())}), mode="append")


def _config(root: Path, remote: str, tables: list[Path], spark_tables: str = "") -> Path:
    cfg = root / "erasure.toml"
    roots = "".join(f'[[roots]]\nnamespace = "file"\nname = "{t}"\ncolumn = "user_id"\n\n'
                    for t in tables)
    cfg.write_text('[ledger]\npath = ".erasure/ledger.db"\n\n'
                   '[keys]\npath = ".erasure/keys/subject.key"\n\n'
                   '[lineage]\nstore = ".erasure/lineage.db"\n\n' + roots +
                   '[delta]\nresidue = "purge"\n\n'
                   f'[spark]\nremote = "{remote}"\n{spark_tables}')
    return cfg


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ERASURE, "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=600)


def _others(path: Path, subjects: set[int]) -> list[tuple]:
    return sorted((r["user_id"], r["email"], r["score"]) for r in read_table(str(path)).to_pylist()
                  if r["user_id"] not in subjects)


def test_a_thousand_pending_requests_are_erased_on_the_cluster_then_purged(tmp_path, sail):
    events = tmp_path / "tables" / "events"
    _table(events)
    subjects = set(range(1, 2001, 2))             # 1,000 users, half of all
    others = _others(events, subjects)
    cfg = _config(tmp_path, sail, [events])
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{s}\n" for s in sorted(subjects)))
    assert _cli(cfg, "request", "submit", "--subjects-file", str(ids)).returncode == 0

    plan = _cli(cfg, "plan", "--subject-id", "1", "--json")
    assert plan.returncode == 0, plan.stderr
    (target,) = json.loads(plan.stdout)["targets"]
    assert target["connector"] == "spark" and target["rows"] == 4   # 2 rows in 2 commits

    before = DeltaTable(str(events)).version()
    run = _cli(cfg, "run", "--pending", "--json")
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    assert json.loads(run.stdout)["status"] == "completed"

    # the erase commit was written by the cluster: the table's history, copied to the
    # ledger before the purge cleaned the log, names the engine of each commit
    db = sqlite3.connect(tmp_path / ".erasure" / "ledger.db")
    (body,) = db.execute("SELECT body FROM entries WHERE kind = 'table.history'").fetchone()
    db.close()
    merge = [h for h in json.loads(body)["history"]
             if h["operation"] == "MERGE" and h["version"] > before]
    assert len(merge) == 1 and merge[0]["engineInfo"].startswith("sail"), merge
    assert merge[0]["metrics"]["numTargetRowsDeleted"] == 4 * len(subjects)

    assert _others(events, subjects) == others
    left = set(read_table(str(events)).column("user_id").to_pylist())
    assert not left & subjects
    emails = [f"user{s}@example.com".encode() for s in sorted(subjects)]
    assert files_holding(events, emails, {"user_id": None}) == []
    status = json.loads(_cli(cfg, "status", "--json").stdout)
    assert {r["status"] for r in status["requests"]} == {"completed"}
    assert len(status["requests"]) == len(subjects)
    assert _cli(cfg, "ledger", "verify").returncode == 0


def test_tables_patterns_choose_which_tables_the_cluster_erases(tmp_path, sail):
    on, off = tmp_path / "tables" / "big", tmp_path / "tables" / "small"
    _table(on, commits=1, per=200)
    _table(off, commits=1, per=200)
    cfg = _config(tmp_path, sail, [on, off], spark_tables=f'tables = ["{tmp_path}/tables/big*"]\n')
    plan = _cli(cfg, "plan", "--subject-id", "3", "--json")
    assert plan.returncode == 0, plan.stderr
    by_name = {t["name"]: t for t in json.loads(plan.stdout)["targets"]}
    assert by_name[str(on)]["connector"] == "spark" and by_name[str(off)]["connector"] == "delta"
    assert by_name[str(on)]["rows"] == by_name[str(off)]["rows"] == 2


def test_the_engine_embedded_in_python_dash_c_reaches_the_cluster(tmp_path, sail):
    """pyspark's client takes a __main__ without a file for a doctest run and exits; the
    engine run from `python -c` (as the benchmarks and embedders do) must still work."""
    events = tmp_path / "events"
    _table(events, commits=1, per=100)
    cfg = _config(tmp_path, sail, [events])
    code = ("import sys; from erasure.cli import run_cli; "
            f"sys.exit(run_cli(['--config', {str(cfg)!r}, 'plan', '--subject-id', '3', '--json']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (target,) = json.loads(res.stdout)["targets"]
    assert target["connector"] == "spark" and target["rows"] == 2


@pytest.mark.parametrize("edit, message", [
    ('remote = "localhost:15002"', '[spark] remote must be a Spark Connect URL'),
    ('remote = "sc://127.0.0.1:1"\nremotes = "x"', "[spark] unknown key 'remotes'"),
    ('remote = "sc://127.0.0.1:1"\ntables = "*"', "[spark] tables"),
])
def test_bad_spark_settings_are_refused_before_anything_changes(tmp_path, edit, message):
    events = tmp_path / "t"
    _table(events, commits=1, per=10)
    cfg = _config(tmp_path, "sc://x", [events])
    cfg.write_text(cfg.read_text().replace('remote = "sc://x"', edit))
    res = _cli(cfg, "request", "submit", "--subject-id", "3")
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert message in res.stderr
    assert not (tmp_path / ".erasure" / "ledger.db").exists()


def test_a_resumed_run_finds_what_an_interrupted_spark_erase_deleted(tmp_path, sail):
    from connectors.delta.config import DeltaSettings
    from connectors.spark import SparkDeltaConnector, SparkSettings

    events = tmp_path / "events"
    _table(events, commits=2, per=400)
    c = SparkDeltaConnector(SparkSettings(remote=sail), DeltaSettings(residue="purge"))
    try:
        _resume_checks(c, events)
    finally:
        c.close()       # released while the server is up (else the client retries for minutes)
    assert c._session is None


def _resume_checks(c, events: Path) -> None:
    assert c.handles("file", str(events))
    counted = c.count("file", str(events), "user_id", [5, 6, 999_999])
    assert counted.rows == {5: 2, 6: 2, 999_999: 0}
    res = c.erase("file", str(events), "user_id", [5, 6], tag="batch-1")
    assert res.rows_deleted == 4 and res.version_after == res.version_before + 1
    assert c.engine_of("file", str(events), res.version_after).startswith("sail")
    assert c.rows_deleted_by_tags("file", str(events), ["batch-1"]) == 4
    assert c.rows_deleted_by_tags("file", str(events), ["batch-2"]) == 0
    assert c.live_rows("file", str(events), "user_id", [5, 6, 7]) == {5: 0, 6: 0, 7: 2}
    # the commit's JSON holds no id: keys went as data, not as SQL text
    log = (events / "_delta_log" / f"{res.version_after:020d}.json").read_text()
    assert "user5@" not in log and not any(f"= {k}" in log or f"({k})" in log for k in (5, 6))


def test_rows_the_cluster_only_marks_deleted_are_rewritten_out_of_the_files(tmp_path, sail):
    """On a table with deletion vectors the cluster's MERGE only marks the subject's rows
    (Sail writes a deletion vector); the purge rewrites the file that still holds them, so
    no file under the table holds the subject afterwards."""
    events = tmp_path / "dv"
    ids = [1 + i // 2 % 50 for i in range(200)]
    write_deltalake(str(events), pa.table({"user_id": pa.array(ids, pa.int64()),
                                           "email": [f"user{u}@example.com" for u in ids]}),
                    configuration={"delta.enableDeletionVectors": "true"})
    subjects = {7, 8}
    others = sorted((r["user_id"], r["email"]) for r in read_table(str(events)).to_pylist()
                    if r["user_id"] not in subjects)
    cfg = _config(tmp_path, sail, [events])
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("7\n8\n")
    assert _cli(cfg, "request", "submit", "--subjects-file", str(ids_file)).returncode == 0
    run = _cli(cfg, "run", "--pending", "--json")
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    db = sqlite3.connect(tmp_path / ".erasure" / "ledger.db")
    (body,) = db.execute("SELECT body FROM entries WHERE kind = 'table.history'").fetchone()
    db.close()
    merge = [h for h in json.loads(body)["history"] if h["operation"] == "MERGE"]
    assert merge[0]["engineInfo"].startswith("sail")
    assert merge[0]["metrics"]["numTargetDeletionVectorsAdded"] == 1, merge   # only marked
    assert sorted((r["user_id"], r["email"]) for r in read_table(str(events)).to_pylist()) == others
    emails = [f"user{s}@example.com".encode() for s in sorted(subjects)]
    assert files_holding(events, emails, {"user_id": None}) == []
    assert _cli(cfg, "ledger", "verify").returncode == 0


def test_the_spark_connector_takes_the_storage_entries_as_the_delta_connector_does(tmp_path):
    """An s3:// table on the Spark path is still listed and purged here, with the options of
    its `[[storage]]` entry (not the default ones)."""
    from connectors import default_registry
    from erasure.config import load_config

    cfg = tmp_path / "e.toml"
    cfg.write_text('[lineage]\nevents = []\n[[roots]]\nnamespace = "s3://lake"\nname = "t"\n'
                   'column = "id"\n[delta.storage_options]\nAWS_REGION = "default-region"\n'
                   '[[storage]]\nprefix = "s3://lake"\n[storage.options]\n'
                   'AWS_REGION = "lake-region"\n[spark]\nremote = "sc://127.0.0.1:1"\n')
    reg = default_registry(load_config(cfg))
    spark, delta = reg.get("spark"), reg.get("delta")
    for conn in (spark, delta):
        assert conn.storage_options("s3://lake/t") == {"AWS_REGION": "lake-region"}
        assert conn.storage_options("s3://other/t") == {"AWS_REGION": "default-region"}
