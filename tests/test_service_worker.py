"""The service's worker and webhooks (issue 15 parts 5 and 8), on the real app served by
uvicorn on 127.0.0.1, a real HTTP receiver for the webhooks, and real Delta tables:

- requests submitted through the CLI are run by the worker to `completed` with no CLI run;
  other subjects' rows survive; while the test holds the ledger's run lock (as `erasure run`
  does) the worker runs nothing, and after the release it does;
- every status change is POSTed to each webhook, signed (the HMAC is checked here), retried
  after a 500, not retried after a 404, and each final outcome is a `webhook.delivered` or
  `webhook.failed` entry in the ledger, with the URL's query string left out;
- `erasure serve` killed with SIGKILL in the middle of a batch of 300 requests, then started
  again, finishes the work: every request completed, the ledger verifies, no subject's row
  or e-mail left in any file, every other row intact.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import files_holding, read_table

ERASURE = str(Path(sys.executable).with_name("erasure"))
KEYS = {"raw/reviews": "user_id", "clean/reviews": "reviewer_id",
        "features/user_features": "entity_id", "exports/user_activity": "entity_id"}
SECRET = "whsec-test-4f2a"
PAYLOAD_KEYS = {"event", "request_id", "status", "at", "delivery_id"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, cond, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def _rows_of_others(lake, subjects: set[int]) -> dict[str, list[tuple]]:
    out = {}
    for name, col in KEYS.items():
        t = read_table(lake.tables[name])
        names = sorted(t.column_names)
        out[name] = sorted(tuple(str(r[n]) for n in names) for r in t.to_pylist()
                           if r[col] not in subjects)
    return out


def _subjects_left(lake, subjects: set[int]) -> dict[str, set]:
    return {name: set(read_table(lake.tables[name]).column(col).to_pylist()) & subjects
            for name, col in KEYS.items()}


def _users(lake) -> list[int]:
    return sorted({int(x) for x in read_table(lake.tables["raw/reviews"]).column("user_id")
                   .to_pylist()})


def _entries(ledger: Path, kinds: tuple[str, ...] | None = None) -> list[tuple[str, str, dict]]:
    """(request_id, kind, body) of the ledger's entries, read-only, in order."""
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT request_id, kind, body FROM entries ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(r, k, json.loads(b)) for r, k, b in rows if kinds is None or k in kinds]


class Receiver:
    """A webhook receiver on 127.0.0.1: records every POST; /hook answers the codes queued in
    `answers` first, then 200; /gone always answers 404."""

    def __init__(self, answers: list[int]):
        self.got: list[dict] = []
        self.answers = list(answers)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    if self.path.startswith("/gone"):
                        code = 404
                    else:
                        code = outer.answers.pop(0) if outer.answers else 200
                    outer.got.append({"path": self.path, "headers": dict(self.headers),
                                      "body": body, "answer": code})
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def posts(self, path: str) -> list[dict]:
        with self.lock:
            return [g for g in self.got if g["path"].split("?")[0] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Served:
    """create_app(config) served by uvicorn in a thread of this process, on 127.0.0.1."""

    def __init__(self, config: Path):
        import uvicorn

        from erasure.service.app import create_app

        self.app = create_app(config)
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        _wait("uvicorn to start", lambda: self.server.started, 30, 0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "the service did not stop"


def _add_service(config: Path, text: str) -> None:
    config.write_text(config.read_text() + "\n" + text)


def test_worker_runs_pending_requests_signs_webhooks_and_respects_the_lock(lake, capsys):
    from erasure.config import load_config
    from erasure.engine import Engine

    rx = Receiver(answers=[500])          # the very first delivery fails once
    _add_service(lake.config, f"""
[service]
worker_interval = "1s"

[[service.webhooks]]
url = "http://127.0.0.1:{rx.port}/hook?token=q-secret-in-url"
secret = "{SECRET}"

[[service.webhooks]]
url = "http://127.0.0.1:{rx.port}/gone"
secret = "another-secret"
""")
    users = _users(lake)
    subjects = {users[3], users[40], users[77]}
    others_before = _rows_of_others(lake, subjects)
    rids = []
    for s in sorted(subjects):
        code, out = lake.cli_json(capsys, "request", "submit", "--subject-id", str(s))
        assert code == 0, lake.last_err
        rids.append(out["request_id"])
    ledger = lake.root / ".erasure" / "ledger.db"
    assert ledger.is_file()

    served = None
    eng = Engine(load_config(lake.config))
    try:
        # the lock an `erasure run` takes: the worker must not run while it is held
        with eng.ledger.exclusive():
            served = Served(lake.config)
            st = served.app.state.worker_status
            _wait("two ticks skipped for the lock", lambda: st.skipped_locked >= 2, 15)
            assert st.ticks == 0 and st.requests_run == 0
            kinds = {k for _, k, _ in _entries(ledger)}
            assert kinds == {"request.submitted"}, kinds      # nothing planned, nothing run
            assert rx.got == []
        # released: the next tick runs them
        _wait("the worker to run the 3 requests", lambda: {
            r for r, _, b in _entries(ledger, ("request.completed",))
            if b["status"] == "completed"} == set(rids), 90, 0.2)
        _wait("the tick to end", lambda: not st.running and st.requests_run >= 3, 30)
        assert st.last_error is None, st.last_error
        assert st.status_changes >= 3

        # every final webhook outcome lands in the ledger: 3 delivered to /hook, 3 failed
        # at /gone (404, not retried)
        def outcomes():
            got = _entries(ledger, ("webhook.delivered", "webhook.failed"))
            return got if len(got) >= 6 else None
        wh = _wait("6 webhook outcomes in the ledger", outcomes, 60, 0.2)
    finally:
        if served is not None:
            served.stop()
        eng.close()
        rx.close()

    # the CLI agrees: completed, and each entry of the worker names it as the actor
    code, status = lake.cli_json(capsys, "status")
    assert code == 0
    assert {r["request_id"]: r["status"] for r in status["requests"]} == \
        {rid: "completed" for rid in rids}
    for rid, kind, body in _entries(ledger):
        if kind in ("plan.recorded", "step.started", "step.completed", "request.completed"):
            assert body["actor"] == "service-worker", (kind, body)

    # the rows: the subjects gone from every table, every other row intact
    assert _subjects_left(lake, subjects) == {n: set() for n in KEYS}
    assert _rows_of_others(lake, subjects) == others_before

    # the ledger's webhook entries
    hook_url = f"http://127.0.0.1:{rx.port}/hook"
    delivered = [(r, b) for r, k, b in wh if k == "webhook.delivered"]
    failed = [(r, b) for r, k, b in wh if k == "webhook.failed"]
    assert sorted(r for r, _ in delivered) == sorted(rids)
    assert sorted(r for r, _ in failed) == sorted(rids)
    for r, b in delivered:
        assert b["url"] == hook_url and b["status"] == "completed" and b["http_status"] == 200
        assert b["actor"] == "service-webhooks" and b["changed_by"] == "service-worker"
    for r, b in failed:
        assert b["url"] == f"http://127.0.0.1:{rx.port}/gone"
        assert b["http_status"] == 404 and b["attempts"] == 1      # a 404 is not retried
    assert sorted(b["attempts"] for _, b in delivered) == [1, 1, 2]   # one retry after the 500
    assert "q-secret-in-url" not in ledger.read_bytes().decode("utf-8", "replace")
    assert SECRET not in ledger.read_bytes().decode("utf-8", "replace")

    # what the receiver got: signed, the documented payload, no subject id
    posts = rx.posts("/hook")
    assert [p["answer"] for p in posts].count(500) == 1 and posts[0]["answer"] == 500
    assert len(posts) == 4
    for p in posts:
        h = {k.lower(): v for k, v in p["headers"].items()}
        assert h["content-type"] == "application/json"
        want = "sha256=" + hmac.new(SECRET.encode(), p["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(h["x-erasure-signature"], want)
        body = json.loads(p["body"])
        assert set(body) == PAYLOAD_KEYS
        assert body["event"] == "request.status_changed" and body["status"] == "completed"
        assert body["request_id"] in rids and h["x-erasure-delivery"] == body["delivery_id"]
        assert abs(int(h["x-erasure-timestamp"]) - time.time()) < 300
    # the 500 was retried with the same delivery id, the same bytes and the same signature
    retried = [p for p in posts if p["body"] == posts[0]["body"]]
    assert [p["answer"] for p in retried] == [500, 200]
    by_delivery = {b["delivery_id"]: b for _, b in delivered}
    assert by_delivery[json.loads(posts[0]["body"])["delivery_id"]]["attempts"] == 2
    # a forged body does not verify under the secret
    forged = posts[0]["body"].replace(b"completed", b"rejected")
    assert not hmac.compare_digest(
        posts[0]["headers"]["X-Erasure-Signature"],
        "sha256=" + hmac.new(SECRET.encode(), forged, hashlib.sha256).hexdigest())
    # the /gone webhook got its own secret's signature
    for p in rx.posts("/gone"):
        assert p["headers"]["X-Erasure-Signature"] == "sha256=" + hmac.new(
            b"another-secret", p["body"], hashlib.sha256).hexdigest()
    # nothing was left in the outbox
    outbox = lake.root / ".erasure" / "ledger.db-webhooks.db"
    db = sqlite3.connect(outbox)
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    db.close()
    assert lake.cli("ledger", "verify")[0] == 0


def _serve(config: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen([ERASURE, "--config", str(config), "serve", "--port", str(port)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def test_service_killed_mid_batch_finishes_the_work_on_the_next_start(lake, capsys):
    # A MERGE killed between writing its files and committing them leaves orphans holding
    # subjects; no other writer touches these tables, so they may be purged at once
    # (tests/test_random_kills.py does the same)
    text = lake.config.read_text()
    assert '[delta]\nresidue = "purge"\n' in text
    lake.config.write_text(text.replace('[delta]\nresidue = "purge"\n',
                                        '[delta]\nresidue = "purge"\norphan_grace = "0s"\n'))
    _add_service(lake.config, '[service]\nworker_interval = "1s"\n')
    users = _users(lake)
    subjects = set(random.Random(15).sample(users, 300))
    others_before = _rows_of_others(lake, subjects)
    sf = lake.root / "subjects.txt"
    sf.write_text("".join(f"{s}\n" for s in sorted(subjects)))
    code, out = lake.cli_json(capsys, "request", "submit", "--subjects-file", str(sf))
    assert code == 0, lake.last_err
    rids = {r["request_id"] for r in out["requests"]}
    assert len(rids) == 300
    ledger = lake.root / ".erasure" / "ledger.db"
    log = lake.root / "serve.log"

    # first start: killed as soon as the batch has started erasing
    port = _free_port()
    proc = _serve(lake.config, port, log)
    try:
        _wait("the worker's first step", lambda: proc.poll() is not None or any(
            k == "step.started" for _, k, _ in _entries(ledger)), 60, 0.02)
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    done_at_kill = {r for r, _, _ in _entries(ledger, ("request.completed",))}
    assert len(done_at_kill) < 300, "the batch finished before the kill: not mid-batch"
    assert any(k == "step.started" for _, k, _ in _entries(ledger))

    # second start: the worker finishes the work
    port = _free_port()
    proc = _serve(lake.config, port, log)
    try:
        _wait("every request completed", lambda: proc.poll() is not None or {
            r for r, _, b in _entries(ledger, ("request.completed",))
            if b["status"] == "completed"} == rids, 90, 0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        import httpx

        # the service answers while (and after) its worker ran
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)          # a graceful stop
        # uvicorn shuts down, then re-raises the signal it caught: -SIGTERM, not 0
        assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        assert "Application shutdown complete" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    code, status = lake.cli_json(capsys, "status")
    assert code == 0
    assert {r["request_id"]: r["status"] for r in status["requests"]} == \
        {rid: "completed" for rid in rids}
    assert subprocess.run([ERASURE, "--config", str(lake.config), "ledger", "verify"],
                          capture_output=True, timeout=120).returncode == 0
    assert _subjects_left(lake, subjects) == {n: set() for n in KEYS}
    assert _rows_of_others(lake, subjects) == others_before
    emails = [f"user{s}@example.com".encode() for s in sorted(subjects)]
    assert files_holding(lake.root / "tables", emails, {}) == []
    assert not list((lake.root / "tables").rglob("*.erasure-*.tmp"))
    # the killed batch's requests were resumed, not run twice from scratch: each request has
    # one request.completed entry
    completed = [r for r, _, _ in _entries(ledger, ("request.completed",))]
    assert len(completed) == len(set(completed)) == 300


def test_a_delivery_left_in_the_outbox_is_sent_again_after_a_restart(lake, capsys):
    """A delivery still retrying when the service stops stays in the outbox and is sent,
    with the same delivery id, body and signature, when the next start resumes it."""
    from erasure.config import load_config
    from erasure.service import webhooks

    rx = Receiver(answers=[500, 500])
    _add_service(lake.config, f"""
[service]

[[service.webhooks]]
url = "http://user:pw@127.0.0.1:{rx.port}/hook?k=v"
secret = "{SECRET}"
""")
    code, out = lake.cli_json(capsys, "request", "submit", "--subject-id", "7")
    assert code == 0, lake.last_err
    rid = out["request_id"]
    config = load_config(lake.config)
    ledger = lake.root / ".erasure" / "ledger.db"
    try:
        [did] = webhooks.status_changed(config, rid, "pending")
        _wait("the first attempt", lambda: len(rx.posts("/hook")) >= 1, 15, 0.02)
        left = webhooks.shutdown(0.0)          # the service stops while it waits to retry
        assert left == 1
        n = len(rx.posts("/hook"))
        time.sleep(1.5)                        # stopped: no attempt while it is down
        assert len(rx.posts("/hook")) == n
        assert _entries(ledger, ("webhook.delivered", "webhook.failed")) == []
        assert webhooks.resume(config) == 1    # the next start
        got = _wait("the delivery recorded", lambda: _entries(
            ledger, ("webhook.delivered", "webhook.failed")), 30, 0.1)
    finally:
        webhooks.shutdown(5.0)
        rx.close()
    [(r, kind, body)] = got
    posts = rx.posts("/hook")
    assert (r, kind) == (rid, "webhook.delivered")
    assert body["delivery_id"] == did and body["attempts"] == len(posts) == 3
    assert body["url"] == f"http://127.0.0.1:{rx.port}/hook"      # no user info, no query
    assert b"user:pw" not in ledger.read_bytes() and b"k=v" not in ledger.read_bytes()
    assert "changed_by" not in body and body["status"] == "pending"
    assert [p["answer"] for p in posts] == [500, 500, 200]
    assert len({p["body"] for p in posts}) == 1
    assert len({p["headers"]["X-Erasure-Signature"] for p in posts}) == 1
    assert json.loads(posts[0]["body"])["delivery_id"] == did
    assert lake.cli("ledger", "verify")[0] == 0
