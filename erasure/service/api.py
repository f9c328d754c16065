"""/v1/requests and the OpenLineage receiver /api/v1/lineage (docs/service.md).

Every endpoint takes its caller from the bearer token (`auth.require`, with the roles it
names), builds an Engine acting as the token's name (`engine_for`, closed when done) and is a
plain `def`: FastAPI runs it in its thread pool, so the engine's SQLite connections are made
and used on one thread. Bodies are read here, never beyond `[service] max_body` (413), also
when sent chunked or gzip-compressed. The actions are the CLI's own (intake, requests,
approvals, report): the same rules, the same ledger entries, the caller as their actor.

A request's subject id and identity values are never in a response, a log line or an error:
errors met while submitting are redacted of them, and an unexpected exception is answered
with its type name only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import tempfile
import threading
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .app import engine_for
from .auth import Caller, require
from .problems import PROBLEM_JSON, Problem, from_erasure_error

log = logging.getLogger("erasure.service")
router = APIRouter()

# ---- authentication (the OpenAPI document names the scheme) ----------------------------
bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="A token configured in [[service.tokens]] (by its SHA-256); its roles decide "
                "what it may do, its name is the actor recorded in the ledger.")


def _role(*roles: str, cookie: bool = False) -> Callable[..., Caller]:
    """A dependency: the caller, holding one of `roles` (401/403 problems otherwise). GETs
    also take the dashboard's login cookie (`cookie`); POSTs only a bearer token, so a page
    elsewhere cannot make a browser act with the cookie."""
    def caller(request: Request,
               _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
               ) -> Caller:
        return require(request.app.state.config, request.headers,
                       request.cookies if cookie else None, *roles)
    return caller


# ---- bodies: read here, with the limit --------------------------------------------------
async def _body(request: Request) -> bytes:
    """The request's body, refused (413) once it passes `[service] max_body`, however it is
    sent (Content-Length is checked before, by the app; a chunked body is counted here), and
    after gzip decompression (Content-Encoding: gzip, as the OpenLineage HTTP transport's
    `compression: gzip` sends it)."""
    limit = request.app.state.config.service.max_body
    too_large = Problem(413, "Content Too Large", f"the body limit is {limit} bytes")
    parts, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise too_large
        parts.append(chunk)
    raw = b"".join(parts)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise Problem(415, "Unsupported Media Type",
                      "Content-Encoding must be gzip or none")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error:
        raise Problem(400, "Bad Request", "the body is not valid gzip") from None
    if len(out) > limit:
        raise too_large
    if not d.eof or d.unused_data:
        raise Problem(400, "Bad Request", "the body is not one complete gzip stream")
    return out


def _json_content(request: Request) -> None:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json" and not (ctype.startswith("application/")
                                            and ctype.endswith("+json")):
        raise Problem(415, "Unsupported Media Type", "the body must be application/json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _parse(model: type[_Strict], raw: bytes, request: Request) -> Any:
    """`raw` validated as `model` (422 naming the fields and what is wrong, never a value,
    nor the name of a field the model does not have: it could be anything)."""
    _json_content(request)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        where = []
        for e in exc.errors(include_url=False, include_input=False)[:10]:
            if e["type"] == "extra_forbidden":
                where.append(f"{'.'.join(str(x) for x in e['loc'][:-1]) or 'body'}: "
                             "a field this body does not have")
            else:
                where.append(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}")
        raise Problem(422, "Unprocessable Content", "; ".join(where)) from None


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models written in place (for a request body
    the OpenAPI document shows, the body being read by `_body`, not by FastAPI)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(x: Any) -> Any:
        if isinstance(x, dict):
            if "$ref" in x:
                return inline(defs[x["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in x.items()}
        if isinstance(x, list):
            return [inline(v) for v in x]
        return x
    return inline(schema)


def _body_doc(schema: type[BaseModel] | dict[str, Any], gzip: bool = False) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema if isinstance(schema, dict) else _schema(schema)}},
        "description": "JSON" + (", or gzip-compressed JSON (Content-Encoding: gzip)"
                                 if gzip else "")}}


# ---- models -------------------------------------------------------------------------------
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class IdentityIn(_Strict):
    type: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    value: str


class SubmitIn(_Strict):
    """A new request: the subject by `subject_id` (untyped) and/or typed `identities`."""
    subject_id: str | None = None
    identities: Annotated[list[IdentityIn], Field(min_length=1, max_length=50)] | None = None
    reason: Reason
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class RejectIn(_Strict):
    reason: Reason


class ExtendIn(_Strict):
    reason: Reason
    months: Literal[1, 2] = 2


class Submitted(BaseModel):
    request_id: str
    status: str
    deadline: str


class ProblemOut(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "Bad input; nothing was recorded", 401: "No token, or an unknown one",
            403: "The token lacks the role", 404: "No such request",
            409: "Not possible in the request's state, or not configured",
            413: "The body is over the limit", 415: "Not JSON, or an unsupported encoding",
            422: "The body or a parameter does not validate",
            503: "Another `erasure run` holds the ledger; retry"}
    return {c: {"description": what[c], "content": {PROBLEM_JSON: {
        "schema": ProblemOut.model_json_schema()}}} for c in codes}


RequestId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                     description="A request id (req-...)")]
Status = Literal["pending", "running", "awaiting_approval", "on_hold", "deferred", "completed",
                 "not_found", "incomplete", "failed", "rejected"]
AUTH = (401, 403)


# ---- one engine per HTTP request, errors as problems ---------------------------------------
@contextmanager
def _engine(request: Request, caller: Caller) -> Iterator[Any]:
    eng = engine_for(request, caller.name)
    try:
        yield eng
    finally:
        eng.close()


_CLI_WORDS = (("--requested-by", "requested_by"), ("--reason", "reason"),
              ("--subject-id", "subject_id"), ("--identity", "identities"),
              ("--months", "months"))


@contextmanager
def _errors(values: list[str] | tuple[str, ...] = ()) -> Iterator[None]:
    """The engine's errors as problems, their text in the API's words (the CLI's option
    names as body fields) and redacted of `values` (the subject's, while submitting); any
    other exception as a 500 naming its type only (its text could quote a value)."""
    from ..errors import ErasureError
    from ..subject import redact

    try:
        yield
    except Problem:
        raise
    except ErasureError as exc:
        p = from_erasure_error(exc)
        detail = redact(p.detail, values) if values else p.detail
        for cli, api in _CLI_WORDS:
            detail = detail.replace(cli, api)
        p.detail = detail
        raise p from None
    except Exception as exc:
        log.error("unexpected %s in %s", type(exc).__name__,
                  redact(str(exc), values) if values else str(exc))
        raise Problem(500, "Internal Server Error", type(exc).__name__) from None


def _status_changed(config: Any, caller: Caller, request_id: str, status: str) -> None:
    """Tell erasure/service/webhooks.py about a status change, if it is there and has
    `status_changed(config, request_id, status, actor=...)` (it queues the signed POSTs and
    records them); a failure there never undoes what was recorded."""
    import importlib
    import importlib.util
    import inspect

    name = __package__ + ".webhooks"
    try:
        if importlib.util.find_spec(name) is None:
            return
        notify = getattr(importlib.import_module(name), "status_changed", None)
        if notify is None:
            return
        if "actor" in inspect.signature(notify).parameters:
            notify(config, request_id, status, actor=caller.name)
        else:
            notify(config, request_id, status)
    except Exception as exc:
        log.error("webhooks for %s (%s): %s", request_id, status, type(exc).__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _status_json(st: Any, required: int, holds: Any, now: datetime) -> dict[str, Any]:
    """A request as `erasure status --json` shows it (effective status, governance), and
    whether its deadline has passed while it is open (`overdue`)."""
    js = st.to_json()
    js["status"] = st.effective_status(required, holds)
    js["governance"] = st.governance_json(holds)
    js["approvals_required"] = required
    js["overdue"] = not st.closed and now > datetime.fromisoformat(st.deadline)
    return js


# one writer at a time in this process: SQLite would serialize the commits anyway, but its
# busy handler sleeps between tries; with many clients posting at once, waiting on a lock
# here is several times faster
_LINEAGE_WRITES = threading.Lock()


# ---- OpenLineage ------------------------------------------------------------------------------
@router.post("/api/v1/lineage", tags=["lineage"], status_code=201,
             summary="Receive one OpenLineage event (the HTTP transport's endpoint)",
             openapi_extra=_body_doc({"type": "object", "description": "An OpenLineage "
                                      "RunEvent, JobEvent or DatasetEvent"}, gzip=True),
             responses={200: {"description": "Stored before (idempotent)"},
                        **_problems(400, *AUTH, 413, 415)})
def post_lineage(request: Request, caller: Annotated[Caller, Depends(_role("lineage"))],
                 raw: Annotated[bytes, Depends(_body)]) -> JSONResponse:
    """One OpenLineage event (run, job or dataset event), as the openlineage-python client's
    HttpTransport posts it (bearer api key; gzip if `compression: gzip`). It is validated as
    `erasure lineage ingest` validates each event (strict) and stored under its content
    hash: posting it again stores nothing new. The next plan's graph includes it. A bad
    event is 400 with the reason, and nothing is stored."""
    _json_content(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "Bad Request", "the body is not UTF-8") from None
    if text.lstrip().startswith("["):
        raise Problem(400, "Bad Request", "one OpenLineage event per request (a JSON object), "
                      "as the OpenLineage HTTP transport posts them; nothing was stored")
    with _errors(), _engine(request, caller) as eng, _LINEAGE_WRITES:
        key, new = eng.lineage_store.ingest_text(text)
    return JSONResponse({"event": key, "stored": new}, status_code=201 if new else 200)


# ---- requests ---------------------------------------------------------------------------------
def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or any(not 0x21 <= ord(c) <= 0x7E for c in value):
        raise Problem(400, "Bad Request", "Idempotency-Key must be 1 to 255 visible ASCII "
                      "characters")
    return value


@router.post("/v1/requests", tags=["requests"], status_code=201, response_model=None,
             summary="Submit an Article 17 request",
             openapi_extra=_body_doc(SubmitIn),
             responses={201: {"model": Submitted, "description": "Recorded"},
                        200: {"model": Submitted, "description": "The subject already has "
                              "an open request for this reason (its id), or a retry with the "
                              "same Idempotency-Key and body"},
                        **_problems(400, *AUTH, 413, 415, 422, 503)})
def submit_request(
        request: Request, caller: Annotated[Caller, Depends(_role("submitter"))],
        raw: Annotated[bytes, Depends(_body)],
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", description="Makes retries safe: the same key with the "
            "same body returns the first response and records nothing more; with another "
            "body it is 422. Keys are per token.")] = None) -> JSONResponse:
    """Record a request, as `erasure request submit` does: the same checks (identity types
    and patterns, the subject id rules, every root's key type, `reason` and `requested_by`
    must not name the subject), and nothing recorded when one fails (400). Idempotent: a
    subject with an open request for the same reason gets that request's id (200)."""
    from ..canonical import NotCanonicalJSON, canonical_bytes
    from ..intake import check_subjects_fit_roots, subject_of
    from ..requests import TextGuard, load_state, submit_one
    from ..subject import refused_character

    key = _idempotency_key(idempotency_key)
    body: SubmitIn = _parse(SubmitIn, raw, request)
    pairs = [(i.type, i.value) for i in body.identities or []]
    values = [v for v in [body.subject_id, *(v for _, v in pairs)] if v]
    for label, given in (("reason", body.reason), ("requested_by", body.requested_by)):
        bad = refused_character(given) if given else None
        if bad:
            raise Problem(400, "Bad Request", f"{label} holds {bad[1]} at character {bad[0]}; "
                          "nothing was recorded")
    with _errors(values), _engine(request, caller) as eng:
        subject = subject_of(eng, body.subject_id, pairs)
        text = subject.text()
        check_subjects_fit_roots(eng, [("identities" if pairs else "subject_id", text)],
                                 TextGuard(body.requested_by, body.reason))
        required = eng.config.approvals_required

        def record() -> tuple[int, dict[str, Any]]:
            rid, existing = submit_one(eng.ledger, eng.keys, text, body.requested_by,
                                       body.reason)
            st = load_state(eng.ledger, rid)
            return (200 if existing else 201), {
                "request_id": rid, "status": st.effective_status(required, eng.holds()),
                "deadline": st.deadline}

        replayed = False
        if key is None:
            status, out = record()
        else:
            try:
                fingerprint = canonical_bytes(json.loads(raw))
            except (ValueError, NotCanonicalJSON):
                raise Problem(400, "Bad Request", "the body has no canonical JSON form") \
                    from None
            # keyed, like every other hash of a subject in the ledger: a plain SHA-256 of a
            # body naming user 42 could be reversed by trying ids
            mac = hmac.new(eng.keys._derive(b"erasure/service-idempotency/v1"), fingerprint,
                           hashlib.sha256).hexdigest()
            key_sha = hashlib.sha256(f"{caller.name}\x1f{key}".encode("utf-8")).hexdigest()
            replayed, stored_mac, status, out = eng.ledger.idempotent(key_sha, mac, record)
            if not hmac.compare_digest(stored_mac, mac):
                raise Problem(422, "Unprocessable Content", "this Idempotency-Key was used "
                              "with a different body; nothing was recorded (use a new key "
                              "for a new request)")
        if status == 201 and not replayed:
            _status_changed(eng.config, caller, out["request_id"], out["status"])
    headers = {"Location": f"/v1/requests/{out['request_id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(out, status_code=status, headers=headers)


@router.get("/v1/requests", tags=["requests"], summary="List requests",
            responses=_problems(*AUTH, 422))
def list_requests(
        request: Request,
        caller: Annotated[Caller, Depends(_role("auditor", "operator", "approver",
                                                cookie=True))],
        status: Annotated[Status | None, Query(description="Only requests with this "
                                               "(effective) status")] = None,
        overdue: Annotated[bool | None, Query(description="true: only open requests past "
                                              "their deadline; false: only the others")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
        offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """Every request, oldest first, as `erasure status --json` lists them, each with
    `overdue`; `total` counts those matching the filters."""
    from ..requests import load_states

    with _errors(), _engine(request, caller) as eng:
        holds, required, now = eng.holds(), eng.config.approvals_required, _now()
        matching = []
        for st in load_states(eng.ledger, eng.ledger.request_ids()).values():
            js = _status_json(st, required, holds, now)
            if (status is None or js["status"] == status) and \
                    (overdue is None or js["overdue"] == overdue):
                matching.append(js)
    return {"requests": matching[offset:offset + limit], "total": len(matching),
            "offset": offset, "limit": limit}


def _state(eng: Any, request_id: str) -> Any:
    from ..requests import load_state

    return load_state(eng.ledger, request_id)


@router.get("/v1/requests/{request_id}", tags=["requests"], summary="One request",
            responses=_problems(*AUTH, 404, 422))
def get_request(request: Request, request_id: RequestId,
                caller: Annotated[Caller, Depends(_role("auditor", "operator", "approver",
                                                        cookie=True))]) -> dict[str, Any]:
    """The request as `erasure status REQUEST --json` shows it: status, deadline, targets
    and their steps, governance (who submitted, approved, ran; holds; exemptions). The
    subject only as its HMAC."""
    with _errors(), _engine(request, caller) as eng:
        return _status_json(_state(eng, request_id), eng.config.approvals_required,
                            eng.holds(), _now())


@router.get("/v1/requests/{request_id}/plan", tags=["requests"],
            summary="The request's recorded plan", responses=_problems(*AUTH, 404, 422))
def get_plan(request: Request, request_id: RequestId,
             caller: Annotated[Caller, Depends(_role("auditor", "operator", "approver",
                                                     cookie=True))]) -> dict[str, Any]:
    """The plan the request's latest run recorded (`erasure plan --json`'s form); 404 while
    no run has planned it."""
    with _errors(), _engine(request, caller) as eng:
        st = _state(eng, request_id)
        if st.plan is None:
            raise Problem(404, "Not Found", f"request {request_id} has no recorded plan yet: "
                          "it is planned when it runs")
        return st.plan.to_json()


def _approvals_configured(request: Request) -> None:
    if not request.app.state.config.approvals_required:
        raise Problem(409, "Conflict", "approvals are not configured ([approvals] required = "
                      "0): requests run without them; nothing was recorded")


@router.post("/v1/requests/{request_id}/approve", tags=["requests"],
             summary="Approve the request's plan (four eyes)",
             responses=_problems(400, *AUTH, 404, 409, 422, 503))
def approve_request(request: Request, request_id: RequestId,
                    caller: Annotated[Caller, Depends(_role("approver"))]) -> dict[str, Any]:
    """As `erasure request approve`: plans the request as `run` would (nothing erased) and
    records the token's approval of that plan. The submitter's token cannot approve; the
    same token approving the same plan again records nothing more."""
    from ..approvals import approve

    _approvals_configured(request)
    with _errors(), _engine(request, caller) as eng:
        out = approve(eng, request_id)
        if not out["already_approved"]:
            _status_changed(eng.config, caller, request_id, out["status"])
    return out


@router.post("/v1/requests/{request_id}/reject", tags=["requests"],
             summary="Reject the request (it is never erased)", openapi_extra=_body_doc(RejectIn),
             responses=_problems(400, *AUTH, 404, 409, 413, 415, 422, 503))
def reject_request(request: Request, request_id: RequestId,
                   caller: Annotated[Caller, Depends(_role("approver"))],
                   raw: Annotated[bytes, Depends(_body)]) -> dict[str, Any]:
    """As `erasure request reject`: closes the request unerased, with the reason (which must
    not name the subject). Not once it has started erasing."""
    from ..approvals import reject

    _approvals_configured(request)
    body: RejectIn = _parse(RejectIn, raw, request)
    with _errors(), _engine(request, caller) as eng:
        out = reject(eng, request_id, body.reason)
        _status_changed(eng.config, caller, request_id, "rejected")
    return out


@router.post("/v1/requests/{request_id}/extend", tags=["requests"],
             summary="Extend the deadline (Art. 12(3))", openapi_extra=_body_doc(ExtendIn),
             responses=_problems(400, *AUTH, 404, 413, 415, 422, 503))
def extend_request(request: Request, request_id: RequestId,
                   caller: Annotated[Caller, Depends(_role("operator"))],
                   raw: Annotated[bytes, Depends(_body)]) -> dict[str, Any]:
    """As `erasure request extend`: moves the deadline by `months` (1 or 2), once, before it
    passes, with the reason."""
    from ..approvals import extend

    body: ExtendIn = _parse(ExtendIn, raw, request)
    with _errors(), _engine(request, caller) as eng:
        out = extend(eng, request_id, body.reason, body.months)
    return {"request_id": request_id, **out}


@router.get("/v1/requests/{request_id}/report.pdf", tags=["requests"],
            summary="The signed proof-of-erasure PDF", response_class=Response,
            responses={200: {"content": {"application/pdf": {}},
                             "description": "The signed report"},
                       **_problems(*AUTH, 404, 409, 422, 503)})
def report_pdf(request: Request, request_id: RequestId,
               caller: Annotated[Caller, Depends(_role("auditor", "operator", cookie=True))]
               ) -> Response:
    """The signed report (`erasure report`), made now, of a request that has finished
    (completed, not_found, incomplete) or was rejected; 409 before. Making it verifies the
    ledger and records a signed checkpoint; `erasure verify-report` checks the PDF."""
    from ..report import write_report

    with _errors(), _engine(request, caller) as eng:
        st = _state(eng, request_id)
        if not st.closed:
            raise Problem(409, "Conflict", f"request {request_id} is "
                          f"{st.effective_status(eng.config.approvals_required, eng.holds())}; "
                          "its report is made once it has completed, not_found or incomplete")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "report.pdf"
            write_report(eng, request_id, path)
            data = path.read_bytes()
    return Response(data, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{request_id}.pdf"',
        "Cache-Control": "no-store"})
