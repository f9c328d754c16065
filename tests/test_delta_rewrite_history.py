"""`[delta] residue = "rewrite-history"` (issue 16): the subject leaves every retained version,
everyone else's time travel stays.

Real deltalake tables only (written here, or the Spark-written tables of tests/data):
(A) a table with 9 versions (appends, an update, a delete of another person, OPTIMIZE, a
    checkpoint; the subject from version 2 on) erased through the CLI: each version reads
    as before minus the subject, no file holds the subject, the history is intact, the
    table stays writable, and the purge step's evidence carries the per-version proof that
    matches the dry run's;
(B) a crash between any two phases of the rewrite, then a rerun, ends in the same state,
    and every version reads correctly for everyone else even right after the crash;
(C) what this slice does not handle is refused before anything changes: a Spark table with
    deletion vectors ends `incomplete` (exit 6) and is left as keep-history leaves it;
(D) change-data files are rewritten like data files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from connectors.delta import DeltaConnector, rewrite
from connectors.delta.config import DeltaSettings
from erasure.cli import run_cli

from conftest import files_holding
from test_real_delta_tables import copy_table, physical_traces

NS = "file"
SUBJECT = 42
EMAIL = "user42@example.org"


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing handles it."""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    monkeypatch.delenv("ERASURE_CONFIG", raising=False)


def people(ids: list[int], tag: str = "") -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "email": [f"user{i}{tag}@example.org" for i in ids],
                     "score": pa.array([float(i) for i in ids])})


def build_table(path: str) -> None:
    """Versions 0..8: the subject (42) from version 2 on; a checkpoint at version 6."""
    write_deltalake(path, people(list(range(1, 11))))                       # 0
    write_deltalake(path, people([11, 12]), mode="append")                  # 1
    write_deltalake(path, pa.table({"id": pa.array([42, 13], pa.int64()),    # 2
                                    "email": [EMAIL, "user13@example.org"],
                                    "score": [42.0, 13.0]}), mode="append")
    write_deltalake(path, pa.table({"id": pa.array([42, 14, 15], pa.int64()),  # 3
                                    "email": [EMAIL, "user14@example.org", "user15@example.org"],
                                    "score": [4.2, 14.0, 15.0]}), mode="append")
    DeltaTable(path).update(updates={"score": "score + 1"}, predicate="id = 13")  # 4
    DeltaTable(path).delete("id = 12")                                      # 5: another person
    DeltaTable(path).optimize.compact()                                     # 6
    DeltaTable(path).create_checkpoint()
    write_deltalake(path, pa.table({"id": pa.array([16, 42], pa.int64()),    # 7
                                    "email": ["user16@example.org", EMAIL],
                                    "score": [16.0, 0.42]}), mode="append")
    write_deltalake(path, people([17]), mode="append")                       # 8


def rows_at(path: str, version: int) -> list[tuple]:
    t = DeltaTable(path, version=version).to_pyarrow_table()
    names = sorted(t.column_names)
    return sorted(tuple(repr(r[n]) for n in names) for r in t.to_pylist())


def versions_of(path: str) -> dict[int, list[tuple]]:
    return {v: rows_at(path, v) for v in range(DeltaTable(path).version() + 1)}


def without_subject(rows: list[tuple]) -> list[tuple]:
    # columns sorted: email, id, score
    return [r for r in rows if r[1] != repr(SUBJECT)]


def history_of(path: str) -> list[tuple]:
    return sorted((h["version"], h["timestamp"], h["operation"])
                  for h in DeltaTable(path).history())


def write_config(tmp: Path, table: str, column: str, mode: str = "rewrite-history") -> Path:
    ctl = tmp / "ctl"
    ctl.mkdir()
    cfg = ctl / "erasure.toml"
    cfg.write_text(f'[delta]\nresidue = "{mode}"\n'
                   f'[[roots]]\nnamespace = "file"\nname = {json.dumps(table)}\n'
                   f'column = {json.dumps(column)}\n')
    return cfg


def cli(cfg: Path, capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = run_cli(["--config", str(cfg), *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def ledger_steps(cfg: Path, rid: str, phase: str) -> list[dict]:
    from erasure.config import load_config
    from erasure.engine import Engine

    eng = Engine(load_config(cfg))
    try:
        return [e.body for e in eng.ledger.entries(rid)
                if e.kind == "step.completed" and e.body.get("phase") == phase]
    finally:
        eng.close()


def assert_no_subject_anywhere(path: str) -> None:
    assert files_holding(Path(path), [EMAIL.encode()], {"id": SUBJECT}) == []
    assert physical_traces(path, {"id": SUBJECT}, [EMAIL]) == []


# ---- (A) the whole story through the CLI ---------------------------------------------------

def test_rewrite_history_erases_every_version_and_keeps_everyone_elses(tmp_path, capsys):
    path = str(tmp_path / "people")
    build_table(path)
    before = versions_of(path)
    assert len(before) == 9
    assert all(any(r[1] == "42" for r in before[v]) for v in range(2, 9))
    history_before = history_of(path)
    cfg = write_config(tmp_path, path, "id")

    code, plan = cli(cfg, capsys, "plan", "--subject-id", "42")
    assert code == 0, plan
    [t] = plan["targets"]
    assert t["residue_after"]["mode"] == "rewrite-history", t["residue_after"]
    assert "time travel stay" in t["residue_after"]["note"]
    planned = t["details"]["rewrite_history_versions"]
    assert sorted(planned, key=int) == [str(v) for v in range(9)]
    assert all(planned[str(v)]["rows"] == len(without_subject(before[v])) for v in range(9))
    # connector facts only: counts and hashes, never a value of the subject
    assert all(set(d) == {"readable", "rows", "hash", "subject_rows"} for d in planned.values())
    assert EMAIL not in json.dumps(plan)

    code, sub = cli(cfg, capsys, "request", "submit", "--subject-id", "42")
    assert code == 0, sub
    rid = sub["request_id"]
    code, res = cli(cfg, capsys, "run", rid)
    assert code == 0, res
    [req] = res["requests"]
    assert req["status"] == "completed", req
    [target] = req["targets"]
    assert target["verified"] is True and target["not_verified"] == [], target

    # every retained version: exactly what it returned before, minus the subject
    latest = DeltaTable(path).version()
    assert latest == 9                         # the erase MERGE, and nothing else
    for v in range(9):
        assert rows_at(path, v) == without_subject(before[v]), v
    assert rows_at(path, 9) == without_subject(before[8])
    # nothing under the table holds the subject's key or e-mail
    assert_no_subject_anywhere(path)
    assert not Path(path, rewrite.JOURNAL_DIR).exists()
    # history: every version with its time and operation, plus the erase
    after = history_of(path)
    assert after[:9] == history_before
    assert after[9][2] == "MERGE"

    # the proof: per version, recorded in the purge step, equal to the dry run's numbers
    [purge] = ledger_steps(cfg, rid, "purge")
    assert purge["mode"] == "rewrite-history" and purge["files_rewritten"] >= 3, purge
    assert purge["time_travel_lost_before_version"] is None
    proof = purge["versions"]
    for v in range(9):
        e = proof[str(v)]
        assert e["same_other_rows"] is True and e["subject_rows_after"] == 0, (v, e)
        assert e["hash_other_before"] == planned[str(v)]["hash"], v
        assert e["rows_other_before"] == planned[str(v)]["rows"], v
    assert EMAIL not in json.dumps(purge)
    # and checked against the dry run before anything was rewritten: every version it saw
    assert purge["rewrite_history_plan_check"] == {"versions_compared": 9, "versions_gone": [],
                                                   "differ": []}, purge
    [verify] = ledger_steps(cfg, rid, "verify")
    assert verify["result"] == "ok" and verify["residue"] == [], verify

    # the table stays writable: an append and a checkpoint afterwards, then read back
    write_deltalake(path, people([18]), mode="append")
    DeltaTable(path).create_checkpoint()
    ids = sorted(DeltaTable(path).to_pyarrow_table().column("id").to_pylist())
    assert ids == sorted({*range(1, 19)} - {12}) and SUBJECT not in ids
    for v in range(9):
        assert rows_at(path, v) == without_subject(before[v]), v

    # a second run changes nothing
    log_before = {p.name: p.read_bytes() for p in Path(path, "_delta_log").iterdir()}
    code, again = cli(cfg, capsys, "run", rid)
    assert code == 0
    assert {p.name: p.read_bytes() for p in Path(path, "_delta_log").iterdir()} == log_before


def test_predicates_naming_the_subject_are_redacted_and_other_predicates_kept(tmp_path):
    """Another team's DELETE wrote the subject's id into commitInfo verbatim; the rewrite
    redacts that predicate and leaves every other commit's parameters as they were."""
    path = str(tmp_path / "people")
    build_table(path)
    DeltaTable(path).delete("id = 42 AND score > 100")       # deletes nothing: no commit
    write_deltalake(path, people([42], "x"), mode="append")
    DeltaTable(path).delete("id = 42")                        # names the subject
    before = versions_of(path)
    c = DeltaConnector(DeltaSettings(residue="rewrite-history"))
    c.erase(NS, path, "id", [SUBJECT], tag="t1")
    c.purge(NS, path, "id", [SUBJECT], tag="t1")
    infos = {}
    for p in sorted(Path(path, "_delta_log").glob("*.json")):
        for line in p.read_text().splitlines():
            a = json.loads(line)
            if "commitInfo" in a:
                infos[int(p.stem)] = a["commitInfo"]
    assert infos[10]["operationParameters"]["predicate"] == rewrite.REDACTED
    assert infos[5]["operationParameters"]["predicate"] == "id = 12"
    assert infos[4]["operationParameters"]["predicate"] == "id = 13"
    for v, rows in before.items():
        assert rows_at(path, v) == without_subject(rows), v
    assert_no_subject_anywhere(path)
    assert c.count(NS, path, "id", [SUBJECT]).residue == {SUBJECT: []}


# ---- (B) crash safety -------------------------------------------------------------------------

POINTS = ["rewrite:planned", "rewrite:files_written", "rewrite:tombstones", "rewrite:swapped",
          "rewrite:dropped", "rewrite:proved", "rewrite:old_deleted"]


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_between_phases_then_a_rerun_ends_in_the_same_state(tmp_path, point):
    path = str(tmp_path / "people")
    build_table(path)
    before = versions_of(path)

    def die(uri, *_):
        raise Crash(point)

    crashing = DeltaConnector(DeltaSettings(residue="rewrite-history"), hooks={point: die})
    crashing.erase(NS, path, "id", [SUBJECT], tag="t1")
    with pytest.raises(Crash):
        crashing.purge(NS, path, "id", [SUBJECT], tag="t1")
    # right after the crash every version still reads, with everyone else's rows intact
    # (the subject's rows may still be there in old versions until the rerun)
    for v, rows in before.items():
        assert without_subject(rows_at(path, v)) == without_subject(rows), (point, v)
    assert not [r for r in rows_at(path, 9) if r[1] == "42"]

    res = DeltaConnector(DeltaSettings(residue="rewrite-history")).purge(
        NS, path, "id", [SUBJECT], tag="t1")
    assert res.evidence()["resumed"] is True
    for v, rows in before.items():
        assert rows_at(path, v) == without_subject(rows), (point, v)
    assert rows_at(path, 9) == without_subject(before[8])
    assert_no_subject_anywhere(path)
    assert not Path(path, rewrite.JOURNAL_DIR).exists()
    assert DeltaConnector(DeltaSettings(residue="rewrite-history")).count(
        NS, path, "id", [SUBJECT]).residue == {SUBJECT: []}
    # the same final state as an uninterrupted run: the log names the same number of files
    # and every new file exists
    dt = DeltaTable(path)
    assert all(Path(u.removeprefix("file://")).exists() for u in dt.file_uris())


# ---- (C) refusals ----------------------------------------------------------------------------

def test_a_table_with_deletion_vectors_is_refused_and_left_as_keep_history(tmp_path, capsys):
    path = copy_table(tmp_path, "table_with_deletion_logs")
    subject = 57
    files_before = {str(p.relative_to(path)): p.read_bytes()
                    for p in Path(path).rglob("*") if p.is_file()}
    versions_before = {v: rows_at_dv(path, v) for v in range(DeltaTable(path).version() + 1)}
    cfg = write_config(tmp_path, path, "id")

    code, plan = cli(cfg, capsys, "plan", "--subject-id", str(subject))
    [t] = plan["targets"]
    assert t["residue_after"]["mode"] == "keep-history", t["residue_after"]
    assert "rewrite-history cannot be applied" in t["residue_after"]["note"]
    assert "deletionVectors" in t["residue_after"]["note"]
    assert any("rewrite-history cannot be applied" in n for n in t["not_verified"]), t
    # the dry run changed nothing
    assert {str(p.relative_to(path)): p.read_bytes()
            for p in Path(path).rglob("*") if p.is_file()} == files_before

    code, sub = cli(cfg, capsys, "request", "submit", "--subject-id", str(subject))
    code, res = cli(cfg, capsys, "run", sub["request_id"])
    assert code == 6, res
    [req] = res["requests"]
    assert req["status"] == "incomplete", req
    [target] = req["targets"]
    assert target["verified"] is False
    assert any("rewrite-history cannot be applied" in n for n in target["not_verified"])
    assert not ledger_steps(cfg, sub["request_id"], "purge")     # no purge step ran
    # nothing of the history was touched: every file is still there, byte for byte; only
    # the logical erase's commit and its new file were added (as keep-history does)
    now = {str(p.relative_to(path)): p.read_bytes() for p in Path(path).rglob("*") if p.is_file()}
    assert {k: now[k] for k in files_before} == files_before
    for v, rows in versions_before.items():
        assert rows_at_dv(path, v) == rows, v
    assert DeltaConnector().live_rows(NS, path, "id", [subject]) == {subject: 0}


def test_the_spark_written_column_mapped_table_is_rewritten_by_its_physical_names(tmp_path):
    """Column mapping (name mode, reader 2 / writer 5): the files hold physical column names
    ("col-3877fd94-..."), the log's stats too. The subject's row leaves version 0 as well as
    the latest; the other rows of every version stay; no file holds the subject's name; the
    table still takes a checkpoint. (deltalake's to_pyarrow_table reads this table's columns
    as nulls: versions are read through DataFusion, here and in the proof.)"""
    from test_real_delta_tables import physical_names

    path = copy_table(tmp_path, "table_with_column_mapping")
    col, subject = "Super Name", "Nathan Bennett"
    assert rewrite.unsupported(Path(path), col) == []
    before = rows_at_dv(path, 0)
    assert any(repr(subject) in r for r in before)
    c = DeltaConnector(DeltaSettings(residue="rewrite-history"))
    plan = c.count(NS, path, col, [subject])
    assert plan.rows == {subject: 1}
    c.erase(NS, path, col, [subject], "run-test")
    res = c.purge_planned(NS, path, col, [subject], "run-test", plan.details[subject])
    ev = res.evidence()
    assert ev["files_rewritten"] == 1 and ev["versions_checked"] == 2, ev
    assert ev["rewrite_history_plan_check"]["differ"] == []
    expected = [r for r in before if repr(subject) not in r]
    assert len(expected) == len(before) - 1
    assert rows_at_dv(path, 0) == expected
    assert rows_at_dv(path, DeltaTable(path).version()) == expected
    keys = {n: subject for n in physical_names(path, col)}
    assert physical_traces(path, keys, [subject]) == []
    DeltaTable(path).create_checkpoint()
    assert rows_at_dv(path, DeltaTable(path).version()) == expected


def rows_at_dv(path: str, version: int) -> list[tuple]:
    """Rows of a version through QueryBuilder (deletion vectors applied)."""
    from deltalake import QueryBuilder

    t = pa.table(QueryBuilder().register("t", DeltaTable(path, version=version))
                 .execute("SELECT * FROM t").read_all())
    names = sorted(t.column_names)
    return sorted(tuple(repr(r[n]) for n in names) for r in t.to_pylist())


@pytest.mark.parametrize("table,column,why", [
    ("table_with_deletion_logs", "id", "deletionVectors"),
    ("table_with_column_mapping", "Company Very Short", "partition column"),
    ("delta-0.8.0-partitioned", "year", "partition column"),
    ("table_with_liquid_clustering", "id", "rowTracking"),
])
def test_unsupported_tables_are_named_with_the_reason(tmp_path, table, column, why):
    path = copy_table(tmp_path, table)
    reasons = rewrite.unsupported(Path(path), column)
    assert any(why in r for r in reasons), reasons
    c = DeltaConnector(DeltaSettings(residue="rewrite-history"))
    with pytest.raises(Exception, match="rewrite-history cannot be applied"):
        c.purge(NS, path, column, ["x"], tag="t1")


def test_object_store_tables_are_refused():
    assert rewrite.unsupported(None)[0].startswith("the table is on an object store")


# ---- (D) change data feed ---------------------------------------------------------------------

def test_change_data_files_are_rewritten_too(tmp_path):
    path = str(tmp_path / "cdf")
    write_deltalake(path, people(list(range(1, 8)) + [42]),
                    configuration={"delta.enableChangeDataFeed": "true"})
    DeltaTable(path).update(updates={"score": "score + 1"}, predicate="id = 42 OR id = 3")
    DeltaTable(path).delete("id = 5")
    write_deltalake(path, people([9, 42], "b"), mode="append")
    assert list(Path(path, "_change_data").glob("*.parquet")), "precondition: change data"
    before = versions_of(path)
    assert physical_traces(path, {"id": SUBJECT}, [EMAIL])

    c = DeltaConnector(DeltaSettings(residue="rewrite-history"))
    c.erase(NS, path, "id", [SUBJECT], tag="t1")
    res = c.purge(NS, path, "id", [SUBJECT], tag="t1")
    for v, rows in before.items():
        assert rows_at(path, v) == without_subject(rows), v
    assert_no_subject_anywhere(path)
    assert all(e.get("same_other_rows") for v, e in res.evidence()["versions"].items()
               if int(v) < len(before))
    # the change feed still reads, without the subject
    changes = DeltaTable(path).load_cdf(starting_version=0).read_all()
    ids = changes.column("id").to_pylist()
    assert SUBJECT not in ids and 3 in ids and 5 in ids


# ---- (E) the proof fails closed; other writers lose nothing ------------------------------------

def test_a_rewrite_that_would_change_others_rows_is_rolled_back(tmp_path, monkeypatch):
    """A broken rewrite (it also drops another person's row) fails the proof: the original
    log files are restored, the new files deleted, and every version reads as before."""
    path = str(tmp_path / "people")
    build_table(path)
    c = DeltaConnector(DeltaSettings(residue="rewrite-history"))
    c.erase(NS, path, "id", [SUBJECT], tag="t1")
    before = versions_of(path)
    log_before = {p.name: p.read_bytes() for p in Path(path, "_delta_log").iterdir()
                  if p.is_file()}
    data_before = sorted(p.name for p in Path(path).glob("*.parquet"))
    real = rewrite.write_without

    def broken(old, new, names, values):
        real(old, new, names, [*values, 13])          # also drops user 13's rows

    monkeypatch.setattr(rewrite, "write_without", broken)
    with pytest.raises(Exception, match="proof failed.*restored"):
        c.purge(NS, path, "id", [SUBJECT], tag="t1")
    assert {p.name: p.read_bytes() for p in Path(path, "_delta_log").iterdir()
            if p.is_file()} == log_before
    assert sorted(p.name for p in Path(path).glob("*.parquet")) == data_before
    assert versions_of(path) == before
    assert not Path(path, rewrite.JOURNAL_DIR).exists()

    monkeypatch.setattr(rewrite, "write_without", real)
    c.purge(NS, path, "id", [SUBJECT], tag="t1")         # the next run finishes it
    for v, rows in before.items():
        assert rows_at(path, v) == without_subject(rows), v
    assert_no_subject_anywhere(path)


@pytest.mark.parametrize("point", ["rewrite:tombstones", "rewrite:swapped", "rewrite:proved"])
def test_an_append_during_the_rewrite_loses_nothing(tmp_path, point):
    path = str(tmp_path / "people")
    build_table(path)
    before = versions_of(path)
    fired = []

    def other_writer(uri, *_):
        if not fired:
            fired.append(uri)
            write_deltalake(uri, people([100, 101]), mode="append")

    c = DeltaConnector(DeltaSettings(residue="rewrite-history"), hooks={point: other_writer})
    c.erase(NS, path, "id", [SUBJECT], tag="t1")
    c.purge(NS, path, "id", [SUBJECT], tag="t1")
    assert fired
    for v, rows in before.items():
        assert rows_at(path, v) == without_subject(rows), v
    latest = DeltaTable(path).to_pyarrow_table().column("id").to_pylist()
    assert {100, 101} <= set(latest) and SUBJECT not in latest
    assert_no_subject_anywhere(path)


# ---- (F) a Spark-written table: partitions, change data feed ------------------------------------

def test_spark_written_partitioned_cdf_table(tmp_path):
    """cdf-table (Spark; partitioned by birthday; change data feed, writer version 4): the
    subject's rows leave the data files and the change-data files of every version."""
    path = copy_table(tmp_path, "cdf-table")
    subject, needle = 3, "Dave"
    before = versions_of(path)
    assert physical_traces(path, {"id": subject}, [needle]), "precondition: subject present"
    assert rewrite.unsupported(Path(path), "id") == []

    c = DeltaConnector(DeltaSettings(residue="rewrite-history"))
    c.erase(NS, path, "id", [subject], tag="t1")
    res = c.purge(NS, path, "id", [subject], tag="t1")
    ev = res.evidence()
    assert ev["files_rewritten"] >= 1 and ev["versions_checked"] == len(before) + 1
    for v, rows in before.items():
        t_rows = rows_at(path, v)
        # columns sorted: birthday, id, name
        assert t_rows == [r for r in rows if r[1] != repr(subject)], v
    assert physical_traces(path, {"id": subject}, [needle]) == []
    assert c.count(NS, path, "id", [subject]).residue == {subject: []}
    changes = DeltaTable(path).load_cdf(starting_version=0).read_all()
    assert subject not in changes.column("id").to_pylist()
    assert changes.num_rows > 0


@pytest.mark.parametrize("point", ["rewrite:tombstones", "rewrite:proved"])
def test_the_runner_resumes_a_rewrite_killed_mid_way(tmp_path, point):
    """The whole run: the process dies inside the rewrite; the request stays running, the
    next run finishes it, and the ledger records one completed purge step with the proof."""
    from connectors.base import ConnectorRegistry
    from erasure.config import load_config
    from erasure.engine import Engine
    from erasure.execution import Runner
    from erasure.requests import load_state, submit

    path = str(tmp_path / "people")
    build_table(path)
    before = versions_of(path)
    cfg = write_config(tmp_path, path, "id")
    conf = load_config(cfg)
    eng = Engine(conf)
    rid = submit(eng.ledger, eng.keys, "42", "test", None)
    eng.close()

    def die(uri, *_):
        raise Crash(point)

    crashing = Engine(conf, registry=ConnectorRegistry(
        [DeltaConnector(conf.section("delta"), hooks={point: die})]))
    with pytest.raises(Crash):
        Runner(crashing).run([rid])
    assert load_state(crashing.ledger, rid).status == "running"
    crashing.close()

    eng = Engine(conf, registry=ConnectorRegistry([DeltaConnector(conf.section("delta"))]))
    [out] = Runner(eng).run([rid])
    eng.close()
    assert out.status == "completed", (out.errors, out.notes)
    for v, rows in before.items():
        assert rows_at(path, v) == without_subject(rows), v
    assert_no_subject_anywhere(path)
    [purge] = ledger_steps(cfg, rid, "purge")
    assert purge["resumed"] is True
    assert all(purge["versions"][str(v)]["same_other_rows"] for v in range(9))


def test_history_changed_since_the_dry_run_stops_the_rewrite_before_anything_changes(
        tmp_path):
    """The dry run's per-version digests are the reference: an old data file changed after
    the plan (someone rewrote version 1's file in place) stops the rewrite with exit 5;
    no file and no log entry is touched."""
    from erasure.errors import ErasureFailed

    path = str(tmp_path / "people")
    build_table(path)
    c = DeltaConnector(DeltaSettings(residue="rewrite-history"))
    planned = rewrite.digests(Path(path), "id", [SUBJECT])
    c.erase("file", path, "id", [SUBJECT], "run-test")
    v0 = set(DeltaTable(path, version=0).file_uris())
    [f1] = [u for u in DeltaTable(path, version=1).file_uris() if u not in v0]
    f1 = f1[len("file://"):] if f1.startswith("file://") else f1
    # version 1 no longer adds its file: what a rewrite of the log after the plan (another
    # tool's "repair") would leave; versions 1 to 4 now read other rows than the plan saw
    commit = Path(path, "_delta_log", "00000000000000000001.json")
    name = Path(f1).name
    commit.write_text("".join(line + "\n" for line in commit.read_text().splitlines()
                              if not ('"add"' in line and name in line)))
    log_before = {p.name: p.read_bytes() for p in Path(path, "_delta_log").iterdir()
                  if p.is_file()}
    files_before = sorted(str(p) for p in Path(path).rglob("*.parquet"))
    with pytest.raises(ErasureFailed) as err:
        c.purge_planned("file", path, "id", [SUBJECT], "run-test",
                        {"rewrite_history_versions": planned, "rewrite_history_keys": "1"})
    assert "differ from what the dry run recorded" in str(err.value)
    assert "version(s) 1, 2, 3, 4 differ" in str(err.value), str(err.value)
    assert {p.name: p.read_bytes() for p in Path(path, "_delta_log").iterdir()
            if p.is_file()} == log_before
    assert sorted(str(p) for p in Path(path).rglob("*.parquet")) == files_before
    assert not Path(path, rewrite.JOURNAL_DIR).exists()
    # the same call with another key count (a smaller batch) is not compared with the plan
    res = c.purge_planned("file", path, "id", [SUBJECT], "run-test",
                          {"rewrite_history_versions": planned, "rewrite_history_keys": "2"})
    assert "rewrite_history_plan_check" not in res.evidence()


def test_the_proofs_digest_ignores_order_layout_and_physical_types_and_nothing_else():
    """`rewrite.table_digest`: the same rows in another order, chunking or physical type
    (int32 for int64, large_string for string: what another reader may give) digest the same;
    one value, one row, a null for a value, or a column's name changed digest otherwise."""
    import random

    rows = 5000
    t = pa.table({"id": pa.array(range(rows), pa.int64()),
                  "email": [f"user{i}@example.org" for i in range(rows)],
                  "score": pa.array([i / 7 for i in range(rows)]),
                  "tags": pa.array([[i, i + 1] for i in range(rows)]),
                  "blob": pa.array([bytes([i % 256]) for i in range(rows)])})
    d = rewrite.table_digest(t)
    order = list(range(rows))
    random.Random(3).shuffle(order)
    shuffled = t.take(order)
    assert rewrite.table_digest(shuffled) == d
    assert rewrite.table_digest(pa.concat_tables([shuffled.slice(0, 100),
                                                  shuffled.slice(100)])) == d
    wider = t.cast(pa.schema([("id", pa.int32()), ("email", pa.large_string()),
                              ("score", pa.float64()), ("tags", pa.list_(pa.int64())),
                              ("blob", pa.large_binary())]))
    assert rewrite.table_digest(wider) == d
    changed = t.set_column(1, "email", pa.array(
        [f"user{i}@example.org" if i != 17 else "user17@example.com" for i in range(rows)]))
    nulled = t.set_column(2, "score", pa.array([None if i == 5 else i / 7 for i in range(rows)]))
    renamed = t.rename_columns(["id", "mail", "score", "tags", "blob"])
    for other in (changed, nulled, renamed, t.slice(1), pa.concat_tables([t, t.slice(0, 1)])):
        assert rewrite.table_digest(other) != d
