"""Article 17 requests: submission, and their state folded from the ledger's entries."""

from __future__ import annotations

import calendar
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from .config import PURGE_MODES
from .errors import InputError
from .identity import MARK, Subject, describe
from .ledger import Entry, Ledger
from .planning import Plan, target_key
from .subject import SubjectKeys

LEGAL_BASIS = "GDPR Art. 17(1)"


def one_month_later(t: datetime) -> datetime:
    """Art. 12(3): 'within one month of receipt'; the same day next month, clamped."""
    y, m = (t.year + (t.month == 12), t.month % 12 + 1)
    return t.replace(year=y, month=m, day=min(t.day, calendar.monthrange(y, m)[1]))


# requests recorded per ledger transaction by `submit_many`: a kill leaves whole chunks
CHUNK = 1000
# a finished request is never run again; "not_found": nothing of the subject was anywhere
FINISHED = ("completed", "not_found", "incomplete")
# closed: finished, or rejected by an approver (never erased, never swept)
CLOSED = FINISHED + ("rejected",)

# For a request.submitted entry `s`: "<kind> <status>" of the last entry that set the
# request's status, as `fold` reads them (a plan opens it again, a completion or failure
# closes it); NULL while it is pending.
_LAST_STATUS_SQL = """
       (SELECT e.kind || ' ' || coalesce(json_extract(e.body, '$.status'), '')
          FROM entries e
         WHERE e.request_id = s.request_id
           AND e.kind IN ('plan.recorded', 'request.completed', 'request.failed',
                          'request.rejected', 'request.waiting')
         ORDER BY e.seq DESC LIMIT 1)"""
# Every request.submitted entry after seq ?, for reason ?, with its last status entry.
_OPEN_SQL = f"""
SELECT s.seq, s.request_id, json_extract(s.body, '$.subject_hmac'), {_LAST_STATUS_SQL}
  FROM entries s
 WHERE s.kind = 'request.submitted' AND s.seq > ?
   AND json_extract(s.body, '$.reason') IS NOT DISTINCT FROM ?
"""
# Oldest day of receipt first; within a day, by request id (see `pending_request_ids`).
_ALL_SQL = f"""
SELECT s.request_id, {_LAST_STATUS_SQL}
  FROM entries s WHERE s.kind = 'request.submitted'
 ORDER BY substr(json_extract(s.body, '$.received_at'), 1, 10), s.request_id
"""
_CLOSED_SQL = """
SELECT request_id, kind, json_extract(body, '$.status') FROM entries
 WHERE seq > ? AND kind IN ('request.completed', 'request.failed')
"""


def _finished(last: str | None) -> bool:
    """Whether the request is closed (finished or rejected), from its last status entry
    (see `fold`)."""
    kind, _, status = (last or "").partition(" ")
    return (kind == "request.completed" and status in FINISHED) or kind == "request.rejected"


def _open_status(last: str | None) -> bool:
    """Open for submit's idempotency: neither finished nor failed (a failed request's
    subject gets a new request)."""
    return not _finished(last) and not (last or "").startswith("request.failed")


def pending_request_ids(ledger: Ledger) -> list[str]:
    """Every request not finished: one query, not a fold per request. The oldest day of
    receipt comes first; within a day, requests are in request id order, not submission
    order. Request ids are random, and the ledger's index is by (request id, seq): a batch
    of `run --pending` (5,000 requests) cut from a run of consecutive ids covers one range
    of that index, so each step's transaction for the batch rewrites a few hundred index
    pages instead of one page per request spread over the whole index. At 100,000 pending
    requests that doubles the ledger's write rate (bench/bench_pending.py); all of them
    still run in the same `run --pending`, the order only decides which batch takes each."""
    return [rid for rid, last in ledger.db.execute(_ALL_SQL) if not _finished(last)]


class TextGuard:
    """--requested-by and --reason are stored and printed in plain text: refuse them when
    they name the subject id as a whole token, in any case (str.casefold). A request id
    "req-4141..." does not name subject 41. No regex is built from the id."""

    def __init__(self, requested_by: str | None, reason: str | None):
        self.texts = [(label, text.casefold()) for label, text in
                      (("--requested-by", requested_by), ("--reason", reason)) if text]

    def check(self, subject_id: str, where: str = "") -> None:
        from .subject import has_token

        if not self.texts:
            return
        value = subject_id.casefold()
        for label, text in self.texts:
            if has_token(text, value):
                raise InputError(f"{where}{label} contains the subject id; it is stored and "
                                 "printed in plain text, so it must not name the subject. "
                                 "Nothing was recorded")


class _OpenRequests:
    """The open requests for one reason, by subject HMAC: read with one query, then kept
    up to date with what others appended since (read inside each write transaction)."""

    def __init__(self, ledger: Ledger, reason: str | None, only_hmac: str | None = None):
        self.ledger, self.reason, self.only = ledger, reason, only_hmac
        self.by_hmac: dict[str, str] = {}
        self.hmac_of: dict[str, str] = {}
        self.seen = 0

    def refresh(self) -> None:
        db = self.ledger.db
        sql, args = _OPEN_SQL, [self.seen, self.reason]
        if self.only is not None:
            sql += " AND json_extract(s.body, '$.subject_hmac') = ?"
            args.append(self.only)
        for _, rid, hm, last in db.execute(sql + " ORDER BY s.seq", args):
            if hm and _open_status(last):
                self.add(hm, rid)
        if self.seen:
            for rid, kind, status in db.execute(_CLOSED_SQL, (self.seen,)):
                hm = self.hmac_of.get(rid)
                if hm and not _open_status(f"{kind} {status or ''}") and \
                        self.by_hmac.get(hm) == rid:
                    del self.by_hmac[hm]
        self.mark()

    def mark(self) -> None:
        self.seen = db_max_seq(self.ledger)

    def add(self, hm: str, rid: str) -> None:
        if hm not in self.by_hmac:
            self.by_hmac[hm] = rid
            self.hmac_of[rid] = hm


def db_max_seq(ledger: Ledger) -> int:
    return ledger.db.execute("SELECT coalesce(max(seq), 0) FROM entries").fetchone()[0]


def submit_many(ledger: Ledger, keys: SubjectKeys, subject_ids: Iterable[str],
                requested_by: str | None, reason: str | None, chunk: int = CHUNK,
                ) -> Iterator[list[tuple[str, bool]]]:
    """Record a request per subject id, `chunk` ids per ledger transaction, yielding each
    chunk once it is committed: [(request_id, existing), ...] in input order.

    Idempotent: a subject that already has an open request (not completed, incomplete,
    not_found or failed) with the same reason gets that request's id back, existing=True,
    and nothing new is recorded; so does a subject repeated in `subject_ids`. Ids are read
    from the iterable one chunk at a time. Every id is checked (`check_subject_id`, the
    --requested-by/--reason guard); a bad id aborts its chunk (earlier chunks stay)."""
    from itertools import islice

    from .subject import check_subject_id

    guard = TextGuard(requested_by, reason)
    ids = iter(subject_ids)
    known: _OpenRequests | None = None
    while True:
        batch = list(islice(ids, chunk))
        if not batch:
            return
        for s in batch:
            subject = Subject.parse(s)     # a plain id, or typed identities (identity.py)
            for v in subject.values():
                check_subject_id(v)
                guard.check(v)
        hmacs = keys.subject_hmacs(batch)      # one round trip with keys held in Vault
        if known is None:
            # one id in all (a shorter first chunk is the last): look up only that subject
            known = _OpenRequests(ledger, reason, hmacs[0] if len(batch) == 1 < chunk else None)
        out = []
        with ledger.transaction():
            known.refresh()
            for s, hm in zip(batch, hmacs):
                rid = known.by_hmac.get(hm)
                if rid is not None:
                    out.append((rid, True))
                    continue
                rid = "req-" + uuid.uuid4().hex[:20]
                received = datetime.now(timezone.utc)
                ledger.seal_subject(rid, keys.seal(s, rid))
                body: dict[str, Any] = {
                    "subject_hmac": hm, "received_at": received.isoformat(timespec="seconds"),
                    "deadline": one_month_later(received).isoformat(timespec="seconds"),
                    "requested_by": requested_by, "reason": reason, "legal_basis": LEGAL_BASIS}
                if s.startswith(MARK):   # typed identities: each by type and HMAC
                    body["identities"] = describe(Subject.parse(s), keys.subject_hmac)
                ledger.append(rid, "request.submitted", body)
                known.add(hm, rid)
                out.append((rid, False))
            known.mark()
        yield out


def submit_one(ledger: Ledger, keys: SubjectKeys, subject_id: str, requested_by: str | None,
               reason: str | None) -> tuple[str, bool]:
    """(request id, existing): see `submit_many`."""
    return next(submit_many(ledger, keys, [subject_id], requested_by, reason))[0]


def submit(ledger: Ledger, keys: SubjectKeys, subject_id: str, requested_by: str | None,
           reason: str | None) -> str:
    """Record a request for one subject and return its id; the id of the subject's open
    request for the same reason when there is one (see `submit_many`)."""
    return submit_one(ledger, keys, subject_id, requested_by, reason)[0]


@dataclass
class RequestState:
    request_id: str
    subject_hmac: str
    received_at: str
    deadline: str
    requested_by: str | None
    reason: str | None
    # pending | running | completed | not_found | incomplete | failed | rejected |
    # on_hold | deferred (a run erased what it could; part waits for a hold or the policy)
    status: str = "pending"
    plan: Plan | None = None
    steps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    entries: int = 0
    tags: dict[tuple[str, str], set[str]] = field(default_factory=dict)   # every attempt's tag
    # who acted (each entry's "actor"), and governance (erasure/approvals.py, holds.py)
    submitted_by: str | None = None
    ran_by: str | None = None
    identities: list[dict[str, Any]] = field(default_factory=list)   # as submitted + planned
    approvals: list[dict[str, Any]] = field(default_factory=list)    # {actor, plan_digest, view, at}
    stale: dict[str, Any] | None = None      # the last request.approval_stale entry
    rejected: dict[str, Any] | None = None   # {actor, reason, at}
    extensions: list[dict[str, Any]] = field(default_factory=list)
    erased_any: bool = False                 # some run deleted rows of the subject

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    @property
    def closed(self) -> bool:
        """Finished, or rejected: never run again."""
        return self.status in CLOSED

    @property
    def identity_types(self) -> list[str]:
        return sorted({i["type"] for i in self.identities if i.get("type")})

    def approvers(self, digest: str | None = None) -> list[str]:
        """The distinct actors (not the submitter) who approved the plan with `digest`
        (default: the latest plan approved, unless `run` found the plan changed since)."""
        if digest is None:
            digest = self.current_digest()
        seen: list[str] = []
        folded: set[str] = {same_actor(self.submitted_by)}
        for a in self.approvals:
            who = a.get("actor")
            if a["plan_digest"] == digest and who and same_actor(who) not in folded:
                folded.add(same_actor(who))
                seen.append(who)
        return seen

    def approvers_of_any_plan(self) -> set[str]:
        """The distinct actors (not the submitter) who approved any plan of the request."""
        return {same_actor(a["actor"]) for a in self.approvals
                if a.get("actor")} - {same_actor(self.submitted_by)}

    def current_digest(self) -> str | None:
        """The digest of the plan approvals count for: the latest approved, or the one `run`
        last found when it differed (approvals of an older plan then count no more)."""
        latest = max(([(a["seq"], a["plan_digest"]) for a in self.approvals]
                      + ([(self.stale["seq"], self.stale["current"])] if self.stale else [])),
                     default=None)
        return latest[1] if latest else None

    def step(self, target_key: str, phase: str) -> dict[str, Any] | None:
        return self.steps.get((target_key, phase))

    def apply(self, kind: str, b: dict[str, Any], seq: int = 0, ts: str | None = None) -> None:
        """Fold one more of the request's entries (any after its `request.submitted`) into
        the state: `fold` reads them back this way, and the runner applies each entry it
        appends, so its state is what reading the ledger back would give."""
        if kind == "plan.recorded":
            self.plan = Plan.from_json(b["plan"])
            self.steps = {}
            self.tags = {}
            self.status = "running"
            self.ran_by = b.get("actor")
            self.identities = _merged(self.identities, b["plan"].get("identities", []))
        elif kind in ("step.started", "step.completed", "step.failed"):
            state = kind[5:]
            self.steps[(b["target"], b["phase"])] = {**b, "state": state}
            if b.get("tag"):
                self.tags.setdefault((b["target"], b["phase"]), set()).add(b["tag"])
            if state == "failed":
                self.errors.append(b.get("error", "step failed"))
            elif state == "completed" and b["phase"] == "erase" and b.get("rows_deleted"):
                self.erased_any = True
        elif kind == "request.completed":
            self.status = b["status"]
            self.ran_by = b.get("actor", self.ran_by)
        elif kind == "request.failed":
            self.status = "failed"
            self.errors.append(b["error"])
        elif kind == "request.waiting":
            self.status = b["status"]
            self.ran_by = b.get("actor", self.ran_by)
        elif kind == "request.approved":
            self.approvals.append({"actor": b.get("actor"), "plan_digest": b["plan_digest"],
                                   "view": b.get("view"), "at": ts, "seq": seq})
        elif kind == "request.approval_stale":
            self.stale = {**b, "seq": seq, "at": ts}
        elif kind == "request.rejected":
            self.status = "rejected"
            self.rejected = {"actor": b.get("actor"), "reason": b["reason"], "at": ts}
        elif kind == "request.extended":
            self.deadline = b["deadline"]
            self.extensions.append({"actor": b.get("actor"), "reason": b["reason"],
                                    "deadline_before": b["deadline_before"],
                                    "deadline": b["deadline"], "at": ts})
        self.entries += 1

    def erased_versions(self) -> dict[str, int]:
        """Per dataset name, the table version the erase committed (the first without
        the subject), for datasets with versions."""
        out: dict[str, int] = {}
        for (_, phase), step in self.steps.items():
            if phase == "erase" and step.get("state") == "completed" and \
                    step.get("version_after") is not None:
                out[step["name"]] = max(out.get(step["name"], 0), step["version_after"])
        return out

    def _step_state(self, t, phase: str) -> str:
        if phase == "purge" and t.residue_after.get("mode") not in PURGE_MODES:
            return "not-applicable"
        step = self.step(t.key, phase) or {}
        if phase == "verify" and step.get("state") == "completed" and step.get("not_verified"):
            return "not verified"
        return step.get("state", "todo")

    def governance_json(self, holds: Any = None) -> dict[str, Any]:
        """Who acted and what governs the request: submitter, approvals (who, of which
        plan), rejection, extensions, the runs' actor, holds on the subject (who placed and
        released them), and the plan's exempt, deferred and held datasets."""
        from .holds import request_hmacs

        out: dict[str, Any] = {
            "submitted_by": self.submitted_by, "ran_by": self.ran_by,
            "approved_by": self.approvers(),
            "approvals": [{"actor": a["actor"], "at": a["at"], "plan_digest": a["plan_digest"]}
                          for a in self.approvals],
            "approval_stale": ({"at": self.stale["at"], "diff": self.stale.get("diff", [])}
                               if self.stale and self.current_digest() == self.stale["current"]
                               else None),
            "rejected": self.rejected, "extensions": self.extensions,
            "exempt": self.plan.exempt if self.plan else [],
            "deferred": self.plan.deferred if self.plan else [],
            "held": self.plan.held if self.plan else [],
            "policy": self.plan.policy if self.plan else None}
        if holds is not None:
            mine = request_hmacs(self.subject_hmac, self.identities)
            out["holds"] = [h.to_json() for h in holds.holds.values() if h.hmacs & mine]
        return out

    def effective_status(self, approvals_required: int = 0, holds: Any = None) -> str:
        """The status as an operator needs it: "on_hold" while an active legal hold covers
        all of the subject's data, "awaiting_approval" while fewer than the required actors
        approved the current plan, "pending" for a request a released hold let go; else
        the status its entries set."""
        if self.closed:
            return self.status
        if holds is not None:
            from .holds import request_hmacs

            active = holds.active_for(request_hmacs(self.subject_hmac, self.identities))
            if any(h.covers_everything() for h in active):
                return "on_hold"
            if self.status == "on_hold" and not active:
                return "pending"          # released: the next run finishes it
        if approvals_required and len(self.approvers()) < approvals_required:
            return "awaiting_approval"
        return self.status

    def to_json(self) -> dict[str, Any]:
        targets = []
        if self.plan:
            for t in self.plan.targets:
                targets.append({"namespace": t.namespace, "name": t.name,
                                "connector": t.connector, "column": t.column,
                                "rows_planned": t.rows,
                                "steps": {ph: self._step_state(t, ph)
                                          for ph in ("erase", "purge", "verify")},
                                "not_verified": (self.step(t.key, "verify") or {}).get(
                                    "not_verified") or t.not_verified})
        return {"request_id": self.request_id, "subject": {"hmac": self.subject_hmac},
                "status": self.status, "received_at": self.received_at,
                "deadline": self.deadline, "requested_by": self.requested_by,
                "targets": targets,
                "connectors": self.plan.connectors if self.plan else {},
                "unresolved": self.plan.unresolved if self.plan else [],
                "errors": self.errors, "ledger_entries": self.entries}


def same_actor(name: str | None) -> str:
    """An actor's name as four-eyes rules compare it: "Alice", "alice" and "ALICE " are one
    person (a name's case and spaces are not a second pair of eyes)."""
    return " ".join((name or "").split()).casefold()


def _merged(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Identities (type, hmac) of `a`, then those of `b` not in `a`."""
    seen = {(i.get("type"), i.get("hmac")) for i in a}
    return a + [i for i in b if (i.get("type"), i.get("hmac")) not in seen]


def fold(entries: list[Entry]) -> RequestState:
    first = entries[0].body
    request_id = entries[0].request_id
    if request_id is None:   # a ledger-wide entry (a checkpoint) belongs to no request
        raise ValueError(f"fold() takes one request's entries, not a {entries[0].kind} entry")
    st = RequestState(request_id, first["subject_hmac"], first["received_at"],
                      first["deadline"], first.get("requested_by"), first.get("reason"))
    st.submitted_by = first.get("actor")
    st.identities = list(first.get("identities") or [])
    st.entries = 1
    for e in entries[1:]:
        st.apply(e.kind, e.body, e.seq, e.ts)
    return st


def load_state(ledger: Ledger, request_id: str) -> RequestState:
    return fold(ledger.require(request_id))


def load_states(ledger: Ledger, request_ids: Iterable[str]) -> dict[str, RequestState]:
    """The states of these requests (each once, in the order given), folded from a few
    queries instead of one per request; `UnknownRequestError` for an id the ledger does
    not hold, as `load_state`."""
    ids = list(dict.fromkeys(request_ids))
    found: dict[str, RequestState] = {}
    for entries in ledger.entries_of(ids):
        if entries[0].kind == "request.submitted":
            found[entries[0].request_id or ""] = fold(entries)
    for rid in ids:
        if rid not in found:
            ledger.require(rid)       # raises UnknownRequestError naming it
    return {rid: found[rid] for rid in ids}


def all_states(ledger: Ledger) -> Iterator[RequestState]:
    """Every request's state, folded from one streamed read of the ledger (a sweep over
    100,000 requests: one query instead of one per request), in request id order."""
    for entries in ledger.entries_by_request():
        yield fold(entries)


@dataclass(frozen=True)
class Finished:
    """A finished request, as far as a sweep looks at it: its subject, the keys of its
    latest plan's targets, and `RequestState.erased_versions()`."""

    request_id: str
    subject_hmac: str
    planned: frozenset[str]
    erased: dict[str, int]
    # what governance needs (erasure/governance.py): the request's reason, day of receipt
    # and identities (type, hmac) as submitted and as its plans derived them
    reason: str | None = None
    received_at: str = ""
    identities: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, st: RequestState) -> "Finished":
        return cls(st.request_id, st.subject_hmac,
                   frozenset(t.key for t in (st.plan.targets if st.plan else [])),
                   st.erased_versions(), st.reason, st.received_at,
                   tuple({"type": i.get("type"), "hmac": i.get("hmac")}
                         for i in st.identities))


# What `finished` folds, in sequence order: only the entries that set a request's subject,
# plan targets, status and erase steps (about 9 of a request's 21 entries), and of each only
# what is folded: a plan's targets (not its connectors, notes, identities...), an erase
# step's body (found by its text first, then checked parsed: no JSON parsed for the others)
_FINISHED_SQL = """
SELECT request_id, kind,
       CASE kind
         WHEN 'request.submitted' THEN json_extract(body, '$.subject_hmac')
         WHEN 'request.completed' THEN json_extract(body, '$.status')
         WHEN 'request.failed' THEN NULL
         WHEN 'plan.recorded' THEN json_extract(body, '$.plan.targets')
         ELSE body
       END,
       {facts}
  FROM entries
 WHERE request_id IS NOT NULL
   AND (kind IN ('request.submitted', 'plan.recorded', 'request.completed', 'request.failed')
        OR (kind IN ('step.started', 'step.completed', 'step.failed')
            AND instr(body, '"phase":"erase"') > 0))
 ORDER BY seq
"""
# what governance needs besides (a request's identities, reason and day of receipt): read
# only when a policy or a hold is there, since a second pass over every plan body costs a
# third of the read (bench/bench_sweep.py: 1.23 s against 1.66 s at 20,000 requests)
_FACTS = """CASE kind
         WHEN 'request.submitted' THEN json_extract(body, '$.identities')
         WHEN 'plan.recorded' THEN json_extract(body, '$.plan.identities')
       END,
       CASE kind WHEN 'request.submitted' THEN json_extract(body, '$.reason') END,
       CASE kind WHEN 'request.submitted' THEN json_extract(body, '$.received_at') END"""
_NO_FACTS = "NULL, NULL, NULL"


def finished(ledger: Ledger, with_facts: bool = True) -> list[Finished]:
    """Every finished request (completed, not_found, incomplete) in submission order, as
    `Finished.of(fold(its entries))` gives it (tests/test_sweep.py compares both), from one
    sequential read of the entries that matter for it: a sweep over 100,000 requests folds
    no step bodies of purge and verify and parses no whole plan. `with_facts=False`: without
    the reason, day of receipt and identities (governance's facts; left empty)."""
    import json

    intern: dict[str, str] = {}     # target keys and names repeat across requests: one copy
    steps: dict[str, dict[str, Any]] = {}    # a step body's text (one per batch and counts)
    subject: dict[str, str] = {}
    facts: dict[str, tuple[str | None, str]] = {}
    idents: dict[str, list[dict[str, Any]]] = {}
    status: dict[str, str] = {}
    planned: dict[str, frozenset[str]] = {}
    erase: dict[str, dict[str, tuple[str, str, Any]]] = {}   # request -> target -> step
    sql = _FINISHED_SQL.format(facts=_FACTS if with_facts else _NO_FACTS)
    for rid, kind, v, ids, reason, received in ledger.db.execute(sql):
        if kind == "request.submitted":
            subject[rid] = v
            if with_facts:
                facts[rid] = (reason, received)
                idents[rid] = json.loads(ids) if ids else []
            status[rid] = "pending"
        elif kind == "plan.recorded":
            status[rid] = "running"
            planned[rid] = frozenset(intern.setdefault(k, k)
                                     for k in map(target_key, json.loads(v)))
            if ids:
                idents[rid] = _merged(idents.get(rid, []), json.loads(ids))
            erase.pop(rid, None)
        elif kind == "request.completed":
            status[rid] = v
        elif kind == "request.failed":
            status[rid] = "failed"
        else:
            b = steps.get(v)
            if b is None:
                b = steps[v] = json.loads(v)
                if len(steps) > 10_000:
                    steps.clear()
            if b["phase"] != "erase":     # the text only looked like an erase step's
                continue
            target, name = b["target"], b["name"]
            erase.setdefault(rid, {})[intern.setdefault(target, target)] = (
                kind, intern.setdefault(name, name), b.get("version_after"))
    out = []
    for rid, hm in subject.items():
        if status[rid] not in FINISHED:
            continue
        versions: dict[str, int] = {}
        for kind, name, version in erase.get(rid, {}).values():
            if kind == "step.completed" and version is not None:
                versions[name] = max(versions.get(name, 0), version)
        if not with_facts:
            out.append(Finished(rid, hm, planned.get(rid, frozenset()), versions))
            continue
        out.append(Finished(rid, hm, planned.get(rid, frozenset()), versions, *facts[rid],
                            tuple({"type": i.get("type"), "hmac": i.get("hmac")}
                                  for i in idents.get(rid, []))))
    return out
