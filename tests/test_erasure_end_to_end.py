"""Erasing subject 42 from the sample lake: every downstream table, nobody else's rows."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import files_holding, read_table, rows_without

KEYS = {"raw/reviews": "user_id", "clean/reviews": "reviewer_id",
        "features/user_features": "entity_id"}


def test_plan_follows_renamed_keys_and_excludes_the_aggregate(lake, capsys):
    code, plan = lake.cli_json(capsys, "plan", "--subject-id", "42")
    assert code == 0
    got = {(Path(t["name"]).relative_to(lake.root / "tables").as_posix(), t["column"], t["how"])
           for t in plan["targets"]}
    assert got == {("raw/reviews", "user_id", "root"),
                   ("clean/reviews", "reviewer_id", "column_lineage"),
                   ("features/user_features", "entity_id", "column_lineage"),
                   ("exports/user_activity.parquet", "entity_id", "column_lineage")}
    for t in plan["targets"]:
        table = read_table(t["name"])
        assert t["rows"] == sum(1 for k in table.column(t["column"]).to_pylist() if k == 42)
        assert t["rows"] > 0 and t["files"]
        assert t["connector"] == ("parquet" if t["name"].endswith(".parquet") else "delta")
    oos = {Path(o["name"]).name: o["reason"] for o in plan["out_of_scope"]}
    assert "daily_ratings" in oos and "AGGREGATION" in oos["daily_ratings"]
    assert plan["unresolved"] == []


def test_plan_changes_nothing(lake, capsys):
    before = {p: p.stat().st_mtime_ns for p in (lake.root / "tables").rglob("*") if p.is_file()}
    code, _ = lake.cli("plan", "--subject-id", "42", capsys=capsys)
    after = {p: p.stat().st_mtime_ns for p in (lake.root / "tables").rglob("*") if p.is_file()}
    assert code == 0 and before == after


def test_erasure_removes_subject_everywhere_and_keeps_everyone_else(lake, capsys):
    others_before = {n: rows_without(lake.tables[n], c, 42) for n, c in KEYS.items()}
    agg_before = read_table(lake.tables["agg/daily_ratings"]).num_rows
    code, sub = lake.cli_json(capsys, "request", "submit", "--subject-id", "42",
                              "--requested-by", "dpo@example.com")
    assert code == 0
    rid = sub["request_id"]
    code, res = lake.cli_json(capsys, "run", rid)
    assert code == 0, res
    assert res["status"] == "completed"
    for t in res["requests"][0]["targets"]:
        assert t["verified"] and t["rows_remaining"] == 0 and t["rows_deleted"] == t["rows_planned"]
    for n, c in KEYS.items():
        table = read_table(lake.tables[n])
        assert 42 not in table.column(c).to_pylist()
        assert rows_without(lake.tables[n], c, 42) == others_before[n], n
    assert read_table(lake.tables["agg/daily_ratings"]).num_rows == agg_before
    # physically: nothing under any table folder still holds the subject
    leftovers = files_holding(lake.root / "tables", [b"user42@example.com"],
                              {"user_id": 42, "reviewer_id": 42, "entity_id": 42})
    assert leftovers == []
    # and the ledger, lineage store and key folder never saw the plain email
    for f in (lake.root / ".erasure").rglob("*"):
        if f.is_file():
            assert b"user42@example.com" not in f.read_bytes()


def test_rerun_is_idempotent(lake, capsys):
    _, sub = lake.cli_json(capsys, "request", "submit", "--subject-id", "7")
    rid = sub["request_id"]
    assert lake.cli("run", rid, capsys=capsys)[0] == 0
    versions = {n: _version(p) for n, p in lake.delta_tables.items()}
    code, res = lake.cli_json(capsys, "run", rid)
    assert code == 0 and res["status"] == "completed"
    assert "nothing was repeated" in res["requests"][0]["notes"][0]
    assert res["requests"][0]["errors"] == []
    assert {n: _version(p) for n, p in lake.delta_tables.items()} == versions
    code, st = lake.cli_json(capsys, "status", rid)
    assert st["status"] == "completed"
    for t in st["targets"]:
        purge = "not-applicable" if t["connector"] == "parquet" else "completed"
        assert t["steps"] == {"erase": "completed", "purge": purge, "verify": "completed"}, t


def test_pending_batch_keeps_each_subjects_evidence(lake, capsys, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("3\n5\n8\n")
    counts = {s: sum(1 for k in read_table(lake.tables["raw/reviews"]).column("user_id")
                     .to_pylist() if k == s) for s in (3, 5, 8)}
    code, sub = lake.cli_json(capsys, "request", "submit", "--subjects-file", str(ids))
    assert code == 0 and len(sub["requests"]) == 3
    code, res = lake.cli_json(capsys, "run", "--pending")
    assert code == 0 and res["status"] == "completed"
    by_id = {r["request_id"]: r for r in res["requests"]}
    for s, r in zip((3, 5, 8), sub["requests"]):
        raw = [t for t in by_id[r["request_id"]]["targets"] if t["name"].endswith("raw/reviews")][0]
        assert raw["rows_deleted"] == counts[s] and raw["verified"]
    left = read_table(lake.tables["raw/reviews"]).column("user_id").to_pylist()
    assert not {3, 5, 8} & set(left) and 4 in left
    # one pass per table: every raw-table erase step of the batch shares one commit
    code, st = lake.cli_json(capsys, "status")
    assert {s["status"] for s in st["requests"]} == {"completed"}


def test_unknown_request_and_bad_key_type_change_nothing(lake, capsys):
    assert lake.cli("run", "req-does-not-exist", capsys=capsys)[0] == 4
    versions = {n: _version(p) for n, p in lake.delta_tables.items()}
    code, _ = lake.cli("request", "submit", "--subject-id", "not-a-number", capsys=capsys)
    assert code == 4 and "nothing was changed" in lake.last_err
    code, st = lake.cli_json(capsys, "status")
    assert st["requests"] == []
    assert lake.cli("plan", "--subject-id", "x1", capsys=capsys)[0] == 4
    assert {n: _version(p) for n, p in lake.delta_tables.items()} == versions


def test_malformed_events_stop_the_plan_with_file_and_line(lake, capsys):
    bad = lake.events.parent / "broken.jsonl"
    bad.write_text('{"eventType": "START"}\nnot json\n')
    code, _ = lake.cli("plan", "--subject-id", "42", capsys=capsys)
    assert code == 4
    err = lake.last_err
    assert "broken.jsonl:1" in err and "broken.jsonl:2" in err


def test_unresolved_downstream_datasets_are_listed(lake, capsys):
    raw = lake.tables["raw/reviews"]
    ev = {"eventType": "COMPLETE", "eventTime": "2026-11-02T00:00:00Z", "producer": "test",
          "run": {"runId": "6f7c1f6e-0000-4000-8000-000000000001"},
          "job": {"namespace": "crm", "name": "export_contacts"},
          "inputs": [{"namespace": "file", "name": raw}],
          "outputs": [{"namespace": "postgres://crm:5432", "name": "crm.public.contacts",
                       "facets": {"schema": {"fields": [{"name": "user_id", "type": "bigint"}]}}},
                      {"namespace": "file", "name": str(lake.root / "tables" / "exports" / "x")}]}
    (lake.events.parent / "crm.jsonl").write_text(json.dumps(ev) + "\n")
    code, plan = lake.cli_json(capsys, "plan", "--subject-id", "42")
    assert code == 0
    reasons = {u["name"]: u["reason"] for u in plan["unresolved"]}
    assert "no connector" in reasons["crm.public.contacts"]
    assert str(lake.root / "tables" / "exports" / "x") in reasons
    _, sub = lake.cli_json(capsys, "request", "submit", "--subject-id", "42")
    code, res = lake.cli_json(capsys, "run", sub["request_id"])
    assert code == 6 and res["status"] == "incomplete"
    assert len(res["requests"][0]["unresolved"]) == 2


def _version(path: str) -> int:
    from deltalake import DeltaTable
    return DeltaTable(path).version()
