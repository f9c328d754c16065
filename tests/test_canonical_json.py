"""Issue 10, item 6: one canonical JSON, RFC 8785 (JCS), for every hash and signature.

- `erasure.canonical.canonical_bytes` matches RFC 8785's own examples and refuses what is
  not JSON (a datetime, NaN, ...) with a clear error instead of converting it silently.
- A new ledger records format 3; its entry hashes are HMAC-SHA256 over RFC 8785 bytes,
  recomputed here with the `rfc8785` package directly.
- A ledger and a signed report written before (format 2, `erasure-evidence/1`; the committed
  fixture tests/data/ledger-format-2, made with commit ea005f3) keep verifying, and the
  ledger is upgraded in place from a recorded entry on, its old entries untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import io
import json
import math
import shutil
import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest
import rfc8785

from erasure.canonical import NotCanonicalJSON, canonical_bytes

FIXTURE = Path(__file__).resolve().parent / "data" / "ledger-format-2"
FIXTURE_REQUEST = "req-384733139d90441d8a9e"
ENV = ("ERASURE_SIGNING_KEY", "ERASURE_SIGNING_CERT", "ERASURE_SIGNING_ROOT",
       "ERASURE_SUBJECT_KEY", "ERASURE_CONFIG")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _cli(config: Path, *args: str) -> tuple[int, dict, str]:
    from erasure.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(["--config", str(config), *args, "--json"])
    text = out.getvalue()
    assert text.strip(), f"{args}: exit {code}, no JSON output; stderr: {err.getvalue()}"
    return code, json.loads(text), err.getvalue()


def _rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT * FROM entries ORDER BY seq").fetchall()
    finally:
        con.close()


def _meta(db: Path) -> dict[str, str]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


def _chain_key(path: Path) -> bytes:
    from erasure.ledger import chain_key
    from erasure.subject import SubjectKeys

    return chain_key(SubjectKeys.load(path, create=False))


def _jcs_entry_hash(key: bytes, prev: str, seq, ts, rid, kind, body_text: str) -> str:
    """The format-3 entry hash, computed from RFC 8785 with the package directly."""
    return hmac.new(key, prev.encode() + rfc8785.dumps([seq, ts, rid, kind, body_text]),
                    "sha256").hexdigest()


# ---- canonical_bytes against RFC 8785 --------------------------------------------------
def _event_line(run: int, job: str) -> str:
    """One minimal OpenLineage COMPLETE event, as a JSON line."""
    return json.dumps({
        "eventType": "COMPLETE", "eventTime": "2026-01-01T00:00:00Z",
        "run": {"runId": f"01890000-0000-7000-8000-{run:012d}"},
        "job": {"namespace": "jobs", "name": job},
        "inputs": [{"namespace": "file", "name": "src"}],
        "outputs": [{"namespace": "file", "name": "dst"}],
        "producer": "https://example.com/p", "schemaURL": "https://openlineage.io/spec/x"}) + "\n"


def test_rfc8785_section_3_2_2_example_numbers_strings_literals():
    """RFC 8785 §3.2.2: the input's numbers, escapes and literals, and its exact output."""
    value = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}')
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
                '1e-27],"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode("utf-8")
    assert canonical_bytes(value) == expected


def test_rfc8785_section_3_2_3_key_ordering_by_utf16_code_units():
    """RFC 8785 §3.2.3: keys sorted by UTF-16 code units (the emoji, a surrogate pair,
    sorts before U+FB33 although its code point is larger)."""
    value = {"\u20ac": "Euro Sign", "\r": "Carriage Return",
             "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
             "\U0001F600": "Emoji: Grinning Face", "\u0080": "Control",
             "\u00f6": "Latin Small Letter O With Diaeresis"}
    out = canonical_bytes(value).decode("utf-8")
    order = [k for k in json.loads(out)]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001F600", "\ufb33"]
    assert out.startswith('{"\\r":"Carriage Return","1":"One","\u0080":"Control",')
    # non-ASCII is written as UTF-8, not escaped
    assert "\u20ac".encode("utf-8") in canonical_bytes(value)


@pytest.mark.parametrize("bits,expected", [
    # RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text
    ("0000000000000000", "0"), ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"), ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("3eb0c6f7a0b5ed8d", "0.000001"), ("3e7ad7f29abcaf48", "1e-7"),
    ("444b1ae4d6e2ef50", "1e+21"),
])
def test_rfc8785_appendix_b_numbers(bits, expected):
    f = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical_bytes(f) == expected.encode()
    assert canonical_bytes([1.0, 4.50]) == b"[1,4.5]"


@pytest.mark.parametrize("value,needle", [
    ({"at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)}, "$.at is a datetime.datetime"),
    ({"rows": [1, float("nan")]}, "$.rows[1] is nan"),
    ({"x": float("inf")}, "$.x is inf"),
    ({"path": Path("/tmp/x")}, "$.path is a pathlib"),
    ({"s": {1, 2}}, "$.s is a builtins.set"),
    ({"b": b"raw"}, "$.b is a builtins.bytes"),
    ({1: "int key"}, "has the key 1 (int)"),
    ({"big": 2 ** 53}, "outside the range a JSON number holds exactly"),
])
def test_canonical_bytes_refuses_what_is_not_json_with_a_clear_error(value, needle):
    with pytest.raises(NotCanonicalJSON) as exc:
        canonical_bytes(value)
    assert needle in str(exc.value), str(exc.value)
    assert "RFC 8785" in str(exc.value)


def test_datetime_and_nan_messages_say_how_to_convert():
    with pytest.raises(NotCanonicalJSON, match=r"convert it explicitly \(a datetime with "
                                               r"\.isoformat\(\)"):
        canonical_bytes([dt.datetime.now(dt.timezone.utc)])
    with pytest.raises(NotCanonicalJSON, match="NaN and infinities have no JSON form"):
        canonical_bytes(math.nan)


# ---- a new ledger: format 3, RFC 8785 -------------------------------------------------
def test_a_new_ledger_records_format_3_and_hashes_rfc8785_bytes(tmp_path):
    from erasure.ledger import GENESIS, Ledger, anchor_mac
    from erasure.subject import SubjectKeys

    SubjectKeys.load(tmp_path / "subject.key")
    key = _chain_key(tmp_path / "subject.key")
    db = tmp_path / "ledger.db"
    led = Ledger(db, key)
    try:
        bodies = [{"rows": 3, "ratio": 1.0, "tiny": 1e-7, "name": "Zoë ✓ 日本",
                   "b": [True, None], "a": {"z": 1, "é": 2, "Z": 3}},
                  {"history": [{"timestamp": "2026-01-01T00:00:00+00:00", "version": 2}]}]
        for b in bodies:
            with led.transaction():
                led.append("req-1", "test.entry", b)
        assert led.verify_chain() == (True, 2, None)
        assert '"ratio":1,' in _rows(db)[0][4]       # RFC 8785 numbers, not Python's 1.0
        with pytest.raises(NotCanonicalJSON, match="datetime"):
            led.append("req-1", "test.entry", {"at": dt.datetime.now(dt.timezone.utc)})
    finally:
        led.close()
    meta = _meta(db)
    assert meta["format"] == "3" and meta["canonical"] == "rfc8785"
    assert meta["format3_from_seq"] == "1"
    prev = GENESIS
    rows = _rows(db)
    assert len(rows) == 2       # the refused entry left nothing behind
    for (seq, ts, rid, kind, text, prev_hash, h), body in zip(rows, bodies):
        assert text.encode("utf-8") == rfc8785.dumps(body)
        assert prev_hash == prev
        assert h == _jcs_entry_hash(key, prev, seq, ts, rid, kind, text)
        prev = h
    anchor = json.loads((tmp_path / "ledger.db.head").read_text())
    assert anchor["seq"] == 2 and anchor["hash"] == prev
    assert anchor["hmac"] == hmac.new(key, rfc8785.dumps(["erasure-ledger-head/1", 2, prev]),
                                      "sha256").hexdigest() == anchor_mac(key, 2, prev)


def test_plan_and_lineage_events_use_rfc8785(tmp_path):
    from erasure.lineage.store import LineageStore
    from erasure.planning import Plan, Target

    t = Target("file", "tables/raw/reviews", "delta", "user_id", "int64", "root", None, 3,
               ["part-0.parquet"], 4, [], {"mode": "purge", "ratio": 0.5, "days": 7.0})
    plan = Plan("ab" * 32, "2026-01-01T00:00:00+00:00", [t], [], [])
    assert plan.canonical().encode() == rfc8785.dumps(plan.to_json())
    assert '"days":7,' in plan.canonical()

    events = tmp_path / "e.jsonl"
    events.write_text(_event_line(1, "ingest_é"))
    store = LineageStore(tmp_path / "lineage.db")
    try:
        rep = store.ingest([events])
        assert rep.events_new == 1, rep.to_json()
        (h, body), = store.db.execute("SELECT hash, body FROM events").fetchall()
        import hashlib
        assert body.encode() == rfc8785.dumps(json.loads(body))
        assert h == hashlib.sha256(rfc8785.dumps(json.loads(body))).hexdigest()
    finally:
        store.close()


def test_a_lineage_store_written_before_is_rekeyed_so_events_still_count_once(tmp_path):
    from erasure.lineage.store import LineageStore

    events = tmp_path / "e.jsonl"
    events.write_text(_event_line(2, "j"))
    db = tmp_path / "lineage.db"
    store = LineageStore(db)
    store.ingest([events])
    body = store.db.execute("SELECT body FROM events").fetchone()[0]
    # make it look like a store written before: old key, old body, no scheme recorded
    import hashlib
    old = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    with store.db:
        store.db.execute("DELETE FROM events")
        store.db.execute("DELETE FROM meta")
        store.db.execute("INSERT INTO events VALUES (?, ?)",
                         (hashlib.sha256(old.encode()).hexdigest() + "0", old))
    store.close()
    store = LineageStore(db)
    try:
        copy = tmp_path / "copy.jsonl"
        shutil.copyfile(events, copy)
        rep = store.ingest([copy])
        assert rep.events_seen == 1 and rep.events_new == 0, rep.to_json()
        assert store.counts()["events"] == 1
    finally:
        store.close()


# ---- the format-2 fixture: still verifies, upgraded in place ---------------------------
def _fixture_copy(tmp_path: Path) -> Path:
    """The committed format-2 ledger and report, copied, with a configuration beside them."""
    d = tmp_path / "format2"
    shutil.copytree(FIXTURE, d)
    (d / "erasure.toml").write_text(
        '[ledger]\npath = "ledger.db"\n\n[keys]\npath = "subject.key"\n\n'
        '[signing]\ndir = "."\n\n'
        '[[roots]]\nnamespace = "file"\nname = "tables/raw/reviews"\ncolumn = "user_id"\n')
    return d


def _embedded_evidence(pdf: Path, out: Path) -> bytes:
    out.mkdir()
    proc = subprocess.run(["pdfdetach", "-saveall", "-o", str(out), str(pdf)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return (out / "evidence.json").read_bytes()


def test_the_format_2_fixture_ledger_and_report_still_verify(tmp_path):
    d = _fixture_copy(tmp_path)
    before = _rows(d / "ledger.db")
    assert _meta(d / "ledger.db") == {"format": "2",
                                      "chain": "hmac-sha256/erasure-ledger-chain-v1"}
    code, res, err = _cli(d / "erasure.toml", "ledger", "verify")
    assert code == 0 and res["ok"] is True, (res, err)
    assert res["entries"] == 25 and res["signed_checkpoints_checked"] is True
    code, res, err = _cli(d / "erasure.toml", "verify-report", str(d / "proof.pdf"))
    assert code == 0 and res["ok"] is True, (res, err)
    checks = {c["name"]: (c["ok"], c["skipped"]) for c in res["checks"]}
    assert checks["evidence-matches-ledger"] == (True, False), res
    assert checks["signer-trusted"] == (True, False), res
    assert res["request_id"] == FIXTURE_REQUEST
    raw = _embedded_evidence(d / "proof.pdf", tmp_path / "detached")
    evidence = json.loads(raw)
    assert evidence["format"] == "erasure-evidence/1"
    # verifying changed nothing: no format recorded, no entry touched
    assert _rows(d / "ledger.db") == before
    assert "format3_from_seq" not in _meta(d / "ledger.db")


def test_a_format_2_ledger_is_upgraded_in_place_from_a_recorded_entry(tmp_path):
    from erasure.evidence import build_evidence, evidence_bytes
    from erasure.ledger import Ledger

    d = _fixture_copy(tmp_path)
    before = _rows(d / "ledger.db")
    key = _chain_key(d / "subject.key")
    led = Ledger(d / "ledger.db", key)
    try:
        with led.transaction():
            led.append(None, "test.note", {"note": "first entry in format 3", "ratio": 2.0})
            led.append(None, "test.note", {"note": "second", "ratio": 0.25})
        assert led.verify_chain() == (True, 27, None)
        assert [led.entry_format(s) for s in (1, 25, 26, 27)] == ["2", "2", "3", "3"]
        # evidence of the old request, rebuilt in either evidence format
        ev = build_evidence(led, FIXTURE_REQUEST, 24)
        assert ev["format"] == "erasure-evidence/3"
        assert evidence_bytes(ev) == rfc8785.dumps(ev)
    finally:
        led.close()
    meta = _meta(d / "ledger.db")
    assert meta["format"] == "2" and meta["format3_from_seq"] == "26"
    after = _rows(d / "ledger.db")
    assert after[:25] == before                      # old entries never rewritten
    prev = before[-1][6]
    for seq, ts, rid, kind, text, prev_hash, h in after[25:]:
        assert text.encode() == rfc8785.dumps(json.loads(text))
        assert prev_hash == prev and h == _jcs_entry_hash(key, prev, seq, ts, rid, kind, text)
        prev = h
    assert after[25][4].endswith('"ratio":2}')         # RFC 8785 numbers, not Python's 2.0
    code, res, err = _cli(d / "erasure.toml", "ledger", "verify")
    assert code == 0 and res["ok"] is True and res["entries"] == 27, (res, err)
    code, res, err = _cli(d / "erasure.toml", "verify-report", str(d / "proof.pdf"))
    assert code == 0 and res["ok"] is True, (res, err)

    # an edit to an old (format 2) entry is still caught, after the upgrade
    con = sqlite3.connect(d / "ledger.db", isolation_level=None)
    try:
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("UPDATE entries SET ts = ? WHERE seq = 3", ("2020-01-01T00:00:00+00:00",))
    finally:
        con.close()
    code, res, err = _cli(d / "erasure.toml", "ledger", "verify")
    assert code == 5 and res["problem"] == "entry 3 does not match its hash", res


def test_format_2_entries_verify_with_rfc8785_over_their_stored_body_text(tmp_path):
    """What a format-2 entry's hash covers, [seq, ts, request_id, kind, body text], has the
    same bytes in both forms (strings and integers only), so a verifier outside Python checks
    every entry of either format with RFC 8785; only the body text itself (written once,
    hashed as stored) differs between the formats."""
    d = _fixture_copy(tmp_path)
    key = _chain_key(d / "subject.key")
    prev = "0" * 64
    rows = _rows(d / "ledger.db")
    assert len(rows) == 25
    for seq, ts, rid, kind, text, prev_hash, h in rows:
        assert prev_hash == prev and h == _jcs_entry_hash(key, prev, seq, ts, rid, kind, text)
        prev = h


def test_a_new_report_embeds_rfc8785_evidence_that_verifies(tmp_path):
    from sample_lake.generate import generate

    info = generate(tmp_path / "lake", rows=200, seed=11, feast=False, mlflow=False)
    config = Path(info["config"])
    code, out, err = _cli(config, "keys", "init")
    assert code == 0, (out, err)
    code, out, err = _cli(config, "request", "submit", "--subject-id", "7",
                          "--requested-by", "dpo@example.com")
    assert code == 0, (out, err)
    rid = out["request_id"]
    code, out, err = _cli(config, "run", rid)
    assert code == 0 and out["status"] == "completed", (out, err)
    pdf = tmp_path / "proof.pdf"
    code, out, err = _cli(config, "report", rid, "--output", str(pdf))
    assert code == 0 and pdf.is_file(), (out, err)
    raw = _embedded_evidence(pdf, tmp_path / "detached")
    evidence = json.loads(raw)
    assert evidence["format"] == "erasure-evidence/3"
    assert raw == rfc8785.dumps(evidence)
    assert evidence["table_history"], "the sample lake's tables record their history"
    db = Path(info["out_dir"]) / ".erasure" / "ledger.db"
    assert _meta(db)["format"] == "3"
    code, res, err = _cli(config, "verify-report", str(pdf))
    assert code == 0 and res["ok"] is True, (res, err)
    code, res, err = _cli(config, "ledger", "verify")
    assert code == 0 and res["ok"] is True, (res, err)
    # the signed checkpoint's signature covers the RFC 8785 bytes of {entries, head_hash}
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    cp = json.loads(_rows(db)[-1][4])
    cert = x509.load_pem_x509_certificate(
        (Path(info["out_dir"]) / ".erasure" / "signing" / "signer.pem").read_bytes())
    cert.public_key().verify(bytes.fromhex(cp["signature"]),
                             rfc8785.dumps({"entries": cp["entries"],
                                            "head_hash": cp["head_hash"]}),
                             ec.ECDSA(hashes.SHA256()))


def test_the_fast_path_writes_exactly_the_rfc8785_bytes():
    """canonical_bytes takes Python's json.dumps for float-free values with keys below
    U+D800: 4,000 random values full of the characters where escaping rules differ (controls,
    quotes, backslashes, DEL, U+2028/2029, non-BMP, keys in every range, nested lists and
    objects, integers at the JSON limit) give the bytes of the rfc8785 package itself."""
    import random

    import rfc8785

    from erasure.canonical import _check, canonical_bytes

    rnd = random.Random(8785)
    alphabet = ([chr(c) for c in range(0, 0x30)] + list('"\\/\x7f') + ["\u2028", "\u2029",
                "é", "ß", "\u00a0", "\ufeff", "\ue000", "\uffff", "😀", "𝄞", "中", "a", "Z"])

    def text(n: int = 6) -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, n)))

    def value(depth: int = 0):
        kind = rnd.randint(0, 7 if depth < 3 else 4)
        if kind == 0:
            return text()
        if kind == 1:
            return rnd.choice([0, 1, -1, 2 ** 53 - 1, -(2 ** 53 - 1), rnd.randint(-10**9, 10**9)])
        if kind == 2:
            return rnd.choice([True, False, None])
        if kind == 3:
            return rnd.choice([0.5, 1.0, 1e21, -0.0, 3.14159]) if rnd.random() < 0.1 else text(3)
        if kind == 4:
            return text(12)
        if kind == 5:
            return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
        return {text(4): value(depth + 1) for _ in range(rnd.randint(0, 5))}

    fast = 0
    for _ in range(4000):
        v = {"body": value(), "kind": text(3), "n": rnd.randint(0, 10)}
        if _check(v, "$"):
            fast += 1
        assert canonical_bytes(v) == rfc8785.dumps(v), v
    assert fast > 1000          # the fast path was exercised, not only the fallback


def test_an_entry_payload_written_directly_is_its_rfc8785_form():
    """The ledger writes [seq, ts, request, kind, body] with JSON's C string encoder; for
    5,000 random entries full of escaping edge cases it is the rfc8785 package's output."""
    import random

    import rfc8785

    from erasure.ledger import entry_payload

    rnd = random.Random(53)
    alphabet = [chr(c) for c in range(0, 0x30)] + list('"\\\x7f') + ["\u2028", "é", "😀",
                                                                      "\ue000", "中"]

    def text() -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 10)))

    for _ in range(5000):
        fields = (rnd.choice([0, 1, 2 ** 53 - 1, rnd.randint(0, 10 ** 6)]), text(),
                  rnd.choice([None, text()]), text(), text())
        assert entry_payload("3", *fields) == rfc8785.dumps(list(fields)), fields
