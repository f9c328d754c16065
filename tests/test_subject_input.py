"""Subject ids as they come in (issue 9): one set of rules for --subject-id and the subjects
file, a subjects file read as UTF-8 lines split only at \\n, idempotent submission in chunks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from erasure.cli import run_cli
from erasure.errors import InputError
from erasure.ledger import Ledger, chain_key
from erasure.requests import submit
from erasure.subject import SubjectKeys, redact

ERASURE = Path(sys.executable).parent / "erasure"


@pytest.fixture
def keys(tmp_path, monkeypatch):
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    return SubjectKeys.load(tmp_path / "keys" / "subject.key")


@pytest.fixture
def slake(tmp_path, monkeypatch):
    """A lake whose root key column is a string: every id is a valid value for it."""
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    monkeypatch.delenv("ERASURE_CONFIG", raising=False)
    accounts = tmp_path / "accounts"
    write_deltalake(accounts, pa.table({"account": ["alice", "bob", "42"], "n": [1, 2, 3]}))
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({
        "eventType": "COMPLETE", "eventTime": "2026-11-01T00:00:00Z", "producer": "t",
        "run": {"runId": "00000000-0000-4000-8000-000000000009"},
        "job": {"namespace": "shop", "name": "noop"},
        "inputs": [{"namespace": "file", "name": str(accounts)}], "outputs": []}) + "\n")
    cfg = tmp_path / "erasure.toml"
    cfg.write_text('[lineage]\nevents = ["events.jsonl"]\n'
                   '[[roots]]\nnamespace = "file"\nname = "accounts"\ncolumn = "account"\n')
    return cfg


def _cli(cfg, capsys, *args):
    code = run_cli(["--config", str(cfg), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ledger_rows(cfg) -> list[tuple[str, dict]]:
    db = cfg.parent / ".erasure" / "ledger.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return [(r[0], json.loads(r[1])) for r in con.execute(
            "SELECT request_id, body FROM entries WHERE kind = 'request.submitted' ORDER BY seq")]
    finally:
        con.close()


def _hmacs(cfg) -> list[str]:
    return [b["subject_hmac"] for _, b in _ledger_rows(cfg)]


def _keys_of(cfg) -> SubjectKeys:
    return SubjectKeys.load(cfg.parent / ".erasure" / "keys" / "subject.key", create=False)


def _without_paths(text: str) -> str:
    """Messages name files by path; a temporary path may contain a short id by chance."""
    import re

    return re.sub(r"/\S+", "<path>", text)


def _no_plaintext(cfg, *needles: str, texts=()):
    for t in map(_without_paths, texts):
        for n in needles:
            assert n not in t, (n, t)
    for f in (cfg.parent / ".erasure").rglob("*"):
        if f.is_file() and f.suffix != ".key":
            data = f.read_bytes()
            for n in needles:
                assert n.encode("utf-8") not in data, (n, f)


# ---- item 1: split only at \n; other separators and controls are refused -------------
@pytest.mark.parametrize("sep", ["\x1c", "\x1d", "\x1e", "\x85", "\v", "\f", "\u2028", "\u2029",
                                 "\t", "\x00", "\r", "\u200b", "\u202e"])
def test_subjects_file_line_with_a_separator_or_control_is_refused_by_line_number(
        slake, capsys, tmp_path, sep):
    f = tmp_path / "s.txt"
    f.write_bytes(f"alice\nuser{sep}4242\nbob\n".encode("utf-8"))
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f))
    assert code == 4, (out, err)
    assert "line 2" in err and "nothing was recorded" in err.lower()
    assert _ledger_rows(slake) == []
    _no_plaintext(slake, "user", "4242", "alice", texts=(out, err))


def test_subjects_file_with_crlf_line_ends_records_the_ids_without_cr(slake, capsys, tmp_path):
    f = tmp_path / "s.txt"
    f.write_bytes(b"alice\r\n\r\nbob\r\n")
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f), "--json")
    assert code == 0, err
    assert len(json.loads(out)["requests"]) == 2
    keys = _keys_of(slake)
    assert _hmacs(slake) == [keys.subject_hmac("alice"), keys.subject_hmac("bob")]


# ---- item 6: a UTF-8 BOM is not part of the first id ----------------------------------
def test_subjects_file_utf8_bom_is_stripped(slake, capsys, tmp_path):
    f = tmp_path / "s.txt"
    f.write_bytes(b"\xef\xbb\xbfbob\nalice\n")
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f))
    assert code == 0, err
    keys = _keys_of(slake)
    assert _hmacs(slake) == [keys.subject_hmac("bob"), keys.subject_hmac("alice")]


# ---- item 10: UTF-16 and non-UTF-8 files are bad input, not a crash --------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_subjects_file_is_exit_4_asking_for_utf8(slake, capsys, tmp_path, encoding):
    f = tmp_path / "s.txt"
    text = "alice\nbob\n"
    f.write_bytes(("\ufeff" + text).encode(encoding) if "-" in encoding else text.encode(encoding))
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f))
    assert code == 4, err
    assert "UTF-8" in err and ("UTF-16" in err or "UTF-32" in err)
    assert "Traceback" not in err and "internal error" not in err
    assert _ledger_rows(slake) == []
    _no_plaintext(slake, "alice", "bob", texts=(out, err))


def test_utf16_subjects_file_without_bom_is_exit_4(slake, capsys, tmp_path):
    f = tmp_path / "s.txt"
    f.write_bytes("alice\nbob\n".encode("utf-16-le"))
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f))
    assert code == 4 and "line 1" in err and "UTF-8" in err, err
    assert _ledger_rows(slake) == []


def test_latin1_subjects_file_is_exit_4_with_the_line_number(slake, capsys, tmp_path):
    f = tmp_path / "s.txt"
    f.write_bytes("alice\nbob\nzo\u00e9\n".encode("latin-1"))
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f))
    assert code == 4, err
    assert "line 3" in err and "UTF-8" in err and "internal error" not in err
    assert _ledger_rows(slake) == []
    _no_plaintext(slake, "alice", "zo", texts=(out, err))


# ---- item 11: plan refuses what submit refuses ----------------------------------------
@pytest.mark.parametrize("bad", ["", " 42", "42 ", "42\n", "4\x1e2", "4\u20282", "\ufeff42",
                                 "4\t2", "x" * 513])
def test_plan_refuses_the_ids_submit_refuses(slake, capsys, bad):
    code, out, err = _cli(slake, capsys, "plan", "--subject-id", bad)
    assert code == 4, (bad, out, err)
    code2, out2, err2 = _cli(slake, capsys, "request", "submit", "--subject-id", bad)
    assert code2 == 4
    assert _ledger_rows(slake) == []
    if len(bad.strip()) > 1:
        _no_plaintext(slake, bad.strip(), texts=(out, err, out2, err2))


# ---- item 13: the length cap ----------------------------------------------------------
def test_ids_over_512_characters_are_refused_without_echoing_them(slake, capsys, tmp_path):
    long_id = "k" * 512
    code, out, err = _cli(slake, capsys, "request", "submit", "--subject-id", long_id, "--json")
    assert code == 0, err
    too_long = "q" * 513
    code, out, err = _cli(slake, capsys, "request", "submit", "--subject-id", too_long)
    assert code == 4 and "512" in err and too_long not in err
    f = tmp_path / "s.txt"
    f.write_text("alice\n" + "z" * 1_000_000 + "\n")
    t0 = time.perf_counter()
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f))
    assert code == 4 and "line 2" in err and "zzzz" not in err
    assert time.perf_counter() - t0 < 10
    assert len(_ledger_rows(slake)) == 1


# ---- item 12: the guard on --reason/--requested-by ignores case, still whole tokens ----
@pytest.mark.parametrize("subject,text", [
    ("alice", "ticket from ALICE"), ("alice", "Alice."), ("Straße", "for STRASSE team"),
    ("jane.doe@example.com", "Mail JANE.DOE@EXAMPLE.COM"), ("émile ✓", "from ÉMILE ✓ today"),
    ("x' or '1'='1", "X' OR '1'='1")])
def test_reason_naming_the_subject_in_any_case_is_refused(tmp_path, keys, subject, text):
    led = Ledger(tmp_path / "l.db", chain_key(keys))
    for requested_by, reason in ((None, text), (text, None)):
        with pytest.raises(InputError) as exc:
            submit(led, keys, subject, requested_by, reason)
        assert subject not in str(exc.value) and text not in str(exc.value)
    assert led.request_ids() == []


@pytest.mark.parametrize("subject,text", [("alice", "malice aforethought"), ("42", "req-4242"),
                                          ("ali", "ALIce")])
def test_reason_with_the_id_inside_a_longer_word_is_accepted(tmp_path, keys, subject, text):
    led = Ledger(tmp_path / "l.db", chain_key(keys))
    assert submit(led, keys, subject, None, text).startswith("req-")


def test_guard_via_the_cli_is_case_insensitive(slake, capsys):
    code, out, err = _cli(slake, capsys, "request", "submit", "--subject-id", "alice",
                          "--reason", "ticket from ALICE")
    assert code == 4 and "--reason" in err
    assert _ledger_rows(slake) == []


# ---- item 13: redact without regexes built from ids, and without ANSI colours ----------
def test_redact_strips_ansi_colour_escapes_and_keeps_whole_token_semantics():
    msg = "\x1b[31mGeneric error\x1b[0m: predicate k = \x1b[1m42\x1b[0m AND v = 420"
    assert redact(msg, [42]) == "Generic error: predicate k = <subject> AND v = 420"
    assert redact("a.b*c(d and aXbYc(d", ["a.b*c(d"]) == "<subject> and aXbYc(d"
    assert redact("name = 'o''neil' 'o''neil'x", ["o''neil"]) == \
        "name = '<subject>' '<subject>'x"
    assert redact("k=4242 k=42 42_ _42 42", ["42"]) == "k=4242 k=<subject> 42_ _42 <subject>"
    assert redact("\x1b]8;;http://x\x07link\x1b]8;;\x07 bob", ["bob"]) == "link <subject>"


# ---- item 14: idempotent submission, chunks, streaming output -------------------------
def test_submitting_the_same_file_twice_returns_the_same_ids(slake, capsys, tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("alice\nbob\nalice\n")
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f),
                          "--reason", "ticket 9", "--json")
    assert code == 0, err
    first = json.loads(out)["requests"]
    assert [r["existing"] for r in first] == [False, False, True]
    assert first[0]["request_id"] == first[2]["request_id"]
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f),
                          "--reason", "ticket 9", "--json")
    again = json.loads(out)["requests"]
    assert [r["request_id"] for r in again] == [r["request_id"] for r in first]
    assert all(r["existing"] for r in again)
    code, out, err = _cli(slake, capsys, "request", "submit", "--subject-id", "bob",
                          "--reason", "ticket 9", "--json")
    assert json.loads(out) == {"request_id": first[1]["request_id"], "existing": True}
    hm = _hmacs(slake)
    assert len(hm) == 2 and len(set(hm)) == 2
    # another reason is another request; a finished request is not reused
    code, out, err = _cli(slake, capsys, "request", "submit", "--subject-id", "bob",
                          "--reason", "ticket 10", "--json")
    other = json.loads(out)
    assert other["existing"] is False and other["request_id"] != first[1]["request_id"]
    led = Ledger(slake.parent / ".erasure" / "ledger.db", chain_key(_keys_of(slake)))
    led.append(first[0]["request_id"], "request.completed",
               {"status": "completed", "batch": "t", "targets": 1, "unresolved": 0})
    led.close()
    code, out, err = _cli(slake, capsys, "request", "submit", "--subject-id", "alice",
                          "--reason", "ticket 9", "--json")
    fresh = json.loads(out)
    assert fresh["existing"] is False and fresh["request_id"] != first[0]["request_id"]
    assert len(_hmacs(slake)) == 4


def test_killed_submit_leaves_whole_chunks_and_resubmitting_records_only_the_rest(
        lake, tmp_path):
    from erasure.requests import CHUNK

    n = 20 * CHUNK
    f = tmp_path / "ids.txt"
    f.write_text("".join(f"{i}\n" for i in range(1, n + 1)))
    env = {k: v for k, v in os.environ.items() if k not in ("ERASURE_SUBJECT_KEY", "ERASURE_CONFIG")}
    cmd = [str(ERASURE), "--config", str(lake.config), "request", "submit", "--subjects-file", str(f)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    printed = []
    deadline = time.monotonic() + 300
    while len(printed) < CHUNK and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        printed.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    printed += [x.strip() for x in proc.stdout.read().splitlines() if x.strip()]
    proc.stdout.close()
    proc.stderr.close()
    assert len(printed) >= CHUNK, "the first chunk was not printed before the kill"
    rows = _ledger_rows(lake.config)
    recorded = [r for r, _ in rows]
    assert len(recorded) % CHUNK == 0 and len(recorded) >= len(printed)
    assert set(printed) <= set(recorded)
    res = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)["requests"]
    assert len(out) == n
    assert [r["request_id"] for r in out[:len(printed)]] == printed
    assert [r["request_id"] for r in out[:len(recorded)]] == recorded
    assert all(r["existing"] for r in out[:len(recorded)])
    assert not any(r["existing"] for r in out[len(recorded):])
    rows = _ledger_rows(lake.config)
    assert len(rows) == n and len({b["subject_hmac"] for _, b in rows}) == n
    assert [r for r, _ in rows] == [r["request_id"] for r in out]


# ---- what already held, still holds through the new reader ----------------------------
@pytest.mark.parametrize("bad", ["042", "+42", "0x2a", "\uff14\uff12", "4_2", "1.5", "-0"])
def test_non_canonical_integers_in_a_subjects_file_are_refused_by_line(lake, capsys, tmp_path, bad):
    f = tmp_path / "ids.txt"
    f.write_text(f"7\n{bad}\n8\n", encoding="utf-8")
    code, out = lake.cli("request", "submit", "--subjects-file", str(f), capsys=capsys)
    assert code == 4 and "line 2" in lake.last_err, lake.last_err
    assert bad not in _without_paths(lake.last_err) and bad not in out
    assert _ledger_rows(lake.config) == []


def test_unusual_string_ids_are_recorded_but_never_in_plain_text(slake, capsys, tmp_path):
    ids = ["x' OR '1'='1; DROP TABLE entries; --", "a.*b+(c)?[d]{2}|\\1$^", "p\u0430ypal",
           "\u0440\u0430\u0443\u0440\u0430l.com"]
    f = tmp_path / "s.txt"
    f.write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f), "--json")
    assert code == 0, err
    keys = _keys_of(slake)
    assert _hmacs(slake) == [keys.subject_hmac(i) for i in ids]
    _no_plaintext(slake, *ids, texts=(out, err))
    code, out, err = _cli(slake, capsys, "plan", "--subject-id", ids[1], "--json")
    assert code == 0
    _no_plaintext(slake, ids[1], texts=(out, err))
    f.write_bytes(b"secret\x00id\n")
    code, out, err = _cli(slake, capsys, "request", "submit", "--subjects-file", str(f))
    assert code == 4 and "line 1" in err
    _no_plaintext(slake, "secret", texts=(out, err))
