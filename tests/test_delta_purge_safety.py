"""The Delta purge is safe to crash, safe next to other writers, and complete (issue 9).

(A) The purge changes no table setting: a crash anywhere leaves the configuration as it was.
(B) The purge deletes only files the log shows as removed or as change data, never a file
    the latest version references, and never a recent file no commit names (an in-flight
    write of another writer).
(C) A table reached through a symlinked folder is planned, erased and purged like any other.
(D) No regular expression is built from a subject id (a 1 MB id used to take minutes).
(E) Object-store tables: the count lists the prefix (tests/test_object_store.py has the
    rest); the purge cleans the log and change data through the storage API without
    touching settings.

Every table is a real Delta table in tmp_path (copied from tests/data or written here).
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import AddAction

from connectors.delta import DeltaConnector
from connectors.delta.logclean import ORPHAN_GRACE
from connectors.delta.residue import _Matcher, scan_table_folder
from connectors.delta.config import DeltaSettings

from conftest import files_holding
from test_real_delta_tables import copy_table, physical_traces, read_all

NS = "file"


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing handles it."""


def configuration(path: str, storage_options: dict | None = None) -> dict[str, str]:
    return dict(DeltaTable(path, storage_options=storage_options).metadata().configuration)


def own_table(path: str, config: dict[str, str] | None = None, cdf: bool = False) -> None:
    """ids 1..40 with e-mails; the subject 42 has three rows spread over two commits."""
    conf = dict(config or {})
    if cdf:
        conf["delta.enableChangeDataFeed"] = "true"
    ids = list(range(1, 41)) + [42, 42]
    write_deltalake(path, pa.table({"id": pa.array(ids, pa.int64()),
                                    "email": [f"user{i}@example.org" for i in ids]}),
                    configuration=conf or None)
    write_deltalake(path, pa.table({"id": pa.array([42, 7], pa.int64()),
                                    "email": ["user42@example.org", "user7b@example.org"]}),
                    mode="append")


def rows_of_others(path: str, column: str, value) -> list[tuple]:
    t = read_all(path)
    names = sorted(t.column_names)
    return sorted(tuple(repr(r[n]) for n in names) for r in t.to_pylist() if r[column] != value)


def assert_clean(c: DeltaConnector, path: str, column: str, value) -> None:
    counted = c.count(NS, path, column, [value])
    assert counted.rows == {value: 0}
    assert counted.files[value] == [] and counted.residue[value] == [], counted


# ---- (A) no setting is changed, even across a crash -------------------------------------

@pytest.mark.parametrize("kind", ["own-table-with-custom-retention", "cdf-table",
                                  "deletion-vectors", "partition-key"])
def test_purge_is_complete_and_leaves_the_configuration_byte_for_byte(tmp_path, kind):
    c = DeltaConnector(DeltaSettings(residue="purge"))
    if kind == "own-table-with-custom-retention":
        path = str(tmp_path / "own")
        own_table(path, {"delta.logRetentionDuration": "interval 45 days",
                         "delta.deletedFileRetentionDuration": "interval 3 days",
                         "delta.checkpointInterval": "7"})
        column, subject, needles = "id", 42, ["user42@example.org"]
    elif kind == "cdf-table":            # only delta.enableChangeDataFeed is set
        path = copy_table(tmp_path, "cdf-table")
        column, subject, needles = "id", 3, ["Dave"]
    elif kind == "deletion-vectors":     # Spark table, no retention keys at all
        path = copy_table(tmp_path, "table_with_deletion_logs")
        column, subject, needles = "id", 11, []
    else:
        path = copy_table(tmp_path, "delta-0.8.0-partitioned")
        column, subject, needles = "year", "2020", []
    conf_before = configuration(path)
    others = rows_of_others(path, column, subject)
    assert physical_traces(path, {column: subject}, needles), "precondition: subject present"

    c.erase(NS, path, column, [subject], tag="t1")
    res = c.purge(NS, path, column, [subject], tag="t1")

    after = configuration(path)
    assert after == conf_before, (conf_before, after)       # absent keys stay absent
    assert json.dumps(after, sort_keys=True) == json.dumps(conf_before, sort_keys=True)
    assert rows_of_others(path, column, subject) == others  # the latest version reads
    assert physical_traces(path, {column: subject}, needles) == []
    assert files_holding(Path(path), [n.encode() for n in needles], {column: subject}) == []
    assert_clean(c, path, column, subject)
    assert res.log_files_removed, "older commits were removed by the purge itself"
    names = os.listdir(Path(path, "_delta_log"))
    v = DeltaTable(path).version()
    assert not [n for n in names if n[:20].isdigit() and int(n[:20]) < res.version_after
                and n != "_last_checkpoint"], names
    assert v == res.version_after


@pytest.mark.parametrize("point", ["before_checkpoint", "after_checkpoint"])
def test_crash_around_the_checkpoint_then_resume_keeps_the_configuration(tmp_path, point):
    path = str(tmp_path / "own")
    own_table(path, {"delta.logRetentionDuration": "interval 45 days"}, cdf=True)
    conf_before = configuration(path)
    others = rows_of_others(path, "id", 42)

    def die(uri, *_):
        raise Crash(point)

    crashing = DeltaConnector(DeltaSettings(residue="purge"), hooks={point: die})
    crashing.erase(NS, path, "id", [42], tag="t1")
    with pytest.raises(Crash):
        crashing.purge(NS, path, "id", [42], tag="t1")
    assert configuration(path) == conf_before, "the crash left changed settings behind"
    assert rows_of_others(path, "id", 42) == others        # the table reads after the crash

    c = DeltaConnector(DeltaSettings(residue="purge"))
    c.purge(NS, path, "id", [42], tag="t1")                  # the resumed purge
    assert configuration(path) == conf_before
    assert rows_of_others(path, "id", 42) == others
    assert_clean(c, path, "id", 42)
    assert physical_traces(path, {"id": 42}, ["user42@example.org"]) == []


def test_runner_resumes_a_purge_that_crashed_before_the_checkpoint(lake):
    """The whole run: the process dies inside the purge of the first table; the next run
    finishes the request and every table keeps its configuration."""
    from erasure.execution import Runner
    from erasure.requests import load_state

    from test_failures_and_resume import engine_with, submit_for

    confs = {n: configuration(p) for n, p in lake.delta_tables.items()}

    def die(uri, *_):
        raise Crash("before_checkpoint")

    rid = submit_for(lake, "42")
    crashing = engine_with(lake, DeltaConnector, hooks={"before_checkpoint": die})
    with pytest.raises(Crash):
        Runner(crashing).run([rid])
    assert load_state(crashing.ledger, rid).status == "running"
    crashing.close()
    assert {n: configuration(p) for n, p in lake.delta_tables.items()} == confs

    eng = engine_with(lake, DeltaConnector)
    [out] = Runner(eng).run([rid])
    assert out.status == "completed", out.errors
    assert {n: configuration(p) for n, p in lake.delta_tables.items()} == confs
    assert files_holding(lake.root / "tables", [b"user42@example.com"],
                         {"user_id": 42, "reviewer_id": 42, "entity_id": 42}) == []


# ---- (B) other writers' files survive the purge -------------------------------------------

def _concurrent_rows() -> pa.Table:
    """A re-ingest of the subject together with other subjects' new rows."""
    return pa.table({"id": pa.array([42, 1001, 1002], pa.int64()),
                     "email": ["user42@example.org", "new1001@example.org", "new1002@example.org"]})


def test_commit_landing_while_the_purge_walks_the_folder_is_not_deleted(tmp_path):
    path = str(tmp_path / "own")
    own_table(path)
    fired = []

    def other_writer(uri, *_):
        if not fired:
            fired.append(uri)
            write_deltalake(uri, _concurrent_rows(), mode="append")

    c = DeltaConnector(DeltaSettings(residue="purge"), hooks={"leftover_scan": other_writer})
    c.erase(NS, path, "id", [42], tag="t1")
    c.purge(NS, path, "id", [42], tag="t1")
    assert fired
    ids = read_all(path).column("id").to_pylist()       # readable: no live file was deleted
    assert sorted(i for i in ids if i > 1000) == [1001, 1002]
    assert ids.count(42) == 1                            # the re-ingested row is intact
    assert DeltaConnector().count(NS, path, "id", [42]).rows == {42: 1}


def test_in_flight_file_committed_right_before_the_leftover_delete_is_kept(tmp_path):
    """A two-phase writer (write files, then commit, as Spark does) has its data file on disk
    during the whole purge and commits it exactly when the purge is about to delete."""
    path = str(tmp_path / "own")
    own_table(path)
    name = "part-99999-inflight-writer.snappy.parquet"
    data = _concurrent_rows()
    pq.write_table(data, Path(path, name))
    size = Path(path, name).stat().st_size
    fired = []

    def commit_now(uri, *_):
        if not fired:
            fired.append(uri)
            dt = DeltaTable(uri)
            dt.create_write_transaction(
                [AddAction(name, size, {}, int(time.time() * 1000), True,
                           json.dumps({"numRecords": 3}))],
                mode="append", schema=dt.schema())

    c = DeltaConnector(DeltaSettings(residue="purge"), hooks={"before_leftover_delete": commit_now})
    c.erase(NS, path, "id", [42], tag="t1")
    c.purge(NS, path, "id", [42], tag="t1")
    assert fired
    assert Path(path, name).is_file()
    ids = read_all(path).column("id").to_pylist()       # raised FileNotFoundError before
    assert sorted(i for i in ids if i > 1000) == [1001, 1002] and ids.count(42) == 1


def test_orphan_file_with_the_key_goes_only_after_the_grace_period(tmp_path):
    path = str(tmp_path / "own")
    own_table(path)
    old, new = Path(path, "part-old-orphan.parquet"), Path(path, "part-new-orphan.parquet")
    pq.write_table(_concurrent_rows(), old)
    pq.write_table(_concurrent_rows(), new)
    stale = time.time() - ORPHAN_GRACE.total_seconds() - 60
    os.utime(old, (stale, stale))

    c = DeltaConnector(DeltaSettings(residue="purge"))
    c.erase(NS, path, "id", [42], tag="t1")
    res = c.purge(NS, path, "id", [42], tag="t1")
    assert not old.exists(), "an orphan older than the grace period is deleted"
    assert "part-old-orphan.parquet" in res.files_vacuumed
    assert new.exists(), "a recent orphan may be another writer's in-flight file"
    assert any("grace" in n for n in res.notes), res.notes
    assert not any("42" in n for n in res.notes)
    counted = c.count(NS, path, "id", [42])
    assert counted.rows == {42: 0}
    assert counted.residue[42] == ["part-new-orphan.parquet (data file)"]   # reported


def test_orphan_grace_setting_lets_the_operator_shorten_the_wait(tmp_path):
    """`[delta] orphan_grace = "0s"` (no other writer, e.g. after a run of ours was killed
    mid-MERGE): a just-written orphan holding the key goes; a committed row of another id
    and an orphan without the key stay."""
    path = str(tmp_path / "own")
    own_table(path)
    holder, other = Path(path, "part-young-holder.parquet"), Path(path, "part-young-other.parquet")
    pq.write_table(_concurrent_rows(), holder)
    pq.write_table(pa.table({"id": pa.array([7], pa.int64()),
                             "email": ["user7@example.org"]}), other)
    others = rows_of_others(path, "id", 42)

    c = DeltaConnector(DeltaSettings(residue="purge", orphan_grace="0s"))
    c.erase(NS, path, "id", [42], tag="t1")
    res = c.purge(NS, path, "id", [42], tag="t1")
    assert not holder.exists() and "part-young-holder.parquet" in res.files_vacuumed
    assert other.exists(), "an orphan that holds no key of the subject is not ours to delete"
    assert not any("grace" in n for n in res.notes), res.notes
    assert_clean(c, path, "id", 42)
    assert rows_of_others(path, "id", 42) == others


# ---- (C) a table reached through a symlink -------------------------------------------------

def test_table_through_a_symlinked_folder_plans_erases_and_purges(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    own_table(str(real / "table"))
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    path = str(tmp_path / "link" / "table")
    others = rows_of_others(path, "id", 42)

    c = DeltaConnector(DeltaSettings(residue="purge"))
    plan = c.count(NS, path, "id", [42, 7])
    assert plan.rows == {42: 3, 7: 2}
    assert len(plan.files[42]) == 2, plan              # both live files, by relative path
    assert not [r for r in plan.residue[42] if "data file" in r], plan   # not "old" files
    erased = c.erase(NS, path, "id", [42], tag="t1")
    assert erased.rows_deleted == 3
    c.purge(NS, path, "id", [42], tag="t1")
    assert_clean(c, path, "id", 42)
    assert rows_of_others(path, "id", 42) == others
    assert physical_traces(str(real / "table"), {"id": 42}, ["user42@example.org"]) == []


# ---- (D) no regular expression from a subject id ------------------------------------------

def test_matcher_semantics_without_regexes_built_from_ids():
    for keys in (["42", "o'neil", "alice smith", "x' OR '1'='1", "b\\"],
                 ["42", "o'neil", "alice smith", "x' OR '1'='1", "b\\"]
                 + [f"filler{i}" for i in range(300)]):      # the many-keys path too
        m = _Matcher(keys, {"k"})
        assert m.in_text("k = '42'") == ["42"]
        assert m.in_text("(k#1 = 42)") == ["42"]
        assert m.in_text("k = 420 OR k = '4200' OR k = 'x42'") == []
        assert m.in_text("k = 'o''neil'") == ["o'neil"]
        assert m.in_text("k IN ('alice smith', 'bob')") == ["alice smith"]
        assert m.in_text("k = alice smithy") == []
        assert m.in_text("k = 'x'' OR ''1''=''1'") == ["x' OR '1'='1"]
        assert m.in_text("k = 'b\\'") == ["b\\"]
    ints = _Matcher([42], {"k"})
    assert ints.in_text("k = 42") == [42] and ints.in_text("k = 420") == []


def test_a_one_megabyte_id_is_scanned_in_seconds(tmp_path):
    big = "z" * 1_000_000
    path = str(tmp_path / "big")
    write_deltalake(path, pa.table({"k": ["a", "b", "c"], "n": [1, 2, 3]}))
    DeltaTable(path).delete("k = 'b'")                  # a predicate in the log
    t0 = time.monotonic()
    counted = DeltaConnector().count(NS, path, "k", [big, "b"])
    sc = scan_table_folder(Path(path), set(), {"k"}, [big])
    elapsed = time.monotonic() - t0
    assert counted.rows == {big: 0, "b": 0}
    assert counted.residue[big] == []
    assert any("log entry" in r for r in counted.residue["b"]), counted.residue
    assert sc.residue(big) == {}
    m = _Matcher([big], {"k"})
    assert m.in_text(f"k = '{big}'") == [big] and m.in_text(f"k = '{big}z'") == []
    assert time.monotonic() - t0 < 20, f"took {time.monotonic() - t0:.1f} s (quadratic?)"
    print(f"1 MB id: count+scan {elapsed:.2f} s")


# ---- (E) object stores ---------------------------------------------------------------------

@pytest.fixture
def s3(s3_server):
    return s3_server.options, s3_server.client, s3_server.bucket


def _objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def _holds(key: str, body: bytes, subject: int, email: str) -> bool:
    if email.encode() in body:
        return True
    if key.endswith(".parquet"):
        t = pq.read_table(io.BytesIO(body))
        if "id" in t.column_names and subject in t.column("id").to_pylist():
            return True
        return any(email in str(r) or f'"id":{subject}' in str(r).replace(" ", "")
                   or f"'id', '{subject}'" in str(r) for r in t.to_pylist())
    text = body.decode("utf-8", "replace")
    return f'"id":{subject}' in text.replace(" ", "") or f"id = {subject}" in text


def own_table_s3(uri: str, opts: dict) -> None:
    """Others in one file, the subject's rows in a file of their own (a second commit)."""
    write_deltalake(uri, pa.table({"id": pa.array(range(1, 41), pa.int64()),
                                   "email": [f"user{i}@example.org" for i in range(1, 41)]}),
                    storage_options=opts,
                    configuration={"delta.enableChangeDataFeed": "true",
                                   "delta.logRetentionDuration": "interval 45 days"})
    write_deltalake(uri, pa.table({"id": pa.array([42, 42], pa.int64()),
                                   "email": ["user42@example.org", "user42@example.org"]}),
                    mode="append", storage_options=opts)


def test_object_store_count_lists_the_prefix_and_says_what_it_could_not_look_at(s3):
    """The count lists and reads every object under the table's prefix (issue 13): the
    subject's live file and the commit whose statistics name it are found, and nothing is
    "not verified" on a plain bucket the engine may read in full."""
    opts, _, bucket = s3
    own_table_s3(f"s3://{bucket}/crm/contacts", opts)
    c = DeltaConnector(DeltaSettings(storage_options=opts))
    counted = c.count(f"s3://{bucket}", "crm/contacts", "id", [42])
    assert counted.rows == {42: 2} and len(counted.files[42]) == 1
    assert counted.residue == {42: ["_delta_log/00000000000000000001.json (log entry)"]}
    assert counted.not_verified == []


def test_object_store_purge_cleans_log_and_change_data_without_settings(s3):
    opts, client, bucket = s3
    uri, prefix = f"s3://{bucket}/crm/contacts", "crm/contacts"
    own_table_s3(uri, opts)
    conf_before = configuration(uri, opts)
    c = DeltaConnector(DeltaSettings(residue="purge", storage_options=opts))
    assert c.erase(f"s3://{bucket}", "crm/contacts", "id", [42], tag="t1").rows_deleted == 2
    before = _objects(client, bucket, prefix + "/")
    cdc = [k for k, b in before.items() if k.startswith(f"{prefix}/_change_data/")
           and _holds(k, b, 42, "user42@example.org")]
    assert cdc, "precondition: the delete wrote change data with the subject's rows"
    assert [k for k, b in before.items() if "/_delta_log/" in k
            and _holds(k, b, 42, "user42@example.org")], "precondition: the log names 42"
    res = c.purge(f"s3://{bucket}", "crm/contacts", "id", [42], tag="t1")
    after = _objects(client, bucket, prefix + "/")
    holding = sorted(k for k, b in after.items() if _holds(k, b, 42, "user42@example.org"))
    assert holding == [], holding
    assert not [k for k in after if k in cdc]
    assert configuration(uri, opts) == conf_before
    assert res.log_files_removed
    logs = sorted(k.rsplit("/", 1)[-1] for k in after if "/_delta_log/" in k)
    assert logs == [f"{res.version_after:020d}.checkpoint.parquet",
                    f"{res.version_after:020d}.json", "_last_checkpoint"], logs
    ids = DeltaTable(uri, storage_options=opts).to_pyarrow_table().column("id").to_pylist()
    assert sorted(ids) == list(range(1, 41))            # the latest version reads


def test_scan_memo_rereads_every_file_that_changed_or_is_new(tmp_path):
    """A later scan for the same keys skips only files with the same path, size and
    modification time as when an earlier scan read them; a file replaced in place (even
    by one of the same size) and a new file are read."""
    from connectors.delta.residue import ScanMemo

    path = tmp_path / "own"
    own_table(str(path))
    write_deltalake(str(path), pa.table({"id": pa.array([100, 101], pa.int64()),
                                         "email": ["a@example.org", "b@example.org"]}),
                    mode="append")
    c = DeltaConnector(DeltaSettings(residue="purge"))
    live = c._live_files(c.open(NS, str(path)), path)
    memo = ScanMemo()
    first = scan_table_folder(path, live, {"id"}, [42], memo)
    assert first.live.get(42) and first.files_unchanged == 0
    again = scan_table_folder(path, live, {"id"}, [42], memo)
    assert again.files_unchanged == len(live) and again.live == first.live
    # a data file of other ids overwritten in place by one holding the subject, its
    # modification time set back to 1 ns after the old one: it is read again
    clean = sorted(f for f in live if f not in first.live[42])
    assert clean, first.live
    victim = path / clean[0]
    before = victim.stat()
    holder = [f for f in live if f in first.live[42]][0]
    victim.write_bytes((path / holder).read_bytes())
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    pq.write_table(_concurrent_rows(), path / "part-new.parquet")
    third = scan_table_folder(path, live | {"part-new.parquet"}, {"id"}, [42], memo)
    assert clean[0] in third.live[42] and "part-new.parquet" in third.live[42]
    assert third.files_unchanged == len(live) - 1
    # other keys share nothing with the memo of these
    other = scan_table_folder(path, live, {"id"}, [7], memo)
    assert other.files_unchanged == 0 and other.live.get(7)
