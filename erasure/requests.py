"""Article 17 requests: submission, and their state folded from the ledger's entries."""

from __future__ import annotations

import calendar
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import InputError
from .ledger import Entry, Ledger
from .planning import Plan
from .subject import SubjectKeys

LEGAL_BASIS = "GDPR Art. 17(1)"


def one_month_later(t: datetime) -> datetime:
    """Art. 12(3): 'within one month of receipt'; the same day next month, clamped."""
    y, m = (t.year + (t.month == 12), t.month % 12 + 1)
    return t.replace(year=y, month=m, day=min(t.day, calendar.monthrange(y, m)[1]))


def submit(ledger: Ledger, keys: SubjectKeys, subject_id: str, requested_by: str | None,
           reason: str | None) -> str:
    if not subject_id or subject_id != subject_id.strip() or "\n" in subject_id:
        raise InputError("a subject id must be non-empty, without surrounding white space or "
                         "line breaks; nothing was recorded")
    import re

    # the id as a whole token (a request id "req-4141..." does not name subject 41)
    as_token = re.compile(("(?<!\\w)" if re.match(r"\w", subject_id[:1]) else "")
                          + re.escape(subject_id)
                          + ("(?!\\w)" if re.match(r"\w", subject_id[-1:]) else ""))
    for label, text in (("--requested-by", requested_by), ("--reason", reason)):
        if text and as_token.search(text):
            raise InputError(f"{label} contains the subject id; it is stored and printed in "
                             "plain text, so it must not name the subject. Nothing was recorded")
    request_id = "req-" + uuid.uuid4().hex[:20]
    received = datetime.now(timezone.utc)
    hm = keys.subject_hmac(subject_id)
    ledger.seal_subject(request_id, keys.seal(subject_id, request_id))
    ledger.append(request_id, "request.submitted", {
        "subject_hmac": hm, "received_at": received.isoformat(timespec="seconds"),
        "deadline": one_month_later(received).isoformat(timespec="seconds"),
        "requested_by": requested_by, "reason": reason, "legal_basis": LEGAL_BASIS})
    return request_id


@dataclass
class RequestState:
    request_id: str
    subject_hmac: str
    received_at: str
    deadline: str
    requested_by: str | None
    reason: str | None
    status: str = "pending"          # pending | running | completed | incomplete | failed
    plan: Plan | None = None
    steps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    entries: int = 0
    tags: dict[tuple[str, str], set[str]] = field(default_factory=dict)   # every attempt's tag

    @property
    def done(self) -> bool:
        return self.status in ("completed", "incomplete")

    def step(self, target_key: str, phase: str) -> dict[str, Any] | None:
        return self.steps.get((target_key, phase))

    def erased_versions(self) -> dict[str, int]:
        """Per dataset name, the table version the erase committed (the first without
        the subject), for datasets with versions."""
        out: dict[str, int] = {}
        for (_, phase), step in self.steps.items():
            if phase == "erase" and step.get("state") == "completed" and \
                    step.get("version_after") is not None:
                out[step["name"]] = max(out.get(step["name"], 0), step["version_after"])
        return out

    def to_json(self) -> dict[str, Any]:
        targets = []
        if self.plan:
            for t in self.plan.targets:
                targets.append({"namespace": t.namespace, "name": t.name,
                                "connector": t.connector, "column": t.column,
                                "rows_planned": t.rows,
                                "steps": {ph: (self.step(t.key, ph) or {}).get("state", "todo")
                                          if ph != "purge" or t.residue_after.get("mode") == "purge"
                                          else "not-applicable"
                                          for ph in ("erase", "purge", "verify")}})
        return {"request_id": self.request_id, "subject": {"hmac": self.subject_hmac},
                "status": self.status, "received_at": self.received_at,
                "deadline": self.deadline, "requested_by": self.requested_by,
                "targets": targets,
                "unresolved": self.plan.unresolved if self.plan else [],
                "errors": self.errors, "ledger_entries": self.entries}


def fold(entries: list[Entry]) -> RequestState:
    first = entries[0].body
    st = RequestState(entries[0].request_id, first["subject_hmac"], first["received_at"],
                      first["deadline"], first.get("requested_by"), first.get("reason"))
    for e in entries[1:]:
        b = e.body
        if e.kind == "plan.recorded":
            st.plan = Plan.from_json(b["plan"])
            st.steps = {}
            st.tags = {}
            st.status = "running"
        elif e.kind in ("step.started", "step.completed", "step.failed"):
            state = e.kind.split(".")[1]
            st.steps[(b["target"], b["phase"])] = {**b, "state": state}
            if b.get("tag"):
                st.tags.setdefault((b["target"], b["phase"]), set()).add(b["tag"])
            if state == "failed":
                st.errors.append(b.get("error", "step failed"))
        elif e.kind == "request.completed":
            st.status = b["status"]
        elif e.kind == "request.failed":
            st.status = "failed"
            st.errors.append(b["error"])
    st.entries = len(entries)
    return st


def load_state(ledger: Ledger, request_id: str) -> RequestState:
    return fold(ledger.require(request_id))
