"""The service's API (erasure/service/api.py) on the sample lake, served by a real uvicorn on
127.0.0.1 and called over HTTP: the openlineage-python client's HttpTransport posts lineage,
portals submit requests, approvers approve, auditors download the signed PDF that `erasure
verify-report` accepts. No response ever names the subject."""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import postgres_ledger

from erasure.cli import run_cli
from erasure.subject import has_token

ROLES = {"portal": ["submitter"], "auditor": ["auditor"], "airflow": ["lineage"],
         "ops": ["operator"], "approver-a": ["approver"], "approver-b": ["approver"]}
MAX_BODY = 65536


class Service:
    """The app (create_app) served by uvicorn in a thread on a free loopback port; every
    response read through `call` is kept, to check that none names the subject."""

    def __init__(self, config: Path, tokens: dict[str, str]):
        import uvicorn

        from erasure.service.app import create_app

        self.tokens = tokens
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.bodies: list[bytes] = []
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def call(self, method: str, path: str, token: str | None = None,
             headers: dict[str, str] | None = None, **kw) -> httpx.Response:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        r = self.http.request(method, path, headers=h, **kw)
        self.bodies.append(r.content)
        return r

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()


def _configure(lake, extra: str = "") -> dict[str, str]:
    """[service] tokens (random, configured by SHA-256) for every role; returns them."""
    tokens = {name: secrets.token_urlsafe(24) for name in ROLES}
    text = f"\n[service]\nmax_body = {MAX_BODY}\n"
    for name, roles in ROLES.items():
        digest = hashlib.sha256(tokens[name].encode()).hexdigest()
        text += f'\n[[service.tokens]]\nname = "{name}"\nsha256 = "{digest}"\nroles = {roles!r}\n'
    lake.config.write_text(lake.config.read_text() + text + extra)
    assert run_cli(["--config", str(lake.config), "keys", "init"]) == 0
    return tokens


@pytest.fixture(params=["sqlite", "postgresql"])
def lake(request, lake):
    """Every flow twice: with the SQLite ledger, and with the ledger on the machine's
    PostgreSQL (`[ledger] url`, issue 15 part 6)."""
    if request.param == "sqlite":
        yield lake
        return
    with postgres_ledger(lake):
        yield lake


@pytest.fixture
def service(lake):
    made: list[Service] = []

    def start(extra: str = "") -> Service:
        made.append(Service(lake.config, _configure(lake, extra)))
        return made[-1]
    yield start
    for s in made:
        s.close()


def _subject(lake) -> str:
    """A user id with reviews, rare enough as a token that finding it in a response means
    the response names the subject (not a count, a version or an HTTP status)."""
    from collections import Counter

    from conftest import read_table

    ids = Counter(r["user_id"] for r in read_table(lake.tables["raw/reviews"]).to_pylist())
    return str(max((n, i) for i, n in ids.items() if 100 < i < 200)[1])


def _ledger(lake):
    from erasure.config import load_config
    from erasure.engine import Engine

    return Engine(load_config(lake.config))


def _entries(lake) -> int:
    from erasure.ledger import count_entries

    eng = _ledger(lake)
    try:
        return count_entries(eng.config.ledger_path, eng.config.ledger_url)
    finally:
        eng.close()


def _stored_events(lake) -> int:
    from erasure.config import load_config
    from erasure.lineage.store import LineageStore

    store = LineageStore(load_config(lake.config).lineage_store)
    try:
        return store.counts()["events"]
    finally:
        store.close()


def _new_table(lake, subject: str) -> str:
    """A real Delta table downstream of raw/reviews that copies its user_id as `uid`: what a
    pipeline the engine was never told about by file writes, and then reports to the
    service through OpenLineage."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from conftest import read_table

    raw = read_table(lake.tables["raw/reviews"])
    uids = [u for u in raw.column("user_id").to_pylist()]
    path = str(lake.root / "tables" / "derived" / "reviewer_copy")
    write_deltalake(path, pa.table({"uid": pa.array(uids, pa.int64()),
                                    "rating": raw.column("rating")}))
    assert str(int(subject)) in {str(u) for u in uids}
    return path


def _lineage_event(lake, out_path: str):
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import column_lineage_dataset as cl
    from openlineage.client.facet_v2 import schema_dataset
    from openlineage.client.uuid import generate_new_uuid

    raw = lake.tables["raw/reviews"]
    identity = cl.Transformation(type="DIRECT", subtype="IDENTITY")
    return RunEvent(
        eventType=RunState.COMPLETE, eventTime="2026-12-01T08:00:00.000Z",
        run=Run(runId=str(generate_new_uuid())),
        job=Job(namespace="airflow", name="copy_reviewers"),
        producer="https://github.com/erasure-engine/tests",
        inputs=[InputDataset(namespace="file", name=raw)],
        outputs=[OutputDataset(namespace="file", name=out_path, facets={
            "schema": schema_dataset.SchemaDatasetFacet(fields=[
                schema_dataset.SchemaDatasetFacetFields(name="uid", type="int64"),
                schema_dataset.SchemaDatasetFacetFields(name="rating", type="int32")]),
            "columnLineage": cl.ColumnLineageDatasetFacet(fields={
                "uid": cl.Fields(inputFields=[cl.InputField(namespace="file", name=raw,
                                                            field="user_id",
                                                            transformations=[identity])]),
                "rating": cl.Fields(inputFields=[cl.InputField(
                    namespace="file", name=raw, field="rating", transformations=[identity])])})})])


def _problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["title"]
    return body


def test_lineage_submit_run_report_over_http(lake, service, capsys):
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.http import (ApiKeyTokenProvider, HttpCompression,
                                                    HttpConfig, HttpTransport)

    svc = service()
    subject = _subject(lake)
    cfg = str(lake.config)

    # ---- OpenLineage: the real client, bearer api key, gzip ----
    assert run_cli(["--config", cfg, "lineage", "ingest", str(lake.events)]) == 0
    before = _stored_events(lake)
    out_path = _new_table(lake, subject)
    client = OpenLineageClient(transport=HttpTransport(HttpConfig(
        url=svc.url, auth=ApiKeyTokenProvider({"apiKey": svc.tokens["airflow"]}),
        compression=HttpCompression.GZIP)))
    event = _lineage_event(lake, out_path)
    client.emit(event)
    assert _stored_events(lake) == before + 1
    client.emit(event)                       # idempotent: the same event is stored once
    assert _stored_events(lake) == before + 1
    # the client with a token without the lineage role is refused
    with pytest.raises(Exception, match="403"):
        OpenLineageClient(transport=HttpTransport(HttpConfig(
            url=svc.url, auth=ApiKeyTokenProvider({"apiKey": svc.tokens["portal"]}),
            retry={"total": 0}))).emit(event)
    # bad events: 400 with the reason, nothing stored
    from openlineage.client.serde import Serde

    good = json.loads(Serde.to_json(event))
    bad = {k: v for k, v in good.items() if k != "eventTime"}
    p = _problem(svc.call("POST", "/api/v1/lineage", "airflow", json=bad), 400)
    assert "eventTime" in p["detail"]
    _problem(svc.call("POST", "/api/v1/lineage", "airflow", content=b"{not json",
                      headers={"Content-Type": "application/json"}), 400)
    _problem(svc.call("POST", "/api/v1/lineage", "airflow", json=[good]), 400)
    _problem(svc.call("POST", "/api/v1/lineage", "airflow", content=b"\x1f\x8b not gzip",
                      headers={"Content-Encoding": "gzip"}), 400)
    _problem(svc.call("POST", "/api/v1/lineage", "airflow", json=good,
                      headers={"Content-Type": "text/plain"}), 415)
    # bodies over the limit: chunked (no Content-Length), and a small gzip of a large body
    _problem(svc.call("POST", "/api/v1/lineage", "airflow",
                      content=iter([b" " * 8192] * (MAX_BODY // 8192 + 2))), 413)
    _problem(svc.call("POST", "/api/v1/lineage", "airflow",
                      content=gzip.compress(b" " * (MAX_BODY * 4)),
                      headers={"Content-Encoding": "gzip"}), 413)
    _problem(svc.call("POST", "/api/v1/lineage", "airflow", content=b" " * (MAX_BODY + 1)), 413)
    assert _stored_events(lake) == before + 1

    # the next plan sees the dataset the event named, reached by its renamed key column
    capsys.readouterr()
    code, plan = lake.cli_json(capsys, "plan", "--subject-id", subject)
    assert code == 0, lake.last_err
    assert {(t["name"], t["column"]) for t in plan["targets"]} >= {(out_path, "uid")}

    # ---- authentication and roles ----
    body = {"subject_id": subject, "reason": "customer asked by e-mail",
            "requested_by": "privacy portal"}
    r = svc.call("POST", "/v1/requests", json=body)
    _problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    _problem(svc.call("POST", "/v1/requests", "not-a-token", json=body), 401)
    _problem(svc.call("POST", "/v1/requests", "auditor", json=body), 403)
    _problem(svc.call("GET", "/v1/requests", "portal"), 403)
    _problem(svc.call("GET", "/v1/requests", "airflow"), 403)
    assert _entries(lake) == 0

    # ---- hostile subject ids: 400/422, nothing recorded, never echoed ----
    for hostile in (subject + "\n", "4\n2", "x" * 10_000, "\u202e" + subject, " " + subject,
                    ""):
        r = svc.call("POST", "/v1/requests", "portal", json={**body, "subject_id": hostile})
        assert r.status_code in (400, 422), (r.status_code, r.text)
        assert not hostile or json.dumps(hostile)[1:-1] not in r.text
    for bad_body in ({**body, "subject_id": 42}, {**body, "extra": subject},
                     {"subject_id": subject}, {**body, "identities": [{"type": "email"}]},
                     {**body, "reason": "erase " + subject}, {**body, "reason": "a\x00b"}):
        r = svc.call("POST", "/v1/requests", "portal", json=bad_body)
        assert r.status_code in (400, 422), (bad_body.keys(), r.status_code, r.text)
    _problem(svc.call("POST", "/v1/requests", "portal",
                      content=b'{"subject_id": "\\ud800", "reason": "lone surrogate"}'), 422)
    _problem(svc.call("POST", "/v1/requests", "portal",
                      content=iter([b" " * 8192] * (MAX_BODY // 8192 + 2))), 413)
    # the token is checked before the body is read
    _problem(svc.call("POST", "/v1/requests",
                      content=iter([b" " * 8192] * (MAX_BODY // 8192 + 2))), 401)
    assert _entries(lake) == 0

    # ---- submit, with an Idempotency-Key ----
    key = {"Idempotency-Key": "portal-ticket-7781"}
    r = svc.call("POST", "/v1/requests", "portal", json=body, headers=key)
    assert r.status_code == 201, r.text
    first = r.json()
    rid = first["request_id"]
    assert first["status"] == "pending" and first["deadline"] and set(first) == {
        "request_id", "status", "deadline"}
    assert r.headers["location"] == f"/v1/requests/{rid}"
    n = _entries(lake)
    r = svc.call("POST", "/v1/requests", "portal", json=body, headers=key)
    assert (r.status_code, r.json()) == (201, first)
    assert r.headers["idempotent-replayed"] == "true"
    # the same key with another body: 422, nothing recorded
    _problem(svc.call("POST", "/v1/requests", "portal", headers=key,
                      json={**body, "reason": "another reason"}), 422)
    assert _entries(lake) == n
    # without a key, the subject's open request for the same reason is returned (200)
    r = svc.call("POST", "/v1/requests", "portal", json=body)
    assert (r.status_code, r.json()["request_id"]) == (200, rid)
    assert _entries(lake) == n
    # the raw key is not stored, only its hash
    eng = _ledger(lake)
    try:
        rows = eng.ledger.db.execute("SELECT * FROM idempotency_keys").fetchall()
        assert len(rows) == 1 and rows[0][1] == rid
        assert "portal-ticket-7781" not in repr(rows)
    finally:
        eng.close()

    # ---- reading it back ----
    st = svc.call("GET", f"/v1/requests/{rid}", "auditor").json()
    assert st["status"] == "pending" and st["governance"]["submitted_by"] == "portal"
    assert st["overdue"] is False and "hmac" in st["subject"]
    _problem(svc.call("GET", f"/v1/requests/{rid}/plan", "auditor"), 404)
    _problem(svc.call("GET", f"/v1/requests/{rid}/report.pdf", "auditor"), 409)
    _problem(svc.call("GET", "/v1/requests/req-00000000000000000000", "auditor"), 404)
    _problem(svc.call("GET", "/v1/requests/%0A42", "auditor"), 422)
    _problem(svc.call("GET", "/v1/requests?status=bogus", "auditor"), 422)
    # approvals are not configured here: 409
    _problem(svc.call("POST", f"/v1/requests/{rid}/approve", "approver-a"), 409)
    # the operator extends the deadline (once)
    r = svc.call("POST", f"/v1/requests/{rid}/extend", "ops",
                 json={"reason": "complex request", "months": 1})
    assert r.status_code == 200 and r.json()["deadline"] > first["deadline"], r.text
    _problem(svc.call("POST", f"/v1/requests/{rid}/extend", "ops",
                      json={"reason": "again", "months": 1}), 400)
    _problem(svc.call("POST", f"/v1/requests/{rid}/extend", "auditor",
                      json={"reason": "again"}), 403)

    # ---- the run (as `erasure run --pending` does it), then the report ----
    assert run_cli(["--config", cfg, "run", "--pending"]) == 0
    st = svc.call("GET", f"/v1/requests/{rid}", "ops").json()
    assert st["status"] == "completed"
    assert any(t["name"] == out_path and t["steps"]["verify"] == "completed"
               for t in st["targets"])
    plan = svc.call("GET", f"/v1/requests/{rid}/plan", "auditor").json()
    assert out_path in {t["name"] for t in plan["targets"]}
    listed = svc.call("GET", "/v1/requests?status=completed", "approver-a").json()
    assert [x["request_id"] for x in listed["requests"]] == [rid] and listed["total"] == 1
    assert svc.call("GET", "/v1/requests?overdue=true", "auditor").json()["total"] == 0
    assert svc.call("GET", "/v1/requests?status=pending", "auditor").json()["total"] == 0

    r = svc.call("GET", f"/v1/requests/{rid}/report.pdf", "auditor")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    pdf = lake.root / "from-the-service.pdf"
    pdf.write_bytes(r.content)
    capsys.readouterr()
    assert run_cli(["--config", cfg, "verify-report", str(pdf)]) == 0, capsys.readouterr()
    _problem(svc.call("GET", f"/v1/requests/{rid}/report.pdf", "portal"), 403)

    # ---- who acted: the token's name, in the ledger ----
    eng = _ledger(lake)
    try:
        entries = eng.ledger.entries(rid)
        actors = {e.kind: e.body.get("actor") for e in entries}
        assert actors["request.submitted"] == "portal"
        assert actors["request.extended"] == "ops"
        checkpoints = [e for e in eng.ledger.entries() if "checkpoint" in e.kind]
        assert checkpoints and checkpoints[-1].body.get("actor") == "auditor"
    finally:
        eng.close()

    # ---- the OpenAPI document ----
    doc = svc.call("GET", "/openapi.json").json()
    for path in ("/api/v1/lineage", "/v1/requests", "/v1/requests/{request_id}",
                 "/v1/requests/{request_id}/plan", "/v1/requests/{request_id}/approve",
                 "/v1/requests/{request_id}/reject", "/v1/requests/{request_id}/extend",
                 "/v1/requests/{request_id}/report.pdf"):
        assert path in doc["paths"], path
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"].lower() == "bearer"
    assert doc["paths"]["/v1/requests"]["post"]["security"] == [{"bearer": []}]
    assert "subject_id" in json.dumps(doc["paths"]["/v1/requests"]["post"]["requestBody"])

    # ---- no response ever named the subject ----
    assert svc.bodies
    for b in svc.bodies:
        if b.startswith(b"%PDF"):
            # a PDF's bytes hold object numbers, lengths and offsets (a 3-digit id may be
            # one of them): what it says is its text and its embedded evidence
            import subprocess

            text = subprocess.run(["pdftotext", "-", "-"], input=b, capture_output=True,
                                  check=True).stdout.decode("utf-8", "replace")
            assert "erasure" in text.lower() and len(text) > 500     # the report's words
        else:
            text = b.decode("utf-8", "replace")
        assert not has_token(text, subject), text[:500]
        assert "x" * 600 not in text


def test_approve_and_reject_through_the_api(lake, service):
    svc = service("\n[approvals]\nrequired = 2\n")
    subject = _subject(lake)
    cfg = str(lake.config)
    other = str(int(subject) - 1)

    r = svc.call("POST", "/v1/requests", "portal", json={"subject_id": subject,
                                                          "reason": "art. 17"})
    assert r.status_code == 201 and r.json()["status"] == "awaiting_approval", r.text
    rid = r.json()["request_id"]
    r = svc.call("POST", "/v1/requests", "portal", json={"subject_id": other,
                                                          "reason": "art. 17"})
    rid2 = r.json()["request_id"]

    # the run waits: nobody approved yet
    assert run_cli(["--config", cfg, "run", "--pending"]) == 0
    assert svc.call("GET", f"/v1/requests/{rid}", "auditor").json()["status"] == \
        "awaiting_approval"
    _problem(svc.call("POST", f"/v1/requests/{rid}/approve", "portal"), 403)
    _problem(svc.call("POST", f"/v1/requests/{rid}/approve"), 401)
    a = svc.call("POST", f"/v1/requests/{rid}/approve", "approver-a")
    assert a.status_code == 200, a.text
    assert a.json()["approvals"] == 1 and a.json()["status"] == "awaiting_approval"
    again = svc.call("POST", f"/v1/requests/{rid}/approve", "approver-a").json()
    assert again["already_approved"] and again["approvals"] == 1
    b = svc.call("POST", f"/v1/requests/{rid}/approve", "approver-b").json()
    assert b["approvals"] == 2 and b["approvers"] == ["approver-a", "approver-b"]
    assert b["status"] != "awaiting_approval"

    # the other request is rejected; a reason naming the subject is refused
    _problem(svc.call("POST", f"/v1/requests/{rid2}/reject", "approver-b",
                      json={"reason": f"user {other} is a test account"}), 400)
    _problem(svc.call("POST", f"/v1/requests/{rid2}/reject", "approver-b", json={}), 422)
    r = svc.call("POST", f"/v1/requests/{rid2}/reject", "approver-b",
                 json={"reason": "a test account, not a person"})
    assert r.json() == {"request_id": rid2, "status": "rejected"}, r.text

    assert run_cli(["--config", cfg, "run", "--pending"]) == 0
    listed = {x["request_id"]: x for x in
              svc.call("GET", "/v1/requests", "approver-a").json()["requests"]}
    assert listed[rid]["status"] == "completed"
    assert listed[rid]["governance"]["approved_by"] == ["approver-a", "approver-b"]
    assert listed[rid2]["status"] == "rejected"
    assert listed[rid2]["governance"]["rejected"]["actor"] == "approver-b"
    # a rejected request is closed: no more approvals, and its report can be made
    _problem(svc.call("POST", f"/v1/requests/{rid2}/approve", "approver-a"), 400)
    assert svc.call("GET", f"/v1/requests/{rid2}/report.pdf", "ops").status_code == 200

    eng = _ledger(lake)
    try:
        approved = [e.body["actor"] for e in eng.ledger.entries(rid)
                    if e.kind == "request.approved"]
        assert approved == ["approver-a", "approver-b"]
    finally:
        eng.close()
    for body in svc.bodies:
        text = body.decode("utf-8", "replace")
        assert not has_token(text, subject) and not has_token(text, other), text[:500]
