"""Issue 16, parts 3-5: a table erased in `[delta] residue = "rewrite-history"` mode stays
readable by the other readers of the lake.

- Spark (Sail, a real Spark Connect server started here on 127.0.0.1): after the rewrite
  every retained version reads through Spark time travel exactly as through deltalake,
  without the subject; the table stays writable by Spark. With `[spark] remote` set, the
  rewrite's proof reads every version through Spark as well, and the purge step's evidence
  says which reader checked each version; a version Sail cannot load is recorded "not
  verified with Spark", and a Spark mismatch fails the step and restores the log.
- Feast (a real repo, file offline store, SQLite online store): `feast materialize` over a
  view sourced from a rewritten Delta table works and serves everyone but the subject; in
  purge mode it fails on the purge's checkpoint, and the plan says so per mode.
"""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from erasure.cli import run_cli

from test_delta_rewrite_history import (EMAIL, SUBJECT, assert_no_subject_anywhere, build_table,
                                        ledger_steps, people, rows_at, without_subject)

NS = "file"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    monkeypatch.delenv("ERASURE_CONFIG", raising=False)


@pytest.fixture(scope="module")
def sail():
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer("127.0.0.1", 0)
    server.start(background=True)
    host, port = server.listening_address
    yield f"sc://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def spark(sail):
    from connectors.spark import _import_spark_connect

    _import_spark_connect()
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(sail).create()
    yield session
    session.stop()


def build_uncheckpointed(path: str) -> None:
    """Versions 0..8 like `build_table` (appends, an update, a delete of another person,
    OPTIMIZE; the subject from version 2 on) and no checkpoint: Sail 0.7.2 cannot load
    versions older than a checkpoint (see the checkpoint test below). No change data feed:
    Sail refuses to MERGE into a deltalake table with it ("Table features must be
    specified, please specify: ChangeDataFeed"; writer version 4 has no feature list)."""
    write_deltalake(path, people(list(range(1, 11))))                               # 0
    write_deltalake(path, people([11, 12]), mode="append")                          # 1
    write_deltalake(path, pa.table({"id": pa.array([42, 13], pa.int64()),           # 2
                                    "email": [EMAIL, "user13@example.org"],
                                    "score": [42.0, 13.0]}), mode="append")
    write_deltalake(path, pa.table({"id": pa.array([42, 14, 15], pa.int64()),       # 3
                                    "email": [EMAIL, "user14@example.org", "user15@example.org"],
                                    "score": [4.2, 14.0, 15.0]}), mode="append")
    DeltaTable(path).update(updates={"score": "score + 1"}, predicate="id = 42")    # 4
    DeltaTable(path).delete("id = 12")                                              # 5
    DeltaTable(path).optimize.compact()                                             # 6
    write_deltalake(path, pa.table({"id": pa.array([16, 42], pa.int64()),           # 7
                                    "email": ["user16@example.org", EMAIL],
                                    "score": [16.0, 0.42]}), mode="append")
    write_deltalake(path, people([17]), mode="append")                              # 8


def spark_rows(spark, path: str, version: int | None = None) -> list[tuple]:
    """A version as Spark reads it, in `rows_at`'s shape (columns sorted, values repr'd)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    t = reader.load(path).toArrow()
    names = sorted(t.column_names)
    return sorted(tuple(repr(r[n]) for n in names) for r in t.to_pylist())


def config(tmp: Path, table: str, remote: str | None, mode: str = "rewrite-history",
           extra: str = "") -> Path:
    ctl = tmp / "ctl"
    ctl.mkdir(exist_ok=True)
    cfg = ctl / "erasure.toml"
    cfg.write_text(f'[delta]\nresidue = "{mode}"\n'
                   + (f'[spark]\nremote = "{remote}"\n' if remote else "")
                   + f'[[roots]]\nnamespace = "file"\nname = {json.dumps(table)}\n'
                   'column = "id"\n' + extra)
    return cfg


def cli(cfg: Path, capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = run_cli(["--config", str(cfg), *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def erase(cfg: Path, capsys, subject: str) -> tuple[int, dict, str]:
    code, sub = cli(cfg, capsys, "request", "submit", "--subject-id", subject)
    assert code == 0, sub
    code, res = cli(cfg, capsys, "run", sub["request_id"])
    return code, res, sub["request_id"]


# ---- Spark ------------------------------------------------------------------------------
def test_spark_reads_every_rewritten_version_and_the_proof_says_spark_checked_each(
        tmp_path, capsys, sail, spark):
    path = str(tmp_path / "people")
    build_uncheckpointed(path)
    versions = range(9)
    before = {v: rows_at(path, v) for v in versions}
    # before the erasure Spark and deltalake agree on every version (the comparison is fair)
    assert all(spark_rows(spark, path, v) == before[v] for v in versions)

    cfg = config(tmp_path, path, sail)
    code, plan = cli(cfg, capsys, "plan", "--subject-id", str(SUBJECT))
    assert code == 0, plan
    [t] = plan["targets"]
    assert t["connector"] == "spark" and t["residue_after"]["mode"] == "rewrite-history", t

    code, res, rid = erase(cfg, capsys, str(SUBJECT))
    assert code == 0 and res["status"] == "completed", res
    latest = DeltaTable(path).version()
    assert latest == 9
    for v in range(latest + 1):
        dl = rows_at(path, v)
        assert dl == without_subject(before[min(v, 8)]), v
        assert spark_rows(spark, path, v) == dl, v          # Spark reads what deltalake reads
    assert_no_subject_anywhere(path)

    [purge] = ledger_steps(cfg, rid, "purge")
    assert purge["mode"] == "rewrite-history" and purge["files_rewritten"] >= 3, purge
    for v in versions:
        e = purge["versions"][str(v)]
        assert e["readers"] == {"deltalake": "checked", "spark": "checked"}, (v, e)
        assert e["same_other_rows_spark"] is True and e["subject_rows_spark"] == 0, (v, e)
        assert e["hash_other_spark"] == e["hash_other_before"] == e["hash_other_after"], v
        assert e["rows_other_spark"] == len(without_subject(before[v])), v
    assert not any("not verified with Spark" in n for n in purge["notes"]), purge["notes"]
    assert EMAIL not in json.dumps(purge) and f"= {SUBJECT}" not in json.dumps(purge)

    # the table stays writable by Spark: an append through Spark, read back by deltalake
    spark.createDataFrame(people([18, 19]).to_pandas()).write.format("delta") \
        .mode("append").save(path)
    ids = sorted(DeltaTable(path).to_pyarrow_table().column("id").to_pylist())
    assert ids == sorted({*range(1, 20)} - {12}) and SUBJECT not in ids
    assert DeltaTable(path).version() == 10
    assert spark_rows(spark, path) == rows_at(path, 10)
    for v in versions:
        assert rows_at(path, v) == without_subject(before[v]), v
    # Sail's commit 10 came with a checkpoint (Spark checkpoints every 10 commits), behind
    # which Sail 0.7.2 cannot time-travel past version 1; deltalake still reads them all
    assert Path(path, "_delta_log", f"{10:020d}.checkpoint.parquet").is_file()
    assert [spark_rows(spark, path, v) for v in (0, 1)] == [before[0], before[1]]


def test_versions_sail_cannot_load_are_recorded_not_verified_with_spark(
        tmp_path, capsys, sail, spark):
    """A checkpoint at version 6: Sail 0.7.2 cannot time-travel to versions 2-5 (before the
    rewrite too; it is the server's limit, not the rewrite's). The evidence says so per
    version and claims Spark for the others only."""
    path = str(tmp_path / "people")
    build_table(path)
    before = {v: rows_at(path, v) for v in range(9)}
    unloadable = set()
    for v in range(9):
        try:
            assert spark_rows(spark, path, v) == before[v], v
        except AssertionError:
            raise
        except Exception as exc:
            assert "Missing commit file" in str(exc), exc
            unloadable.add(v)
    assert unloadable == {2, 3, 4, 5}

    cfg = config(tmp_path, path, sail)
    code, res, rid = erase(cfg, capsys, str(SUBJECT))
    assert code == 0 and res["status"] == "completed", res
    for v in range(9):
        assert rows_at(path, v) == without_subject(before[v]), v
    [purge] = ledger_steps(cfg, rid, "purge")
    for v in range(9):
        e = purge["versions"][str(v)]
        assert e["readers"]["deltalake"] == "checked" and e["same_other_rows"] is True, v
        if v in unloadable:
            assert e["readers"]["spark"].startswith("not verified with Spark: "), e
            assert "Missing commit file" in e["readers"]["spark"], e
            assert "rows_other_spark" not in e, e
            with pytest.raises(Exception, match="Missing commit file"):
                spark_rows(spark, path, v)
        else:
            assert e["readers"]["spark"] == "checked", (v, e)
            assert spark_rows(spark, path, v) == without_subject(before[v]), v
    assert any("4 version(s) not verified with Spark" in n for n in purge["notes"]), purge


def test_a_spark_read_that_differs_fails_the_step_and_restores_the_log(tmp_path, sail):
    """The Spark check is a real comparison: a digest that Spark's rows do not match (here
    the journal's record of version 3 is altered after planning) stops the rewrite before
    deltalake's proof and before any old file goes, and the original log comes back."""
    from connectors.delta import rewrite
    from connectors.delta.config import DeltaSettings
    from connectors.spark import SparkDeltaConnector, SparkSettings
    from erasure.errors import ErasureFailed

    path = str(tmp_path / "people")
    build_uncheckpointed(path)
    before = {v: rows_at(path, v) for v in range(9)}
    log_before = {p.name: p.read_bytes() for p in Path(path, "_delta_log").iterdir()
                  if p.is_file()}

    def alter(uri):
        j = json.loads(Path(path, rewrite.JOURNAL).read_text())
        j["before"]["3"]["hash"] = "0" * 64
        Path(path, rewrite.JOURNAL).write_text(json.dumps(j))

    c = SparkDeltaConnector(SparkSettings(remote=sail), DeltaSettings(residue="rewrite-history"),
                            hooks={"rewrite:tombstones": alter})
    try:
        c.erase(NS, path, "id", [SUBJECT], tag="batch-1")
        with pytest.raises(ErasureFailed, match="proof with Spark failed .*version 3"):
            c.purge(NS, path, "id", [SUBJECT], tag="batch-1")
    finally:
        c.close()
    # the log is the original one again (plus the erase commit), no journal, no new file
    log_after = {p.name: p.read_bytes() for p in Path(path, "_delta_log").iterdir()
                 if p.is_file()}
    # (Sail's erase commit 9 comes with a checksum file 9.crc)
    assert {k: v for k, v in log_after.items() if not k.startswith(f"{9:020d}.")} == log_before
    assert not Path(path, rewrite.JOURNAL_DIR).exists()
    assert not list(Path(path).glob("*-erased.c000.snappy.parquet"))
    assert rows_at(path, 3) == before[3]          # old versions still hold the subject


# ---- Feast ------------------------------------------------------------------------------
def feast_lake(feast, tmp: Path, mode: str):
    """A Delta source of 40 drivers written in two commits (the subject, driver 7, in both),
    a Feast repo with the file offline store and a SQLite online store over it,
    materialized. Returns (lake, repo, store, served before, config)."""
    from feast.types import Int64

    from feast_helpers import T0, stats_rows, stats_table, stats_view, write_repo

    from datetime import timedelta

    lake = tmp / "lake" / "driver_stats"
    ids = list(range(1, 41))
    write_deltalake(lake, stats_table(stats_rows(ids[:30]), pa.int64()))
    write_deltalake(lake, stats_table(stats_rows(ids[5:], tag="b", start=T0 + timedelta(days=1)),
                                      pa.int64()), mode="append")
    repo = write_repo(tmp / "repo", f"t{uuid4().hex[:8]}")
    entity = feast.Entity(name="driver", join_keys=["entity_id"], value_type=feast.ValueType.INT64)
    fv = stats_view(feast, "driver_delta", entity, "entity_id", Int64, lake)
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([entity, fv])
    materialize_now(store)
    before = served(store, ids)
    assert before[7]["nickname"] == "nick-7-b3-secret"
    ctl = tmp / "ctl"
    ctl.mkdir()
    cfg = ctl / "erasure.toml"
    cfg.write_text(f'[delta]\nresidue = "{mode}"\n[[roots]]\nnamespace = "file"\n'
                   f'name = "{lake}"\ncolumn = "entity_id"\n[[feast]]\nrepo = "{repo}"\n')
    return lake, repo, store, before, cfg


def materialize_now(store) -> None:
    from feast_helpers import materialize

    materialize(store)


def served(store, ids: list[int]) -> dict[int, dict]:
    from feast_helpers import STATS, online

    return online(store, "driver_delta", STATS, "entity_id", ids)


def test_feast_materialize_works_after_rewrite_history_and_never_serves_the_subject(
        feast, tmp_path, capsys):
    from feast_helpers import STATS, T0, stats_rows, stats_table

    from datetime import timedelta

    lake, repo, store, before, cfg = feast_lake(feast, tmp_path, "rewrite-history")
    ids = list(before)
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "7")
    assert code == 0, plan
    view = next(t for t in plan["targets"] if t["name"] == "driver_delta")
    note = view["details"]["note"]
    assert "rewrite-history" in note and "keeps working" in note, note
    assert "feast_reader_breaks_on" not in view["details"]

    code, res, _ = erase(cfg, capsys, "7")
    assert code == 0 and res["status"] == "completed", res
    assert not list(Path(lake, "_delta_log").glob("*.checkpoint*"))   # none was written
    for v in range(DeltaTable(str(lake)).version() + 1):
        assert 7 not in DeltaTable(str(lake), version=v).to_pyarrow_table() \
            .column("entity_id").to_pylist(), v
    after = served(store, ids)
    assert after[7] == {f: None for f in STATS}
    assert {i: after[i] for i in ids if i != 7} == {i: before[i] for i in ids if i != 7}

    # the next materialize runs, reads the rewritten table (a new day of rows for driver
    # 8 is served) and brings nobody back
    write_deltalake(lake, stats_table(stats_rows([8], tag="c", start=T0 + timedelta(days=2)),
                                      pa.int64()), mode="append")
    materialize_now(feast.FeatureStore(repo_path=str(repo)))
    again = served(store, ids)
    assert again[7] == {f: None for f in STATS}
    assert again[8]["nickname"] == "nick-8-c3-secret"
    assert {i: again[i] for i in ids if i not in (7, 8)} == \
        {i: before[i] for i in ids if i not in (7, 8)}


def test_purge_mode_breaks_feast_materialize_and_the_plan_says_so(feast, tmp_path, capsys):
    """Measured: after a purge, `feast materialize` of the view fails on the purge's log
    checkpoint (Feast's Dask reader takes `_delta_log/N.checkpoint.parquet` for data and
    misses the join key); the plan's note for the view said so before anything ran."""
    from feast_helpers import STATS

    lake, repo, store, before, cfg = feast_lake(feast, tmp_path, "purge")
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "7")
    assert code == 0, plan
    note = next(t for t in plan["targets"] if t["name"] == "driver_delta")["details"]["note"]
    assert "purge mode" in note and "materialize` of this view fails" in note, note
    assert "rewrite-history" in note and "keeps materialize working" in note, note

    code, res, _ = erase(cfg, capsys, "7")
    assert code == 0 and res["status"] == "completed", res
    assert list(Path(lake, "_delta_log").glob("*.checkpoint.parquet"))
    with pytest.raises(Exception) as exc:
        materialize_now(feast.FeatureStore(repo_path=str(repo)))
    assert type(exc.value).__name__ == "FeastJoinKeysDuringMaterialization", repr(exc.value)
    assert "entity_id" in str(exc.value)
    assert served(store, [7])[7] == {f: None for f in STATS}


def test_the_plan_note_follows_the_sources_mode(feast, tmp_path, capsys):
    """keep-history: no checkpoint, but materialize would restore the subject."""
    _, _, _, _, cfg = feast_lake(feast, tmp_path, "keep-history")
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "7")
    assert code == 0, plan
    note = next(t for t in plan["targets"] if t["name"] == "driver_delta")["details"]["note"]
    assert "keep-history mode" in note and "would restore" in note, note
    assert "7" not in note
