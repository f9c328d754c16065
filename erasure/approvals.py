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
