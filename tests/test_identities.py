"""Typed identities (issue 11, items 1 and 2): roots keyed by different identity types, requests
by `--identity TYPE=VALUE` or an untyped `--subject-id`, `not_applicable` instead of an error,
patterns and normalization checked before anything is recorded. Real Delta tables."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from erasure.cli import run_cli

from conftest import read_table

OBRIEN = "o'brien@example.com"
EMAILS = [OBRIEN, "alice@example.com", "bob@example.com", "o'brien@example.org"]
UIDS = [42, 42, 7, 8, 420, 42]


def lineage_event(run: int, job: str, src: Path, out: Path,
                  identity_copy: tuple[str, str] | None = None) -> str:
    """One OpenLineage COMPLETE event: job reads `src` and writes `out`; with
    `identity_copy` (out column, src column) the out column is declared an IDENTITY copy."""
    facets = {}
    if identity_copy is not None:
        to, frm = identity_copy
        facets = {"columnLineage": {
            "_producer": "t", "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/"
            "ColumnLineageDatasetFacet.json",
            "fields": {to: {"inputFields": [{
                "namespace": "file", "name": str(src), "field": frm,
                "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}]}}}}
    return json.dumps({
        "eventType": "COMPLETE", "eventTime": "2026-11-01T00:00:00Z", "producer": "t",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json",
        "run": {"runId": f"00000000-0000-4000-8000-{run:012d}"},
        "job": {"namespace": "lake", "name": job},
        "inputs": [{"namespace": "file", "name": str(src)}],
        "outputs": [{"namespace": "file", "name": str(out), "facets": facets}]}) + "\n"


@pytest.fixture
def two_roots(tmp_path, monkeypatch):
    """`events` keyed by an int64 uid (identity user_id), `contacts` keyed by a string e-mail
    (identity email, normalize lower, a pattern), and `mail_log`, a copy of contacts that the
    lineage reaches through a renamed column."""
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    events, contacts, log = tmp_path / "events", tmp_path / "contacts", tmp_path / "mail_log"
    write_deltalake(events, pa.table({"uid": pa.array(UIDS, pa.int64()),
                                      "what": [f"e{i}" for i in range(len(UIDS))]}))
    write_deltalake(contacts, pa.table({"email": EMAILS, "name": ["O", "A", "B", "O2"]}))
    write_deltalake(log, pa.table({"to_addr": EMAILS * 2, "n": list(range(8))}))
    ev = tmp_path / "events.jsonl"
    ev.write_text(lineage_event(11, "mailer", contacts, log, ("to_addr", "email")))
    cfg = tmp_path / "erasure.toml"
    cfg.write_text(
        '[lineage]\nevents = ["events.jsonl"]\n'
        '[[identities]]\nname = "email"\nnormalize = "lower"\n'
        "pattern = '^[^@\\s]+@[^@\\s]+$'\n"
        '[[roots]]\nnamespace = "file"\nname = "events"\ncolumn = "uid"\nidentity = "user_id"\n'
        '[[roots]]\nnamespace = "file"\nname = "contacts"\ncolumn = "email"\n'
        'identity = "email"\n')
    return tmp_path, cfg, events, contacts, log


def cli(cfg: Path, capsys, *args: str) -> tuple[int, dict | None, str]:
    code = run_cli(["--config", str(cfg), *args, "--json"])
    cap = capsys.readouterr()
    return code, (json.loads(cap.out) if cap.out.strip() else None), cap.err


def ledger_bytes(tmp: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted((tmp / ".erasure").rglob("*"))
                    if f.is_file())


def test_an_untyped_email_erases_the_contact_and_the_int_root_is_not_applicable(two_roots, capsys):
    tmp, cfg, events, contacts, log = two_roots
    code, plan, err = cli(cfg, capsys, "plan", "--subject-id", OBRIEN)
    assert code == 0, err
    by_name = {t["name"]: t for t in plan["targets"]}
    assert set(by_name) == {str(contacts), str(log)}
    assert by_name[str(contacts)]["rows"] == 1 and by_name[str(log)]["rows"] == 2
    assert {t["identity"] for t in plan["targets"]} == {"email"}
    [na] = plan["not_applicable"]
    assert na["name"] == str(events) and na["identity"] == "user_id"
    assert "cannot be a int64 value" in na["reason"] and OBRIEN not in json.dumps(plan)
    code, sub, err = cli(cfg, capsys, "request", "submit", "--subject-id", OBRIEN)
    assert code == 0, err
    code, res, err = cli(cfg, capsys, "run", sub["request_id"])
    assert code == 0 and res["status"] == "completed", (res, err)
    assert read_table(str(contacts)).column("email").to_pylist() == EMAILS[1:]
    assert sorted(read_table(str(log)).column("to_addr").to_pylist()) == sorted(EMAILS[1:] * 2)
    assert sorted(read_table(str(events)).column("uid").to_pylist()) == sorted(UIDS)
    assert OBRIEN.encode() not in ledger_bytes(tmp)


def test_typed_identities_each_address_their_own_roots(two_roots, capsys):
    tmp, cfg, events, contacts, log = two_roots
    code, sub, err = cli(cfg, capsys, "request", "submit", "--identity", "user_id=42",
                         "--identity", "email=  O'Brien@Example.COM ")
    assert code == 0, err
    rid = sub["request_id"]
    code, res, err = cli(cfg, capsys, "run", rid)
    assert code == 0 and res["status"] == "completed", (res, err)
    # the e-mail was normalized (trimmed, lowercased) before it was matched
    assert read_table(str(contacts)).column("email").to_pylist() == EMAILS[1:]
    assert sorted(read_table(str(events)).column("uid").to_pylist()) == [7, 8, 420]
    code, st, _ = cli(cfg, capsys, "status", rid)
    assert {t["name"] for t in st["targets"]} == {str(events), str(contacts), str(log)}
    raw = ledger_bytes(tmp)
    assert b"brien" not in raw.lower()
    # the request records each identity by type and HMAC, never its value
    from erasure.ledger import Ledger, chain_key
    from erasure.subject import SubjectKeys

    keys = SubjectKeys.load(tmp / ".erasure" / "keys" / "subject.key", create=False)
    led = Ledger(tmp / ".erasure" / "ledger.db", chain_key(keys))
    try:
        [submitted] = [e for e in led.entries(rid) if e.kind == "request.submitted"]
        [plan] = [e for e in led.entries(rid) if e.kind == "plan.recorded"]
    finally:
        led.close()
    ids = submitted.body["identities"]
    assert [(i["type"], i["source"]) for i in ids] == [("email", "request"), ("user_id", "request")]
    assert ids[0]["hmac"] == keys.subject_hmac(f"email\x1f{OBRIEN}")
    assert plan.body["plan"]["identities"] == ids


def test_several_values_of_one_type_erase_each(two_roots, capsys):
    tmp, cfg, events, contacts, log = two_roots
    _, sub, err = cli(cfg, capsys, "request", "submit", "--identity", f"email={OBRIEN}",
                      "--identity", "email=Bob@Example.com", "--identity", "user_id=8")
    code, res, err = cli(cfg, capsys, "run", sub["request_id"])
    assert code == 0 and res["status"] == "completed", (res, err)
    assert read_table(str(contacts)).column("email").to_pylist() == [
        "alice@example.com", "o'brien@example.org"]
    assert sorted(read_table(str(log)).column("to_addr").to_pylist()) == sorted(
        ["alice@example.com", "o'brien@example.org"] * 2)
    assert sorted(read_table(str(events)).column("uid").to_pylist()) == [7, 42, 42, 42, 420]


def test_the_same_identities_in_another_order_are_the_same_open_request(two_roots, capsys):
    tmp, cfg, *_ = two_roots
    _, a, _ = cli(cfg, capsys, "request", "submit", "--identity", "user_id=42",
                  "--identity", f"email={OBRIEN}")
    _, b, _ = cli(cfg, capsys, "request", "submit", "--identity", "email=O'BRIEN@example.com",
                  "--identity", "user_id=42")
    assert b["existing"] is True and b["request_id"] == a["request_id"]


@pytest.mark.parametrize("args, message", [
    (["--identity", "email=not-an-address"], "does not match the pattern declared for email"),
    (["--identity", "phone=+49 30 1234"], "unknown identity type 'phone'"),
    (["--identity", "user_id=forty-two"], "is not an integer"),
    (["--identity", "email"], "--identity takes TYPE=VALUE"),
])
def test_a_bad_identity_is_exit_4_and_records_nothing(two_roots, capsys, args, message):
    tmp, cfg, *_ = two_roots
    for cmd in (["plan"], ["request", "submit"]):
        code, out, err = cli(cfg, capsys, *cmd, *args)
        assert code == 4 and message in err, (cmd, code, err)
        assert "not-an-address" not in err and "forty-two" not in err and "1234" not in err
    assert not (tmp / ".erasure" / "ledger.db").exists()


def test_an_untyped_id_no_root_can_hold_is_exit_4(two_roots, capsys):
    tmp, cfg, events, *_ = two_roots
    only_int = tmp / "int-only.toml"
    only_int.write_text('[lineage]\nevents = ["events.jsonl"]\n[[roots]]\nnamespace = "file"\n'
                        'name = "events"\ncolumn = "uid"\n')
    code, _, err = cli(only_int, capsys, "request", "submit", "--subject-id", OBRIEN)
    assert code == 4 and "no root's key column can hold it" in err and OBRIEN not in err
    code, _, err = cli(only_int, capsys, "plan", "--subject-id", OBRIEN)
    assert code == 4 and "no dataset the lineage reaches can hold its identities" in err
    assert not (tmp / ".erasure" / "ledger.db").exists()


def test_a_subjects_file_mixes_typed_lines_and_plain_ids(two_roots, capsys):
    tmp, cfg, events, contacts, log = two_roots
    f = tmp / "subjects.txt"
    # `email=` is a declared type: typed (and normalized); `x=bob@example.com` is a plain id
    f.write_text("email=Alice@Example.com\n42\n")
    code, sub, err = cli(cfg, capsys, "request", "submit", "--subjects-file", str(f))
    assert code == 0, err
    code, res, err = cli(cfg, capsys, "run", "--pending")
    assert code == 0 and res["status"] == "completed", (res, err)
    assert read_table(str(contacts)).column("email").to_pylist() == [
        OBRIEN, "bob@example.com", "o'brien@example.org"]
    assert sorted(read_table(str(events)).column("uid").to_pylist()) == [7, 8, 420]


def test_an_invalid_pattern_or_a_type_declared_twice_is_exit_3(two_roots, capsys):
    tmp, cfg, *_ = two_roots
    bad = tmp / "bad.toml"
    bad.write_text(cfg.read_text().replace("pattern = '^[^@\\s]+@[^@\\s]+$'", "pattern = '(['"))
    code, _, err = cli(bad, capsys, "plan", "--subject-id", "x")
    assert code == 3 and "not a valid regular expression" in err
    bad.write_text(cfg.read_text() + '[[identities]]\nname = "email"\n')
    code, _, err = cli(bad, capsys, "plan", "--subject-id", "x")
    assert code == 3 and "declares email more than once" in err


def test_the_report_lists_identities_by_type_and_hmac_and_the_roots_not_applicable(
        two_roots, capsys):
    import subprocess

    tmp, cfg, events, contacts, log = two_roots
    _, sub, _ = cli(cfg, capsys, "request", "submit", "--identity", f"email={OBRIEN}")
    rid = sub["request_id"]
    code, res, err = cli(cfg, capsys, "run", rid)
    assert code == 0, err
    assert cli(cfg, capsys, "keys", "init")[0] == 0
    pdf = tmp / "r.pdf"
    code, _, err = cli(cfg, capsys, "report", rid, "--output", str(pdf))
    assert code == 0, err
    assert cli(cfg, capsys, "verify-report", str(pdf))[0] == 0
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True,
                                   text=True, check=True).stdout.split())
    assert "Identity: email HMAC" in text and "(request)" in text
    assert "Not applicable" in text and "holds user_id identities and the request carries none" \
        in text
    assert "brien" not in text.lower()


# ---- normalized matching (issue 11, item 3) -------------------------------------------------
SPELLINGS = ["alice@example.com", "Alice@Example.COM", " alice@example.com ", "ALICE@EXAMPLE.COM"]
OTHERS = ["alice@example.org", "alice.x@example.com", "bob@example.com", "malice@example.com"]


@pytest.fixture
def spelled(tmp_path, monkeypatch):
    """A Delta `contacts` root keyed by e-mail (normalize lower) and a plain Parquet export
    of it reached by name; several spellings of one address, and near misses."""
    import pyarrow.parquet as pq

    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    contacts, export = tmp_path / "contacts", tmp_path / "export"
    rows = SPELLINGS + OTHERS + SPELLINGS[:2]
    write_deltalake(contacts, pa.table({"email": rows, "n": list(range(len(rows)))}))
    export.mkdir()
    pq.write_table(pa.table({"email": rows[::-1], "m": list(range(len(rows)))}),
                   export / "part-0.parquet")
    ev = tmp_path / "events.jsonl"
    ev.write_text(lineage_event(12, "export", contacts, export))
    cfg = tmp_path / "erasure.toml"
    cfg.write_text('[lineage]\nevents = ["events.jsonl"]\n'
                   '[[identities]]\nname = "email"\nnormalize = "lower"\n'
                   '[[roots]]\nnamespace = "file"\nname = "contacts"\ncolumn = "email"\n')
    return tmp_path, cfg, contacts, export


def _emails(path: Path) -> list[str]:
    return sorted(read_table(str(path)).column("email").to_pylist())


def test_every_spelling_of_a_normalized_address_is_erased_and_near_misses_stay(spelled, capsys):
    tmp, cfg, contacts, export = spelled
    code, plan, err = cli(cfg, capsys, "plan", "--identity", "email=ALICE@example.com")
    assert code == 0, err
    by_name = {t["name"]: t for t in plan["targets"]}
    for name in (str(contacts), str(export)):
        t = by_name[name]
        assert t["rows"] == 6, t                  # 4 spellings, two of them twice
        assert sorted(v["rows"] for v in t["values"]) == [1, 1, 2, 2]   # each spelling counted
        assert not t["not_verified"]
    assert "alice" not in json.dumps(plan).lower()
    _, sub, _ = cli(cfg, capsys, "request", "submit", "--identity", "email=alice@example.com")
    code, res, err = cli(cfg, capsys, "run", sub["request_id"])
    assert code == 0 and res["status"] == "completed", (res, err)
    assert _emails(contacts) == sorted(OTHERS) and _emails(export) == sorted(OTHERS)
    assert b"alice@example.com" not in ledger_bytes(tmp).lower()


def test_a_spelling_written_after_the_plan_stops_the_run_and_verify_sees_one_written_back(
        spelled, capsys):
    tmp, cfg, contacts, export = spelled
    _, sub, _ = cli(cfg, capsys, "request", "submit", "--identity", "email=alice@example.com")
    rid = sub["request_id"]
    from erasure.engine import Engine
    from erasure.execution import Runner

    eng = Engine.from_path(cfg)
    try:
        with eng.ledger.exclusive():
            Runner(eng)._plan({rid: __import__("erasure.requests", fromlist=["x"])
                               .load_state(eng.ledger, rid)},
                              {rid: eng.keys.unseal(eng.ledger.sealed_subject(rid), rid)}, False)
    finally:
        eng.close()
    write_deltalake(contacts, pa.table({"email": ["aLiCe@example.com"], "n": [99]}),
                    mode="append")
    code, res, err = cli(cfg, capsys, "run", rid)
    assert code == 5 and res["status"] == "failed"
    assert "spelling(s) of the subject's email the plan did not count" in res["requests"][0][
        "errors"][0]
    assert "aLiCe@example.com" in _emails(contacts)            # nothing was erased
    code, res, err = cli(cfg, capsys, "run", "--replan", rid)
    assert code == 0 and res["status"] == "completed", (res, err)
    assert _emails(contacts) == sorted(OTHERS)
    write_deltalake(contacts, pa.table({"email": [" ALICE@example.com"], "n": [100]}),
                    mode="append")
    code, res, err = cli(cfg, capsys, "verify", rid)
    assert code == 5 and res["status"] == "violated", res


def test_without_a_normalize_rule_only_the_exact_spelling_is_erased(spelled, capsys):
    tmp, cfg, contacts, export = spelled
    cfg.write_text(cfg.read_text().replace('normalize = "lower"\n', ""))
    _, sub, _ = cli(cfg, capsys, "request", "submit", "--identity", "email=alice@example.com")
    code, res, err = cli(cfg, capsys, "run", sub["request_id"])
    assert code == 0, err
    assert _emails(contacts) == sorted(SPELLINGS[1:] + OTHERS + SPELLINGS[1:2])


# ---- enrichment (issue 11, item 4) ----------------------------------------------------------
@pytest.fixture
def crm(tmp_path, monkeypatch):
    """`crm` maps e-mail addresses to user ids (alice has two accounts); `events` is keyed by
    uid and `clean`, a renamed copy lineage reaches, by reviewer_id. Roots: crm by email and
    events by user_id; an [[enrich]] entry looks e-mails up in crm."""
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    crm_t, events, clean = tmp_path / "crm", tmp_path / "events", tmp_path / "clean"
    write_deltalake(crm_t, pa.table({
        "email": ["alice@example.com", "Alice@Example.com", "bob@example.com", "carol@x.org"],
        "user_id": pa.array([42, 43, 7, 8], pa.int64())}))
    uids = [42, 43, 7, 8, 42, 420, 43]
    write_deltalake(events, pa.table({"uid": pa.array(uids, pa.int64()), "n": range(7)}))
    write_deltalake(clean, pa.table({"reviewer_id": pa.array(uids * 2, pa.int64()),
                                     "m": range(14)}))
    ev = tmp_path / "events.jsonl"
    ev.write_text(lineage_event(13, "clean", events, clean, ("reviewer_id", "uid")))
    cfg = tmp_path / "erasure.toml"
    cfg.write_text(
        '[lineage]\nevents = ["events.jsonl"]\n'
        '[[identities]]\nname = "email"\nnormalize = "lower"\n'
        '[[roots]]\nnamespace = "file"\nname = "crm"\ncolumn = "email"\n'
        '[[roots]]\nnamespace = "file"\nname = "events"\ncolumn = "uid"\nidentity = "user_id"\n'
        '[[enrich]]\nnamespace = "file"\nname = "crm"\nfrom_column = "email"\n'
        'to_column = "user_id"\n')
    return tmp_path, cfg, crm_t, events, clean


def test_a_request_by_email_erases_every_user_id_the_crm_maps_it_to(crm, capsys):
    tmp, cfg, crm_t, events, clean = crm
    code, plan, err = cli(cfg, capsys, "plan", "--identity", "email=alice@example.com")
    assert code == 0, err
    derived = [i for i in plan["identities"] if i["source"] != "request"]
    assert sorted(i["type"] for i in derived) == ["user_id", "user_id"]
    assert all("through file:" in i["source"] and "(email -> user_id)" in i["source"]
               and i["version"] == 0 for i in derived)
    by_name = {t["name"]: t for t in plan["targets"]}
    assert by_name[str(events)]["rows"] == 4 and by_name[str(clean)]["rows"] == 8
    assert by_name[str(crm_t)]["rows"] == 2          # both spellings of the address
    assert "alice" not in json.dumps(plan).lower()
    _, sub, err = cli(cfg, capsys, "request", "submit", "--identity", "email=alice@example.com")
    rid = sub["request_id"]
    code, res, err = cli(cfg, capsys, "run", rid)
    assert code == 0 and res["status"] == "completed", (res, err)
    assert sorted(read_table(str(events)).column("uid").to_pylist()) == [7, 8, 420]
    assert sorted(read_table(str(clean)).column("reviewer_id").to_pylist()) == [7, 7, 8, 8,
                                                                                 420, 420]
    assert sorted(read_table(str(crm_t)).column("email").to_pylist()) == [
        "bob@example.com", "carol@x.org"]
    # the crm rows are gone, yet verify still knows the user ids: they were sealed with the plan
    write_deltalake(events, pa.table({"uid": pa.array([43], pa.int64()), "n": [99]}),
                    mode="append")
    code, res, err = cli(cfg, capsys, "verify", rid)
    assert code == 5 and res["status"] == "violated", res
    assert b"alice" not in ledger_bytes(tmp).lower()


def test_an_ambiguous_lookup_is_exit_4_and_records_nothing(crm, capsys):
    tmp, cfg, *_ = crm
    cfg.write_text(cfg.read_text() + "max_values = 1\n")
    for cmd in (["plan"], ["request", "submit"]):
        code, _, err = cli(cfg, capsys, *cmd, "--identity", "email=alice@example.com")
        assert code == 4 and "gives 2 values for one email, more than max_values = 1" in err, err
        assert "alice" not in err
    assert not (tmp / ".erasure" / "ledger.db").exists()
    # bob maps to one user id: fine
    code, sub, err = cli(cfg, capsys, "request", "submit", "--identity", "email=bob@example.com")
    assert code == 0, err


def test_an_enrich_entry_on_a_missing_column_is_exit_3(crm, capsys):
    tmp, cfg, *_ = crm
    cfg.write_text(cfg.read_text().replace('to_column = "user_id"', 'to_column = "uid"'))
    code, _, err = cli(cfg, capsys, "plan", "--identity", "email=alice@example.com")
    assert code == 3 and "does not exist" in err


def test_a_sweep_finds_a_derived_key_back_after_the_lookup_row_was_erased(crm, capsys):
    """The sweep re-plans every finished request with the identities its plan sealed: the
    user ids the CRM gave are checked although the CRM row that gave them is gone."""
    tmp, cfg, crm_t, events, clean = crm
    _, sub, _ = cli(cfg, capsys, "request", "submit", "--identity", "email=alice@example.com")
    code, res, err = cli(cfg, capsys, "run", sub["request_id"])
    assert code == 0, err
    code, res, err = cli(cfg, capsys, "sweep")
    assert code == 0 and not res["findings"], res
    write_deltalake(clean, pa.table({"reviewer_id": pa.array([43], pa.int64()), "m": [99]}),
                    mode="append")
    code, res, err = cli(cfg, capsys, "sweep")
    assert code == 7, (res, err)
    [f] = res["findings"]
    assert f["name"] == str(clean) and f["rows"] == 1 and f["request_id"] == sub["request_id"]
