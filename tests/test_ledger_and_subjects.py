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
