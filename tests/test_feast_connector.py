"""Feature stores: a subject erased from the lake must also leave Feast, online and offline,
and must stay gone when the feature views are materialized again.

Every test builds a real Feast repo (real registry, real SQLite or Redis online store, real
Parquet/Delta sources), materializes it, then drives the engine through its CLI the way an
operator would: `plan`, `request submit`, `run`. Outcomes are read back through Feast's own
`get_online_features`, the store's raw bytes, and the source files.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from erasure.cli import run_cli

from conftest import files_holding, read_table
from feast_helpers import (REDIS, STATS, T0, entity_key_bytes, materialize, online, stats_rows,
                          stats_table, stats_view, write_repo)

FEAST_BIN = Path(sys.executable).with_name("feast")


# ---- fixtures and helpers (the `feast` and `redis_project` fixtures are in conftest.py) ----
@pytest.fixture(scope="module")
def feast_template(tmp_path_factory) -> Path:
    """The repo `feast init` generates, created once; tests copy it."""
    where = tmp_path_factory.mktemp("feast-init")
    proc = subprocess.run([str(FEAST_BIN), "init", "demo_repo"], cwd=where,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    repo = where / "demo_repo"
    assert (repo / "feature_repo" / "feature_store.yaml").is_file()
    assert (repo / "feature_repo" / "data" / "driver_stats.parquet").is_file()
    return repo


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    monkeypatch.delenv("ERASURE_CONFIG", raising=False)


def cli(cfg: Path, capsys, *args) -> tuple[int, dict | None]:
    capsys.readouterr()   # drop what Feast printed while the test set things up
    code = run_cli(["--config", str(cfg), *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def erase(cfg: Path, capsys, subject: str) -> tuple[int, dict]:
    code, sub = cli(cfg, capsys, "request", "submit", "--subject-id", subject)
    assert code == 0, sub
    return cli(cfg, capsys, "run", sub["request_id"])


def applied_template(feast, feast_template: Path, tmp_path: Path, monkeypatch
                     ) -> tuple[Path, Path]:
    """A copy of the `feast init` repo, applied and materialized: (project dir, repo)."""
    project_dir = tmp_path / "demo_repo"
    shutil.copytree(feast_template, project_dir)
    repo = project_dir / "feature_repo"
    # `feast apply`, in-process, the way the CLI does it (run from the repo folder)
    monkeypatch.chdir(repo)
    monkeypatch.syspath_prepend(str(repo))
    for mod in ("feature_definitions", "test_workflow"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    store = feast.FeatureStore(repo_path=str(repo))
    feast.repo_operations.apply_total(store.config, repo, skip_source_validation=True)
    for mod in ("feature_definitions", "test_workflow"):
        sys.modules.pop(mod, None)
    monkeypatch.chdir(tmp_path)
    materialize(feast.FeatureStore(repo_path=str(repo)))
    return project_dir, repo


def write_config(where: Path, roots: list[tuple[Path, str]], repo: Path,
                 events: Path | None = None, extra: str = "") -> Path:
    text = extra
    if events is not None:
        text += f'[lineage]\nevents = ["{events.name}"]\n'
    for path, column in roots:
        text += f'[[roots]]\nnamespace = "file"\nname = "{path}"\ncolumn = "{column}"\n'
    text += f'[[feast]]\nrepo = "{repo}"\n'
    cfg = where / "erasure.toml"
    cfg.write_text(text)
    return cfg


def assert_materialize_cannot_restore(feast, repo, store, view, join_key, subject) -> None:
    """After a purge the Delta source has a log checkpoint under `_delta_log/`, which
    Feast's file offline store (Dask read_parquet) reads as a data file: materialize fails
    on the missing join key instead of serving anything, and the subject stays absent."""
    with pytest.raises(Exception) as exc:
        materialize(feast.FeatureStore(repo_path=str(repo)))
    assert join_key in str(exc.value)
    assert online(store, view, STATS, join_key, [subject])[subject] == {f: None for f in STATS}


def by_name(plan: dict) -> dict[str, dict]:
    return {t["name"]: t for t in plan["targets"]}


# ---- 1. the `feast init` template -------------------------------------------------------
def test_feast_init_template_driver_is_erased_online_and_offline_and_stays_erased(
        feast, feast_template, tmp_path, capsys, monkeypatch):
    """A team runs `feast init`, applies and materializes it, then driver 1001 asks to be
    forgotten: the Parquet source loses the driver's rows, both feature views stop serving
    the driver, nobody else changes, and a full re-materialize does not bring 1001 back."""
    project_dir, repo = applied_template(feast, feast_template, tmp_path, monkeypatch)
    store = feast.FeatureStore(repo_path=str(repo))

    parquet = repo / "data" / "driver_stats.parquet"
    offline_before = pd.read_parquet(parquet)
    schema_before = pq.read_schema(parquet)
    drivers = sorted(offline_before["driver_id"].unique().tolist())
    assert drivers == [1001, 1002, 1003, 1004, 1005]
    views = {"driver_hourly_stats": ["conv_rate", "acc_rate", "avg_daily_trips",
                                     "driver_metadata", "driver_config", "driver_profile"],
             "driver_hourly_stats_fresh": ["conv_rate", "acc_rate", "avg_daily_trips"]}
    before = {v: online(store, v, f, "driver_id", drivers) for v, f in views.items()}
    for v in views:   # the feature views really serve every driver before the erasure
        assert all(val is not None for d in drivers for val in before[v][d].values()), v

    cfg = write_config(project_dir, [(Path("feature_repo/data/driver_stats.parquet"),
                                      "driver_id")], Path("feature_repo"))
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "1001")
    assert code == 0, plan
    targets = by_name(plan)
    assert set(targets) == {str(parquet.resolve()), *views}
    assert targets[str(parquet.resolve())]["connector"] == "parquet"
    assert targets[str(parquet.resolve())]["rows"] == int((offline_before.driver_id == 1001).sum())
    for v in views:
        t = targets[v]
        assert (t["connector"], t["namespace"], t["column"], t["key_type"]) == (
            "feast", "feast://demo_repo", "driver_id", "int64")
        assert t["rows"] == 1 and t["details"]["online_store"] == "sqlite"
        assert t["details"]["served_by_get_online_features"] is True
        assert t["details"]["offline_rows_feast_reads"] == targets[str(parquet.resolve())]["rows"]
        assert t["derived_from"]["name"] == str(parquet.resolve())
    # the offline source is erased before the online store (sources first)
    order = [t["connector"] for t in plan["targets"]]
    assert order.index("parquet") < order.index("feast")

    code, res = erase(cfg, capsys, "1001")
    assert code == 0 and res["status"] == "completed", res
    [req] = res["requests"]
    assert all(t["verified"] for t in req["targets"]), req["targets"]
    assert {t["name"]: t["rows_deleted"] for t in req["targets"] if t["connector"] == "feast"} \
        == {v: 1 for v in views}

    def check_online():
        for v, feats in views.items():
            now = online(store, v, feats, "driver_id", drivers)
            assert now[1001] == {f: None for f in feats}, (v, now[1001])
            assert {d: now[d] for d in drivers if d != 1001} == \
                {d: before[v][d] for d in drivers if d != 1001}, v

    check_online()
    offline_after = pd.read_parquet(parquet)
    assert 1001 not in offline_after["driver_id"].tolist()
    expected = offline_before[offline_before.driver_id != 1001].reset_index(drop=True)
    pd.testing.assert_frame_equal(offline_after.reset_index(drop=True), expected)
    assert pq.read_schema(parquet).equals(schema_before, check_metadata=True)

    # the next scheduled materialize (full range) must not restore driver 1001
    materialize(feast.FeatureStore(repo_path=str(repo)))
    check_online()


# ---- 2. SQLite online store, Delta offline source, int64 key ------------------------------
def test_sqlite_and_delta_source_erase_leaves_no_key_bytes_and_survives_materialize(
        feast, tmp_path, capsys):
    """An int64-keyed feature view of 300 drivers reads a Delta table that was appended to
    twice. Erasing driver 150 purges the Delta table (old files vacuumed), so a later
    materialize, which reads every Parquet file in the folder, cannot restore it; the SQLite
    file (several pages per table and index) keeps no byte of the driver's key or values."""
    from feast.types import Int64

    lake = tmp_path / "lake" / "driver_stats"
    ids = list(range(1, 301))
    subject, first, second = 150, ids[:200], ids[100:]
    write_deltalake(lake, stats_table(stats_rows(first), pa.int64()))
    write_deltalake(lake, stats_table(stats_rows(second, tag="b", start=T0 + timedelta(days=1)),
                                      pa.int64()), mode="append")
    all_rows = stats_rows(first) + stats_rows(second)
    repo = write_repo(tmp_path / "repo", f"t{uuid4().hex[:8]}")
    entity = feast.Entity(name="driver", join_keys=["entity_id"], value_type=feast.ValueType.INT64)
    fv = stats_view(feast, "driver_delta", entity, "entity_id", Int64, lake)
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([entity, fv])
    materialize(store)
    before = online(store, "driver_delta", STATS, "entity_id", ids)
    assert before[subject]["nickname"] == "nick-150-b3-secret"

    db = repo / "data" / "online_store.db"
    key = entity_key_bytes(feast, ["entity_id"], [subject])
    needles = [key, b"nick-150-"]      # the key, and the feature text (value and value_text)
    assert all(n in db.read_bytes() for n in needles)   # the search below finds what it seeks

    cfg = write_config(tmp_path, [(lake, "entity_id")], repo)
    code, plan = cli(cfg, capsys, "plan", "--subject-id", str(subject))
    assert code == 0, plan
    t = by_name(plan)
    assert t[str(lake)]["connector"] == "delta" and t[str(lake)]["rows"] == 8
    assert t["driver_delta"]["rows"] == 1
    assert t["driver_delta"]["details"]["offline_rows_feast_reads"] == 8

    code, res = erase(cfg, capsys, str(subject))
    assert code == 0 and res["status"] == "completed", res
    after = online(store, "driver_delta", STATS, "entity_id", ids)
    assert after[subject] == {f: None for f in STATS}
    assert {i: after[i] for i in ids if i != subject} == \
        {i: before[i] for i in ids if i != subject}
    assert sorted(read_table(str(lake)).column("entity_id").to_pylist()) == sorted(
        r["entity_id"] for r in all_rows if r["entity_id"] != subject)
    assert files_holding(lake, [b"nick-150-"], {"entity_id": subject}) == []

    # no byte of the online store's files (database, journal, WAL) holds the driver
    store_files = [p for p in (repo / "data").iterdir() if p.name.startswith("online_store.db")]
    assert db in store_files
    for p in store_files:
        data = p.read_bytes()
        assert not [n for n in needles if n in data], p
    assert entity_key_bytes(feast, ["entity_id"], [151]) in db.read_bytes()

    # the next scheduled materialize cannot restore the driver. It fails outright: the
    # purge's log checkpoint is a Parquet file that Feast's Dask reader takes for data (the
    # same happens with any checkpointed Spark table); the plan warned about it
    assert "checkpoint" in t["driver_delta"]["details"]["note"]
    assert_materialize_cannot_restore(feast, repo, store, "driver_delta", "entity_id", subject)
    again = online(store, "driver_delta", STATS, "entity_id", ids)
    assert again[subject] == {f: None for f in STATS}
    assert {i: again[i] for i in ids if i != subject} == \
        {i: before[i] for i in ids if i != subject}


# ---- 3. Redis online store, string key, a hash shared with an unrelated view --------------
def test_redis_string_key_removes_only_the_affected_views_fields(
        feast, tmp_path, capsys, redis_project):
    """Two feature views share the `user` entity, so Redis keeps both in one hash per user.
    Only `user_activity` is fed by the erased table; `user_prefs` reads an unrelated file
    and is listed as untouched: its fields stay, the activity fields go."""
    import redis
    from feast.infra.online_stores.helpers import _mmh3
    from feast.types import Float64, String

    activity_src = tmp_path / "lake" / "user_activity"
    users = ["user-7", "user-8", "user-9", "user-70"]
    write_deltalake(activity_src, stats_table(stats_rows(users, key="user_id"), pa.string()))
    prefs_src = tmp_path / "prefs.parquet"     # user-9 has no preferences
    pq.write_table(pa.Table.from_pylist(
        [{"user_id": u, "theme": f"theme-of-{u}", "volume": 0.5,
          "event_timestamp": T0} for u in users if u != "user-9"],
        schema=pa.schema([("user_id", pa.string()), ("theme", pa.string()),
                          ("volume", pa.float64()),
                          ("event_timestamp", pa.timestamp("us", tz="UTC"))])), prefs_src)

    repo = write_repo(tmp_path / "repo", redis_project, online="redis")
    user = feast.Entity(name="user", join_keys=["user_id"], value_type=feast.ValueType.STRING)
    activity = stats_view(feast, "user_activity", user, "user_id", String, activity_src)
    prefs = feast.FeatureView(
        name="user_prefs", entities=[user], ttl=timedelta(days=3650), online=True,
        source=feast.FileSource(name="prefs_source", path=str(prefs_src),
                                timestamp_field="event_timestamp"),
        schema=[feast.Field(name="user_id", dtype=String),
                feast.Field(name="theme", dtype=String), feast.Field(name="volume", dtype=Float64)])
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([user, activity, prefs])
    materialize(store)

    client = redis.Redis.from_url(f"redis://{REDIS}")
    rkey = {u: entity_key_bytes(feast, ["user_id"], [u]) + redis_project.encode() for u in users}
    raw_before = {u: client.hgetall(rkey[u]) for u in users}
    prefs_fields = {_mmh3(f"user_prefs:{f}") for f in ("theme", "volume")} | {b"_ts:user_prefs"}
    activity_fields = {_mmh3(f"user_activity:{f}") for f in STATS} | {b"_ts:user_activity"}
    assert set(raw_before["user-7"]) == prefs_fields | activity_fields
    act_before = online(store, "user_activity", STATS, "user_id", users)
    prefs_before = online(store, "user_prefs", ["theme", "volume"], "user_id", users)
    assert prefs_before["user-7"]["theme"] == "theme-of-user-7"

    cfg = write_config(tmp_path, [(activity_src, "user_id")], repo)
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "user-7")
    assert code == 0, plan
    t = by_name(plan)
    assert t["user_activity"]["key_type"] == "string" and t["user_activity"]["rows"] == 1
    assert t["user_activity"]["details"]["online_store"] == "redis"
    assert "user_prefs" not in t
    assert [u["name"] for u in plan["untouched"]] == ["user_prefs"]
    assert plan["untouched"][0]["namespace"] == f"feast://{redis_project}"
    assert "not downstream" in plan["untouched"][0]["reason"]

    code, res = erase(cfg, capsys, "user-7")
    # what the stores hold, then what the run reported
    act = online(store, "user_activity", STATS, "user_id", users)
    assert act["user-7"] == {f: None for f in STATS}
    assert online(store, "user_prefs", ["theme", "volume"], "user_id", users) == prefs_before
    raw = client.hgetall(rkey["user-7"])
    assert raw == {k: v for k, v in raw_before["user-7"].items() if k in prefs_fields}
    # "user-70" begins with "user-7": a prefix must not match
    for u in ("user-8", "user-9", "user-70"):
        assert act[u] == act_before[u]
        assert client.hgetall(rkey[u]) == raw_before[u], u
    assert code == 0 and res["status"] == "completed", res

    # user-9's hash holds only the erased view: the whole hash goes
    code, res = erase(cfg, capsys, "user-9")
    assert code == 0 and res["status"] == "completed", res
    assert client.exists(rkey["user-9"]) == 0
    assert online(store, "user_activity", STATS, "user_id", ["user-9"])["user-9"] == \
        {f: None for f in STATS}

    assert_materialize_cannot_restore(feast, repo, store, "user_activity", "user_id", "user-7")
    act = online(store, "user_activity", STATS, "user_id", users)
    assert act["user-7"] == act["user-9"] == {f: None for f in STATS}
    assert {u: act[u] for u in ("user-8", "user-70")} == \
        {u: act_before[u] for u in ("user-8", "user-70")}
    assert online(store, "user_prefs", ["theme", "volume"], "user_id", users) == prefs_before
    client.close()


# ---- 4. composite key ----------------------------------------------------------------------
def test_composite_key_erases_every_combination_of_the_driver(feast, tmp_path, capsys):
    """A view keyed by (driver_id, customer_id): erasing driver 7 must find every customer
    the driver served in the online store, and leave driver 8's combinations alone."""
    from feast.types import Int64, String

    pairs = [(7, "c1"), (7, "c2"), (7, "c3"), (7, "c-8"), (8, "c1"), (8, "c2"), (70, "c1")]
    src = tmp_path / "trips.parquet"
    pq.write_table(pa.Table.from_pylist(
        [{"driver_id": d, "customer_id": c, "trips": d * 100 + n, "note": f"{d}/{c}",
          "event_timestamp": T0} for n, (d, c) in enumerate(pairs)],
        schema=pa.schema([("driver_id", pa.int64()), ("customer_id", pa.string()),
                          ("trips", pa.int64()), ("note", pa.string()),
                          ("event_timestamp", pa.timestamp("us", tz="UTC"))])), src)
    repo = write_repo(tmp_path / "repo", f"t{uuid4().hex[:8]}")
    driver = feast.Entity(name="driver", join_keys=["driver_id"], value_type=feast.ValueType.INT64)
    customer = feast.Entity(name="customer", join_keys=["customer_id"],
                            value_type=feast.ValueType.STRING)
    fv = feast.FeatureView(
        name="driver_customer_trips", entities=[driver, customer], ttl=timedelta(days=3650),
        online=True, source=feast.FileSource(name="trips_source", path=str(src),
                                             timestamp_field="event_timestamp"),
        schema=[feast.Field(name="driver_id", dtype=Int64),
                feast.Field(name="customer_id", dtype=String),
                feast.Field(name="trips", dtype=Int64), feast.Field(name="note", dtype=String)])
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([driver, customer, fv])
    materialize(store)

    def served():
        res = store.get_online_features(
            features=["driver_customer_trips:trips", "driver_customer_trips:note"],
            entity_rows=[{"driver_id": d, "customer_id": c} for d, c in pairs]).to_dict()
        return {p: (res["trips"][n], res["note"][n]) for n, p in enumerate(pairs)}

    before = served()
    assert all(v != (None, None) for v in before.values())

    cfg = write_config(tmp_path, [(src, "driver_id")], repo)
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "7")
    assert code == 0, plan
    t = by_name(plan)["driver_customer_trips"]
    assert (t["column"], t["key_type"], t["rows"]) == ("driver_id", "int64", 4)

    code, res = erase(cfg, capsys, "7")
    assert code == 0 and res["status"] == "completed", res
    after = served()
    assert {p: v for p, v in after.items() if p[0] == 7} == {
        p: (None, None) for p in pairs if p[0] == 7}
    assert {p: v for p, v in after.items() if p[0] != 7} == {
        p: v for p, v in before.items() if p[0] != 7}
    assert pq.read_table(src).column("driver_id").to_pylist() == [8, 8, 70]

    # nothing of driver 7 is left in the view's table, whatever the customer
    from feast.infra.key_encoding_utils import deserialize_entity_key

    conn = sqlite3.connect(repo / "data" / "online_store.db")
    keys = [r[0] for r in conn.execute(
        f'SELECT DISTINCT entity_key FROM "{store.project}_driver_customer_trips"')]
    conn.close()
    left = []
    for k in keys:
        ek = deserialize_entity_key(k, entity_key_serialization_version=3)
        vals = dict(zip(ek.join_keys, ek.entity_values))
        left.append((vals["driver_id"].int64_val, vals["customer_id"].string_val))
    left.sort()
    assert left == [(8, "c1"), (8, "c2"), (70, "c1")]


# ---- 5. a feature view downstream of the root, through column lineage ----------------------
def _lineage_event(job: str, inputs: list[Path], output: Path, fields: dict[str, tuple]) -> str:
    """One COMPLETE event: `output` written from `inputs`; fields maps an output column to
    (input path, input column), an IDENTITY copy."""
    col_lineage = {out: {"inputFields": [{
        "namespace": "file", "name": str(src), "field": col,
        "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}]}
        for out, (src, col) in fields.items()}
    return json.dumps({
        "eventType": "COMPLETE", "eventTime": "2026-11-01T00:00:00Z", "producer": "tests",
        "run": {"runId": str(uuid4())}, "job": {"namespace": "etl", "name": job},
        "inputs": [{"namespace": "file", "name": str(p)} for p in inputs],
        "outputs": [{"namespace": "file", "name": str(output),
                     "facets": {"columnLineage": {"fields": col_lineage}}}]})


def test_feature_view_found_through_column_lineage_rename(feast, tmp_path, capsys):
    """The root holds `user_id`; a job copies it into a Delta feature table as `entity_id`
    (IDENTITY column lineage). The feature view on that table is keyed by `entity_id`:
    the engine follows the rename and erases subject 5 offline and online."""
    from feast.types import Int64

    raw = tmp_path / "lake" / "raw_users"
    feats = tmp_path / "lake" / "user_features"
    ids = [4, 5, 6, 15]
    write_deltalake(raw, pa.table({"user_id": pa.array(ids, pa.int64()),
                                   "email": [f"u{i}@example.com" for i in ids]}))
    write_deltalake(feats, stats_table(stats_rows(ids), pa.int64()))
    events = tmp_path / "events.jsonl"
    events.write_text(_lineage_event("build_user_features", [raw], feats, {
        "entity_id": (raw, "user_id")}) + "\n")

    repo = write_repo(tmp_path / "repo", f"t{uuid4().hex[:8]}")
    entity = feast.Entity(name="user", join_keys=["entity_id"], value_type=feast.ValueType.INT64)
    fv = stats_view(feast, "user_stats", entity, "entity_id", Int64, feats)
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([entity, fv])
    materialize(store)
    before = online(store, "user_stats", STATS, "entity_id", ids)
    assert before[5]["nickname"] == "nick-5-3-secret"

    cfg = write_config(tmp_path, [(raw, "user_id")], repo, events=events)
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "5")
    assert code == 0, plan
    t = by_name(plan)
    assert t[str(raw)]["how"] == "root" and t[str(raw)]["rows"] == 1
    assert t[str(feats)]["how"] == "column_lineage" and t[str(feats)]["column"] == "entity_id"
    assert t[str(feats)]["derived_from"]["name"] == str(raw)
    assert t[str(feats)]["rows"] == 4
    view = t["user_stats"]
    assert (view["how"], view["column"], view["rows"]) == ("feature_view", "entity_id", 1)
    assert view["derived_from"]["name"] == str(feats)
    assert view["derived_from"]["column"] == "entity_id"
    assert plan["unresolved"] == [] and plan["untouched"] == []

    code, res = erase(cfg, capsys, "5")
    assert code == 0 and res["status"] == "completed", res
    assert sorted(read_table(str(raw)).column("user_id").to_pylist()) == [4, 6, 15]
    assert sorted(set(read_table(str(feats)).column("entity_id").to_pylist())) == [4, 6, 15]
    after = online(store, "user_stats", STATS, "entity_id", ids)
    assert after[5] == {f: None for f in STATS}
    assert {i: after[i] for i in ids if i != 5} == {i: before[i] for i in ids if i != 5}

    assert_materialize_cannot_restore(feast, repo, store, "user_stats", "entity_id", 5)
    assert online(store, "user_stats", STATS, "entity_id", [5])[5] == {f: None for f in STATS}


# ---- 6. keep-history mode cannot be reported as done for a feature view --------------------
def test_keep_history_mode_fails_the_feature_view_because_materialize_would_restore(
        feast, tmp_path, capsys):
    """With `[delta] residue = "keep-history"` the Delta delete leaves the old Parquet files
    on disk for time travel. Feast reads those files directly, so the subject is not gone
    from the feature store: the run must fail on the feature view, not report success, and
    indeed the next materialize serves the subject again."""
    from feast.types import Int64

    lake = tmp_path / "lake" / "driver_stats"
    ids = [1, 2, 3]
    write_deltalake(lake, stats_table(stats_rows(ids), pa.int64()))
    repo = write_repo(tmp_path / "repo", f"t{uuid4().hex[:8]}")
    entity = feast.Entity(name="driver", join_keys=["entity_id"], value_type=feast.ValueType.INT64)
    fv = stats_view(feast, "driver_delta", entity, "entity_id", Int64, lake)
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([entity, fv])
    materialize(store)
    before = online(store, "driver_delta", STATS, "entity_id", ids)

    cfg = write_config(tmp_path, [(lake, "entity_id")], repo,
                       extra='[delta]\nresidue = "keep-history"\n')
    code, res = erase(cfg, capsys, "2")
    assert code == 5 and res["status"] == "failed", res
    [req] = res["requests"]
    targets = {t["name"]: t for t in req["targets"]}
    assert targets[str(lake)]["verified"] is True          # keep-history residue was planned
    assert targets[str(lake)]["residue"]                   # and is reported
    assert targets["driver_delta"]["verified"] is False
    errors = " ".join(req["errors"])
    assert "driver_delta" in errors and "materialize" in errors, errors
    assert 2 not in read_table(str(lake)).column("entity_id").to_pylist()

    # the failure is real: Feast's next materialize reads the old files and serves 2 again
    materialize(feast.FeatureStore(repo_path=str(repo)))
    assert online(store, "driver_delta", STATS, "entity_id", [2])[2] == before[2]


# ---- 7. what Feast reads is what must be erased ---------------------------------------------
def test_parquet_folder_leftover_that_feast_reads_cannot_pass_as_erased(feast, tmp_path, capsys):
    """A Spark job wrote the feature folder; a failed task left its part file under
    `_temporary/`. Feast's file offline store (Dask `read_parquet`) reads every `*.parquet`
    under the folder, that one included. Whatever the engine does with such a file, it must
    not report the erasure completed while the next materialize serves driver 2 again."""
    from feast.types import Int64

    folder = tmp_path / "lake" / "trips"
    leftover = folder / "_temporary" / "0" / "task_20261101_0001_m_000000" / "part-00000.parquet"
    leftover.parent.mkdir(parents=True)
    pq.write_table(stats_table(stats_rows([1, 2, 3], key="driver_id"), pa.int64()),
                   folder / "part-00000.parquet")
    pq.write_table(stats_table(stats_rows([2], key="driver_id", tag="old"), pa.int64()), leftover)
    repo = write_repo(tmp_path / "repo", f"t{uuid4().hex[:8]}")
    driver = feast.Entity(name="driver", join_keys=["driver_id"], value_type=feast.ValueType.INT64)
    fv = stats_view(feast, "driver_trips", driver, "driver_id", Int64, folder, delta=False)
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([driver, fv])
    materialize(store)
    assert online(store, "driver_trips", STATS, "driver_id", [2])[2]["trips"] is not None

    cfg = write_config(tmp_path, [(folder, "driver_id")], repo)
    code, res = erase(cfg, capsys, "2")
    materialize(feast.FeatureStore(repo_path=str(repo)))
    served_again = online(store, "driver_trips", STATS, "driver_id", [2])[2]
    assert not (res["status"] == "completed" and served_again["trips"] is not None), (
        f"run reported {res['status']} (exit {code}), yet the next materialize serves driver 2 "
        f"again from {leftover.relative_to(folder)}: {served_again}")


# ---- 8. an online store the connector cannot erase is named, never passed over -----------
def test_unsupported_online_store_is_reported_and_nothing_claims_success(feast, tmp_path, capsys):
    """A view served from an online store the connector does not support (DynamoDB here)
    is listed as unresolved with the reason; the run ends `incomplete` (exit 6), not
    `completed`, while the offline source is still erased."""
    from feast.types import Int64

    src = tmp_path / "lake" / "trips.parquet"
    src.parent.mkdir(parents=True)
    pq.write_table(stats_table(stats_rows([1, 2, 3], key="driver_id"), pa.int64()), src)
    repo = write_repo(tmp_path / "repo", f"t{uuid4().hex[:8]}")
    driver = feast.Entity(name="driver", join_keys=["driver_id"], value_type=feast.ValueType.INT64)
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([driver, stats_view(feast, "driver_trips", driver, "driver_id", Int64, src,
                                    delta=False)])
    # the registry stays; the online store moves to a type the connector does not erase
    yaml_text = (repo / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(yaml_text.replace(
        '    type: "sqlite"\n    path: "data/online_store.db"',
        '    type: "dynamodb"\n    region: "eu-west-1"'))
    assert "dynamodb" in (repo / "feature_store.yaml").read_text()
    cfg = write_config(tmp_path, [(src, "driver_id")], repo)
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "2")
    assert code == 0
    [u] = [u for u in plan["unresolved"] if u["name"] == "driver_trips"]
    assert "'dynamodb' is not supported" in u["reason"]
    assert all(t["connector"] != "feast" for t in plan["targets"])
    code, res = erase(cfg, capsys, "2")
    assert code == 6 and res["status"] == "incomplete"
    assert pq.read_table(src).column("driver_id").to_pylist().count(2) == 0


def test_locked_sqlite_online_store_is_an_error_not_an_empty_view(
        feast, feast_template, tmp_path, capsys, monkeypatch):
    """"database is locked" used to be swallowed as "the view was never materialized": the
    plan counted 0 online keys and verification passed. A store that cannot be read is a
    connector error (exit 5); only a view with no table at all holds nothing."""
    import sqlite3

    project_dir, repo = applied_template(feast, feast_template, tmp_path, monkeypatch)
    cfg = write_config(project_dir, [(Path("feature_repo/data/driver_stats.parquet"),
                                      "driver_id")], Path("feature_repo"))
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "1001")
    assert code == 0, plan
    assert by_name(plan)["driver_hourly_stats"]["rows"] == 1     # online before the lock

    from connectors.feast.keys import FeastRepo

    fr = FeastRepo(repo)
    view = fr.view("driver_hourly_stats")
    keys = fr.entity_keys(view, "driver_id", [1001])
    assert fr.online_present(view, keys)       # the driver is online
    locker = sqlite3.connect(repo / "data" / "online_store.db")
    locker.execute("BEGIN EXCLUSIVE")          # another process holds the store
    try:
        # each read or delete of the locked store is an error, never "nothing there"
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            fr.online_present(view, keys)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            fr.delete_online(view, [k for ks in keys.values() for k in ks])
        code, plan = cli(cfg, capsys, "plan", "--subject-id", "1001")
        assert code == 5, plan                 # not a plan that says 0 keys online
        assert plan is None or all(t["connector"] != "feast" for t in plan.get("targets", []))
    finally:
        locker.rollback()
        locker.close()
    code, plan = cli(cfg, capsys, "plan", "--subject-id", "1001")
    assert code == 0 and by_name(plan)["driver_hourly_stats"]["rows"] == 1


# ---- 9. Redis: a batch of 1,000 entities in one call ------------------------------------------
def test_redis_batch_of_1000_erases_exactly_those_and_the_check_really_looks(
        feast, tmp_path, redis_project):
    """2,000 entities materialized into a real Redis, every fifth also in a second view that
    shares the entity's hash. Erasing 1,000 of them in one call removes exactly their view's
    fields (the whole hash where no other view has a timestamp, with a field the view no
    longer declares), leaves every other hash byte for byte, counts exactly before and
    after; and the store check finds a field written back after the erase, a feature field
    without its timestamp included."""
    import redis
    from feast.infra.online_stores.helpers import _mmh3
    from feast.types import Int64, String

    from connectors.feast import FeastConnector

    ids = list(range(1, 2001))
    src = tmp_path / "stats.parquet"
    pq.write_table(stats_table(stats_rows(ids, hours=1), pa.int64()), src)
    prefs_src = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist(
        [{"entity_id": i, "theme": f"theme-{i}", "event_timestamp": T0} for i in ids if i % 5 == 0],
        schema=pa.schema([("entity_id", pa.int64()), ("theme", pa.string()),
                          ("event_timestamp", pa.timestamp("us", tz="UTC"))])), prefs_src)
    repo = write_repo(tmp_path / "repo", redis_project, online="redis")
    user = feast.Entity(name="user", join_keys=["entity_id"], value_type=feast.ValueType.INT64)
    stats = stats_view(feast, "user_stats", user, "entity_id", Int64, src, delta=False)
    prefs = feast.FeatureView(
        name="user_prefs", entities=[user], ttl=timedelta(days=3650), online=True,
        source=feast.FileSource(name="prefs_source", path=str(prefs_src),
                                timestamp_field="event_timestamp"),
        schema=[feast.Field(name="entity_id", dtype=Int64),
                feast.Field(name="theme", dtype=String)])
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([user, stats, prefs])
    materialize(store)

    client = redis.Redis.from_url(f"redis://{REDIS}")
    rkey = {i: entity_key_bytes(feast, ["entity_id"], [i]) + redis_project.encode() for i in ids}

    def hashes() -> dict[int, dict]:
        with client.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(rkey[i])
            return dict(zip(ids, pipe.execute()))

    client.hset(rkey[6], b"old!", b"a feature the view no longer has")
    before = hashes()
    prefs_fields = {b"_ts:user_prefs", _mmh3("user_prefs:theme")}
    assert all(before[i] for i in ids) and set(before[5]) >= prefs_fields

    erased = ids[1::2]                       # 2, 4, ..., 2000: 1,000 entities
    conn, ns = FeastConnector([repo]), f"feast://{redis_project}"
    assert conn.live_rows(ns, "user_stats", "entity_id", erased + [5000]) == {
        **{i: 1 for i in erased}, 5000: 0}
    res = conn.erase(ns, "user_stats", "entity_id", erased + [5000], "t")
    assert res.rows_deleted == 1000

    after = hashes()
    for i in ids:
        if i not in set(erased):
            assert after[i] == before[i], i                # a neighbour, untouched
        elif i % 5 == 0:                                   # shared: the other view stays
            assert after[i] == {f: v for f, v in before[i].items() if f in prefs_fields}, i
        else:
            assert client.exists(rkey[i]) == 0, i          # the whole hash went (6's too)
    assert not any(conn.count(ns, "user_stats", "entity_id", erased,
                              with_residue=False).rows.values())
    full = conn.count(ns, "user_stats", "entity_id", erased[:50])   # the source is not erased
    assert not any(full.rows.values())                              # here: online only
    assert not any(d["served_by_get_online_features"] for d in full.details.values())
    served = online(store, "user_stats", STATS, "entity_id", [2, 3, 10])
    assert served[2] == served[10] == {f: None for f in STATS} and served[3]["trips"] == 30
    assert online(store, "user_prefs", ["theme"], "entity_id", [10])[10]["theme"] == "theme-10"

    # the check looks at every key: fields written back after the erase are found
    client.hset(rkey[4], b"_ts:user_stats", before[4][b"_ts:user_stats"])
    client.hset(rkey[20], _mmh3("user_stats:trips"), before[20][_mmh3("user_stats:trips")])
    again = conn.count(ns, "user_stats", "entity_id", erased, with_residue=False).rows
    assert {i: n for i, n in again.items() if n} == {4: 1, 20: 1}
    assert conn.erase(ns, "user_stats", "entity_id", erased, "t2").rows_deleted == 2
    assert client.exists(rkey[4]) == 0
    assert client.hgetall(rkey[20]) == {f: v for f, v in before[20].items() if f in prefs_fields}
    client.close()


def test_entity_keys_are_feasts_own_bytes(feast, tmp_path):
    """Keys are built as head + packed value, not through two protobuf objects each: they
    must equal `serialize_entity_key` for every supported type, extremes and non-ASCII text
    included; other value kinds (numpy ints) go through Feast's own function; and a
    value that cannot be a key fails without naming it."""
    import random

    import numpy as np
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from connectors.feast.keys import FeastRepo

    repo = FeastRepo(write_repo(tmp_path / "repo", f"t{uuid4().hex[:8]}"))
    rng = random.Random(12)
    cases = {
        "int64": [0, 1, -1, 2 ** 63 - 1, -2 ** 63, np.int64(42)]
        + [rng.randrange(-2 ** 63, 2 ** 63) for _ in range(200)],
        "int32": [0, -1, 2 ** 31 - 1, -2 ** 31, np.int32(-7)]
        + [rng.randrange(-2 ** 31, 2 ** 31) for _ in range(200)],
        "string": ["", "a", "user-7", "ünïcødé €", "𝄞 clef", "x" * 1000, "USER42@EXAMPLE.COM"],
    }
    field = {"int64": "int64_val", "int32": "int32_val", "string": "string_val"}
    for typ, values in cases.items():
        built = repo._key_builder("entity_id", typ)(values)
        assert built == [serialize_entity_key(
            EntityKey(join_keys=["entity_id"], entity_values=[Value(**{field[typ]: val})]),
            entity_key_serialization_version=3) for val in values], typ

    secret = 2 ** 70 + 12345
    with pytest.raises(Exception) as exc:
        repo._key_builder("entity_id", "int64")([secret])
    assert str(secret) not in str(exc.value)
