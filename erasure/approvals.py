"""Approval (four eyes), rejection and the deadline's extension of a request.

With `[approvals] required = N`, `run` erases nothing of a request until N different actors,
none of them its submitter, approved it. An approval is of a plan: `request approve` plans
the request as `run` would (a dry run), shows it, and records the plan's *view*, what it would
erase and keep (targets and rows, exemptions, deferrals, holds, what is unresolved), with the
view's digest. `run` plans again: approvals whose digest differs (a new table holds the
subject, more or fewer rows) no longer count, and the request waits for approval again, with
the difference shown. Table versions and file names are not in the view: other subjects'
writes do not void an approval, a change in what happens to this subject does.

Ledger entries (per request): `request.approved` {plan_digest, view}, `request.rejected`
{reason}, `request.extended` {deadline_before, deadline, months, reason},
`request.approval_stale` {approved, current, diff} (recorded by `run`, once per new plan).
"""

from __future__ import annotations

import calendar
import hashlib
from datetime import datetime
from typing import Any

from .canonical import canonical_bytes
from .errors import InputError

MAX_EXTENSION_MONTHS = 2       # Art. 12(3): "extended by two further months"


def plan_view(plan: dict[str, Any]) -> dict[str, Any]:
    """What a plan (its JSON) would do to the subject, without what changes with others'
    writes (versions, files, timestamps): the thing an approver approves."""
    targets = sorted(
        ({"target": f"{t['connector']}|{t['namespace']}|{t['name']}|{t['column']}"
                    + t.get("key_suffix", ""),
          "rows": t["rows"], "residue": t["residue_after"].get("mode"),
          "not_verified": bool(t.get("not_verified"))}
         for t in plan["targets"]), key=lambda x: x["target"])

    def names(key: str, extra: str | None = None) -> list[Any]:
        out = []
        for x in plan.get(key) or []:
            item = {"dataset": f"{x['namespace']}:{x['name']}"}
            if extra:
                item[extra] = x.get(extra)
            out.append(item)
        return sorted(out, key=lambda i: (i["dataset"], str(i.get(extra))))

    return {"targets": targets, "exempt": names("exempt", "basis"),
            "deferred": names("deferred", "basis"), "held": names("held"),
            "unresolved": names("unresolved"), "not_applicable": names("not_applicable")}


def view_digest(view: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes(view)).hexdigest()


def view_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed between the view an approver saw and the plan now, line by line."""
    out: list[str] = []
    old = {t["target"]: t for t in before.get("targets", [])}
    new = {t["target"]: t for t in after.get("targets", [])}
    for k in sorted(set(old) | set(new)):
        name = k.split("|")[2]
        if k not in new:
            out.append(f"- {name}: no longer a target (was {old[k]['rows']} rows)")
        elif k not in old:
            out.append(f"+ {name}: new target, {new[k]['rows']} rows")
        elif old[k] != new[k]:
            changes = [f"{f} {old[k][f]} -> {new[k][f]}" for f in ("rows", "residue",
                                                                   "not_verified")
                       if old[k][f] != new[k][f]]
            out.append(f"~ {name}: {', '.join(changes)}")
    for key in ("exempt", "deferred", "held", "unresolved", "not_applicable"):
        a = {canonical_bytes(x): x for x in before.get(key, [])}
        b = {canonical_bytes(x): x for x in after.get(key, [])}
        for x in sorted(set(a) - set(b)):
            out.append(f"- {key}: {a[x]['dataset']}")
        for x in sorted(set(b) - set(a)):
            out.append(f"+ {key}: {b[x]['dataset']}")
    return out


def add_months(iso: str, months: int) -> str:
    """`iso` (a timestamp) `months` later, the day clamped to the month's last."""
    t = datetime.fromisoformat(iso)
    m = t.month - 1 + months
    y, m = t.year + m // 12, m % 12 + 1
    return t.replace(year=y, month=m, day=min(t.day, calendar.monthrange(y, m)[1])) \
        .isoformat(timespec="seconds")


def check_months(months: int) -> int:
    if not 1 <= months <= MAX_EXTENSION_MONTHS:
        raise InputError(f"--months must be 1 or {MAX_EXTENSION_MONTHS} (Art. 12(3) allows "
                         "at most two further months)")
    return months


# ---- the actions (the CLI's `request approve|reject|extend` and the service's endpoints) ----
def guard_texts(values: list[str], **texts: str | None) -> None:
    """Texts stored and printed in plain text must not name the subject (InputError)."""
    from .subject import has_token

    for label, text in texts.items():
        if not text:
            continue
        folded = text.casefold()
        for v in values:
            if has_token(folded, v.casefold()):
                raise InputError(f"--{label} contains the subject id; it is stored and printed "
                                 "in plain text, so it must not name the subject. Nothing was "
                                 "recorded")


def _request_values(eng: Any, rid: str) -> list[str]:
    """The values of a request's subject (to keep them out of texts we record)."""
    from .execution import subject_text
    from .identity import Subject

    return Subject.parse(subject_text(eng, rid)).values()


def _open_state(eng: Any, rid: str, what: str) -> Any:
    from .requests import load_state

    st = load_state(eng.ledger, rid)
    if st.closed:
        raise InputError(f"request {rid} is {st.status}; there is nothing to {what}")
    return st


def plan_for_approval(eng: Any, st: Any) -> Any:
    """The request's plan as `run` would make it now (a dry run; nothing recorded)."""
    from .execution import subject_text
    from .planning import plan_erasures

    text = subject_text(eng, st.request_id)
    return plan_erasures(eng.config, eng.graph(), eng.registry, [(st.subject_hmac, text)],
                         hmac_of=eng.keys.subject_hmac, governance=eng.governance([st]))[0]


def approve(eng: Any, request_id: str) -> dict[str, Any]:
    """Approve the request's plan as the engine's actor (see the module's docstring):
    InputError when approvals are not configured, the request is closed, or the actor
    submitted it. Approving the same plan twice records nothing more."""
    required = eng.config.approvals_required
    if not required:
        raise InputError("approvals are not configured ([approvals] required = 0): requests "
                         "run without them; nothing was recorded")
    actor = eng.ledger.actor
    with eng.ledger.exclusive():
        st = _open_state(eng, request_id, "approve")
        from .requests import same_actor

        if same_actor(actor) == same_actor(st.submitted_by):
            raise InputError(f"{actor} submitted {request_id} and cannot approve it (four "
                             "eyes: another actor must); nothing was recorded")
        plan = plan_for_approval(eng, st)
        view = plan_view(plan.to_json())
        digest = view_digest(view)
        earlier = max(st.approvals, key=lambda a: a["seq"], default=None)
        diff = (view_diff(earlier["view"] or {}, view)
                if earlier and earlier["plan_digest"] != digest else [])
        already = same_actor(actor) in {same_actor(a) for a in st.approvers(digest)}
        if not already:
            body = {"plan_digest": digest, "view": view}
            e = eng.ledger.append(request_id, "request.approved", body)
            st.apply("request.approved", body, e.seq, e.ts)
    return {"request_id": request_id, "approved_by": actor, "plan_digest": digest,
            "already_approved": already, "approvals": len(st.approvers(digest)),
            "required": required, "approvers": st.approvers(digest),
            "changed_since_earlier_approval": diff, "plan": view,
            "status": st.effective_status(required, eng.holds())}


def reject(eng: Any, request_id: str, reason: str) -> dict[str, Any]:
    """Close the request unerased (InputError once it has started erasing)."""
    if not reason.strip():
        raise InputError("--reason must say why the request is rejected")
    with eng.ledger.exclusive():
        st = _open_state(eng, request_id, "reject")
        if any(k[1] == "erase" for k in st.steps):
            raise InputError(f"request {request_id} has started erasing; it cannot be "
                             "rejected now (run it to the end)")
        guard_texts(_request_values(eng, request_id), reason=reason)
        eng.ledger.append(request_id, "request.rejected", {"reason": reason})
    return {"request_id": request_id, "status": "rejected"}


def extend(eng: Any, request_id: str, reason: str, months: int = MAX_EXTENSION_MONTHS
           ) -> dict[str, Any]:
    """Move the deadline by `months` (1 or 2), once, before it passes (Art. 12(3))."""
    from datetime import timezone

    check_months(months)
    if not reason.strip():
        raise InputError("--reason must say why the deadline is extended")
    with eng.ledger.exclusive():
        st = _open_state(eng, request_id, "extend")
        if st.extensions:
            raise InputError(f"request {request_id} was extended already "
                             f"({st.extensions[0]['at']}); Art. 12(3) allows it once")
        if datetime.now(timezone.utc) > datetime.fromisoformat(st.deadline):
            raise InputError(f"request {request_id}'s deadline {st.deadline} has passed; an "
                             "extension must be decided (and the person told) before it")
        guard_texts(_request_values(eng, request_id), reason=reason)
        body = {"deadline_before": st.deadline, "deadline": add_months(st.deadline, months),
                "months": months, "reason": reason}
        eng.ledger.append(request_id, "request.extended", body)
    return body
