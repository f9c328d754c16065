"""Erasure against Delta tables that real producers wrote (Spark, Databricks, delta-rs).

The tables are the delta-rs repository's test tables (copied read-only into
tests/data/delta-rs-tables). Every test copies its table into tmp_path first and
then tells one user's story: plan (count), erase, purge, and an independent physical check
of every file under the table folder, written here without the connector's own scanner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, QueryBuilder, write_deltalake

from connectors.delta import DeltaConnector
from connectors.delta.config import DeltaSettings

from conftest import TESTDATA as _DATA

TESTDATA = _DATA / "delta-rs-tables"
NS = "file"


# ---- helpers shared by the tests of this file ---------------------------------------------

def copy_table(tmp_path: Path, name: str) -> str:
    """Copy a read-only test table into tmp_path and make the copy writable."""
    dst = tmp_path / name
    shutil.copytree(TESTDATA / name, dst)
    for dirpath, _dirnames, filenames in os.walk(dst):
        os.chmod(dirpath, 0o755)
        for fn in filenames:
            os.chmod(os.path.join(dirpath, fn), 0o644)
    return str(dst)


def read_all(path: str, sql: str = "SELECT * FROM t") -> pa.Table:
    """What a reader sees (deletion vectors and column mapping applied)."""
    return pa.table(QueryBuilder().register("t", DeltaTable(path)).execute(sql).read_all())


def column_values(path: str, column: str) -> list:
    q = '"' + column.replace('"', '""') + '"'
    return sorted(read_all(path, f"SELECT {q} FROM t").column(0).to_pylist(),
                  key=lambda x: (x is None, x))


def sorted_rows(path: str) -> list[tuple]:
    t = read_all(path)
    names = sorted(t.column_names)
    return sorted(tuple(repr(r[n]) for n in names) for r in t.to_pylist())


def physical_names(path: str, column: str) -> set[str]:
    """The logical name and, under column mapping, the physical name of a column."""
    for f in pa.schema(DeltaTable(path).schema().to_arrow()):
        if f.name == column:
            meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
            return {column, meta.get("delta.columnMapping.physicalName", column)}
    raise KeyError(column)


def _leaves(obj: Any, key: str | None = None) -> Iterator[tuple[str | None, Any]]:
    """(nearest dict key, leaf value) of a nested value; JSON held in strings is opened."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, str(k))
    elif isinstance(obj, (list, tuple)):
        if obj and all(isinstance(e, (list, tuple)) and len(e) == 2 for e in obj):
            for k, v in obj:                      # a Parquet map read as (key, value) pairs
                yield from _leaves(v, str(k))
        else:
            for v in obj:
                yield from _leaves(v, key)
    else:
        yield key, obj
        if isinstance(obj, str) and obj[:1] in "{[":
            try:
                inner = json.loads(obj)
            except ValueError:
                return
            yield from _leaves(inner, key)


def _is_key_hit(cell: Any, value: Any) -> bool:
    return not isinstance(cell, bool) and type(cell) is type(value) and cell == value


def physical_traces(root: str, key_columns: dict[str, Any], needles: list[str]) -> list[str]:
    """Our own walk over every file and folder under `root`.

    Parquet files are decoded (every column, nested values too): a cell of a key column equal
    to the subject's key, or any string cell containing a needle, is a trace. JSON files of
    the log (commits, .crc, _last_checkpoint) are decoded the same way. Any other file is
    searched as bytes for the needles. A folder named `<key column>=<value>` is a trace.
    """
    bad: list[str] = []
    rootp = Path(root)
    for p in sorted(rootp.rglob("*")):
        rel = p.relative_to(rootp).as_posix()
        if p.is_dir():
            for col, v in key_columns.items():
                if p.name == f"{col}={v}":
                    bad.append(f"{rel}/ (folder named by the key; holds "
                               f"{sorted(x.name for x in p.rglob('*'))})")
            continue
        records: list[Any] | None = None
        if p.suffix == ".parquet":
            records = pq.read_table(p).to_pylist()
        elif "_delta_log" in p.parts and not p.name.startswith("."):
            records = []
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    records.append(line)
        if records is not None:
            for k, cell in _leaves(records):
                if k in key_columns and _is_key_hit(cell, key_columns[k]):
                    bad.append(f"{rel} ({k} = {cell!r})")
                if isinstance(cell, str) and any(n in cell for n in needles):
                    bad.append(f"{rel} (string {cell[:80]!r})")
        data = p.read_bytes()
        for n in needles:
            if n.encode("utf-8") in data:
                bad.append(f"{rel} (bytes contain {n!r})")
    return sorted(set(bad))


@pytest.fixture
def purge_connector() -> DeltaConnector:
    return DeltaConnector(DeltaSettings(residue="purge"))


def erase_and_purge(c: DeltaConnector, path: str, column: str, values: list, tag: str = "t1"):
    erased = c.erase(NS, path, column, values, tag=tag)
    purged = c.purge(NS, path, column, values, tag=tag)
    return erased, purged


def assert_scan_clean(c: DeltaConnector, path: str, column: str, value: Any) -> None:
    sc = c.scan(NS, path, column, [value])
    assert not sc.live.get(value), f"live files still hold {value!r}: {sc.live}"
    assert sc.residue(value) == {}, f"traces of {value!r} remain: {sc.residue(value)}"


# ---- 1. deletion vectors: a live subject ----------------------------------------------------

def test_deletion_vector_table_erasing_a_live_id_leaves_no_trace(tmp_path, purge_connector):
    c = purge_connector
    path = copy_table(tmp_path, "table_with_deletion_logs")
    assert c.key_type(NS, path, "id") == "int64"
    before = column_values(path, "id")
    subject = 11
    row = [r for r in read_all(path).to_pylist() if r["id"] == subject]
    assert len(row) == 1
    needles = [row[0]["name"], row[0]["phone_number"]]
    others = [r for r in read_all(path).to_pylist() if r["id"] != subject]
    assert not any(n in (r["name"], r["phone_number"]) for r in others for n in needles)

    assert physical_traces(path, {"id": subject}, needles), "the checker sees the subject"
    plan = c.count(NS, path, "id", [subject])
    assert plan.rows == {subject: 1}
    assert plan.files[subject], "the plan names the live file that holds the subject"

    erased, _ = erase_and_purge(c, path, "id", [subject])
    assert erased.rows_deleted == 1

    assert c.count(NS, path, "id", [subject]).rows == {subject: 0}
    assert_scan_clean(c, path, "id", subject)
    after = column_values(path, "id")
    assert after == [i for i in before if i != subject]
    assert read_all(path).num_rows == len(before) - 1          # the table still reads
    assert physical_traces(path, {"id": subject}, needles) == []


# ---- 2. deletion vectors: a subject already soft-deleted ------------------------------------

def test_deletion_vector_soft_deleted_subject_is_physically_removed(tmp_path, purge_connector):
    c = purge_connector
    path = copy_table(tmp_path, "table_with_deletion_logs")
    subject = 12
    before = column_values(path, "id")
    assert subject not in before, "id 12 is deleted logically (under a deletion vector)"

    plan = c.count(NS, path, "id", [subject])
    assert plan.rows == {subject: 0}
    assert plan.files[subject], "the plan must show the live file still holding it physically"
    holder = Path(path) / plan.files[subject][0]
    raw = pq.read_table(holder).to_pylist()
    assert any(r["id"] == subject for r in raw)
    name = next(r["name"] for r in raw if r["id"] == subject)
    assert physical_traces(path, {"id": subject}, [name]), "the checker sees the subject"

    erased, purged = erase_and_purge(c, path, "id", [subject])
    assert erased.rows_deleted == 0
    assert purged.dv_files_rewritten >= 1
    assert not holder.exists(), "the file holding the soft-deleted row was rewritten and vacuumed"

    assert_scan_clean(c, path, "id", subject)
    assert column_values(path, "id") == before                  # every live id intact
    assert physical_traces(path, {"id": subject}, [name]) == []


def test_deletion_vector_subject_that_is_a_file_stats_bound_leaves_no_trace(tmp_path,
                                                                            purge_connector):
    """id 10 is the smallest id: Spark's per-version checksum files (_delta_log/N.crc,
    `allFiles` with per-file stats) name it as minValues."""
    c = purge_connector
    path = copy_table(tmp_path, "table_with_deletion_logs")
    subject = 10
    before = column_values(path, "id")
    erased, _ = erase_and_purge(c, path, "id", [subject])
    assert erased.rows_deleted == 1
    assert column_values(path, "id") == [i for i in before if i != subject]
    assert_scan_clean(c, path, "id", subject)
    assert physical_traces(path, {"id": subject}, ["Holly Wade"]) == []


# ---- 3. change data feed ---------------------------------------------------------------------

@pytest.mark.parametrize("subject,name", [(3, "Dave"), (7, "Dennis")],
                         ids=["live-subject", "subject-deleted-earlier-by-spark"])
def test_change_data_feed_keeps_no_copy_of_the_subject(tmp_path, purge_connector, subject, name):
    c = purge_connector
    path = copy_table(tmp_path, "cdf-table")
    assert c.key_type(NS, path, "id") == "int32"
    assert c.key_type(NS, path, "name") == "string"
    before = read_all(path).to_pylist()
    live_before = sum(1 for r in before if r["id"] == subject)

    plan = c.count(NS, path, "id", [subject])
    assert plan.rows == {subject: live_before}
    assert any("_change_data/" in r for r in plan.residue[subject]), plan.residue
    assert any("_change_data/" in t for t in physical_traces(path, {"id": subject}, [name]))

    erased, _ = erase_and_purge(c, path, "id", [subject])
    assert erased.rows_deleted == live_before

    assert c.count(NS, path, "id", [subject]).rows == {subject: 0}
    assert c.count(NS, path, "name", [name]).rows == {name: 0}
    assert_scan_clean(c, path, "id", subject)
    assert_scan_clean(c, path, "name", name)
    after = read_all(path).to_pylist()
    key = lambda r: (r["id"], r["name"], str(r["birthday"]))  # noqa: E731
    assert sorted(map(key, after)) == sorted(key(r) for r in before if r["id"] != subject)
    cdc = Path(path, "_change_data")
    assert not cdc.exists() or not any(
        name.encode() in f.read_bytes() for f in cdc.rglob("*") if f.is_file())
    assert physical_traces(path, {"id": subject}, [name]) == []


def test_change_data_feed_with_deletion_vectors_table_still_reads_after_purge(tmp_path,
                                                                             purge_connector):
    """Spark table with both change data and deletion vectors: the purge has to remove the
    change data (full vacuum) without deleting deletion-vector files live files still use."""
    c = purge_connector
    path = copy_table(tmp_path, "cdf-table-with-cdc-and-dvs")
    subject = 1
    before = read_all(path).to_pylist()
    assert sum(1 for r in before if r["id"] == subject) == 1
    live_dvs = {a["deletionVector"]["pathOrInlineDv"] for a in _add_actions(path)
                if a.get("deletionVector")}
    assert live_dvs, "precondition: live files of the current snapshot use deletion vectors"

    erased, _ = erase_and_purge(c, path, "id", [subject])
    assert erased.rows_deleted == 1
    after = read_all(path).to_pylist()                # raises if a live DV file is gone
    assert sorted((r["id"], r["comment"]) for r in after) == sorted(
        (r["id"], r["comment"]) for r in before if r["id"] != subject)
    assert c.count(NS, path, "id", [subject]).rows == {subject: 0}
    assert_scan_clean(c, path, "id", subject)


def _add_actions(path: str) -> list[dict]:
    """Add actions of the current snapshot, replayed from the JSON commits of the log."""
    live: dict[str, dict] = {}
    for f in sorted(Path(path, "_delta_log").glob("*.json")):
        for line in f.read_text().splitlines():
            a = json.loads(line) if line.strip() else {}
            if "add" in a:
                live[a["add"]["path"]] = a["add"]
            elif "remove" in a:
                live.pop(a["remove"]["path"], None)
    return list(live.values())


# ---- 4. the key is the partition column ----------------------------------------------------

@pytest.mark.parametrize("table,key,value,key_type", [
    ("delta-2.2.0-partitioned-types", "c1", 5, "int32"),
    ("delta-0.8.0-partitioned", "year", "2020", "string"),
])
def test_erasing_a_partition_value_removes_its_folder(tmp_path, purge_connector, table, key,
                                                      value, key_type):
    c = purge_connector
    path = copy_table(tmp_path, table)
    assert c.key_type(NS, path, key) == key_type
    before = read_all(path).to_pylist()
    n = sum(1 for r in before if r[key] == value)
    assert n >= 1 and Path(path, f"{key}={value}").is_dir()
    assert physical_traces(path, {key: value}, []), "the checker sees the partition folder"

    plan = c.count(NS, path, key, [value])
    assert plan.rows == {value: n}
    assert plan.files[value]

    erased, _ = erase_and_purge(c, path, key, [value])
    assert erased.rows_deleted == n

    assert c.count(NS, path, key, [value]).rows == {value: 0}
    after = read_all(path).to_pylist()
    norm = lambda rows: sorted(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows)  # noqa: E731
    assert norm(after) == norm(r for r in before if r[key] != value)   # other partitions intact
    assert_scan_clean(c, path, key, value)
    leftover = [p.relative_to(path).as_posix() for p in Path(path).rglob(f"{key}={value}")]
    assert leftover == [], (
        f"folders named by the erased key remain: "
        f"{ {d: sorted(x.name for x in Path(path, d).rglob('*')) for d in leftover} }")
    assert physical_traces(path, {key: value}, []) == []


# ---- 5. column mapping ---------------------------------------------------------------------

def test_column_mapping_erase_by_a_column_name_with_spaces(tmp_path, purge_connector):
    c = purge_connector
    path = copy_table(tmp_path, "table_with_column_mapping")
    col = "Super Name"
    assert c.key_type(NS, path, col) == "string"
    subject = "Nathan Bennett"
    before = column_values(path, col)
    assert before.count(subject) == 1

    plan = c.count(NS, path, col, [subject])
    assert plan.rows == {subject: 1}
    assert plan.files[subject]

    erased, _ = erase_and_purge(c, path, col, [subject])
    assert erased.rows_deleted == 1
    assert c.count(NS, path, col, [subject]).rows == {subject: 0}
    assert column_values(path, col) == [x for x in before if x != subject]
    assert_scan_clean(c, path, col, subject)
    keys = {n: subject for n in physical_names(path, col)}
    assert physical_traces(path, keys, [subject]) == []


def test_column_mapping_erase_by_the_partition_column(tmp_path, purge_connector):
    c = purge_connector
    path = copy_table(tmp_path, "table_with_column_mapping")
    part = "Company Very Short"
    subject = "BME"
    before = read_all(path).to_pylist()
    n = sum(1 for r in before if r[part] == subject)
    assert n == 1

    assert c.count(NS, path, part, [subject]).rows == {subject: n}
    erased, _ = erase_and_purge(c, path, part, [subject])
    assert erased.rows_deleted == n
    assert c.count(NS, path, part, [subject]).rows == {subject: 0}
    assert sorted_rows(path) == sorted(
        tuple(repr(r[k]) for k in sorted(r)) for r in before if r[part] != subject)
    assert_scan_clean(c, path, part, subject)
    keys = {x: subject for x in physical_names(path, part)}
    assert physical_traces(path, keys, [subject]) == []


def test_column_mapping_plan_names_the_file_of_a_partition_value(tmp_path, purge_connector):
    """Under column mapping Spark names partition folders randomly ("8v/"), so the
    partition value is only in the log: the plan must still say which file is rewritten."""
    c = purge_connector
    path = copy_table(tmp_path, "table_with_column_mapping")
    plan = c.count(NS, path, "Company Very Short", ["BME"])
    assert plan.rows == {"BME": 1}
    adds = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()
    holder = [a["path"] for a in adds
              if "BME" in {v for k, v in a.items() if k.startswith("partition")}]
    assert holder, adds
    assert plan.files["BME"] == holder


# ---- 6. keys that look like SQL ------------------------------------------------------------

STRING_KEYS = ["alice", "x' OR '1'='1", "o'neil", "b\\", "42", "420", "4242"]
INT_KEYS = [1, 42, 420, 4242, -42, 7]


@pytest.fixture
def own_tables(tmp_path) -> tuple[str, str]:
    s = str(tmp_path / "strings")
    i = str(tmp_path / "ints")
    write_deltalake(s, pa.table({"k": pa.array(STRING_KEYS, pa.string()),
                                 "n": pa.array(range(len(STRING_KEYS)), pa.int64())}))
    write_deltalake(i, pa.table({"k": pa.array(INT_KEYS, pa.int64()),
                                 "s": pa.array([str(x) for x in INT_KEYS], pa.string())}))
    return s, i


def test_string_keys_with_quotes_and_backslashes_delete_only_equal_rows(own_tables,
                                                                         purge_connector):
    c = purge_connector
    s, _ = own_tables
    assert c.count(NS, s, "k", STRING_KEYS).rows == {k: 1 for k in STRING_KEYS}

    injection = "x' OR '1'='1"
    erased, _ = erase_and_purge(c, s, "k", [injection])
    assert erased.rows_deleted == 1
    assert column_values(s, "k") == sorted(k for k in STRING_KEYS if k != injection)
    assert_scan_clean(c, s, "k", injection)
    assert physical_traces(s, {"k": injection}, [injection]) == []

    erased = c.erase(NS, s, "k", ["42"], tag="t2")
    assert erased.rows_deleted == 1
    assert column_values(s, "k") == sorted(k for k in STRING_KEYS if k not in (injection, "42"))
    rest = c.count(NS, s, "k", ["o'neil", "b\\", "420", "4242", "alice"]).rows
    assert rest == {"o'neil": 1, "b\\": 1, "420": 1, "4242": 1, "alice": 1}


def test_int_key_and_string_key_42_delete_only_equal_rows(own_tables, purge_connector):
    c = purge_connector
    _, i = own_tables
    assert c.key_type(NS, i, "k") == "int64"
    assert c.erase(NS, i, "k", [42], tag="t1").rows_deleted == 1
    assert column_values(i, "k") == sorted(x for x in INT_KEYS if x != 42)
    assert c.count(NS, i, "k", [42, 420, 4242, -42]).rows == {42: 0, 420: 1, 4242: 1, -42: 1}

    # the same table's string column: "4242" must not take "42" or "420" with it
    assert c.erase(NS, i, "s", ["4242"], tag="t2").rows_deleted == 1
    assert column_values(i, "s") == sorted(str(x) for x in INT_KEYS if x not in (42, 4242))


def test_plan_still_reads_string_keys_after_a_delta_rs_rewrite(own_tables, purge_connector):
    """delta-rs writes string columns that pyarrow reads back as string_view. The plan of a
    later request must still find the live file holding a string key, and must not report
    that file as unreadable residue."""
    c = purge_connector
    s, _ = own_tables
    erase_and_purge(c, s, "k", ["alice"])          # the table's only file is rewritten
    assert pq.read_schema(next(Path(s).glob("*.parquet"))).field("k").type in (
        pa.string_view(), pa.string(), pa.large_string())
    plan = c.count(NS, s, "k", ["o'neil"])
    assert plan.rows == {"o'neil": 1}
    assert plan.residue["o'neil"] == [], plan.residue
    assert plan.files["o'neil"], "the live file holding the key must be in the plan"


# ---- 7. keep-history mode ------------------------------------------------------------------

def test_keep_history_erase_reports_residue_and_keeps_keys_out_of_the_log(tmp_path):
    c = DeltaConnector(DeltaSettings(residue="keep-history"))
    path = copy_table(tmp_path, "table_with_deletion_logs")
    subject = 57
    before = column_values(path, "id")
    assert subject in before

    erased = c.erase(NS, path, "id", [subject], tag="req-1")
    assert erased.rows_deleted == 1
    assert c.count(NS, path, "id", [subject]).rows == {subject: 0}
    assert column_values(path, "id") == [i for i in before if i != subject]

    residue = c.scan(NS, path, "id", [subject]).residue(subject)
    old_files = [f for f, kind in residue.items() if kind == "data file"]
    assert old_files, f"the old data file still holds the subject: {residue}"
    assert all(Path(path, f).exists() for f in old_files)
    assert any("(data file)" in r for r in c.count(NS, path, "id", [subject]).residue[subject])

    log = sorted(Path(path, "_delta_log").glob("*.json"))[-1]
    assert int(log.stem) == erased.version_after
    actions = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
    assert info["operation"] == "MERGE"
    assert info.get("erasure.run") == "req-1"
    token = re.compile(rf"(?<![\w.]){subject}(?![\w.])")
    texts = [v for _k, v in _leaves(info) if isinstance(v, str)]
    assert not [t for t in texts if token.search(t)], info
    assert not token.search(json.dumps(info.get("operationParameters", {})))


# ---- 8. a table whose old data files were vacuumed away ------------------------------------

def test_table_with_missing_data_files_fails_loudly(tmp_path, purge_connector):
    c = purge_connector
    path = copy_table(tmp_path, "checkpoints")
    assert c.key_type(NS, path, "value") == "string"        # the log itself reads
    # delta-rs raises a plain Exception ("External error: Parquet error: ... Object at
    # location .../date=2020-06-03/part-....parquet not found"): never a silent 0.
    with pytest.raises(Exception, match=r"not found"):
        c.count(NS, path, "value", ["x"], with_residue=False)
    with pytest.raises(Exception, match=r"not found"):
        c.count(NS, path, "value", ["x"])
