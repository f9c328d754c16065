"""Issue 14, the proof report's part: the signed PDF and its evidence ("erasure-evidence/3")
say who submitted, approved, ran, held and released, which datasets were kept and on which
legal basis, and where the report gives evidence toward SOC 2 CC6.5 and ISO/IEC 27001:2022
A.8.10; older evidence formats keep verifying.

One sample lake for the module, set up through the CLI as the operators would: the data
catalog tags the Parquet export `finance`, a Rego policy exempts what is tagged so,
`[approvals] required = 2`; alice submits a request for subject 42, legal places a hold on
the person, ops runs (held: nothing erased), dpo extends the deadline, legal releases the
hold, bob and carol approve, ops runs it to the end, and a signed report is written. Every
tampering test works on a copy of the report or of the lake.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import Lake

SUBJECT = "42"
EXPORT_SUFFIX = "exports/user_activity.parquet"
FINANCE_BASIS = ("Art. 17(3)(b) GDPR: the activity export feeds the invoices, kept 10 years "
                 "under tax law")
POLICY = f"""package erasure

import rego.v1

tags contains tag.key if {{
	some tag in input.dataset.facets.tags.tags
}}

decision := {{"action": "exempt", "basis": "{FINANCE_BASIS}"}} if "finance" in tags
"""
HOLD_REASON = "litigation, case 2026-17"
ALL_CHECKS = ["pdf-structure", "signature-present", "signature-intact", "signature-valid",
              "signer-trusted", "covers-whole-file", "evidence-embedded",
              "evidence-matches-ledger"]
ENV = ("ERASURE_SIGNING_KEY", "ERASURE_SIGNING_CERT", "ERASURE_SIGNING_ROOT",
       "ERASURE_SUBJECT_KEY", "ERASURE_CONFIG", "ERASURE_ACTOR")
# the subject id as a whole token (not inside 420, a hash or a time)
_TOKEN = re.compile(rf"(?<![0-9A-Za-z]){SUBJECT}(?![0-9A-Za-z])")
_TIME = re.compile(r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?)?")


def _cli(lake: Lake, *args: str) -> tuple[int, dict]:
    """The CLI in-process with --json (usable in a module fixture: no capsys)."""
    from erasure.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(["--config", str(lake.config), *args, "--json"])
    text = out.getvalue()
    assert text.strip(), f"{args}: exit {code}, no JSON output; stderr: {err.getvalue()}"
    return code, json.loads(text)


def _ok(lake: Lake, *args: str) -> dict:
    code, out = _cli(lake, *args)
    assert code == 0, (args, out)
    return out


def _text(pdf: Path) -> str:
    proc = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, timeout=60, check=True)
    return proc.stdout


def _flat(text: str) -> str:
    """pdftotext's text with the table layout's runs of spaces and line breaks as one space."""
    return re.sub(r"\s+", " ", text)


def _section(text: str, title: str, next_title: str) -> str:
    start = text.index(title)
    return text[start:text.index(next_title, start)]


def _policy_hash(folder: Path) -> str:
    from test_governance import policy_hash

    return policy_hash(folder)


def _tag_export_finance(lake: Lake) -> str:
    """The catalog's event tagging the export `finance` (tests/test_governance.py's
    `catalog_tags`); the export's dataset name."""
    from test_governance import catalog_tags, export_dataset

    catalog_tags(lake, "finance")
    return export_dataset(lake)[1]


def _verify(lake: Lake, pdf: Path) -> tuple[int, dict]:
    return _cli(lake, "verify-report", str(pdf))


def _checks(res: dict) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in res["checks"]}


def _sign(lake: Lake, evidence: dict, out: Path) -> Path:
    """Render and sign `evidence` as `erasure report` does (the same functions)."""
    from erasure.config import load_config
    from erasure.evidence import evidence_bytes
    from erasure.report.keys import fingerprint, signing_files
    from erasure.report.pdf import render
    from erasure.report.sign import sign_report

    files = signing_files(load_config(lake.config)).require()
    with tempfile.TemporaryDirectory() as tmp:
        unsigned = Path(tmp) / "unsigned.pdf"
        render(evidence, fingerprint(files.root), unsigned)
        sign_report(unsigned, evidence_bytes(evidence), files, out)
    return out


@contextlib.contextmanager
def _ledger(lake: Lake):
    from erasure.ledger import Ledger, chain_key
    from erasure.subject import SubjectKeys

    keys = SubjectKeys.load(lake.root / ".erasure" / "keys" / "subject.key", create=False)
    led = Ledger(lake.root / ".erasure" / "ledger.db", chain_key(keys))
    try:
        yield led
    finally:
        led.close()


def _copy_lake(lake: Lake, dst: Path) -> Lake:
    shutil.copytree(lake.root, dst)
    return Lake(dst, dst / lake.config.name, {}, dst / lake.events.relative_to(lake.root))


@pytest.fixture(scope="module")
def governed(tmp_path_factory):
    from sample_lake.generate import generate

    with pytest.MonkeyPatch.context() as mp:
        for name in ENV:
            mp.delenv(name, raising=False)
        base = tmp_path_factory.mktemp("governed")
        info = generate(base / "lake", rows=2000, seed=11, feast=False, mlflow=False)
        lake = Lake(Path(info["out_dir"]), Path(info["config"]), info["tables"],
                    Path(info["events"]))
        folder = lake.config.parent / "policy"
        folder.mkdir()
        (folder / "erasure.rego").write_text(POLICY, encoding="utf-8")
        lake.config.write_text(lake.config.read_text() + '\n[policy]\nrego = "policy/"\n'
                               "\n[approvals]\nrequired = 2\n")
        export = _tag_export_finance(lake)

        def as_(actor: str) -> None:
            mp.setenv("ERASURE_ACTOR", actor)

        as_("ops")
        _ok(lake, "keys", "init")
        as_("alice")
        rid = _ok(lake, "request", "submit", "--subject-id", SUBJECT)["request_id"]
        as_("legal")
        hold_id = _ok(lake, "hold", "add", "--subject-id", SUBJECT,
                      "--reason", HOLD_REASON)["hold_id"]
        as_("ops")
        held = _ok(lake, "run", rid)
        assert held["requests"][0]["status"] == "on_hold", held
        as_("dpo")
        extended = _ok(lake, "request", "extend", rid, "--reason", "many requests this month")
        as_("legal")
        _ok(lake, "hold", "release", hold_id, "--reason", "case settled")
        for approver in ("bob", "carol"):
            as_(approver)
            _ok(lake, "request", "approve", rid)
        as_("ops")
        res = _ok(lake, "run", rid)
        assert res["status"] == "completed", res
        pdf = base / "proof.pdf"
        rep = _ok(lake, "report", rid, "--output", str(pdf))
        yield {"lake": lake, "rid": rid, "pdf": pdf, "report": rep, "export": export,
               "hold_id": hold_id, "policy_hash": _policy_hash(folder), "base": base,
               "extended": extended, "text": _text(pdf)}


def _evidence(pdf: Path) -> tuple[dict, bytes]:
    """The embedded evidence.json as signed (parsed, bytes)."""
    from erasure.report.sign import verify_report

    rep = verify_report(pdf, None)
    assert rep.evidence is not None
    from erasure.evidence import evidence_bytes
    return rep.evidence, evidence_bytes(rep.evidence)


# ---- the evidence ---------------------------------------------------------------------------
def test_evidence_3_records_who_acted_from_the_ledger_and_no_identity(governed):
    ev, _ = _evidence(governed["pdf"])
    assert ev["format"] == "erasure-evidence/3"
    gov = ev["governance"]
    assert gov["actors"] == {"submitted_by": "alice", "approved_by": ["bob", "carol"],
                             "ran_by": "ops", "rejected_by": None}
    # the approvals are of the plan that ran: the digest of the recorded plan's view
    from erasure.approvals import plan_view, view_digest

    assert gov["plan_digest"] == view_digest(plan_view(ev["plan"]))
    assert [(a["actor"], a["plan_digest"], a["counted"]) for a in gov["approvals"]] == [
        ("bob", gov["plan_digest"], True), ("carol", gov["plan_digest"], True)]
    (hold,) = gov["holds"]
    assert (hold["hold_id"], hold["added_by"], hold["released_by"], hold["reason"]) == (
        governed["hold_id"], "legal", "legal", HOLD_REASON)
    assert hold["added_at"] <= hold["released_at"]
    assert "hmacs" not in hold and "status" not in hold
    (ext,) = gov["extensions"]
    assert (ext["actor"], ext["deadline"]) == ("dpo", governed["extended"]["deadline"])
    assert gov["rejection"] is None
    # the plan's exemption, with its basis and the policy's hash (not repeated elsewhere)
    assert [(x["name"], x["basis"], x["policy_hash"]) for x in ev["plan"]["exempt"]] == [
        (governed["export"], FINANCE_BASIS, governed["policy_hash"])]
    assert ev["plan"]["policy"]["hash"] == governed["policy_hash"]
    # every step names its actor
    assert ev["steps"] and {s["actor"] for s in ev["steps"]} == {"ops"}
    # no HMAC of an identity besides the subject's own (already in the evidence), no id
    text = json.dumps(gov)
    assert ev["subject"]["hmac"] not in text
    assert not re.search(r"[0-9a-f]{64}", text.replace(gov["plan_digest"], "")), text
    assert not _names_subject(text)


def test_the_governance_block_is_rebuilt_at_the_checkpoint_only(governed, tmp_path):
    """Entries after the report's checkpoint (another hold on the person, placed later)
    change neither the rebuilt evidence nor the verdict; at the head the new hold shows."""
    from erasure.evidence import build_evidence, evidence_bytes

    lake = _copy_lake(governed["lake"], tmp_path / "lake")
    ev, raw = _evidence(governed["pdf"])
    upto = ev["ledger_checkpoint"]["entries"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERASURE_ACTOR", "legal")
        _ok(lake, "hold", "add", "--subject-id", SUBJECT, "--reason", "a later case")
    with _ledger(lake) as led:
        assert evidence_bytes(build_evidence(led, governed["rid"], upto)) == raw
        now = build_evidence(led, governed["rid"])
    assert len(now["governance"]["holds"]) == 2
    code, res = _verify(lake, governed["pdf"])
    assert code == 0 and res["ok"], res


# ---- the PDF --------------------------------------------------------------------------------
def test_the_pdf_lists_the_exempt_dataset_with_its_basis_and_the_policy(governed):
    text = governed["text"]
    section = _flat(_section(text, "Exemptions and deferrals", "Control evidence"))
    assert EXPORT_SUFFIX.rsplit("/", 1)[-1] in section
    # the basis, wrapped over lines in its cell, reads whole once the layout is flattened
    words = FINANCE_BASIS.split()
    assert all(w in section for w in words), section
    assert "Art. 17(3)(b) GDPR" in section
    assert governed["policy_hash"][:19] in section            # "sha256:" + 12 hex digits
    assert "rego:policy/" in section
    assert "Deferred: none" in section
    assert "Held: none" in section


def test_the_pdf_names_who_submitted_approved_ran_held_and_released(governed):
    section = _flat(_section(governed["text"], "Accountability", "Exemptions and deferrals"))
    for who in ("alice", "bob", "carol", "ops", "legal", "dpo"):
        assert re.search(rf"\b{who}\b", section), (who, section)
    assert "Submitted by alice" in section
    assert "Approved by bob, carol: 2 approval(s) counted" in section
    ev, _ = _evidence(governed["pdf"])
    assert ev["governance"]["plan_digest"][:19] in section
    assert "Ran by ops" in section
    assert governed["hold_id"] in section
    for action in ("Legal hold placed", "Legal hold released", "Deadline extended", "Approved",
                   "Ran the erasure"):
        assert action in section, action


def test_the_pdf_maps_the_controls_and_says_what_it_does_not_certify(governed):
    text = _flat(governed["text"])
    section = text[text.index("Control evidence"):]
    assert "CC6.5" in section and "A.8.10" in section
    assert "ISO/IEC 27001:2022" in section
    for row in ("Deletion performed", "Deletion verified", "Exceptions authorised",
                "Accountability", "Record integrity"):
        assert row in section, row
    assert "does not certify" in section


def _names_subject(text: str) -> bool:
    """The subject id as a whole token, once times, pytest's numbered folders (the lake's
    path is in dataset names) and certificate fingerprints ("F3:A8:06:42:...") are out."""
    text = re.sub(r"\b(?:[0-9A-F]{1,2}:)+[0-9A-F]{1,2}\b", "", _TIME.sub("", text))
    return bool(_TOKEN.search(re.sub(r"pytest-\d+", "", text)))


def test_the_pdf_never_names_the_subject(governed):
    text = governed["text"]
    # the check itself can fail: a bare id is found, a time or a longer number is not
    assert _names_subject("subject 42") and _names_subject("user_id=42/part-0")
    assert not _names_subject("2026-11-29T02:42:42+00:00 2026-11-29 03:42:42 420 /pytest-42/ "
                              "F3:A8:06:D6:42:55:9C")
    assert not _names_subject(text), [line for line in text.splitlines()
                                      if _names_subject(line)]
    assert f"user{SUBJECT}@example.com" not in text


# ---- verification ---------------------------------------------------------------------------
def test_the_report_verifies_and_pdfsig_accepts_it(governed):
    code, res = _verify(governed["lake"], governed["pdf"])
    assert code == 0 and res["ok"] is True, res
    assert [c["name"] for c in res["checks"]] == ALL_CHECKS
    assert all(c["ok"] and not c["skipped"] for c in res["checks"]), res
    sig = subprocess.run(["pdfsig", str(governed["pdf"])], capture_output=True, text=True,
                         timeout=60)
    assert "Signature is Valid." in sig.stdout and "Total document signed" in sig.stdout


def test_a_report_whose_governance_differs_from_the_ledger_fails(governed, tmp_path):
    """Signed with the real key (someone holding it), but claiming an approver the ledger
    does not record: the signature holds, the comparison with the ledger does not."""
    ev, _ = _evidence(governed["pdf"])
    forged = json.loads(json.dumps(ev))
    forged["governance"]["actors"]["approved_by"] = ["bob", "carol", "mallory"]
    pdf = _sign(governed["lake"], forged, tmp_path / "forged.pdf")
    code, res = _verify(governed["lake"], pdf)
    assert code == 5, res
    checks = _checks(res)
    assert checks["signature-valid"] and checks["signer-trusted"] and checks["covers-whole-file"]
    assert checks["evidence-matches-ledger"] is False, res

    # and a report that drops the governance block while claiming format 3
    dropped = {k: v for k, v in ev.items() if k != "governance"}
    code, res = _verify(governed["lake"], _sign(governed["lake"], dropped, tmp_path / "d.pdf"))
    assert code == 5 and _checks(res)["evidence-matches-ledger"] is False, res


def test_a_report_in_format_2_still_verifies(governed, tmp_path):
    """A report written before format 3 (no governance block) verifies against the same
    ledger: the verifier rebuilds in the report's own format."""
    from erasure.evidence import build_evidence

    ev, _ = _evidence(governed["pdf"])
    with _ledger(governed["lake"]) as led:
        old = build_evidence(led, governed["rid"], ev["ledger_checkpoint"]["entries"],
                             format="erasure-evidence/2")
    assert old["format"] == "erasure-evidence/2" and "governance" not in old
    assert {k: v for k, v in ev.items() if k not in ("governance", "format")} == {
        k: v for k, v in old.items() if k != "format"}
    pdf = _sign(governed["lake"], old, tmp_path / "v2.pdf")
    code, res = _verify(governed["lake"], pdf)
    assert code == 0 and res["ok"] is True, res
    assert all(c["ok"] and not c["skipped"] for c in res["checks"]), res
    text = _flat(_text(pdf))
    assert "predates the accountability record" in text
    assert "Control evidence" in text

    # a format-2 report that smuggles in a governance block does not match the ledger
    claimed = {**old, "governance": ev["governance"]}
    code, res = _verify(governed["lake"], _sign(governed["lake"], claimed, tmp_path / "c.pdf"))
    assert code == 5 and _checks(res)["evidence-matches-ledger"] is False, res


def test_a_rejected_request_reports_who_rejected_it_and_that_it_never_ran(lake, monkeypatch,
                                                                           tmp_path):
    for name in ENV:
        if name != "ERASURE_CONFIG":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ERASURE_ACTOR", "alice")
    _ok(lake, "keys", "init")
    rid = _ok(lake, "request", "submit", "--subject-id", SUBJECT)["request_id"]
    monkeypatch.setenv("ERASURE_ACTOR", "bob")
    _ok(lake, "request", "reject", rid, "--reason", "the identity could not be confirmed")
    pdf = tmp_path / "rejected.pdf"
    _ok(lake, "report", rid, "--output", str(pdf))
    ev, _ = _evidence(pdf)
    gov = ev["governance"]
    assert gov["actors"] == {"submitted_by": "alice", "approved_by": [], "ran_by": None,
                             "rejected_by": "bob"}
    assert (gov["plan_digest"], gov["ran"], gov["approvals"]) == (None, None, [])
    assert gov["rejection"]["reason"] == "the identity could not be confirmed"
    text = _flat(_text(pdf))
    section = _section(text, "Accountability", "Exemptions and deferrals")
    assert "Rejected by bob" in section and "Not run" in section
    assert "the identity could not be confirmed" in section
    assert "Exempt: none" in text and "Deferred: none" in text and "Held: none" in text
    assert not _names_subject(text)
    code, res = _verify(lake, pdf)
    assert code == 0 and res["ok"] is True, res
