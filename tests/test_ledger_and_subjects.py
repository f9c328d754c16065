"""The ledger is append-only and tamper-evident; subjects appear only as keyed HMACs."""

import sqlite3

import pytest

from erasure.errors import ConfigError, SubjectKeyTypeError, UnknownRequestError
from erasure.ledger import Ledger, chain_key
from erasure.requests import load_state, one_month_later, submit
from erasure.subject import SubjectKeys, coerce_subject_id


@pytest.fixture
def keys(tmp_path, monkeypatch):
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    return SubjectKeys.load(tmp_path / "keys" / "subject.key")


def test_subject_key_is_created_once_with_private_permissions(tmp_path, keys):
    path = tmp_path / "keys" / "subject.key"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = SubjectKeys.load(path)
    assert again.subject_hmac("42") == keys.subject_hmac("42")


def test_hmac_depends_on_the_key_not_only_on_the_id(tmp_path, keys, monkeypatch):
    monkeypatch.setenv("ERASURE_SUBJECT_KEY", "11" * 32)
    other = SubjectKeys.load(tmp_path / "unused.key")
    assert other.subject_hmac("42") != keys.subject_hmac("42")
    assert len(keys.subject_hmac("42")) == 64


def test_bad_env_key_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ERASURE_SUBJECT_KEY", "not-hex")
    with pytest.raises(ConfigError):
        SubjectKeys.load(tmp_path / "k")


def test_sealed_subject_opens_only_for_its_request(keys):
    blob = keys.seal("alice@example.com", "req-1")
    assert b"alice" not in blob
    assert keys.unseal(blob, "req-1") == "alice@example.com"
    with pytest.raises(ConfigError):
        keys.unseal(blob, "req-2")


@pytest.mark.parametrize("raw,typ,expected", [
    ("42", "int64", 42), ("42", "string", "42"), ("-7", "int32", -7),
    ("x' OR '1'='1", "large_string", "x' OR '1'='1")])
def test_subject_ids_are_typed_by_the_key_column(raw, typ, expected):
    value = coerce_subject_id(raw, typ, "ab" * 32, "c")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("raw,typ", [("abc", "int64"), ("042", "int64"), ("300", "int8"),
                                     ("1.5", "int64"), ("42", "double")])
def test_wrong_key_types_are_refused_without_naming_the_subject(raw, typ):
    with pytest.raises(SubjectKeyTypeError) as exc:
        coerce_subject_id(raw, typ, "ab" * 32, "user_id of t")
    message = str(exc.value)
    assert "nothing was changed" in message and "user_id of t" in message
    if typ.startswith("int"):
        assert raw not in message and "abababababab" in message


def test_deadline_is_one_calendar_month(keys):
    from datetime import datetime, timezone
    assert one_month_later(datetime(2026, 1, 31, tzinfo=timezone.utc)).day == 28
    assert one_month_later(datetime(2026, 12, 5, tzinfo=timezone.utc)).year == 2027


def test_ledger_chain_detects_an_edited_entry(tmp_path, keys):
    led = Ledger(tmp_path / "l.db", chain_key(keys))
    rid = submit(led, keys, "subject-77", "dpo", "test")
    led.append(rid, "note", {"x": 1})
    assert led.verify_chain() == (True, 2, None)
    with pytest.raises(sqlite3.IntegrityError):
        led.db.execute("UPDATE entries SET body = '{}' WHERE seq = 2")
    # an attacker with file access drops the trigger first: the chain still catches it
    led.db.execute("DROP TRIGGER entries_no_update")
    led.db.execute("UPDATE entries SET body = '{\"x\":2}' WHERE seq = 2")
    ok, _, problem = led.verify_chain()
    assert not ok and "entry 2" in problem


def test_ledger_chain_detects_a_deleted_entry(tmp_path, keys):
    led = Ledger(tmp_path / "l.db", chain_key(keys))
    rid = submit(led, keys, "s1", None, None)
    led.append(rid, "a", {})
    led.append(rid, "b", {})
    led.db.execute("DROP TRIGGER entries_no_delete")
    led.db.execute("DELETE FROM entries WHERE seq = 2")
    assert led.verify_chain()[0] is False


def test_ledger_file_never_holds_the_plain_subject_id(tmp_path, keys):
    led = Ledger(tmp_path / "l.db", chain_key(keys))
    rid = submit(led, keys, "jane.doe@example.com", "dpo", "ticket 9")
    state = load_state(led, rid)
    assert state.subject_hmac == keys.subject_hmac("jane.doe@example.com")
    led.close()
    for f in tmp_path.glob("l.db*"):
        assert b"jane.doe" not in f.read_bytes()


def test_unknown_request_is_an_input_error(tmp_path):
    led = Ledger(tmp_path / "l.db")
    with pytest.raises(UnknownRequestError):
        led.require("req-nope")


def test_redact_removes_keys_from_library_messages_but_not_longer_numbers():
    from erasure.subject import redact

    msg = redact("Generic error: predicate k = 42 AND v = 420, path a-42.parquet", [42])
    assert msg == "Generic error: predicate k = <subject> AND v = 420, path a-<subject>.parquet"
    assert redact("name = 'o''neil'", ["o''neil"]) == "name = '<subject>'"


# ---- issue 12: batched appends --------------------------------------------------------
def test_chain_mac_equals_hmac_sha256_for_any_key_and_message():
    import hashlib
    import hmac
    import os

    from erasure.ledger import ChainMac

    for n in (0, 1, 32, 63, 64, 65, 200):
        key = os.urandom(n)
        mac = ChainMac(key)
        for msg in (b"", b"x", os.urandom(1000)):
            assert mac.hexdigest(msg) == hmac.digest(key, msg, "sha256").hex() == \
                hmac.new(key, msg, hashlib.sha256).hexdigest()


def test_now_iso_is_datetime_isoformat_with_microseconds():
    from datetime import datetime

    from erasure.ledger import now_iso

    ts = now_iso()
    parsed = datetime.fromisoformat(ts)
    assert parsed.isoformat(timespec="microseconds") == ts and ts.endswith("+00:00")
    assert abs((datetime.now(parsed.tzinfo) - parsed).total_seconds()) < 5


def test_batched_appends_are_read_inside_the_transaction_and_chain_exactly(tmp_path, keys,
                                                                           monkeypatch):
    """Appends inside a transaction are hashed in order and inserted together at its commit
    (or before anything reads through `db`, or every FLUSH_ROWS): a read inside the
    transaction sees them, a rollback leaves none, and the chain and anchor verify."""
    import erasure.ledger as ledger_mod
    from erasure.canonical import NotCanonicalJSON
    from erasure.ledger import entry_hash

    monkeypatch.setattr(ledger_mod, "FLUSH_ROWS", 7)
    ledger = Ledger(tmp_path / "l.db", chain_key(keys))
    rid = submit(ledger, keys, "42", "dpo", None)
    with ledger.transaction():
        for i in range(20):
            ledger.append(rid, "step.started", {"target": "t", "phase": "erase", "i": i})
            if i == 3:        # a read in the middle sees every entry appended so far
                assert [e.body.get("i") for e in ledger.entries(rid)][-4:] == [0, 1, 2, 3]
        assert len(ledger.entries(rid)) == 21
        shared = {"target": "t", "phase": "purge", "note": "caf\u00e9 \u2603"}
        assert ledger.append_many([(rid, "step.started", shared), (None, "table.history", {}),
                                   (rid, "step.completed", shared)]) == 3
    with pytest.raises(RuntimeError):
        with ledger.transaction():
            for i in range(10):
                ledger.append(rid, "step.completed", {"target": "t", "phase": "erase"})
            raise RuntimeError("dies before the commit")
    assert len(ledger.entries(rid)) == 23 and ledger.head()[0] == 24
    assert ledger.verify_chain() == (True, 24, None)
    rows = ledger.db.execute("SELECT * FROM entries ORDER BY seq").fetchall()
    prev = "0" * 64
    for seq, ts, r, kind, body, prev_hash, h in rows:    # recomputed with hmac.digest
        assert prev_hash == prev and entry_hash(chain_key(keys), prev, seq, ts, r, kind,
                                                body) == h
        prev = h
    assert load_state(ledger, rid).entries == 23
    with pytest.raises(NotCanonicalJSON):      # refused in a batch as alone; nothing appended
        ledger.append_many([(rid, "step.started", shared), (rid, "x", {"t": float("nan")})])
    with pytest.raises(NotCanonicalJSON):
        ledger.append_many([(rid, "step.started", {"lone": "\ud800"})])
    assert ledger.head()[0] == 24 and ledger.verify_chain() == (True, 24, None)
