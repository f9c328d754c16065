"""Governance of erasure requests (issue 14, parts 1-4), told as the operators live it, through
the CLI on the generated sample lake: a Rego policy that exempts or defers a dataset the data
catalog tags, legal holds that freeze a person's data, four-eyes approval of a request's plan,
rejection and extension of requests, and the actor every ledger entry records.

Nothing is mocked: the policy is real Rego evaluated by the engine, the tags are OpenLineage
events read from the lake's events folder, and every row is read back from the Delta tables
and the Parquet export."""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import read_table, rows_without
from test_identities import crm  # noqa: F401  (the CRM lake: e-mail -> user id)
from deltalake import DeltaTable, write_deltalake

SUBJECT, OTHER = 42, 43
# every dataset that holds a reviewer's rows, with the column their id is in
KEYS = {"raw/reviews": "user_id", "clean/reviews": "reviewer_id",
        "features/user_features": "entity_id", "exports/user_activity": "entity_id"}
EXPORT = "exports/user_activity"

FINANCE_BASIS = ("Art. 17(3)(b) GDPR: the activity export feeds the invoices, kept 10 years "
                 "under tax law")
LITIGATION_BASIS = "Art. 17(3)(e) GDPR: needed for the defence of legal claims (case 2026-17)"
POLICY = f"""package erasure

import rego.v1

tags contains tag.key if {{
	some tag in input.dataset.facets.tags.tags
}}

decision := {{"action": "defer", "basis": "{LITIGATION_BASIS}"}} if "litigation" in tags

decision := {{"action": "exempt", "basis": "{FINANCE_BASIS}"}} if {{
	"finance" in tags
	not "litigation" in tags
}}
"""


# ---- the lake, its ledger and its catalog ------------------------------------------------
def acting_as(monkeypatch, actor: str) -> None:
    monkeypatch.setenv("ERASURE_ACTOR", actor)


def configure(lake, section: str) -> None:
    lake.config.write_text(lake.config.read_text() + "\n" + section)


def install_policy(lake, text: str = POLICY) -> Path:
    folder = lake.config.parent / "policy"
    folder.mkdir(exist_ok=True)
    (folder / "erasure.rego").write_text(text, encoding="utf-8")
    if "[policy]" not in lake.config.read_text():
        configure(lake, '[policy]\nrego = "policy/"\n')
    return folder


def policy_hash(folder: Path) -> str:
    """What `sha256sum` over the folder's .rego files, sorted by name, hashes to (docs)."""
    lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  "
                    f"{p.relative_to(folder).as_posix()}\n"
                    for p in sorted(folder.rglob("*.rego")))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def export_dataset(lake) -> tuple[str, str, str]:
    """(namespace, name, producer) the pipeline's own events give the Parquet export."""
    for line in lake.events.read_text().splitlines():
        event = json.loads(line)
        for d in event.get("outputs", []):
            if d["name"].endswith("exports/user_activity.parquet"):
                return d["namespace"], d["name"], event["producer"]
    raise AssertionError("the sample lake's events do not name the export")


def catalog_tags(lake, *keys: str, file: str = "catalog.jsonl",
                 at: str = "2026-11-02T09:00:00.000Z") -> Path:
    """The data catalog tags the export: one COMPLETE run of a catalog job, no inputs, the
    export as its output with a `tags` dataset facet listing `keys` (none: the catalog took
    its tags off), written to `file` beside the pipeline's events."""
    namespace, name, producer = export_dataset(lake)
    event = {
        "eventTime": at, "eventType": "COMPLETE",
        "producer": producer,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4()), "facets": {}},
        "job": {"namespace": "data-catalog", "name": "classify_datasets", "facets": {}},
        "inputs": [],
        "outputs": [{"namespace": namespace, "name": name, "facets": {"tags": {
            "_producer": producer,
            "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/TagsDatasetFacet.json"
                          "#/$defs/TagsDatasetFacet",
            "tags": [{"key": k, "value": "true", "source": "catalog"} for k in keys]}}}],
    }
    path = lake.events.parent / file
    path.write_text(json.dumps(event) + "\n")
    return path


def rows_of(lake, dataset: str, subject: int = SUBJECT) -> int:
    return sum(1 for k in read_table(lake.tables[dataset]).column(KEYS[dataset]).to_pylist()
               if k == subject)


def everyone_else(lake, subject: int = SUBJECT) -> dict[str, list[tuple]]:
    return {n: rows_without(lake.tables[n], c, subject) for n, c in KEYS.items()}


def ledger_path(lake) -> Path:
    return lake.config.parent / ".erasure" / "ledger.db"


def entries(lake) -> list[tuple[str | None, str, dict]]:
    """Every ledger entry: (request id, kind, body)."""
    path = ledger_path(lake)
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return [(rid, kind, json.loads(body)) for rid, kind, body in
                db.execute("SELECT request_id, kind, body FROM entries ORDER BY seq")]
    finally:
        db.close()


def submit(lake, capsys, *args: str) -> str:
    code, out = lake.cli_json(capsys, "request", "submit", *args)
    assert code == 0, lake.last_err
    return out["request_id"]


def status(lake, capsys, rid: str) -> dict:
    code, st = lake.cli_json(capsys, "status", rid)
    assert code == 0, lake.last_err
    return st


def run(lake, capsys, *args: str) -> tuple[int, dict]:
    return lake.cli_json(capsys, "run", *args)


def by_request(result: dict) -> dict[str, dict]:
    return {r["request_id"]: r for r in result["requests"]}


# the subject id as a whole token (not inside 420 or a hex digest); timestamps and the lake's
# own path (pytest numbers its folders) are taken out first
_TOKEN = re.compile(rf"(?<![0-9A-Za-z]){SUBJECT}(?![0-9A-Za-z])")
_TIME = re.compile(r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?)?")


def names_subject(lake, text: str) -> bool:
    return bool(_TOKEN.search(_TIME.sub("", text.replace(str(lake.root), "<lake>"))))


def ledger_names_subject(lake) -> list[str]:
    """The kinds of the ledger entries whose body names the subject id in plain text."""
    # the check itself can fail: an id anywhere is found, a time or a longer number is not
    assert names_subject(lake, json.dumps({"rows": SUBJECT}))
    assert names_subject(lake, json.dumps({"file": f"user_id={SUBJECT}/part-0.parquet"}))
    assert not names_subject(lake, '{"at": "2026-11-29T02:42:42+00:00", "n": 420}')
    return [k for _, k, b in entries(lake) if names_subject(lake, json.dumps(b))]


def append_rows_of(lake, dataset: str, subject: int, n: int) -> None:
    """The pipeline writes `n` more rows of `subject` (copies of one of theirs)."""
    path = lake.tables[dataset]
    schema = pa.schema(DeltaTable(path).schema().to_arrow())
    mine = [r for r in read_table(path).to_pylist() if r[KEYS[dataset]] == subject]
    assert mine, f"{dataset} holds no row of {subject} to copy"
    write_deltalake(path, pa.Table.from_pylist([mine[0]] * n, schema=schema), mode="append")


# ---- 1. policy: exemptions and deferrals as code -------------------------------------------
def test_the_policy_exempts_the_dataset_the_catalog_tags_finance(lake, capsys, monkeypatch):
    acting_as(monkeypatch, "dpo")
    folder = install_policy(lake)
    catalog_tags(lake, "finance")
    export = lake.tables[EXPORT]
    others = everyone_else(lake)
    kept = rows_of(lake, EXPORT)
    assert kept > 0

    # the plan says the export is exempt, on which basis, by which policy; it is no target
    code, plan = lake.cli_json(capsys, "plan", "--subject-id", str(SUBJECT))
    assert code == 0, lake.last_err
    assert [(x["name"], x["basis"]) for x in plan["exempt"]] == [(export, FINANCE_BASIS)]
    assert plan["policy"] == {"hash": policy_hash(folder), "source": "rego:policy/"}
    assert plan["exempt"][0]["policy_hash"] == policy_hash(folder)
    assert export not in {t["name"] for t in plan["targets"]}
    assert {t["name"] for t in plan["targets"]} == {
        lake.tables[n] for n in ("raw/reviews", "clean/reviews", "features/user_features")}

    # `policy test` shows each dataset's decision and records nothing
    before = len(entries(lake))
    code, tested = lake.cli_json(capsys, "policy", "test", "--subject-id", str(SUBJECT))
    assert code == 0, lake.last_err
    decisions = {d["name"]: (d["action"], d["basis"]) for d in tested["decisions"]}
    assert decisions[export] == ("exempt", FINANCE_BASIS)
    for n in ("raw/reviews", "clean/reviews", "features/user_features"):
        assert decisions[lake.tables[n]][0] == "erase", n
    assert tested["policy"]["hash"] == policy_hash(folder)
    assert len(entries(lake)) == before

    # the erasure leaves the exempt export alone and erases the rest
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    code, res = run(lake, capsys, rid)
    assert code == 0 and res["status"] == "completed", res
    for n in ("raw/reviews", "clean/reviews", "features/user_features"):
        assert rows_of(lake, n) == 0, n
    assert rows_of(lake, EXPORT) == kept
    assert everyone_else(lake) == others

    st = status(lake, capsys, rid)
    assert st["status"] == "completed"
    assert [(x["name"], x["basis"]) for x in st["governance"]["exempt"]] == [
        (export, FINANCE_BASIS)]

    # the ledger's plan carries the basis and the hash of the policy that decided it
    (recorded,) = [b for r, k, b in entries(lake) if r == rid and k == "plan.recorded"]
    assert [(x["name"], x["basis"], x["policy_hash"]) for x in recorded["plan"]["exempt"]] == [
        (export, FINANCE_BASIS, policy_hash(folder))]
    assert recorded["plan"]["policy"]["hash"] == policy_hash(folder)


def test_a_policy_that_does_not_parse_stops_plan_and_run_and_records_nothing(
        lake, capsys, monkeypatch):
    acting_as(monkeypatch, "dpo")
    install_policy(lake, "package erasure\n\nimport rego.v1\n\ndecision := {\"action\": \n")
    catalog_tags(lake, "finance")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    before = entries(lake)
    counts = {n: rows_of(lake, n) for n in KEYS}

    code, out = lake.cli("plan", "--subject-id", str(SUBJECT), "--json", capsys=capsys)
    assert (code, out) == (3, "")
    assert "erasure.rego" in lake.last_err
    code, out = lake.cli("run", rid, "--json", capsys=capsys)
    assert (code, out) == (3, "")
    code, out = lake.cli("run", "--pending", "--json", capsys=capsys)
    assert (code, out) == (3, "")
    assert entries(lake) == before
    assert {n: rows_of(lake, n) for n in KEYS} == counts


def test_a_deferred_dataset_waits_until_the_catalog_drops_its_tag(lake, capsys, monkeypatch):
    acting_as(monkeypatch, "dpo")
    install_policy(lake)
    catalog_tags(lake, "litigation")
    others = everyone_else(lake)
    kept = rows_of(lake, EXPORT)

    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    code, res = run(lake, capsys, rid)
    assert code == 0, lake.last_err
    assert res["status"] == "waiting"
    assert by_request(res)[rid]["status"] == "deferred"
    assert any(LITIGATION_BASIS in n for n in by_request(res)[rid]["notes"])
    for n in ("raw/reviews", "clean/reviews", "features/user_features"):
        assert rows_of(lake, n) == 0, n
    assert rows_of(lake, EXPORT) == kept
    st = status(lake, capsys, rid)
    assert st["status"] == "deferred"
    assert [(x["name"], x["basis"]) for x in st["governance"]["deferred"]] == [
        (lake.tables[EXPORT], LITIGATION_BASIS)]

    # the case is closed: the catalog takes the tag off (its next event lists no tag; the
    # lineage store keeps every event it read, docs/architecture.md, so the newer one wins)
    catalog_tags(lake, file="catalog-later.jsonl", at="2026-11-20T09:00:00.000Z")
    code, res = run(lake, capsys, "--pending")
    assert code == 0, lake.last_err
    assert res["status"] == "completed", res
    assert status(lake, capsys, rid)["status"] == "completed"
    assert {n: rows_of(lake, n) for n in KEYS} == {n: 0 for n in KEYS}
    assert everyone_else(lake) == others


# ---- 2. legal holds -------------------------------------------------------------------------
def test_a_legal_hold_keeps_a_persons_data_until_it_is_released(lake, capsys, monkeypatch):
    acting_as(monkeypatch, "legal")
    code, hold = lake.cli_json(capsys, "hold", "add", "--subject-id", str(SUBJECT),
                               "--reason", "litigation, case 2026-17")
    assert code == 0, lake.last_err
    assert set(hold) == {"hold_id"}
    held = {n: rows_of(lake, n) for n in KEYS}
    others = everyone_else(lake, OTHER)

    acting_as(monkeypatch, "dpo")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    rid_other = submit(lake, capsys, "--subject-id", str(OTHER))
    code, res = run(lake, capsys, "--pending")
    assert code == 0, lake.last_err
    assert res["status"] == "waiting"
    assert by_request(res)[rid_other]["status"] == "completed"
    assert {n: rows_of(lake, n, OTHER) for n in KEYS} == {n: 0 for n in KEYS}
    assert everyone_else(lake, OTHER) == others
    for attempt in range(2):          # this run, and the next one: still held
        if attempt:
            code, res = run(lake, capsys, "--pending")
            assert code == 0, lake.last_err
        assert by_request(res)[rid]["status"] == "on_hold", attempt
        assert status(lake, capsys, rid)["status"] == "on_hold"
        assert {n: rows_of(lake, n) for n in KEYS} == held

    # the hold list says who held what and why, never whose data it is
    code, listed = lake.cli_json(capsys, "hold", "list")
    assert code == 0
    (h,) = listed["holds"]
    assert (h["hold_id"], h["status"], h["added_by"]) == (hold["hold_id"], "active", "legal")
    assert not names_subject(lake, json.dumps(listed))

    acting_as(monkeypatch, "legal")
    code, _ = lake.cli("hold", "release", hold["hold_id"], "--reason", "case settled",
                       capsys=capsys)
    assert code == 0, lake.last_err
    acting_as(monkeypatch, "dpo")
    code, res = run(lake, capsys, "--pending")
    assert code == 0 and res["status"] == "completed", res
    assert status(lake, capsys, rid)["status"] == "completed"
    assert {n: rows_of(lake, n) for n in KEYS} == {n: 0 for n in KEYS}
    code, listed = lake.cli_json(capsys, "hold", "list")
    assert [(h["status"], h["released_by"]) for h in listed["holds"]] == [("released", "legal")]

    # the ledger never names the person in plain text
    assert ledger_names_subject(lake) == []


def test_a_hold_by_identity_holds_a_request_by_id_and_an_expired_hold_holds_nothing(
        lake, capsys, monkeypatch):
    acting_as(monkeypatch, "legal")
    code, _ = lake.cli_json(capsys, "hold", "add", "--identity", f"user_id={SUBJECT}",
                            "--reason", "authority order 17")
    assert code == 0, lake.last_err
    code, _ = lake.cli_json(capsys, "hold", "add", "--subject-id", str(OTHER),
                            "--reason", "an old case", "--until", "2020-01-31")
    assert code == 0, lake.last_err
    held = {n: rows_of(lake, n) for n in KEYS}

    acting_as(monkeypatch, "dpo")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    rid_other = submit(lake, capsys, "--subject-id", str(OTHER))
    code, res = run(lake, capsys, "--pending")
    assert code == 0, lake.last_err
    assert by_request(res)[rid]["status"] == "on_hold"
    assert by_request(res)[rid_other]["status"] == "completed"
    assert {n: rows_of(lake, n) for n in KEYS} == held
    assert {n: rows_of(lake, n, OTHER) for n in KEYS} == {n: 0 for n in KEYS}
    code, listed = lake.cli_json(capsys, "hold", "list")
    assert sorted(h["status"] for h in listed["holds"]) == ["active", "expired"]
    assert not names_subject(lake, json.dumps(listed))
    assert ledger_names_subject(lake) == []


def test_a_hold_scoped_to_one_dataset_lets_the_rest_be_erased(lake, capsys, monkeypatch):
    acting_as(monkeypatch, "legal")
    code, hold = lake.cli_json(capsys, "hold", "add", "--subject-id", str(SUBJECT),
                               "--reason", "audit of the cleaning job", "--scope",
                               "*clean/reviews")
    assert code == 0, lake.last_err
    kept = rows_of(lake, "clean/reviews")
    others = everyone_else(lake)

    acting_as(monkeypatch, "dpo")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    code, res = run(lake, capsys, rid)
    assert code == 0, lake.last_err
    assert by_request(res)[rid]["status"] == "on_hold"
    assert rows_of(lake, "raw/reviews") == 0
    assert rows_of(lake, "clean/reviews") == kept
    st = status(lake, capsys, rid)
    assert st["status"] == "on_hold"
    assert [(x["name"], x["hold_ids"]) for x in st["governance"]["held"]] == [
        (lake.tables["clean/reviews"], [hold["hold_id"]])]

    code, _ = lake.cli("hold", "release", hold["hold_id"], "--reason", "audit done",
                       capsys=capsys)
    assert code == 0, lake.last_err
    code, res = run(lake, capsys, "--pending")
    assert code == 0 and by_request(res)[rid]["status"] == "completed", res
    assert {n: rows_of(lake, n) for n in KEYS} == {n: 0 for n in KEYS}
    assert everyone_else(lake) == others
    assert ledger_names_subject(lake) == []


def test_a_sweep_does_not_re_erase_a_held_subject_whose_data_came_back(
        lake, capsys, monkeypatch):
    acting_as(monkeypatch, "dpo")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    code, res = run(lake, capsys, rid)
    assert code == 0 and res["status"] == "completed", res
    assert rows_of(lake, "raw/reviews") == 0

    # a new case holds the person; then a backfill writes their rows again
    acting_as(monkeypatch, "legal")
    code, _ = lake.cli_json(capsys, "hold", "add", "--subject-id", str(SUBJECT),
                            "--reason", "litigation, case 2026-31")
    assert code == 0, lake.last_err
    write_deltalake(lake.tables["raw/reviews"], _one_row_of(lake, SUBJECT), mode="append")
    assert rows_of(lake, "raw/reviews") == 1

    acting_as(monkeypatch, "dpo")
    code, swept = lake.cli_json(capsys, "sweep", "--fix")
    assert code == 0, (code, swept)
    assert [h["request_id"] for h in swept["held"]] == [rid]
    assert swept["findings"] == [] and swept["fixed"] == []
    assert rows_of(lake, "raw/reviews") == 1
    assert [k for r, k, _ in entries(lake) if k == "request.submitted"] == ["request.submitted"]
    assert ledger_names_subject(lake) == []


def _one_row_of(lake, subject: int) -> pa.Table:
    """A row of `subject` for raw/reviews, built from another user's row (theirs are gone)."""
    path = lake.tables["raw/reviews"]
    schema = pa.schema(DeltaTable(path).schema().to_arrow())
    row = read_table(path).select(schema.names).slice(0, 1).to_pylist()[0]
    row["user_id"] = subject
    return pa.Table.from_pylist([row], schema=schema)


# ---- 3. approvals, rejection, extension ------------------------------------------------------
def test_four_eyes_approval_before_anything_is_erased(lake, capsys, monkeypatch):
    configure(lake, "[approvals]\nrequired = 2\n")
    acting_as(monkeypatch, "alice")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    present = {n: rows_of(lake, n) for n in KEYS}
    others = everyone_else(lake)

    # the submitter cannot approve their own request
    before = len(entries(lake))
    code, _ = lake.cli("request", "approve", rid, "--json", capsys=capsys)
    assert code == 4
    assert len(entries(lake)) == before

    acting_as(monkeypatch, "bob")
    code, ok = lake.cli_json(capsys, "request", "approve", rid)
    assert code == 0, lake.last_err
    assert (ok["approvals"], ok["already_approved"]) == (1, False)
    code, again = lake.cli_json(capsys, "request", "approve", rid)
    assert code == 0, lake.last_err
    assert (again["approvals"], again["already_approved"]) == (1, True)

    # one approval of two: the run erases nothing
    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, rid)
    assert code == 0, lake.last_err
    assert res["status"] == "waiting"
    assert by_request(res)[rid]["status"] == "awaiting_approval"
    assert {n: rows_of(lake, n) for n in KEYS} == present
    assert status(lake, capsys, rid)["status"] == "awaiting_approval"

    acting_as(monkeypatch, "carol")
    code, ok = lake.cli_json(capsys, "request", "approve", rid)
    assert code == 0 and ok["approvals"] == 2, lake.last_err
    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, rid)
    assert code == 0 and res["status"] == "completed", res
    assert {n: rows_of(lake, n) for n in KEYS} == {n: 0 for n in KEYS}
    assert everyone_else(lake) == others

    gov = status(lake, capsys, rid)["governance"]
    assert (gov["submitted_by"], gov["approved_by"], gov["ran_by"]) == (
        "alice", ["bob", "carol"], "ops")


def test_an_approval_no_longer_counts_once_the_lake_changes_what_would_be_erased(
        lake, capsys, monkeypatch):
    configure(lake, "[approvals]\nrequired = 2\n")
    acting_as(monkeypatch, "alice")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    for approver in ("bob", "carol"):
        acting_as(monkeypatch, approver)
        assert lake.cli("request", "approve", rid, capsys=capsys)[0] == 0, lake.last_err
    approved_rows = rows_of(lake, "raw/reviews")

    # after the approvals, the pipeline writes two more rows of the person
    append_rows_of(lake, "raw/reviews", SUBJECT, 2)
    assert rows_of(lake, "raw/reviews") == approved_rows + 2
    present = {n: rows_of(lake, n) for n in KEYS}
    others = everyone_else(lake)

    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, rid)
    assert code == 0, lake.last_err
    (out,) = res["requests"]
    assert out["status"] == "awaiting_approval"
    change = f"~ {lake.tables['raw/reviews']}: rows {approved_rows} -> {approved_rows + 2}"
    assert change in out["notes"], out["notes"]
    assert {n: rows_of(lake, n) for n in KEYS} == present
    st = status(lake, capsys, rid)
    assert st["status"] == "awaiting_approval"
    assert change in st["governance"]["approval_stale"]["diff"]

    for approver in ("bob", "carol"):
        acting_as(monkeypatch, approver)
        code, ok = lake.cli_json(capsys, "request", "approve", rid)
        assert code == 0 and not ok["already_approved"], lake.last_err
    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, rid)
    assert code == 0 and res["status"] == "completed", res
    assert {n: rows_of(lake, n) for n in KEYS} == {n: 0 for n in KEYS}
    assert everyone_else(lake) == others


def test_a_rejected_request_is_never_run_nor_approved(lake, capsys, monkeypatch):
    configure(lake, "[approvals]\nrequired = 2\n")
    acting_as(monkeypatch, "alice")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    present = {n: rows_of(lake, n) for n in KEYS}

    acting_as(monkeypatch, "bob")
    code, out = lake.cli_json(capsys, "request", "reject", rid, "--reason",
                              "the requester's identity could not be confirmed")
    assert code == 0 and out["status"] == "rejected", lake.last_err
    st = status(lake, capsys, rid)
    assert st["status"] == "rejected"
    assert st["governance"]["rejected"]["actor"] == "bob"

    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, "--pending")
    assert code == 0, lake.last_err
    assert rid not in by_request(res)
    assert {n: rows_of(lake, n) for n in KEYS} == present

    acting_as(monkeypatch, "carol")
    before = len(entries(lake))
    code, _ = lake.cli("request", "approve", rid, capsys=capsys)
    assert code == 4
    assert len(entries(lake)) == before
    assert status(lake, capsys, rid)["status"] == "rejected"


def test_a_deadline_is_extended_by_two_months_once(lake, capsys, monkeypatch):
    acting_as(monkeypatch, "dpo")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    deadline = status(lake, capsys, rid)["deadline"]

    code, out = lake.cli_json(capsys, "request", "extend", rid, "--reason",
                              "many requests this month")
    assert code == 0, lake.last_err
    assert out["deadline_before"] == deadline
    before, after = datetime.fromisoformat(deadline), datetime.fromisoformat(out["deadline"])
    assert (after.year * 12 + after.month) - (before.year * 12 + before.month) == 2
    # the same day two months on, or that month's last day (29 December -> 28 February)
    last = calendar.monthrange(after.year, after.month)[1]
    assert (after.day, after.time()) == (min(before.day, last), before.time())
    assert status(lake, capsys, rid)["deadline"] == out["deadline"]

    n = len(entries(lake))
    code, _ = lake.cli("request", "extend", rid, "--reason", "still many", capsys=capsys)
    assert code == 4
    assert len(entries(lake)) == n
    assert status(lake, capsys, rid)["deadline"] == out["deadline"]

    # Art. 12(3) allows two further months, not three
    rid_other = submit(lake, capsys, "--subject-id", str(OTHER))
    deadline_other = status(lake, capsys, rid_other)["deadline"]
    n = len(entries(lake))
    code, _ = lake.cli("request", "extend", rid_other, "--reason", "complex", "--months", "3",
                       capsys=capsys)
    assert code == 4
    assert len(entries(lake)) == n
    assert status(lake, capsys, rid_other)["deadline"] == deadline_other


# ---- 4. actors ---------------------------------------------------------------------------------
def test_every_ledger_entry_names_the_operator_who_caused_it(lake, capsys, monkeypatch):
    acting_as(monkeypatch, "alice")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    acting_as(monkeypatch, "legal")
    code, hold = lake.cli_json(capsys, "hold", "add", "--subject-id", str(OTHER),
                               "--reason", "case 2026-17", "--scope", "*exports*")
    assert code == 0, lake.last_err
    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, rid)
    assert code == 0 and res["status"] == "completed", res

    recorded = entries(lake)
    assert recorded and all("actor" in b for _, _, b in recorded), [
        k for _, k, b in recorded if "actor" not in b]
    who = {(k, b["actor"]) for _, k, b in recorded}
    assert ("request.submitted", "alice") in who and ("hold.added", "legal") in who
    assert {a for k, a in who if k not in ("request.submitted", "hold.added")} == {"ops"}
    assert {a for k, a in who if k in ("request.submitted", "hold.added")} == {"alice", "legal"}
    assert ("request.completed", "ops") in who and ("plan.recorded", "ops") in who

    # an actor name that could forge a log line is refused before anything is recorded
    acting_as(monkeypatch, "ops\nrequest.completed by auditor")
    for args in (("request", "submit", "--subject-id", str(OTHER), "--json"),
                 ("run", "--pending", "--json"),
                 ("hold", "release", hold["hold_id"], "--reason", "done", "--json")):
        code, out = lake.cli(*args, capsys=capsys)
        assert (code, out) == (3, ""), args
        assert "ERASURE_ACTOR" in lake.last_err
    assert entries(lake) == recorded


# ---- found in review: governance must hold on every path, not only the first plan -------
def _fail_erasing_once(monkeypatch):
    """The next run's erase steps fail (a connector error, as a lost disk would give); the
    request keeps its recorded plan and is resumed by the following run."""
    import erasure.execution as ex

    real = ex.Runner._erase

    def broken(self, conn, members):
        raise RuntimeError("storage unavailable")
    monkeypatch.setattr(ex.Runner, "_erase", broken)
    return lambda: monkeypatch.setattr(ex.Runner, "_erase", real)


def test_a_hold_placed_after_a_plan_was_recorded_is_honoured_when_the_run_resumes(
        lake, capsys, monkeypatch):
    acting_as(monkeypatch, "dpo")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    restore = _fail_erasing_once(monkeypatch)
    code, res = run(lake, capsys, rid)
    assert by_request(res)[rid]["status"] == "failed"          # planned, nothing erased
    restore()
    kept = rows_of(lake, "clean/reviews")
    assert kept > 0
    acting_as(monkeypatch, "legal")
    code, hold = lake.cli_json(capsys, "hold", "add", "--subject-id", str(SUBJECT),
                               "--reason", "Case 2026-201", "--scope", "*clean/reviews")
    assert code == 0
    acting_as(monkeypatch, "dpo")
    code, res = run(lake, capsys, "--pending")
    assert by_request(res)[rid]["status"] == "on_hold", res
    assert rows_of(lake, "clean/reviews") == kept                # the held dataset kept
    assert rows_of(lake, "raw/reviews") == 0                     # the rest erased


def test_approvals_required_after_a_plan_was_recorded_still_gate_the_run(lake, capsys,
                                                                         monkeypatch):
    acting_as(monkeypatch, "alice")
    rid = submit(lake, capsys, "--subject-id", str(SUBJECT))
    restore = _fail_erasing_once(monkeypatch)
    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, rid)
    assert by_request(res)[rid]["status"] == "failed"
    restore()
    before = rows_of(lake, "raw/reviews")
    lake.config.write_text(lake.config.read_text() + "\n[approvals]\nrequired = 2\n")
    code, res = run(lake, capsys, "--pending")
    assert by_request(res)[rid]["status"] == "awaiting_approval", res
    assert rows_of(lake, "raw/reviews") == before                # nothing erased
    # one person under two spellings is not two pairs of eyes
    for who in ("bob", "Bob "):
        acting_as(monkeypatch, who)
        assert lake.cli_json(capsys, "request", "approve", rid)[0] == 0
    acting_as(monkeypatch, "ALICE")                               # the submitter, shouting
    assert lake.cli("request", "approve", rid, capsys=capsys)[0] == 4
    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, "--pending")
    assert by_request(res)[rid]["status"] == "awaiting_approval", res
    acting_as(monkeypatch, "carol")
    assert lake.cli_json(capsys, "request", "approve", rid)[0] == 0
    acting_as(monkeypatch, "ops")
    code, res = run(lake, capsys, "--pending")
    assert by_request(res)[rid]["status"] == "completed", res
    assert rows_of(lake, "raw/reviews") == 0


@pytest.fixture
def crm_lake(request):
    """test_identities' CRM lake (imported above, so pytest knows the fixture here)."""
    return request.getfixturevalue("crm")


def test_a_hold_on_a_user_id_holds_a_request_by_email_the_crm_maps_to_it(crm_lake, capsys):
    """The hold names user 42; the request names an e-mail address that enrichment maps to
    42 (and 43). Nothing is erased in the first run: the derived ids are looked up before
    anything is decided."""
    from test_identities import cli

    tmp, cfg, crm_t, events, clean = crm_lake
    code, hold, err = cli(cfg, capsys, "hold", "add", "--identity", "user_id=42", "--reason",
                          "Case 2026-202")
    assert code == 0, err
    before = sorted(read_table(str(events)).column("uid").to_pylist())
    _, sub, err = cli(cfg, capsys, "request", "submit", "--identity", "email=alice@example.com")
    code, res, err = cli(cfg, capsys, "run", sub["request_id"])
    assert code == 0 and res["requests"][0]["status"] == "on_hold", (res, err)
    assert sorted(read_table(str(events)).column("uid").to_pylist()) == before
    code, st, _ = cli(cfg, capsys, "status", sub["request_id"])
    assert st["status"] == "on_hold"
    code, _, _ = cli(cfg, capsys, "hold", "release", hold["hold_id"], "--reason", "closed")
    code, res, err = cli(cfg, capsys, "run", "--pending")
    assert res["requests"][0]["status"] == "completed", (res, err)
    left = set(read_table(str(events)).column("uid").to_pylist())
    assert not left & {42, 43} and {7, 8, 420} <= left


def test_a_sweep_leaves_alone_a_subject_held_by_an_id_its_request_derived(crm_lake, capsys):
    """A request by e-mail erased user ids 42 and 43 (the CRM's mapping). A hold is then
    placed on user id 42 and the subject's rows come back: `sweep --fix` lists the request as
    held and re-erases nothing (the sweep matches holds by the ids the plan derived)."""
    from test_identities import cli

    tmp, cfg, crm_t, events, clean = crm_lake
    _, sub, err = cli(cfg, capsys, "request", "submit", "--identity", "email=alice@example.com")
    code, res, err = cli(cfg, capsys, "run", sub["request_id"])
    assert res["requests"][0]["status"] == "completed", (res, err)
    code, hold, err = cli(cfg, capsys, "hold", "add", "--identity", "user_id=42", "--reason",
                          "Case 2026-203")
    assert code == 0, err
    write_deltalake(events, pa.table({"uid": pa.array([42], pa.int64()), "n": [99]}),
                    mode="append")
    code, sw, err = cli(cfg, capsys, "sweep", "--fix")
    assert code == 0, (sw, err)
    assert [h["request_id"] for h in sw["held"]] == [sub["request_id"]]
    assert sw["findings"] == [] and sw["fixed"] == []
    assert 42 in read_table(str(events)).column("uid").to_pylist()
