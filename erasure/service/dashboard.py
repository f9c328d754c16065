"""The privacy office's dashboard at / (see erasure/service/__init__.py).

Server-rendered HTML: f-strings, every value through `html.escape`, a little inline CSS, no
script and no external asset, so the Content-Security-Policy can forbid both.

    GET  /                           the requests: deadline, days left (overdue in red, and
                                     the word "overdue"), status, who submitted, approved
                                     and ran each, a link to its page and to its report
    GET  /requests/{id}              one request: status, who acted, steps per dataset,
                                     exemptions and deferrals with their basis, legal holds,
                                     the lineage picture (inline SVG), the report link
    GET  /requests/{id}/report.pdf   the signed proof-of-erasure PDF, made on demand
                                     (`write_report`) once the request has finished
    GET  /login, POST /login         a form that takes a token; sets the login cookie
    GET  /logout, POST /logout       clears it

Roles auditor or operator. A page without a valid token (bearer or login cookie) redirects
(303) to /login. The login cookie (`auth.COOKIE`: HttpOnly, SameSite=Strict, Path=/, Secure
unless `[service] secure_cookie = false`) is read only by these GET routes; the login form
is the only form that sets it, and anything that changes state takes a bearer token (the
/v1 API). No page shows a subject id: a request's subject appears as the first 12 hex
digits of its HMAC. Every response carries the CSP below and `X-Frame-Options: DENY`.
"""

from __future__ import annotations

import html
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from . import auth

router = APIRouter(include_in_schema=False)

ROLES = ("auditor", "operator")
# no script, no frame, nothing from elsewhere; inline style only (the pages' <style> and the
# SVG); forms post only here (form-action does not fall back to default-src)
CSP = ("default-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SOON_DAYS = 7            # open requests due within a week are marked "soon"
CLOSED_SHOWN = 200       # closed requests listed on the index (most recently received first)
HMAC_SHOWN = 12          # hex digits of the subject's HMAC a page shows

e = html.escape


# ---- time ------------------------------------------------------------------------------
def _parse(ts: str) -> datetime:
    t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def when(ts: str | None) -> str:
    """An ISO timestamp as "YYYY-MM-DD HH:MM UTC" (escaped); "-" for none."""
    if not ts:
        return "-"
    try:
        return _parse(ts).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return e(ts)


def days_left(deadline: str, now: datetime) -> tuple[int, bool]:
    """(calendar days from `now`'s date to the deadline's date, in UTC; whether the deadline
    has passed at `now`)."""
    d = _parse(deadline).astimezone(timezone.utc)
    n = now.astimezone(timezone.utc)
    return (d.date() - n.date()).days, n > d


def days_left_text(deadline: str, now: datetime, closed: bool) -> tuple[str, str]:
    """(CSS class, words) for a request's days left: a closed request has none; an overdue
    one says so in words and in red ("overdue"); one due within SOON_DAYS is amber
    ("soon")."""
    if closed:
        return "closed", "closed"
    days, overdue = days_left(deadline, now)
    if overdue:
        late = -days
        return "overdue", ("overdue (today)" if late <= 0 else
                           f"overdue by {late} day{'s' if late != 1 else ''}")
    text = "due today" if days == 0 else f"{days} day{'s' if days != 1 else ''} left"
    return ("soon" if days <= SOON_DAYS else ""), text


def days_left_cell(deadline: str, now: datetime, closed: bool) -> str:
    """The "days left" table cell (see `days_left_text`)."""
    cls, text = days_left_text(deadline, now, closed)
    return f'<td class="days {cls}">{text}</td>'


# ---- the rows of the index ---------------------------------------------------------------
def row_of(st: Any, approvals_required: int = 0, holds: Any = None) -> dict[str, Any]:
    """What the index shows of one RequestState (erasure/requests.py): no subject id, the
    HMAC's first digits only."""

    gov = st.governance_json(holds)
    return {"request_id": st.request_id, "subject": st.subject_hmac[:HMAC_SHOWN],
            "received_at": st.received_at, "deadline": st.deadline,
            "status": st.effective_status(approvals_required, holds),
            "closed": st.closed, "finished": st.closed,    # a rejection has its report too
            "submitted_by": gov["submitted_by"], "approved_by": gov["approved_by"],
            "ran_by": gov["ran_by"], "approvals_required": approvals_required,
            "extended": bool(gov["extensions"])}


def _status(status: str) -> str:
    return f'<span class="status s-{e(status)}">{e(status.replace("_", " "))}</span>'


def _who(name: str | None) -> str:
    return e(name) if name else '<span class="muted">-</span>'


def index_body(rows: list[dict[str, Any]], now: datetime, base: str = "",
               hidden: int = 0) -> str:
    """The index's content: a summary line and the table of requests, open ones first by
    deadline, then closed ones (most recently received first)."""
    open_rows = sorted((r for r in rows if not r["closed"]), key=lambda r: _parse(r["deadline"]))
    closed_rows = sorted((r for r in rows if r["closed"]),
                         key=lambda r: r["received_at"], reverse=True)
    overdue = sum(1 for r in open_rows if days_left(r["deadline"], now)[1])
    soon = sum(1 for r in open_rows
               if not days_left(r["deadline"], now)[1]
               and days_left(r["deadline"], now)[0] <= SOON_DAYS)
    summary = (f'<p class="summary"><b>{len(rows) + hidden}</b> requests: '
               f'<b>{len(open_rows)}</b> open, '
               f'<b class="{"overdue-text" if overdue else ""}">{overdue}</b> overdue, '
               f'<b>{soon}</b> due within {SOON_DAYS} days. '
               f'Times in UTC, as of {e(now.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M"))}.</p>')
    if not rows:
        return summary + '<p class="muted">No erasure request has been received yet.</p>'
    head = ("<tr><th>Request</th><th>Subject (HMAC)</th><th>Received</th><th>Deadline</th>"
            "<th>Days left</th><th>Status</th><th>Submitted by</th><th>Approved by</th>"
            "<th>Ran by</th><th>Report</th></tr>")
    body = []
    for r in open_rows + closed_rows:
        rid = e(r["request_id"])
        approved = ", ".join(r["approved_by"])
        if r["approvals_required"]:
            approved = (f'{e(approved) or "-"} <span class="muted">({len(r["approved_by"])} of '
                        f'{r["approvals_required"]})</span>')
        else:
            approved = e(approved) if approved else '<span class="muted">-</span>'
        report = (f'<a href="{base}/requests/{rid}/report.pdf" download>PDF</a>'
                  if r["finished"] else '<span class="muted">when finished</span>')
        ext = ' <span class="muted" title="the deadline was extended">(extended)</span>' \
            if r["extended"] else ""
        body.append(
            f'<tr id="{rid}"><td class="id"><a href="{base}/requests/{rid}">{rid}</a></td>'
            f'<td class="id">{e(r["subject"])}…</td>'
            f'<td class="t">{when(r["received_at"])}</td>'
            f'<td class="t">{when(r["deadline"])}{ext}</td>'
            f'{days_left_cell(r["deadline"], now, r["closed"])}'
            f'<td>{_status(r["status"])}</td><td>{_who(r["submitted_by"])}</td>'
            f'<td>{approved}</td><td>{_who(r["ran_by"])}</td><td>{report}</td></tr>')
    more = (f'<p class="muted">{hidden} older closed requests are not listed.</p>'
            if hidden else "")
    return (summary + f'<table class="requests"><thead>{head}</thead><tbody>'
            + "".join(body) + "</tbody></table>" + more)


# ---- the lineage picture -----------------------------------------------------------------
_MARKS = {   # kind of box -> (fill, stroke, dashed, label)
    "erased": ("#e3f3e8", "#1e7b34", False, ""),
    "planned": ("#e8eef9", "#2f5597", False, ""),
    "attention": ("#fff1d6", "#a15c00", False, ""),
    "exempt": ("#fff6db", "#a86b00", True, "EXEMPT, kept"),
    "deferred": ("#fff6db", "#a86b00", True, "DEFERRED, kept for now"),
    "held": ("#efe6fb", "#6b3fa0", True, "LEGAL HOLD, kept"),
    "unresolved": ("#eeeeee", "#777777", True, "unresolved"),
    "out of scope": ("#f4f4f4", "#9a9a9a", True, "out of scope"),
}


def _target_state(t: dict[str, Any]) -> tuple[str, str]:
    """(mark, words) for a plan target of RequestState.to_json(): what happened to it."""
    s = t["steps"]
    if "failed" in s.values():
        return "attention", "failed: " + ", ".join(k for k, v in s.items() if v == "failed")
    if s["verify"] == "completed":
        return "erased", "erased, verified"
    if s["verify"] == "not verified" or t.get("not_verified"):
        return "attention", "erased, not verified" if s["erase"] == "completed" \
            else "planned, not verifiable"
    if s["erase"] == "completed":
        return "erased", "erased"
    return "planned", "planned"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def lineage_svg(plan: dict[str, Any] | None, targets: list[dict[str, Any]]) -> str:
    """The request's lineage as inline SVG: the root(s) on the left, each dataset the plan
    traced one column right of the dataset it was derived from (arrows), each box saying
    what happened to it. Datasets the plan leaves alone (exempt or deferred by the policy,
    under a legal hold, unresolved, out of scope) are dashed boxes in the second column,
    labelled, without arrows: the plan does not trace through them, so it does not record
    where they come from. `targets`: RequestState.to_json()["targets"]."""
    from connectors.base import last_parts

    if not plan:
        return '<p class="muted">No plan yet: the picture appears once the request has run.</p>'
    nodes: dict[str, tuple[str, str, str]] = {}     # name -> (mark, first line, second line)
    edges: set[tuple[str, str]] = set()
    for t, tj in zip(plan["targets"], targets):
        mark, words = _target_state(tj)
        nodes.setdefault(t["name"], (mark, last_parts(t["name"]), f'{t["connector"]}: {words}'))
        src = (t.get("derived_from") or {}).get("name")
        if src:
            edges.add((src, t["name"]))
    kept = [("exempt", x) for x in plan.get("exempt", [])] + \
        [("deferred", x) for x in plan.get("deferred", [])] + \
        [("held", x) for x in plan.get("held", [])] + \
        [("unresolved", x) for x in plan.get("unresolved", [])] + \
        [("out of scope", x) for x in plan.get("out_of_scope", [])]
    for mark, x in kept:
        name = x["name"]
        first = "all of the subject's data" if name == "*" else last_parts(name)
        second = _MARKS[mark][3]
        if mark == "held" and x.get("hold_ids"):
            second += ": " + ", ".join(x["hold_ids"])
        nodes.setdefault(name, (mark, first, second))
    parents: dict[str, set[str]] = {}
    for a, b in edges:
        if a in nodes:
            parents.setdefault(b, set()).add(a)
    depth: dict[str, int] = {}

    def d(n: str, seen: frozenset[str] = frozenset()) -> int:
        if n not in depth:
            ps = [p for p in parents.get(n, ()) if p not in seen]
            depth[n] = 1 + max((d(p, seen | {n}) for p in ps), default=-1)
        return depth[n]

    has_targets = bool(plan["targets"])
    for n, (mark, _, _) in nodes.items():
        if mark in ("exempt", "deferred", "held", "unresolved", "out of scope"):
            depth[n] = 1 if has_targets else 0
        d(n)
    per_col: dict[int, list[str]] = {}
    for n in nodes:
        per_col.setdefault(depth[n], []).append(n)
    box_w, box_h, col_gap, row_gap, pad = 250, 46, 56, 14, 12
    cols = max(per_col, default=0) + 1
    rows = max((len(v) for v in per_col.values()), default=1)
    width = pad * 2 + cols * box_w + (cols - 1) * col_gap
    height = pad * 2 + rows * box_h + (rows - 1) * row_gap
    pos: dict[str, tuple[int, int]] = {}
    out = [f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" role="img" '
           f'aria-label="lineage of the request" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
           'fill="#555"/></marker></defs>']
    for c in sorted(per_col):
        for i, n in enumerate(per_col[c]):
            pos[n] = (pad + c * (box_w + col_gap), pad + i * (box_h + row_gap))
    for a, b in sorted(edges):
        if a in pos and b in pos:
            (ax, ay), (bx, by) = pos[a], pos[b]
            x1, y1, x2, y2 = ax + box_w, ay + box_h // 2, bx, by + box_h // 2
            mid = (x1 + x2) // 2
            out.append(f'<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 1},{y2}" '
                       'fill="none" stroke="#555" stroke-width="1.4" '
                       'marker-end="url(#arrow)"/>')
    for n, (mark, first, second) in nodes.items():
        x, y = pos[n]
        fill, stroke, dashed, _ = _MARKS[mark]
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        out.append(
            f'<g class="node" data-name="{e(n)}" data-mark="{e(mark)}"><title>{e(n)}</title>'
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.6"{dash}/>'
            f'<text x="{x + 9}" y="{y + 19}" font-size="13" font-weight="600" '
            f'fill="#1d1d1f">{e(_cut(first, 30))}</text>'
            f'<text x="{x + 9}" y="{y + 36}" font-size="11.5" fill="{stroke}">'
            f'{e(_cut(second, 38))}</text></g>')
    out.append("</svg>")
    legend = ('<p class="legend muted">Left to right from the root the request named: each '
              'arrow is one hop of lineage the plan followed. Solid boxes were erased (green) '
              'or are planned (blue); amber solid boxes need attention. Dashed boxes were '
              'left alone on purpose (exempt, deferred, legal hold) or could not be handled '
              '(unresolved, out of scope); see the tables above.</p>')
    return '<div class="picture">' + "".join(out) + "</div>" + legend


# ---- one request ---------------------------------------------------------------------------
def _table(head: Iterable[str], rows: list[list[str]], cls: str = "") -> str:
    """A table; cells are HTML already escaped by the caller."""
    h = "".join(f"<th>{x}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def request_body(st: Any, now: datetime, approvals_required: int = 0, holds: Any = None,
                 base: str = "") -> str:
    """One request's page content (RequestState `st`)."""
    from connectors.base import last_parts


    js = st.to_json()
    gov = st.governance_json(holds)
    status = st.effective_status(approvals_required, holds)
    rid = e(st.request_id)
    finished = st.closed          # finished, or rejected: the report says which
    report = (f'<a class="button" href="{base}/requests/{rid}/report.pdf" download>'
              'Download the signed report (PDF)</a>' if finished else
              '<span class="muted">The signed report can be downloaded once the request has '
              'finished (completed, not found or incomplete).</span>')
    facts = [("Status", _status(status)),
             ("Subject", f'<span class="id">HMAC {e(st.subject_hmac[:HMAC_SHOWN])}…</span>'),
             ("Received", when(st.received_at)),
             ("Deadline", when(st.deadline)),
             ("Days left", '<span class="{}">{}</span>'.format(
                 *days_left_text(st.deadline, now, st.closed))),
             ("Requested by", _who(st.requested_by)),
             ("Reason", _who(st.reason))]
    if st.identity_types:
        facts.append(("Identities", e(", ".join(st.identity_types))))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    parts = [f'<h1>Request <span class="id">{rid}</span></h1>',
             f'<div class="top"><dl class="facts">{dl}</dl><div class="report">{report}</div>'
             '</div>']

    # who acted
    acted = [["submitted", _who(gov["submitted_by"]), when(st.received_at), ""]]
    for a in gov["approvals"]:
        current = a["plan_digest"] == st.current_digest()
        acted.append(["approved", _who(a["actor"]), when(a["at"]),
                      f'plan <span class="id">{e((a["plan_digest"] or "")[:19])}</span>'
                      + ("" if current else ' <span class="muted">(an older plan)</span>')])
    if gov["rejected"]:
        r = gov["rejected"]
        acted.append(["rejected", _who(r["actor"]), when(r["at"]), e(r["reason"])])
    for x in gov["extensions"]:
        acted.append(["extended the deadline", _who(x["actor"]), when(x["at"]),
                      f'from {when(x["deadline_before"])} to {when(x["deadline"])}: '
                      f'{e(x["reason"])}'])
    if gov["ran_by"]:
        acted.append(["ran", _who(gov["ran_by"]), "", ""])
    parts.append("<h2>Who acted</h2>" + _table(["Action", "Who", "When", "Detail"], acted))
    if approvals_required:
        parts.append(f'<p>Approvals of the current plan: <b>{len(gov["approved_by"])}</b> of '
                     f'<b>{approvals_required}</b> required'
                     + (f' ({e(", ".join(gov["approved_by"]))})' if gov["approved_by"] else "")
                     + ".</p>")
    if gov["approval_stale"]:
        diff = "".join(f"<li>{e(line)}</li>" for line in gov["approval_stale"]["diff"])
        parts.append('<p class="warn">The plan changed since it was approved '
                     f'({when(gov["approval_stale"]["at"])}); approvals of the old plan no '
                     f'longer count:</p><ul>{diff}</ul>')

    # datasets
    parts.append("<h2>Datasets</h2>")
    if st.plan is None:
        parts.append('<p class="muted">Not planned yet: the request has not run.</p>')
    else:
        rows = []
        for t in js["targets"]:
            notes = "; ".join(t["not_verified"] or [])
            rows.append([f'<span title="{e(t["namespace"])}:{e(t["name"])}">'
                         f'{e(last_parts(t["name"]))}</span>',
                         e(t["connector"]), f'<span class="id">{e(t["column"])}</span>',
                         str(int(t["rows_planned"])),
                         *(f'<span class="step st-{e(v.replace(" ", "-"))}">{e(v)}</span>'
                           for v in (t["steps"][p] for p in ("erase", "purge", "verify"))),
                         ("not verified: " + e(notes)) if notes else ""])
        parts.append(_table(["Dataset", "System", "Key column", "Rows planned", "Erase",
                             "Purge", "Verify", "Notes"], rows, "datasets")
                     if rows else '<p class="muted">The plan has no dataset to erase.</p>')
        kept = ([["exempt", f'<span title="{e(x["name"])}">{e(last_parts(x["name"]))}</span>',
                  e(x.get("basis") or "")] for x in gov["exempt"]]
                + [["deferred", f'<span title="{e(x["name"])}">{e(last_parts(x["name"]))}</span>',
                    e(x.get("basis") or "")] for x in gov["deferred"]]
                + [["legal hold", e("every dataset" if x["name"] == "*" else last_parts(x["name"])),
                    "hold " + e(", ".join(x.get("hold_ids") or []))] for x in gov["held"]])
        if kept:
            parts.append("<h3>Kept on purpose</h3>"
                         + _table(["Why", "Dataset", "Basis"], kept, "kept"))
        if js["unresolved"]:
            parts.append("<h3>Unresolved</h3>" + _table(
                ["Dataset", "Reason"], [[e(u["name"]), e(u.get("reason", ""))]
                                        for u in js["unresolved"]]))
        if st.plan.out_of_scope:
            parts.append("<h3>Out of scope</h3>" + _table(
                ["Dataset", "Why"], [[f'<span title="{e(u["name"])}">{e(last_parts(u["name"]))}'
                                      '</span>', e(u.get("reason", ""))]
                                     for u in st.plan.out_of_scope], "out-of-scope"))
        if gov["policy"]:
            parts.append(f'<p class="muted">Policy {e(gov["policy"].get("source") or "")}, '
                         f'<span class="id">{e((gov["policy"].get("hash") or "")[:19])}</span>'
                         '</p>')
    if js["errors"]:
        parts.append("<h3>Errors</h3><ul>" + "".join(f"<li>{e(x)}</li>" for x in js["errors"])
                     + "</ul>")

    # holds
    hs = gov.get("holds") or []
    parts.append("<h2>Legal holds</h2>")
    if hs:
        parts.append(_table(
            ["Hold", "Status", "Scope", "Reason", "Placed", "Released"],
            [[f'<span class="id">{e(h["hold_id"])}</span>', e(h["status"]), e(h["scope"]),
              e(h["reason"]), f'{_who(h["added_by"])}, {when(h["added_at"])}'
              + (f', until {e(h["until"])}' if h.get("until") else ""),
              (f'{_who(h["released_by"])}, {when(h["released_at"])}: '
               f'{e(h.get("release_reason") or "")}' if h["released_by"] else "-")]
             for h in hs]))
    else:
        parts.append('<p class="muted">No legal hold covers this subject.</p>')

    # the picture
    parts.append("<h2>Lineage</h2>" + lineage_svg(st.plan.to_json() if st.plan else None,
                                                 js["targets"]))
    return "".join(parts)


# ---- pages and responses ---------------------------------------------------------------------
STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d1d1f;
background:#f5f6f8}
header{background:#1f2a44;color:#fff;padding:8px 24px;display:flex;align-items:center;gap:18px}
header .brand{font-weight:700;font-size:16px;color:#fff;text-decoration:none}
header .who{margin-left:auto;font-size:13px}
header form{margin:0}
header button{background:transparent;color:#fff;border:1px solid #8a96b3;border-radius:4px;
padding:3px 10px;cursor:pointer}
main{max-width:1340px;margin:0 auto;padding:14px 20px 40px}
h1{font-size:20px;margin:6px 0 12px}h2{font-size:16px;margin:22px 0 8px}
h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde0e5}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e6e8eb;vertical-align:top}
th{background:#eceff3;font-weight:600;white-space:nowrap}
td.days,td.t,td.id{white-space:nowrap}
.overdue{color:#b00020;background:#fde4e7;font-weight:700}
.overdue-text{color:#b00020}
.soon{color:#8a5300;font-weight:600}
.closed,.muted{color:#6b6f76}
.id{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
a{color:#1a4fa0}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12.5px;
background:#e8eef9;color:#24467f;white-space:nowrap}
.s-completed{background:#e3f3e8;color:#1e6b30}.s-not_found{background:#eeeeee;color:#444}
.s-incomplete,.s-failed{background:#fde4e7;color:#9a0019}
.s-on_hold{background:#efe6fb;color:#5a3290}
.s-awaiting_approval,.s-deferred{background:#fff1d6;color:#7a4a00}
.s-rejected{background:#eeeeee;color:#444}
.step{white-space:nowrap}.st-completed{color:#1e6b30}.st-failed{color:#9a0019;font-weight:600}
.st-not-verified{color:#8a5300;font-weight:600}.st-todo,.st-not-applicable{color:#6b6f76}
.top{display:flex;gap:24px;align-items:flex-start}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:4px 14px;margin:0;
background:#fff;border:1px solid #dde0e5;padding:10px 14px;min-width:460px}
dt{color:#6b6f76}dd{margin:0}
.button{display:inline-block;background:#1f2a44;color:#fff;padding:8px 14px;border-radius:5px;
text-decoration:none}
.picture{background:#fff;border:1px solid #dde0e5;padding:8px;overflow-x:auto}
.warn{color:#8a5300}
.summary{margin:4px 0 12px}
form.login{background:#fff;border:1px solid #dde0e5;padding:18px 20px;max-width:460px}
form.login input{width:100%;padding:7px;font:inherit;margin:6px 0 12px}
form.login button{padding:7px 16px;font:inherit}
.error{color:#b00020;font-weight:600}
"""


def page(title: str, body: str, caller: auth.Caller | None = None, base: str = "") -> str:
    who = ""
    if caller is not None:
        who = (f'<span class="who">signed in as <b>{e(caller.name)}</b> '
               f'({e(", ".join(sorted(caller.roles)))})</span>'
               f'<form method="post" action="{base}/logout"><button type="submit">Sign out'
               '</button></form>')
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)} · erasure</title><style>{STYLE}</style></head><body>'
            f'<header><a class="brand" href="{base}/">erasure · privacy office</a>{who}</header>'
            f'<main>{body}</main></body></html>')


def _secure(resp: Response) -> Response:
    for k, v in SECURITY_HEADERS.items():
        resp.headers[k] = v
    return resp


def _html(text: str, status: int = 200) -> Response:
    return _secure(HTMLResponse(text, status_code=status))


def _base(request: Request) -> str:
    """The path the app is mounted at (the ASGI root_path; "" at the root)."""
    return e(str(request.scope.get("root_path") or "").rstrip("/"))


def _message(request: Request, title: str, text: str, status: int,
             caller: auth.Caller | None = None) -> Response:
    base = _base(request)
    return _html(page(title, f"<h1>{e(title)}</h1><p>{e(text)}</p>"
                      f'<p><a href="{base}/">Back to the requests</a></p>', caller, base), status)


def _to_login(request: Request, clear: bool = False) -> Response:
    resp = RedirectResponse(f"{_base(request)}/login", status_code=303)
    if clear:
        _clear_cookie(request, resp)
    return _secure(resp)


def _clear_cookie(request: Request, resp: Response) -> None:
    resp.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict",
                       secure=bool(request.app.state.config.service.secure_cookie))


def signed_in(request: Request) -> auth.Caller | Response:
    """The caller of a dashboard GET (bearer token or login cookie), or the response to
    send instead: a redirect to /login without a valid token, 403 without the role."""
    config = request.app.state.config
    token = auth.bearer(request.headers, request.cookies)
    caller = auth.identify(config, token)
    if caller is None:
        # a cookie whose token is no longer configured is cleared on the way
        return _to_login(request, clear=auth.COOKIE in request.cookies)
    if not caller.roles & set(ROLES):
        return _message(request, "Not allowed",
                        f"The token {caller.name} has the roles "
                        f"{', '.join(sorted(caller.roles))}; the dashboard needs auditor or "
                        "operator.", 403, caller)
    return caller


class _Engine:
    """An Engine acting as the caller, closed on the way out."""

    def __init__(self, request: Request, caller: auth.Caller):
        from ..engine import Engine

        self.eng = Engine(request.app.state.config, actor=caller.name)

    def __enter__(self) -> Any:
        return self.eng

    def __exit__(self, *exc: Any) -> None:
        self.eng.close()


def _failure(request: Request, exc: Exception, caller: auth.Caller) -> Response:
    from ..errors import UnknownRequestError
    from .problems import from_erasure_error

    if isinstance(exc, UnknownRequestError):
        return _message(request, "Not found", "The ledger holds no such request.", 404, caller)
    p = from_erasure_error(exc)
    resp = _message(request, p.title, p.detail, p.status, caller)
    for k, v in p.headers.items():
        resp.headers[k] = v
    return resp


# request ids are "req-" and hex digits; anything else is no request of this ledger
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@router.get("/")
def index(request: Request) -> Response:
    from ..errors import ErasureError
    from ..requests import all_states

    who = signed_in(request)
    if isinstance(who, Response):
        return who
    config = request.app.state.config
    base = _base(request)
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    hidden = 0
    if config.has_ledger():    # no ledger yet: no request (and no key made here)
        try:
            with _Engine(request, who) as eng:
                holds = eng.holds()
                rows = [row_of(st, config.approvals_required, holds)
                        for st in all_states(eng.ledger)]
        except ErasureError as exc:
            return _failure(request, exc, who)
        closed = sorted((r for r in rows if r["closed"]), key=lambda r: r["received_at"])
        if len(closed) > CLOSED_SHOWN:
            drop = {id(r) for r in closed[:len(closed) - CLOSED_SHOWN]}
            hidden = len(drop)
            rows = [r for r in rows if id(r) not in drop]
    return _html(page("Requests", "<h1>Erasure requests</h1>"
                      + index_body(rows, now, base, hidden), who, base))


@router.get("/requests/{request_id}")
def request_page(request_id: str, request: Request) -> Response:
    from ..errors import ErasureError
    from ..requests import load_state

    who = signed_in(request)
    if isinstance(who, Response):
        return who
    config = request.app.state.config
    if not _REQUEST_ID.match(request_id) or not config.has_ledger():
        return _message(request, "Not found", "The ledger holds no such request.", 404, who)
    base = _base(request)
    try:
        with _Engine(request, who) as eng:
            st = load_state(eng.ledger, request_id)
            body = request_body(st, datetime.now(timezone.utc), config.approvals_required,
                                eng.holds(), base)
    except ErasureError as exc:
        return _failure(request, exc, who)
    return _html(page(f"Request {st.request_id}", body, who, base))


@router.get("/requests/{request_id}/report.pdf")
def report_pdf(request_id: str, request: Request) -> Response:
    """The request's signed proof-of-erasure PDF, made now (a ledger checkpoint records it,
    by the caller); 409 while the request has not finished."""
    from ..errors import ErasureError
    from ..report import write_report
    from ..requests import load_state

    who = signed_in(request)
    if isinstance(who, Response):
        return who
    config = request.app.state.config
    if not _REQUEST_ID.match(request_id) or not config.has_ledger():
        return _message(request, "Not found", "The ledger holds no such request.", 404, who)
    try:
        with _Engine(request, who) as eng:
            st = load_state(eng.ledger, request_id)
            if not st.closed:
                return _message(request, "Not finished yet",
                                f"The request is {st.effective_status(config.approvals_required, eng.holds()).replace('_', ' ')}; "
                                "its report can be made once it has finished (completed, not "
                                "found or incomplete) or was rejected.", 409, who)
            with tempfile.TemporaryDirectory(prefix="erasure-report-") as tmp:
                out = Path(tmp) / "report.pdf"
                write_report(eng, st.request_id, out)
                data = out.read_bytes()
    except ErasureError as exc:
        return _failure(request, exc, who)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", st.request_id)
    return _secure(Response(data, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="erasure-report-{name}.pdf"'}))


def _login_form(request: Request, error: str = "", status: int = 200) -> Response:
    base = _base(request)
    err = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    body = ("<h1>Sign in</h1>"
            f'<form class="login" method="post" action="{base}/login">{err}'
            '<label for="token">Access token (a token with the auditor or operator role)'
            '</label><input id="token" name="token" type="password" autocomplete="off" '
            'required autofocus><button type="submit">Sign in</button></form>'
            '<p class="muted">The token is kept in an HttpOnly cookie for this browser session '
            'only.</p>')
    return _html(page("Sign in", body, None, base), status)


@router.get("/login")
def login_form(request: Request) -> Response:
    return _login_form(request)


def _cross_site(request: Request) -> bool:
    """A form posted from another site (the browser's Sec-Fetch-Site says so)."""
    site = request.headers.get("sec-fetch-site")
    return site is not None and site not in ("same-origin", "none")


LOGIN_BODY = 4096


@router.post("/login")
async def login(request: Request) -> Response:
    if _cross_site(request):
        return _login_form(request, "Sign in from this page.", 403)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return _login_form(request, "The sign-in form was not sent as a form.", 415)
    # a sign-in form is a token: read at most LOGIN_BODY bytes, however the body is sent
    # (the app checks Content-Length; a chunked body is counted here), before any token
    parts, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > LOGIN_BODY:
            return _login_form(request, "The sign-in form is too large.", 413)
        parts.append(chunk)
    raw = b"".join(parts)
    try:
        fields = parse_qs(raw.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return _login_form(request, "The sign-in form could not be read.", 400)
    token = (fields.get("token") or [""])[0].strip()
    config = request.app.state.config
    caller = auth.identify(config, token)
    if caller is None:
        return _login_form(request, "Unknown token.", 401)
    if not caller.roles & set(ROLES):
        return _login_form(request, f"The token {caller.name} has the roles "
                           f"{', '.join(sorted(caller.roles))}; the dashboard needs auditor "
                           "or operator.", 403)
    resp = RedirectResponse(f"{_base(request)}/", status_code=303)
    resp.set_cookie(auth.COOKIE, token, path="/", httponly=True, samesite="strict",
                    secure=bool(config.service.secure_cookie))
    return _secure(resp)


@router.get("/logout")
@router.post("/logout")
def logout(request: Request) -> Response:
    return _to_login(request, clear=True)
