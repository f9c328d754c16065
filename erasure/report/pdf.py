"""The proof-of-erasure PDF (reportlab): page one answers the auditor's question, then the
lineage picture, then one table per kind of system, then what remains and why.

Everything that differs by system (kind labels, action, colour, the table's cells) comes
from the connector's `Presentation` (connectors/base.py), looked up by the connector name
recorded in the evidence; a name no installed connector has gets `Presentation.default`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from connectors.base import Presentation, last_parts

GREY = "#9a9a9a"   # out of scope, unresolved


def _steps(evidence: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for s in evidence["steps"]:
        if s["kind"] in ("step.completed", "step.failed"):
            out[(s["target"], s["phase"])] = s
    return out


def _verified(step: dict[str, Any]) -> bool:
    """Verified means checked in full and clean: a part that could not be looked at
    (`not_verified`) is never reported as verified."""
    return step.get("kind") == "step.completed" and not step.get("not_verified")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _key(t: dict[str, Any]) -> str:
    from erasure.planning import target_key

    return target_key(t)


def lineage_drawing(evidence: dict[str, Any], width: float,
                    shown: Mapping[str, Presentation] | None = None):
    """Systems the subject's data reached, left to right from the roots. One box per
    system (a model trained on two datasets is one box with two incoming edges)."""
    from reportlab.graphics.shapes import Drawing, Line, Rect, String
    from reportlab.lib import colors

    shown = shown or {}
    plan = evidence["plan"] or {"targets": [], "out_of_scope": [], "unresolved": []}
    kind_of: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    for t in plan["targets"]:
        kind_of.setdefault(t["name"], t["connector"])
        src = (t.get("derived_from") or {}).get("name")
        if src:
            edges.add((src, t["name"]))
    for kind, items in (("out of scope", plan.get("out_of_scope", [])),
                        ("unresolved", plan.get("unresolved", []))):
        for u in items:
            kind_of.setdefault(u["name"], kind)
    parents: dict[str, set[str]] = {}
    for a, b in edges:
        if a in kind_of:
            parents.setdefault(b, set()).add(a)
    depth: dict[str, int] = {}

    def d(n: str, seen: frozenset = frozenset()) -> int:
        if n not in depth:
            ps = [p for p in parents.get(n, ()) if p not in seen]
            depth[n] = 1 + max((d(p, seen | {n}) for p in ps), default=-1)
        return depth[n]

    for n, k in kind_of.items():
        if k in ("out of scope", "unresolved"):
            depth[n] = 1   # hangs off a root's level; its reason is in the last section
        d(n)
    per_col: dict[int, list[str]] = {}
    for n in kind_of:
        per_col.setdefault(depth[n], []).append(n)
    cols = max(per_col, default=0) + 1
    box_w, box_h, gap = min(150, (width - 20) / cols - 18), 30, 12
    rows = max((len(v) for v in per_col.values()), default=1)
    height = rows * (box_h + gap) + 30
    drawing = Drawing(width, height)
    pos = {}
    for c, items in per_col.items():
        for i, n in enumerate(items):
            x = 10 + c * (width - 20) / cols
            y = height - 20 - (i + 1) * (box_h + gap) + gap
            pos[n] = (x, y)
            kind = kind_of[n]
            fill = colors.HexColor(shown[kind].color if kind in shown else GREY)
            drawing.add(Rect(x, y, box_w, box_h, rx=4, ry=4, fillColor=fill, strokeColor=fill))
            drawing.add(String(x + 5, y + box_h - 12, last_parts(n)[:30],
                               fontName="Helvetica-Bold", fontSize=7, fillColor=colors.white))
            drawing.add(String(x + 5, y + 5, kind, fontName="Helvetica", fontSize=6.5,
                               fillColor=colors.white))
    for a, b in sorted(edges):
        if a in pos and b in pos:
            (px, py), (x, y) = pos[a], pos[b]
            drawing.add(Line(px + box_w, py + box_h / 2, x, y + box_h / 2,
                             strokeColor=colors.HexColor("#555555"), strokeWidth=0.8))
    return drawing



def _short(digest: str | None, n: int = 19) -> str:
    """A digest shortened for a table cell ("sha256:" and the first 12 hex digits)."""
    return "-" if not digest else digest if len(digest) <= n else digest[:n] + "…"


def _at(ts: str | None) -> str:
    """A ledger time for a table cell: to the second, "+00:00" dropped (the column says UTC)."""
    if not ts:
        return "-"
    if ts.endswith("+00:00"):
        ts = ts[:-6]
    return ts.split(".")[0].replace("T", " ")


def accountability_rows(evidence: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(action, by, at, ledger entry, details) for the Accountability section, in ledger
    order, from the evidence's governance block (formats before erasure-evidence/3 have
    none: no rows)."""
    gov = evidence.get("governance")
    if gov is None:
        return []
    req = evidence["request"]
    actors = gov["actors"]
    first = (evidence.get("request_entries") or [0])[0]
    rows: list[tuple[int, str, str | None, str | None, str]] = [
        (first, "Submitted", actors["submitted_by"], req["received_at"], "")]
    for h in gov["holds"]:
        rows.append((h["added_seq"] or 0, "Legal hold placed", h["added_by"], h["added_at"],
                     f"{h['hold_id']}: {h['reason']} (scope {h['scope']}"
                     + (f", until {h['until']}" if h["until"] else "") + ")"))
        if h["released_at"]:
            rows.append((h["released_seq"] or 0, "Legal hold released", h["released_by"],
                         h["released_at"], h["hold_id"]))
    for x in gov["extensions"]:
        rows.append((x["seq"], "Deadline extended", x["actor"], x["at"],
                     f"{x['deadline_before']} to {x['deadline']}"
                     + (f" ({x['months']} months)" if x.get("months") else "")
                     + f": {x['reason']}"))
    for a in gov["approvals"]:
        rows.append((a["seq"], "Approved", a["actor"], a["at"],
                     f"plan {_short(a['plan_digest'])}: "
                     + ("counted (the plan that ran)" if a["counted"] else
                        "not counted (the submitter, a repeat, or not the plan that ran)")))
    for x in gov["approval_stale"]:
        rows.append((x["seq"], "Approval outdated", None, x["at"],
                     f"a run found plan {_short(x['current'])}, not the approved "
                     f"{_short(x['approved'])}; approvals of the earlier plan stopped counting"))
    if gov["rejection"]:
        r = gov["rejection"]
        rows.append((r["seq"], "Rejected", r["actor"], r["at"], r["reason"]))
    ran = gov.get("ran")
    if ran:
        rows.append((ran["seq"], "Ran the erasure", actors["ran_by"], ran["at"],
                     (f"the run that finished the request ({req['status']})"
                      if ran["kind"] == "request.completed" else
                      "the run that recorded the latest plan (the request is not finished)")
                     + "; each step in the tables above records its own actor"))
    rows.sort(key=lambda r: r[0])
    return [(action, who or "-", _at(at), str(seq) if seq else "-", details)
            for seq, action, who, at, details in rows]


def _table(small, head: list[str], data: list, widths: list[float]):
    """A grid with a header row; every cell's text escaped; `widths` in mm."""
    from reportlab.lib import colors
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Table, TableStyle

    t = Table([[Paragraph(f"<b>{h}</b>", small) for h in head]]
              + [[Paragraph(_esc(str(c)), small) for c in row] for row in data],
              colWidths=[w * mm for w in widths], repeatRows=1)
    t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#bbbbbb")),
                           ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef6")),
                           ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return t


def governance_story(evidence: dict[str, Any], body, small, h2) -> list:
    """The sections "Accountability" and "Exemptions and deferrals"."""
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Spacer

    def table(head: list[str], data: list, widths: list[float]):
        return _table(small, head, data, widths)

    plan = evidence["plan"] or {}
    gov = evidence.get("governance")
    story: list = [Spacer(1, 5 * mm), Paragraph("Accountability", h2)]
    if gov is None:
        story.append(Paragraph(
            f"This evidence ({_esc(str(evidence.get('format')))}) predates the accountability "
            "record; each ledger step below still names its actor.", small))
    else:
        actors = gov["actors"]
        approved = actors["approved_by"]
        counted = [a for a in gov["approvals"] if a["counted"]]
        lines = [f"<b>Submitted by</b> {_esc(actors['submitted_by'] or '-')}."]
        if gov["approvals"]:
            lines.append(
                f"<b>Approved by</b> {_esc(', '.join(approved) or 'nobody')}: {len(counted)} "
                f"approval(s) counted, of plan {_esc(gov['plan_digest'] or '-')} (the digest "
                f"of the plan that ran, over what it would erase and keep); "
                f"{len(gov['approvals']) - len(counted)} other approval(s) recorded.")
        else:
            lines.append("<b>Approved by</b>: no approval is recorded in the ledger up to "
                         "the checkpoint.")
        lines.append(f"<b>Ran by</b> {_esc(actors['ran_by'])}." if actors["ran_by"] else
                     "<b>Not run</b>: no plan was recorded.")
        if actors["rejected_by"]:
            lines.append(f"<b>Rejected by</b> {_esc(actors['rejected_by'])}.")
        holds = gov["holds"]
        lines.append(
            f"<b>Legal holds on the subject</b>: {len(holds)}"
            + (" (placed by " + ", ".join(sorted({_esc(h['added_by'] or '-') for h in holds}))
               + (", released by " + ", ".join(sorted({_esc(h['released_by'])
                                                      for h in holds if h['released_by']}))
                  if any(h["released_by"] for h in holds) else "") + ")" if holds else "")
            + f". <b>Deadline extensions</b>: {len(gov['extensions'])}.")
        story.append(Paragraph(" ".join(lines), body))
        story.append(Spacer(1, 2 * mm))
        story.append(table(["Action", "By", "At (UTC)", "Ledger entry", "Details"],
                           accountability_rows(evidence), [30, 20, 30, 14, 80]))
        step_actors = sorted({str(s.get("actor")) for s in evidence["steps"] if s.get("actor")})
        story.append(Paragraph(
            "Actors are the operator names the engine recorded on each ledger entry "
            "(ERASURE_ACTOR, else the operating-system user); the engine does not "
            "authenticate them. Steps recorded by: "
            + (_esc(", ".join(step_actors)) or "-") + ".", small))

    story += [Spacer(1, 5 * mm), Paragraph("Exemptions and deferrals", h2)]
    policy = plan.get("policy")
    story.append(Paragraph(
        (f"Decided by the policy {_esc(policy.get('source') or '-')}, hash "
         f"<font face='Courier'>{_esc(policy.get('hash') or '-')}</font>."
         if policy else "No policy was recorded with the plan." if evidence["plan"] else
         "No plan was recorded: the request did not run, so nothing was exempted, deferred or "
         "held by a plan."), small))
    story.append(Spacer(1, 1 * mm))
    exempt, deferred, held = plan.get("exempt") or [], plan.get("deferred") or [], \
        plan.get("held") or []
    if exempt:
        story.append(table(["Exempt dataset (kept)", "Legal basis", "Policy hash"],
                           [(x["name"], x.get("basis") or "-", _short(x.get("policy_hash")))
                            for x in exempt], [62, 78, 34]))
    else:
        story.append(Paragraph("<b>Exempt</b>: none. No dataset was kept under an exemption.",
                               small))
    if deferred:
        story.append(Spacer(1, 2 * mm))
        story.append(table(["Deferred dataset (erased later)", "Reason", "Policy hash"],
                           [(x["name"], x.get("basis") or "-", _short(x.get("policy_hash")))
                            for x in deferred], [62, 78, 34]))
    else:
        story.append(Paragraph("<b>Deferred</b>: none.", small))
    if held:
        story.append(Spacer(1, 2 * mm))
        story.append(table(["Held dataset (kept while held)", "Legal holds"],
                           [(x["name"], ", ".join(x.get("hold_ids") or []) or "-")
                            for x in held], [90, 84]))
    else:
        story.append(Paragraph("<b>Held</b>: none.", small))
    return story


# The control mapping (docs/proof-reports.md has the same table): (what, where in this
# report, where in the ledger).
CONTROL_ROWS = (
    ("Deletion performed",
     "The tables per kind of system: rows before and after, table versions, files and log "
     "entries purged (erase and purge steps, each with its time and actor)",
     "step.completed entries of phase erase and purge (rows deleted, version before and "
     "after); table.history copied before purges"),
    ("Deletion verified",
     "The Verified column and its time; systems that could not be verified, and residue that "
     "remains, with the reason and date, in \"What remains, and why\"",
     "step.completed entries of phase verify (residue, not_verified); later re-checks by "
     "erasure sweep (sweep.finding, sweep.completed), after this report's checkpoint"),
    ("Exceptions authorised",
     "\"Exemptions and deferrals\": each exempt or deferred dataset with its legal basis "
     "and the policy's hash and source, held datasets with their hold ids; legal holds and "
     "approvals in \"Accountability\"",
     "plan.recorded (exempt, deferred, held, policy); hold.added, hold.released; "
     "request.approved (plan digest)"),
    ("Accountability",
     "\"Accountability\": who submitted, approved (which plan digest), ran, rejected, "
     "extended the deadline, placed and released holds, with times",
     "the actor recorded on every ledger entry"),
    ("Record integrity",
     "The ledger checkpoint on page one; the PAdES signature over this document and its "
     "attached evidence.json",
     "the keyed HMAC-SHA256 hash chain and its head anchor (erasure ledger verify); the "
     "signed ledger.checkpoint entry; erasure verify-report rebuilds the evidence from the "
     "ledger at the checkpoint"),
)


def control_evidence_story(small, h2) -> list:
    """The section "Control evidence": CONTROL_ROWS with what the report does not show."""
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, Spacer

    return [
        Spacer(1, 5 * mm), Paragraph("Control evidence", h2),
        Paragraph(
            "Where this report and the ledger hold evidence toward two deletion controls: "
            "SOC 2 <b>CC6.5</b> (2017 Trust Services Criteria: protections over assets are "
            "discontinued only after the ability to read or recover data from them has been "
            "diminished and is no longer required) and ISO/IEC 27001:2022 Annex A "
            "<b>A.8.10</b> Information deletion (information stored in information systems, "
            "devices or other storage media is deleted when no longer required). It is "
            "evidence for one request; it does not certify either control, whose design and "
            "operation an auditor judges across requests, systems and time.", small),
        Spacer(1, 2 * mm),
        _table(small, ["Evidence of", "In this report", "In the ledger"],
               [list(r) for r in CONTROL_ROWS], [34, 70, 70]),
        Spacer(1, 2 * mm),
        Paragraph(
            "Not evidenced here: systems that never emitted lineage, copies made by hand, "
            "backups, snapshots and replicas outside the listed systems, and whether the "
            "recorded actors are who they say (the engine records the names it is given).",
            small)]


def render(evidence: dict[str, Any], root_fingerprint: str, out: Path,
           presentations: Mapping[str, Presentation] | None = None) -> None:
    """`presentations`: by connector name (default: every connector's, `connectors.presentations`)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (KeepTogether, PageBreak, Paragraph, SimpleDocTemplate,
                                    Spacer, Table, TableStyle)

    if presentations is None:
        from connectors import presentations as known

        presentations = known()
    shown = dict(presentations)
    for x in (evidence["plan"] or {"targets": []})["targets"]:
        shown.setdefault(x["connector"], Presentation.default(x["connector"]))
    ss = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=ss["Normal"], fontSize=9.5, leading=12.5)
    small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5)
    mono = ParagraphStyle("mono", parent=small, fontName="Courier")
    h1, h2 = ss["Title"], ss["Heading2"]
    req, plan = evidence["request"], evidence["plan"] or {"targets": []}
    steps = _steps(evidence)
    targets = plan["targets"]
    verified = [t for t in targets if _verified(steps.get((_key(t), "verify"), {}))]
    unchecked = {t["name"]: (steps.get((_key(t), "verify"), {}).get("not_verified")
                             or t.get("not_verified") or []) for t in targets}
    unchecked = {n: r for n, r in unchecked.items() if r}
    status = req["status"].upper().replace("_", " ")
    doc = SimpleDocTemplate(str(out), pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm,
                            topMargin=16 * mm, bottomMargin=16 * mm,
                            title=f"Proof of erasure {req['request_id']}",
                            author="erasure engine", subject="GDPR Article 17 proof of erasure",
                            creator="erasure engine", keywords=req["request_id"])
    story: list = [Paragraph("Proof of erasure (GDPR Article 17)", h1)]
    systems: dict[str, set[str]] = {}
    for t in targets:
        systems.setdefault(t["connector"], set()).add(t["name"])
    kinds = {k: len(v) for k, v in systems.items()}
    reach = ", ".join(f"{n} {shown[k].kinds if n > 1 else shown[k].kind}"
                      for k, n in kinds.items()) or "no system"
    n_systems = sum(kinds.values())
    n_verified = len({t["name"] for t in verified})
    verdict = (f"<b>{status}.</b> The subject's data reached {reach}. "
               f"{n_verified} of {n_systems} were verified erased"
               + "".join(f" ({shown[k].verdict_note})" for k in kinds if shown[k].verdict_note)
               + (f", last at {max(steps[(_key(t), 'verify')]['ts'] for t in verified)}."
                  if verified else ".")
               + (f" <b>{len(unchecked)} could not be verified</b> (see the last section)."
                  if unchecked else ""))
    if req["status"] == "not_found":
        verdict = (f"<b>{status}.</b> No data of the subject was found in any of the "
                   f"{n_systems} systems the subject's data could reach ({reach}); each was "
                   "searched and nothing needed erasing.")
    story += [Paragraph(verdict, body), Spacer(1, 4 * mm)]
    rows = [("Request", req["request_id"]), ("Status", status),
            ("Subject", f"HMAC-SHA256 (keyed) {evidence['subject']['hmac']}"),
            *[("Identity" if i["type"] is None else f"Identity: {_esc(i['type'])}",
               f"HMAC {i['hmac'][:32]}… ({_esc(i['source'])})")
              for i in plan.get("identities", [])],
            ("Received", req["received_at"]),
            ("Deadline (Art. 12(3): one month)", req["deadline"]),
            *[("Deadline extended (Art. 12(3))",
               f"to {x['deadline']} by {_esc(x['actor'] or '-')} on {x['at']}")
              for x in (evidence.get("governance") or {}).get("extensions", [])],
            ("Finished", req.get("finished_at") or "-"),
            ("Requested by", req.get("requested_by") or "-"),
            ("Legal basis", req.get("legal_basis") or "-"),
            ("Reason", req.get("reason") or "-"),
            ("Ledger checkpoint", f"{evidence['ledger_checkpoint']['entries']} entries, "
                                  f"chain head {evidence['ledger_checkpoint']['head_hash']}"),
            ("Signing root (SHA-256)", root_fingerprint)]
    t = Table([[Paragraph(f"<b>{k}</b>", small), Paragraph(str(v), mono if k in (
        "Subject", "Ledger checkpoint", "Signing root (SHA-256)") else small)] for k, v in rows],
        colWidths=[48 * mm, 126 * mm])
    t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#bbbbbb")),
                           ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f0f0f0")),
                           ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [t, Spacer(1, 4 * mm)]
    remaining = sorted({x["name"] for x in targets if x["residue_after"].get("remains")})
    story.append(Paragraph(
        "<b>What this document proves.</b> The engine found where the subject's data flowed "
        "(from the organisation's OpenLineage records), deleted it from each system listed "
        "below, removed leftover copies (old files, change data, log entries) where the table "
        "says so, and then checked each system again. Each step was written to an append-only, "
        "hash-chained ledger; the checkpoint above fixes the ledger state this report was built "
        "from. The subject appears only as a keyed HMAC: this document holds no identifier, "
        "e-mail address or phone number of the subject. The machine-readable evidence "
        "(<i>evidence.json</i>) is attached and covered by the digital signature.", body))
    kept = [(len(plan.get(k) or []), k) for k in ("exempt", "deferred", "held")]
    if any(n for n, _ in kept):
        story.append(Spacer(1, 2 * mm))
        story.append(Paragraph(
            "<b>Kept on purpose:</b> " + ", ".join(f"{n} dataset(s) {k}" for n, k in kept)
            + " (not erased by this request: see \"Exemptions and deferrals\", with the legal "
            "basis of each).", body))
    story.append(Spacer(1, 2 * mm))
    story.append(Paragraph(
        "<b>How to check it.</b> Open the signature panel of any PDF viewer, or run "
        "<font face='Courier'>pdfsig</font>: the signature must be valid and cover the whole "
        "document. Compare the signing root's fingerprint above with the one the organisation "
        "publishes. <font face='Courier'>erasure verify-report</font> also compares the "
        "attached evidence with the ledger.", body))
    if remaining or plan.get("unresolved") or unchecked:
        story.append(Spacer(1, 2 * mm))
        story.append(Paragraph(
            f"<b>Not covered:</b> {len(plan.get('unresolved', []))} unresolved dataset(s), "
            f"{len(unchecked)} system(s) not verified and "
            f"{len(remaining)} system(s) with residue that remains; see the last section.", body))

    story += [PageBreak(), Paragraph("Where the subject's data went", h2),
              Paragraph("Each box is a system the subject's data reached, from the datasets "
                        "where subject identifiers originate (left) to the copies, feature "
                        "views and models derived from them. Grey boxes were out of scope or "
                        "unresolved.", body), Spacer(1, 3 * mm),
              lineage_drawing(evidence, 174 * mm, shown)]

    for kind in dict.fromkeys([*presentations, *(x["connector"] for x in targets)]):
        pres = shown[kind]
        title = pres.kinds
        group = [x for x in targets if x["connector"] == kind]
        if not group:
            continue
        head = ["System", "Action", "Rows before / after", "Versions", "Residue", "Verified"]
        data = [[Paragraph(f"<b>{h}</b>", small) for h in head]]
        for x in group:
            er = steps.get((_key(x), "erase"), {})
            pu = steps.get((_key(x), "purge"), {})
            ve = steps.get((_key(x), "verify"), {})
            before, after, versions = pres.report_cells(x, er, pu, ve)
            residue = ("purged: " + ", ".join(f"{pu[k]} {k.replace('_', ' ')}" for k in
                                              ("files_removed", "log_files_removed") if pu.get(k))
                       if pu.get("kind") == "step.completed" and not pu.get("skipped") else
                       "; ".join(ve.get("residue") or []) or x["residue_after"].get("note", "-"))
            ok = _verified(ve)
            data.append([Paragraph(pres.short(x["name"]), small),
                         Paragraph(pres.action, small),
                         Paragraph(f"{before} / {after}", small),
                         Paragraph(versions, small), Paragraph(residue, small),
                         Paragraph(("<font color='#1a7f37'>yes</font> " if ok else
                                    "<font color='#b42318'>NOT VERIFIED</font> "
                                    if unchecked.get(x["name"]) else
                                    "<font color='#b42318'>NO</font> ") + str(ve.get("ts", "")), small)])
        tbl = Table(data, colWidths=[36 * mm, 30 * mm, 24 * mm, 26 * mm, 34 * mm, 24 * mm],
                    repeatRows=1)
        tbl.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#bbbbbb")),
                                 ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef6")),
                                 ("VALIGN", (0, 0), (-1, -1), "TOP")]))
        story += [Spacer(1, 5 * mm), KeepTogether([Paragraph(title, h2), tbl])]

    story += [Spacer(1, 5 * mm), Paragraph("What remains, and why", h2)]
    notes, said = [], set()
    for x in targets:
        ra = x["residue_after"]
        if ra.get("remains") and x["name"] not in said:
            said.add(x["name"])
            until = f" until {ra['until']}" if ra.get("until") else ""
            notes.append(f"<b>{shown[x['connector']].short(x['name'])}</b>: {', '.join(ra['remains'])}"
                         f"{until}. {ra.get('note', '')}")
    for n, reasons in unchecked.items():
        notes.append(f"<b>Not verified</b> {n}: " + "; ".join(_esc(r) for r in reasons))
    for u in plan.get("unresolved", []):
        notes.append(f"<b>Unresolved</b> {u['name']}: {u['reason']}")
    for u in plan.get("out_of_scope", []):
        notes.append(f"<b>Out of scope</b> {last_parts(u['name'])}: {u['reason']}")
    for u in plan.get("untouched", []):
        notes.append(f"<b>Not affected</b> {u['name']}: {u['reason']}")
    for u in plan.get("not_applicable", []):
        notes.append(f"<b>Not applicable</b> {_esc(last_parts(u['name']))}: {_esc(u['reason'])}")
    story += [Paragraph(n, small) for n in notes] or [Paragraph("Nothing.", small)]
    story += governance_story(evidence, body, small, h2)
    can = plan.get("connectors") or {}
    if can:   # recorded with the plan (plans from before have none)
        from connectors.base import ability_lines

        story += [Spacer(1, 5 * mm), Paragraph("What each system can and cannot do", h2)]
        for name, a in can.items():
            title = shown[name].kinds if name in shown else name
            story.append(Paragraph(f"<b>{_esc(title)}</b>: " + "; ".join(
                _esc(x) for x in ability_lines(a)) + ".", small))
    story += control_evidence_story(small, h2)
    doc.build(story)
