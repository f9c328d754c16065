"""Issue 9 (and part of 10): the ledger alone shows forged and removed entries.

The chain is keyed (HMAC-SHA256 under a key derived from the subject key, kept outside the
ledger) and its head is anchored, with an HMAC, in `<ledger>.head` after every commit. An
attacker with write access to the ledger file but without the subject key drops the
triggers and edits it with plain SQLite, as these tests do. Everything runs through the real
CLI in-process, with real pyHanko signatures and poppler's pdfsig.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from erasure.cli import run_cli

SIGNING_ENV = ("ERASURE_SIGNING_KEY", "ERASURE_SIGNING_CERT", "ERASURE_SIGNING_ROOT")


@pytest.fixture(autouse=True)
def _no_signing_env(monkeypatch):
    for name in SIGNING_ENV:
        monkeypatch.delenv(name, raising=False)


def _db(lake) -> Path:
    return lake.root / ".erasure" / "ledger.db"


def _anchor(lake) -> Path:
    return lake.root / ".erasure" / "ledger.db.head"


def _json(lake, capsys, *args: str) -> tuple[int, dict]:
    code, out = lake.cli(*args, "--json", capsys=capsys)
    assert out.strip(), f"{args}: exit {code}, no output; stderr: {lake.last_err}"
    return code, json.loads(out)


def _submit(lake, capsys, subject: str) -> str:
    code, out = _json(lake, capsys, "request", "submit", "--subject-id", subject,
                      "--requested-by", "dpo@example.com")
    assert code == 0, (out, lake.last_err)
    return out["request_id"]


def _erase_and_report(lake, capsys, pdf: Path, subject: str = "42") -> str:
    code, out = _json(lake, capsys, "keys", "init")
    assert code == 0, out
    rid = _submit(lake, capsys, subject)
    code, out = _json(lake, capsys, "run", rid)
    assert code == 0 and out["status"] == "completed", out
    code, out = _json(lake, capsys, "report", rid, "--output", str(pdf))
    assert code == 0 and pdf.is_file(), (out, lake.last_err)
    return rid


def _plain_sha256(prev: str, seq: int, ts: str, rid, kind: str, body: str) -> str:
    """The old, unkeyed chain: anyone with the file can recompute it."""
    payload = json.dumps([seq, ts, rid, kind, body], sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
    return hashlib.sha256((prev + payload).encode()).hexdigest()


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _rows(con) -> list[tuple]:
    return con.execute("SELECT seq, ts, request_id, kind, body, prev_hash, hash FROM entries "
                       "ORDER BY seq").fetchall()


def _completed_body() -> str:
    return _canonical({"status": "completed", "batch": "forged", "targets": 4,
                       "unresolved": 0, "not_verified": 0})


def _assert_refused(lake, capsys, rid: str, tmp_path: Path, *needles: str) -> dict:
    """`ledger verify` exits 5 naming the problem, and `report` refuses (exit 5, no PDF)."""
    code, res = _json(lake, capsys, "ledger", "verify")
    assert code == 5 and res["ok"] is False, res
    for needle in needles:
        assert needle in res["problem"], res
    dst = tmp_path / f"refused-{rid}.pdf"
    code, _ = lake.cli("report", rid, "--output", str(dst), capsys=capsys)
    assert code == 5, (code, lake.last_err)
    assert "ledger does not verify" in lake.last_err, lake.last_err
    assert "Traceback" not in lake.last_err and "internal error" not in lake.last_err
    assert not dst.exists() and not list(tmp_path.glob(f"refused-{rid}.pdf*"))
    return res


# ---- forged entries -----------------------------------------------------------------------
def test_appended_forged_completion_with_a_recomputed_sha256_hash_is_refused(lake, capsys,
                                                                             tmp_path):
    """A `request.completed` for a request that never ran, appended with the hash the old
    scheme would give it: no trigger stops an INSERT, and nothing but the key can."""
    rid = _submit(lake, capsys, "42")
    code, out = _json(lake, capsys, "keys", "init")
    assert code == 0, out
    code, res = _json(lake, capsys, "ledger", "verify")
    assert code == 0 and res["ok"] is True, res
    con = sqlite3.connect(_db(lake), isolation_level=None)
    try:
        seq, _, _, _, _, _, prev = _rows(con)[-1]
        ts = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        body = _completed_body()
        con.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (seq + 1, ts, rid, "request.completed", body, prev,
                     _plain_sha256(prev, seq + 1, ts, rid, "request.completed", body)))
    finally:
        con.close()
    code, st = _json(lake, capsys, "status", rid)
    assert st["status"] == "completed"          # the forgery would read as a finished erasure
    _assert_refused(lake, capsys, rid, tmp_path, f"entry {seq + 1} does not match its hash")


def test_forged_entry_spliced_into_a_rehashed_old_scheme_chain_is_detected(lake, capsys,
                                                                           tmp_path):
    """An attacker drops the triggers, inserts a forged completion in the middle of the
    chain and re-chains everything after it with the old plain SHA-256 hash."""
    pdf = tmp_path / "proof.pdf"
    _erase_and_report(lake, capsys, pdf)
    victim = _submit(lake, capsys, "7")         # submitted, never run
    con = sqlite3.connect(_db(lake), isolation_level=None)
    try:
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("DROP TRIGGER entries_no_delete")
        rows = _rows(con)
        k = next(r[0] for r in rows if r[2] == victim and r[3] == "request.submitted")
        kept, moved = [r for r in rows if r[0] <= k], [r for r in rows if r[0] > k]
        forged = (k + 1, datetime.now(timezone.utc).isoformat(timespec="microseconds"), victim,
                  "request.completed", _completed_body())
        con.execute("BEGIN")
        con.execute("DELETE FROM entries WHERE seq > ?", (k,))
        prev = kept[-1][6]
        for i, (_, ts, r_id, kind, body) in enumerate(
                [forged] + [(m[0], m[1], m[2], m[3], m[4]) for m in moved]):
            seq = k + 1 + i
            h = _plain_sha256(prev, seq, ts, r_id, kind, body)
            con.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (seq, ts, r_id, kind, body, prev, h))
            prev = h
        con.execute("COMMIT")
    finally:
        con.close()
    _assert_refused(lake, capsys, victim, tmp_path, f"entry {k + 1} does not match its hash")


def test_ledger_rewritten_in_the_unkeyed_scheme_is_refused_not_trusted(lake, capsys, tmp_path):
    """The whole chain recomputed with plain SHA-256 and the scheme record removed, so the
    ledger looks like one written by the old version: it is refused, never accepted."""
    code, out = _json(lake, capsys, "keys", "init")
    assert code == 0, out
    rid = _submit(lake, capsys, "42")
    _submit(lake, capsys, "43")
    con = sqlite3.connect(_db(lake), isolation_level=None)
    try:
        assert dict(con.execute("SELECT key, value FROM meta").fetchall())["chain"].startswith(
            "hmac-sha256")
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("DROP TABLE meta")
        con.execute("BEGIN")
        prev = "0" * 64
        for seq, ts, r_id, kind, body, _, _ in _rows(con):
            h = _plain_sha256(prev, seq, ts, r_id, kind, body)
            con.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, seq))
            prev = h
        con.execute("COMMIT")
    finally:
        con.close()
    _anchor(lake).unlink()
    res = _assert_refused(lake, capsys, rid, tmp_path, "unkeyed")
    assert res["entries"] == 0, res
    code, _ = lake.cli("status", rid, capsys=capsys)
    assert code == 5 and "unkeyed" in lake.last_err, lake.last_err


# ---- truncation and the head anchor -------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3])
def test_truncating_the_last_entries_is_detected(lake, capsys, tmp_path, n):
    pdf = tmp_path / "proof.pdf"
    rid = _erase_and_report(lake, capsys, pdf)
    code, before = _json(lake, capsys, "ledger", "verify")
    assert code == 0 and before["ok"] is True, before
    total = before["entries"]
    con = sqlite3.connect(_db(lake), isolation_level=None)
    try:
        con.execute("DROP TRIGGER entries_no_delete")
        con.execute("DELETE FROM entries WHERE seq > ?", (total - n,))
    finally:
        con.close()
    res = _assert_refused(lake, capsys, rid, tmp_path, "truncated",
                          f"records {total} entries, the ledger holds {total - n}")
    assert res["entries"] == total - n, res
    # the next write does not re-anchor the shorter chain (which would hide the truncation)
    code, _ = lake.cli("request", "submit", "--subject-id", "43", capsys=capsys)
    assert code == 5 and "truncated" in lake.last_err, lake.last_err
    code, res = _json(lake, capsys, "ledger", "verify")
    assert code == 5 and "truncated" in res["problem"] and res["entries"] == total - n, res


def test_missing_head_anchor_is_detected(lake, capsys, tmp_path):
    rid = _submit(lake, capsys, "42")
    code, out = _json(lake, capsys, "keys", "init")
    assert code == 0, out
    _anchor(lake).unlink()
    _assert_refused(lake, capsys, rid, tmp_path, "head anchor", "missing")


def test_head_anchor_forged_without_the_key_is_detected(lake, capsys, tmp_path):
    """Truncate, then rewrite the anchor to the new head: its HMAC needs the key."""
    rid = _submit(lake, capsys, "42")
    _submit(lake, capsys, "43")
    code, out = _json(lake, capsys, "keys", "init")
    assert code == 0, out
    con = sqlite3.connect(_db(lake), isolation_level=None)
    try:
        con.execute("DROP TRIGGER entries_no_delete")
        con.execute("DELETE FROM entries WHERE seq = 2")
        seq, _, _, _, _, _, h = _rows(con)[-1]
    finally:
        con.close()
    anchor = json.loads(_anchor(lake).read_text())
    anchor.update(seq=seq, hash=h)
    _anchor(lake).write_text(json.dumps(anchor))
    _assert_refused(lake, capsys, rid, tmp_path, "head anchor", "does not verify")


def test_a_different_subject_key_neither_verifies_nor_extends_the_chain(lake, capsys, tmp_path,
                                                                       monkeypatch):
    rid = _submit(lake, capsys, "42")
    code, out = _json(lake, capsys, "keys", "init")
    assert code == 0, out
    monkeypatch.setenv("ERASURE_SUBJECT_KEY", "ab" * 32)
    code, _ = lake.cli("request", "submit", "--subject-id", "43", capsys=capsys)
    assert code == 5 and "does not verify under this subject key" in lake.last_err, lake.last_err
    _assert_refused(lake, capsys, rid, tmp_path, "does not verify under this subject key")
    monkeypatch.delenv("ERASURE_SUBJECT_KEY")
    code, res = _json(lake, capsys, "ledger", "verify")   # the right key: untouched and sound
    assert code == 0 and res["ok"] is True and res["entries"] == 1, res


def test_normal_run_submit_report_verifies_and_the_head_is_anchored(lake, capsys, tmp_path):
    pdf = tmp_path / "proof.pdf"
    rid = _erase_and_report(lake, capsys, pdf)
    _submit(lake, capsys, "43")                        # the ledger goes on after the report
    code, res = _json(lake, capsys, "ledger", "verify")
    assert code == 0 and res["ok"] is True and res["problem"] is None, res
    assert res["signed_checkpoints_checked"] is True
    anchor = json.loads(_anchor(lake).read_text())
    assert (anchor["seq"], anchor["hash"]) == (res["head"]["seq"], res["head"]["hash"])
    assert anchor["seq"] == res["entries"]
    code, rep = _json(lake, capsys, "verify-report", str(pdf))
    assert code == 0 and rep["ok"] is True and rep["request_id"] == rid, rep
    assert {c["name"]: c["skipped"] for c in rep["checks"]}["evidence-matches-ledger"] is False
    pdfsig = subprocess.run(["pdfsig", str(pdf)], capture_output=True, text=True, timeout=60)
    assert "Signature is Valid." in pdfsig.stdout, pdfsig.stdout
    con = sqlite3.connect(_db(lake))
    try:
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()
    assert meta == {"format": "3", "chain": "hmac-sha256/erasure-ledger-chain-v1",
                    "canonical": "rfc8785", "format3_from_seq": "1"}
    # no subject id in plain text in the ledger, its anchor or the report
    for f in [*(lake.root / ".erasure").glob("ledger.db*"), pdf]:
        data = f.read_bytes()
        assert b"user42@example.com" not in data, f


def test_anchor_is_written_once_per_transaction_and_a_crashed_write_still_verifies(tmp_path,
                                                                                    monkeypatch):
    """Appends inside one transaction anchor the head once, at commit; a rolled-back one
    leaves it alone; a ledger one transaction ahead of its anchor (a crash between the
    commit and the anchor write) verifies, and the next commit re-anchors it."""
    from erasure.ledger import Ledger, chain_key
    from erasure.subject import SubjectKeys

    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    keys = SubjectKeys.load(tmp_path / "subject.key")
    led = Ledger(tmp_path / "l.db", chain_key(keys))
    anchor = tmp_path / "l.db.head"
    try:
        led.append(None, "a", {"i": 0})
        assert json.loads(anchor.read_text())["seq"] == 1
        with led.transaction():
            for i in range(50):
                led.append(None, "b", {"i": i})
                # not rewritten per entry: still the last committed head
                assert json.loads(anchor.read_text())["seq"] == 1
        assert json.loads(anchor.read_text())["seq"] == 51
        with pytest.raises(RuntimeError):
            with led.transaction():
                led.append(None, "c", {})
                raise RuntimeError("boom")
        assert json.loads(anchor.read_text())["seq"] == 51 and led.head()[0] == 51
        assert led.verify_chain() == (True, 51, None)
        saved = anchor.read_bytes()
        led.append(None, "d", {})                   # committed; pretend its anchor was lost
        anchor.write_bytes(saved)
        assert led.verify_chain() == (True, 52, None)
        led.append(None, "e", {})
        assert json.loads(anchor.read_text())["seq"] == 53
        assert led.verify_chain() == (True, 53, None)
        # the same ledger under another subject key verifies nothing
        other = Ledger(tmp_path / "l.db", chain_key(SubjectKeys(b"\x01" * 32)))
        ok, _, problem = other.verify_chain()
        other.close()
        assert not ok and "does not verify under this subject key" in problem, problem
    finally:
        led.close()


def test_a_second_writer_during_the_first_commit_of_a_new_ledger_is_not_refused(tmp_path,
                                                                               monkeypatch):
    """A new ledger is anchored at its empty head when it is created: a process that appends
    after another's first commit, before that one wrote its anchor, finds the anchor one
    transaction behind (which verifies) instead of none (which means entries were removed,
    and was refused: 4 of 1,000 concurrent first submissions to the service failed so)."""
    from erasure.ledger import GENESIS, Ledger, chain_key
    from erasure.subject import SubjectKeys

    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    keys = SubjectKeys.load(tmp_path / "subject.key")
    first = Ledger(tmp_path / "l.db", chain_key(keys))
    second = Ledger(tmp_path / "l.db", chain_key(keys))
    anchor = tmp_path / "l.db.head"
    try:
        a = json.loads(anchor.read_text())
        assert (a["seq"], a["hash"]) == (0, GENESIS)
        monkeypatch.setattr(first, "_write_anchor", lambda seq, head: None)   # the window
        first.append(None, "request.submitted", {"i": 1})
        assert json.loads(anchor.read_text())["seq"] == 0
        second.append(None, "request.submitted", {"i": 2})
        assert json.loads(anchor.read_text())["seq"] == 2
        assert second.verify_chain() == (True, 2, None)
        # a ledger with entries and no anchor at all is still refused
        anchor.unlink()
        ok, _, problem = second.verify_chain()
        assert not ok and "missing" in problem
    finally:
        first.close()
        second.close()


# ---- verify-report without a configuration, and a corrupted signature ---------------------
def _cli_outside(args: list[str], capsys) -> tuple[int, str, str]:
    code = run_cli(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verify_report_without_a_configuration_needs_root_and_then_checks_the_pdf(
        lake, capsys, tmp_path, monkeypatch):
    """An auditor's machine: the PDF and a root certificate, no erasure.toml, no
    ERASURE_CONFIG. With --root every PDF check runs (exit 0 on an intact report); without
    it there is nothing to pin the signature to: exit 3 with a message, no traceback."""
    pdf = tmp_path / "proof.pdf"
    rid = _erase_and_report(lake, capsys, pdf)
    away = tmp_path / "auditor"
    away.mkdir()
    shutil.copyfile(pdf, away / "proof.pdf")
    shutil.copyfile(lake.root / ".erasure" / "signing" / "root.pem", away / "root.pem")
    monkeypatch.chdir(away)

    code, out, err = _cli_outside(["verify-report", "proof.pdf"], capsys)
    assert code == 3, (out, err)
    assert "--root" in err and "configuration" in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    code, out, err = _cli_outside(["verify-report", "proof.pdf", "--root", "nope.pem"], capsys)
    assert code == 3 and "root certificate not found" in err, (out, err)

    code, out, err = _cli_outside(["verify-report", "proof.pdf", "--root", "root.pem", "--json"],
                                  capsys)
    assert code == 0, (out, err)
    res = json.loads(out)
    assert res["ok"] is True and res["request_id"] == rid, res
    checks = {c["name"]: c for c in res["checks"]}
    assert all(c["ok"] for c in checks.values()), res
    assert checks["signer-trusted"]["detail"].startswith("chains to the pinned root")
    assert checks["evidence-matches-ledger"]["skipped"] is True
    assert err == ""
    # against somebody else's root: a named failure, and no library traceback on stderr
    from erasure.report.keys import init_keys

    other = init_keys(tmp_path / "other-keys", organisation="Somebody else")
    code, out, err = _cli_outside(["verify-report", "proof.pdf", "--root", other["root.pem"],
                                   "--json"], capsys)
    assert code == 5, (out, err)
    assert {c["name"] for c in json.loads(out)["checks"] if not c["ok"]} == {"signer-trusted"}
    assert "Traceback" not in err and "internal error" not in err, err


def _signature_der(pdf: bytes) -> tuple[int, bytes]:
    """(offset of the /Contents hex in the file, the CMS DER it encodes)."""
    m = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf)
    assert m, "no /ByteRange"
    a, len_a, b, _ = (int(x) for x in m.groups())
    start = a + len_a + 1                        # after '<'
    assert pdf[start - 1:start] == b"<" and pdf[b - 1:b] == b">"
    return start, bytes.fromhex(pdf[start:b - 1].decode())


def _flip_der_byte(pdf: bytes, start: int, offset: int) -> bytes:
    """Flip the low nibble of DER byte `offset` inside the /Contents hex."""
    data = bytearray(pdf)
    pos = start + 2 * offset + 1
    data[pos] = ord("1") if data[pos] == ord("0") else ord("0")
    return bytes(data)


def test_flipped_byte_in_the_signature_is_a_named_failure(lake, capsys, tmp_path):
    from asn1crypto import cms

    pdf = tmp_path / "proof.pdf"
    _erase_and_report(lake, capsys, pdf)
    raw = pdf.read_bytes()
    start, der = _signature_der(raw)
    signed_data = cms.ContentInfo.load(der)["content"]
    signer = signed_data["signer_infos"][0]
    content_type = signed_data["encap_content_info"]["content_type"].dump()
    value = signer["signature"].native
    digest = next(a["values"][0].native for a in signer["signed_attrs"]
                  if a["type"].native == "message_digest")
    # (DER offset, what the failing check must say, whether poppler's pdfsig also rejects it)
    places = {
        # the type of the signed content (id-data), outside the signed attributes: pyHanko
        # crashed on it (AttributeError). RFC 5652 requires it to equal the signed
        # content-type attribute; pdfsig (NSS) does not check that and still says valid
        "content-type": (der.index(content_type) + len(content_type) - 1,
                         "could not be parsed", False),
        # the ECDSA signature value itself
        "signature-value": (der.index(value) + len(value) // 2, "does not verify", True),
        # the document digest inside the signed attributes
        "message-digest": (der.index(digest) + 3, "", True),
    }
    for name, (offset, expected, pdfsig_rejects) in places.items():
        bad = tmp_path / f"flipped-{name}.pdf"
        bad.write_bytes(_flip_der_byte(raw, start, offset))
        sig = subprocess.run(["pdfsig", str(bad)], capture_output=True, text=True, timeout=60)
        assert ("Signature is Valid." not in sig.stdout) is pdfsig_rejects, (name, sig.stdout)
        code, out = lake.cli("verify-report", str(bad), "--json", capsys=capsys)
        err = lake.last_err
        assert code == 5, (name, out, err)
        res = json.loads(out)
        failed = [c for c in res["checks"] if not c["ok"]]
        assert failed and failed[0]["name"].startswith("signature-"), (name, res)
        detail = " ".join(c["detail"] for c in failed)
        assert expected in detail, (name, res)
        assert "Error" not in detail, (name, res)      # words, not a library's exception class
        assert "Traceback" not in err and "internal error" not in err, (name, err)


def test_old_ledger_restored_with_its_anchor_is_caught_only_by_a_later_report(lake, capsys,
                                                                              tmp_path):
    """The documented limit (docs/proof-reports.md): a ledger and its anchor restored together
    from an older backup are consistent, so `ledger verify` passes; a report issued after the
    backup is what shows the rollback."""
    code, out = _json(lake, capsys, "keys", "init")
    assert code == 0, out
    _submit(lake, capsys, "43")
    folder = lake.root / ".erasure"
    backup = tmp_path / "backup"
    backup.mkdir()
    saved = [p for p in folder.glob("ledger.db*") if not p.name.endswith(".lock")]
    assert {p.name for p in saved} >= {"ledger.db", "ledger.db.head"}, saved
    for p in saved:
        shutil.copyfile(p, backup / p.name)
    pdf = tmp_path / "proof.pdf"
    code, out = _json(lake, capsys, "run", _submit(lake, capsys, "42"))
    assert code == 0, out
    code, out = _json(lake, capsys, "report", out["request_id"], "--output", str(pdf))
    assert code == 0, out
    for p in folder.glob("ledger.db*"):
        if not p.name.endswith(".lock"):
            p.unlink()
    for p in backup.iterdir():
        shutil.copyfile(p, folder / p.name)
    code, res = _json(lake, capsys, "ledger", "verify")
    assert code == 0 and res["ok"] is True, res                 # the ledger alone cannot tell
    code, rep = _json(lake, capsys, "verify-report", str(pdf))
    assert code == 5, rep
    failed = {c["name"]: c["detail"] for c in rep["checks"] if not c["ok"]}
    assert set(failed) == {"evidence-matches-ledger"}, rep
    assert "fewer than the checkpoint" in failed["evidence-matches-ledger"], rep
