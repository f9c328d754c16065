"""The ledger on PostgreSQL (`[ledger] url`), on the machine's real server (127.0.0.1:5432,
database `test`), each test in a schema of its own: the same erasure, evidence, governance
and tamper checks as on SQLite, and several processes sharing one ledger never run the same
request twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typing import Iterator

from conftest import Lake, postgres_ledger, read_table

@pytest.fixture
def pg_lake(lake: Lake, monkeypatch) -> Iterator[Lake]:
    """The sample lake with its ledger in a fresh PostgreSQL schema (dropped afterwards)."""
    with postgres_ledger(lake) as url:
        lake.pg_url = url            # type: ignore[attr-defined]
        monkeypatch.setenv("ERASURE_ACTOR", "ops")
        yield lake


def _rows(lake, sql: str, args=()):
    import psycopg2

    db = psycopg2.connect(lake.pg_url)
    db.autocommit = True
    try:
        with db.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        db.close()


def _ids(path: str, column: str) -> list:
    return read_table(path).column(column).to_pylist()


def test_an_erasure_with_its_report_runs_on_a_postgresql_ledger(pg_lake, capsys, tmp_path):
    lake = pg_lake
    raw = lake.tables["raw/reviews"]
    others_before = sum(1 for k in _ids(raw, "user_id") if k not in (42, 43))
    code, sub = lake.cli_json(capsys, "request", "submit", "--subject-id", "42")
    assert code == 0 and not sub["existing"]
    code, again = lake.cli_json(capsys, "request", "submit", "--subject-id", "42")
    assert code == 0 and again == {"request_id": sub["request_id"], "existing": True}
    assert lake.cli_json(capsys, "request", "submit", "--subject-id", "43")[0] == 0
    code, res = lake.cli_json(capsys, "run", "--pending")
    assert code == 0 and res["status"] == "completed", res
    ids = _ids(raw, "user_id")
    assert 42 not in ids and 43 not in ids
    assert sum(1 for k in ids if k not in (42, 43)) == others_before
    code, st = lake.cli_json(capsys, "status", sub["request_id"])
    assert code == 0 and st["status"] == "completed"
    assert st["governance"]["submitted_by"] == "ops" and st["governance"]["ran_by"] == "ops"
    # nothing of the ledger went to a SQLite file
    assert not (lake.root / ".erasure" / "ledger.db").exists()
    assert not (lake.root / ".erasure" / "ledger.db.head").exists()
    n = _rows(lake, "SELECT count(*) FROM entries")[0][0]
    assert n > 10
    assert _rows(lake, "SELECT anchor FROM head_anchor WHERE id = 1")
    # the signed report, checked against the PostgreSQL ledger
    assert lake.cli("keys", "init", capsys=capsys)[0] == 0
    pdf = tmp_path / "proof.pdf"
    assert lake.cli("report", sub["request_id"], "-o", str(pdf), capsys=capsys)[0] == 0
    code, ver = lake.cli_json(capsys, "verify-report", str(pdf))
    assert code == 0 and ver["ok"] and all(c["ok"] for c in ver["checks"]), ver
    assert any(c["name"] == "evidence-matches-ledger" and not c.get("skipped")
               for c in ver["checks"])
    code, led = lake.cli_json(capsys, "ledger", "verify")
    assert code == 0 and led["ok"] and led["entries"] == n + 1, led   # + the report's checkpoint
    # a sweep reads the finished requests with the same SQL
    code, sw = lake.cli_json(capsys, "sweep")
    assert code == 0 and sw["status"] == "clean" and sw["requests_checked"] == 2, sw
    # the subject id is nowhere in the database's text
    bodies = " ".join(b for (b,) in _rows(lake, "SELECT body FROM entries"))
    assert '"42"' not in bodies and ":42," not in bodies and ":42}" not in bodies


def test_entries_cannot_be_changed_and_a_forged_one_is_caught(pg_lake, capsys):
    import psycopg2

    lake = pg_lake
    code, sub = lake.cli_json(capsys, "request", "submit", "--subject-id", "42")
    assert code == 0
    for sql in ("UPDATE entries SET body = '{}' WHERE seq = 1", "DELETE FROM entries",
                "UPDATE meta SET value = '2' WHERE key = 'format'"):
        with pytest.raises(psycopg2.Error) as err:
            _rows(lake, sql)
        assert "append-only" in str(err.value)
    assert lake.cli_json(capsys, "ledger", "verify")[0] == 0
    # an entry appended without the key: the chain does not verify, and nothing more is
    # appended on top of it
    last = _rows(lake, "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")[0]
    _rows(lake, "INSERT INTO entries VALUES (%s, %s, NULL, 'request.completed', %s, %s, %s)",
          (last[0] + 1, "2026-11-29T00:00:00+00:00", json.dumps({"status": "completed"}),
           last[1], "0" * 64))
    code, led = lake.cli_json(capsys, "ledger", "verify")
    assert code == 5 and not led["ok"] and f"entry {last[0] + 1}" in led["problem"], led
    code, _ = lake.cli("run", sub["request_id"], capsys=capsys)
    assert code == 5 and "does not verify" in lake.last_err


def test_a_nul_in_an_entry_body_breaks_no_query(pg_lake, capsys):
    """jsonb refuses \\u0000. A lineage event may name a dataset with one; the plan lists
    it as unresolved, so a plan.recorded body holds it for good (the ledger is append-only).
    Pending, status, verify and sweep must still read the ledger."""
    import uuid as _uuid

    lake = pg_lake
    first = json.loads(lake.events.read_text().splitlines()[0])
    event = {**first, "eventType": "COMPLETE",
             "run": {"facets": {}, "runId": str(_uuid.uuid4())},
             "inputs": [{**first["inputs"][0], "facets": {}}],
             "outputs": [{"namespace": "file", "name": "/nowhere/bad\u0000name", "facets": {}}]}
    (lake.events.parent / "nul.jsonl").write_text(json.dumps(event) + "\n")
    code, sub = lake.cli_json(capsys, "request", "submit", "--subject-id", "42")
    assert code == 0
    code, res = lake.cli_json(capsys, "run", sub["request_id"])
    assert code == 6 and res["status"] == "incomplete", res     # the unresolved dataset
    bodies = [b for (b,) in _rows(lake, "SELECT body FROM entries WHERE kind = 'plan.recorded'")]
    assert any("\\u0000" in b for b in bodies)
    assert lake.cli_json(capsys, "request", "submit", "--subject-id", "43")[0] == 0
    code, res = lake.cli_json(capsys, "run", "--pending")      # reads every request's status
    assert code == 6 and len(res["requests"]) == 1, res
    code, out = lake.cli("status", "--json", capsys=capsys)
    assert code == 0, lake.last_err
    assert len(json.loads(out)["requests"]) == 2
    code, out = lake.cli("sweep", "--json", capsys=capsys)
    assert code == 0, lake.last_err
    assert json.loads(out)["requests_checked"] == 2
    assert lake.cli_json(capsys, "ledger", "verify")[0] == 0


def test_one_run_at_a_time_across_processes(pg_lake, capsys):
    """The run lock is a PostgreSQL advisory lock: a second process gets exit 75 while the
    first holds it; two processes started together never run a request twice."""
    from erasure.engine import Engine

    lake = pg_lake
    ids = [str(i) for i in range(1, 41)]
    subjects = lake.root / "subjects.txt"
    subjects.write_text("\n".join(ids) + "\n")
    assert lake.cli("request", "submit", "--subjects-file", str(subjects), capsys=capsys)[0] == 0
    eng = Engine.from_path(lake.config)
    try:
        with eng.ledger.exclusive():
            code, _ = lake.cli("run", "--pending", capsys=capsys)
            assert code == 75 and "lock" in lake.last_err
    finally:
        eng.close()
    env = {**os.environ, "ERASURE_ACTOR": "ops"}
    cmd = [sys.executable, "-m", "erasure.cli", "--config", str(lake.config), "run",
           "--pending", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              cwd=Path(__file__).resolve().parents[1]) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]     # read the pipes while they run
    codes = [p.returncode for p in procs]
    assert sorted(codes) in ([0, 0], [0, 75]), [err for _, err in outs]
    # whichever ran, every request completed exactly once
    done = _rows(lake, "SELECT request_id, count(*) FROM entries WHERE kind = "
                       "'request.completed' GROUP BY request_id")
    assert len(done) == len(ids) and all(n == 1 for _, n in done), done
    planned = _rows(lake, "SELECT request_id, count(*) FROM entries WHERE kind = "
                          "'plan.recorded' GROUP BY request_id")
    assert all(n == 1 for _, n in planned)
    assert lake.cli_json(capsys, "ledger", "verify")[0] == 0
    left = set(_ids(lake.tables["raw/reviews"], "user_id")) & {int(i) for i in ids}
    assert not left


def test_holds_and_four_eyes_on_a_postgresql_ledger(pg_lake, capsys, monkeypatch):
    lake = pg_lake
    lake.config.write_text(lake.config.read_text() + "\n[approvals]\nrequired = 2\n")
    monkeypatch.setenv("ERASURE_ACTOR", "alice")
    code, a = lake.cli_json(capsys, "request", "submit", "--subject-id", "42")
    code, b = lake.cli_json(capsys, "request", "submit", "--subject-id", "43")
    code, hold = lake.cli_json(capsys, "hold", "add", "--subject-id", "43", "--reason",
                               "Case 2026-117")
    assert code == 0 and hold["hold_id"].startswith("hold-")
    assert lake.cli("request", "approve", a["request_id"], capsys=capsys)[0] == 4   # own
    for who in ("bob", "carol"):
        monkeypatch.setenv("ERASURE_ACTOR", who)
        code, ok = lake.cli_json(capsys, "request", "approve", a["request_id"])
        assert code == 0, lake.last_err
    monkeypatch.setenv("ERASURE_ACTOR", "ops")
    code, res = lake.cli_json(capsys, "run", "--pending")
    assert code == 0 and res["status"] == "waiting"
    by = {r["request_id"]: r["status"] for r in res["requests"]}
    assert by == {a["request_id"]: "completed", b["request_id"]: "on_hold"}
    code, st = lake.cli_json(capsys, "status", b["request_id"])
    assert st["status"] == "on_hold"
    code, st = lake.cli_json(capsys, "status", a["request_id"])
    assert st["governance"]["approved_by"] == ["bob", "carol"]
    ids = _ids(lake.tables["raw/reviews"], "user_id")
    assert 42 not in ids and 43 in ids


def test_two_services_on_one_postgresql_ledger_never_run_a_request_twice(pg_lake, capsys):
    """Two `erasure serve` processes with workers share one PostgreSQL ledger; one is killed
    mid-batch; the other finishes the work. Every request completes exactly once, the ledger
    verifies, the subjects are gone and every other row is kept."""
    import signal

    from test_service_worker import (KEYS, _add_service, _free_port, _rows_of_others, _serve,
                                     _subjects_left, _users, _wait)

    lake = pg_lake
    text = lake.config.read_text()
    # a MERGE killed between writing and committing its files leaves orphans holding
    # subjects; nobody else writes these tables, so they may be purged at once
    lake.config.write_text(text.replace('[delta]\nresidue = "purge"\n',
                                        '[delta]\nresidue = "purge"\norphan_grace = "0s"\n'))
    _add_service(lake.config, '[service]\nworker_interval = "1s"\n')
    import random

    subjects = set(random.Random(21).sample(_users(lake), 150))
    others_before = _rows_of_others(lake, subjects)
    sf = lake.root / "subjects.txt"
    sf.write_text("".join(f"{s}\n" for s in sorted(subjects)))
    code, out = lake.cli_json(capsys, "request", "submit", "--subjects-file", str(sf))
    assert code == 0, lake.last_err
    rids = {r["request_id"] for r in out["requests"]}

    def started() -> bool:
        return bool(_rows(lake, "SELECT 1 FROM entries WHERE kind = 'step.started' LIMIT 1"))

    def completed() -> set[str]:
        return {r for (r,) in _rows(lake, "SELECT request_id FROM entries WHERE kind = "
                                          "'request.completed'")}

    logs = [lake.root / "serve-a.log", lake.root / "serve-b.log"]
    procs = [_serve(lake.config, _free_port(), log) for log in logs]
    try:
        _wait("a worker's first step", lambda: started() or any(
            p.poll() is not None for p in procs), 60, 0.02)
        assert all(p.poll() is None for p in procs), [x.read_text()[-2000:] for x in logs]
        # kill the process whose worker holds the run lock, mid-batch: the other must take
        # the batch over (resume it) without running any request twice
        holder = _lock_holder(lake, procs)
        assert holder is not None, "no process holds the run lock while steps are recorded"
        assert len(completed()) < len(rids), "the batch finished before the kill"
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        other = next(p for p in procs if p is not holder)
        _wait("every request completed", lambda: completed() == rids
              or other.poll() is not None, 120, 0.2)
        assert other.poll() is None, [x.read_text()[-2000:] for x in logs]
        other.send_signal(signal.SIGTERM)
        other.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
    done = _rows(lake, "SELECT request_id, count(*) FROM entries WHERE kind = "
                       "'request.completed' GROUP BY request_id")
    assert {r for r, _ in done} == rids and all(n == 1 for _, n in done), done
    code, st = lake.cli_json(capsys, "status")
    assert {r["request_id"]: r["status"] for r in st["requests"]} == {r: "completed" for r in rids}
    assert lake.cli_json(capsys, "ledger", "verify")[0] == 0
    assert _subjects_left(lake, subjects) == {n: set() for n in KEYS}
    assert _rows_of_others(lake, subjects) == others_before


def _lock_holder(lake, procs):
    """The process (of `procs`) whose PostgreSQL session holds the ledger's run lock: the
    backend holding the advisory lock, matched to a process by its client port."""
    import psutil

    from erasure.ledger_pg import RUN_LOCK

    rows = _rows(lake, "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a "
                       "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                       "AND l.classid::bigint = %s AND l.objid::bigint = %s",
                 (RUN_LOCK >> 32, RUN_LOCK & 0xFFFFFFFF))
    ports = {r[0] for r in rows}
    for p in procs:
        try:
            mine = {c.laddr.port for c in psutil.Process(p.pid).net_connections(kind="tcp")}
        except psutil.Error:
            continue
        if mine & ports:
            return p
    return None
