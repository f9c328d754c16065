"""Evidence: the canonical, machine-readable record of one request, rebuilt from the ledger.

The same function builds the evidence embedded in a signed report and the evidence a
verifier rebuilds from the ledger to compare, so they match byte for byte when nothing was
tampered with. It holds no personal data: the subject appears only as its keyed HMAC.

Its bytes are RFC 8785 canonical JSON (`erasure.canonical`), and its `format` says so:
"erasure-evidence/3", which adds a `governance` block (who submitted, approved, ran and
rejected the request, its approvals, extensions and the legal holds on its subject; see
`governance_block`). "erasure-evidence/2" is the same without that block; reports written
before RFC 8785 carry "erasure-evidence/1", whose bytes were Python's sorted `json.dumps`. A
verifier rebuilds the evidence in the format the report records (`in_format` drops what the
older formats did not have, `evidence_bytes` follows the `format` field), so all keep
verifying.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .canonical import canonical_bytes, legacy_canonical_v2
from .errors import ErasureFailed
from .ledger import GENESIS, Ledger
from .requests import fold

FORMAT = "erasure-evidence/3"          # RFC 8785 bytes, with the governance block
V2_FORMAT = "erasure-evidence/2"       # RFC 8785 bytes, no governance block
LEGACY_FORMAT = "erasure-evidence/1"   # Python's sorted json.dumps (default=str): verify only
FORMATS = (FORMAT, V2_FORMAT, LEGACY_FORMAT)
# formats whose evidence has a `governance` block
GOVERNANCE_FORMATS = (FORMAT,)


def _checkpoint_bytes(cp: dict[str, Any], entry_format: str = "3") -> bytes:
    """What a signed checkpoint's signature covers: {"entries", "head_hash"} in the canonical
    JSON of the ledger entry that records it (both forms give the same bytes for it)."""
    data = {"entries": cp["entries"], "head_hash": cp["head_hash"]}
    return canonical_bytes(data) if entry_format == "3" else legacy_canonical_v2(data).encode()


def checkpoint(ledger: Ledger, upto: int | None = None) -> dict[str, Any]:
    """Entry count and chain hash at `upto` (default: the head). Refuses a ledger that does
    not verify: a keyed hash that does not match (an edited or forged entry), a missing
    entry, or a chain that does not reach its signed head anchor (truncated)."""
    ok, n, problem = ledger.verify_chain()
    if not ok:
        raise ErasureFailed(f"the ledger does not verify ({problem}); no evidence is built "
                            "from a broken ledger")
    upto = n if upto is None else upto
    if upto > n:
        raise ErasureFailed(f"the ledger has {n} entries, fewer than the checkpoint's {upto}")
    row = ledger.db.execute("SELECT hash FROM entries WHERE seq = ?", (upto,)).fetchone()
    return {"entries": upto, "head_hash": row[0] if row else GENESIS}


def signed_checkpoint(ledger: Ledger, files, cp: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append a signed checkpoint (entry count and head hash, signed with the report key)
    to the ledger itself: a later rewrite of the chain from an earlier entry on no longer
    matches a checkpoint the attacker cannot re-sign without the key. `cp`: a checkpoint
    just taken by `checkpoint` (saves verifying the chain again), default the head now."""
    from .report.keys import fingerprint, sign_bytes

    cp = checkpoint(ledger) if cp is None else {"entries": cp["entries"],
                                                 "head_hash": cp["head_hash"]}
    body = {**cp, "signer_fingerprint_sha256": fingerprint(files.cert)}
    body["signature"] = sign_bytes(files, _checkpoint_bytes(cp))
    ledger.append(None, "ledger.checkpoint", body)
    return body


def verify_checkpoints(ledger: Ledger, cert_pem) -> list[str]:
    """Problems with the signed checkpoints recorded in the ledger (empty when all hold)."""
    from .report.keys import verify_bytes

    problems = []
    for e in ledger.entries_of_kind("ledger.checkpoint"):
        cp = {"entries": e.body["entries"], "head_hash": e.body["head_hash"]}
        at = GENESIS if cp["entries"] == 0 else ledger.hash_at(cp["entries"])
        if at != cp["head_hash"]:
            problems.append(f"checkpoint at entry {e.seq} does not match the chain at entry "
                            f"{cp['entries']}")
        elif cert_pem is not None and not verify_bytes(
                cert_pem, _checkpoint_bytes(cp, ledger.entry_format(e.seq)), e.body["signature"]):
            problems.append(f"checkpoint at entry {e.seq} has a signature that does not verify")
    return problems


def build_evidence(ledger: Ledger, request_id: str, upto: int | None = None,
                   format: str = FORMAT) -> dict[str, Any]:
    """The evidence of `request_id` at checkpoint `upto` (default: the head). `format`: the
    evidence format to record, default the current one; a verifier passes the format of the
    report it checks."""
    if format not in FORMATS:
        raise ErasureFailed(f"unknown evidence format {format!r}; this version reads "
                            f"{', '.join(FORMATS)}")
    cp = checkpoint(ledger, upto)
    entries = [e for e in ledger.require(request_id) if e.seq <= cp["entries"]]
    st = fold(entries)
    first = entries[0].body
    steps = []
    for e in entries:
        if e.kind.startswith("step."):
            b = dict(e.body)
            steps.append({"seq": e.seq, "ts": e.ts, "kind": e.kind, **b})
    histories = []
    for e in ledger.entries_of_kind("table.history", cp["entries"]):
        if request_id in e.body.get("requests", []):
            histories.append({"seq": e.seq, "target": e.body["target"],
                              "history": e.body["history"]})
    finished = next((e for e in reversed(entries)
                     if e.kind in ("request.completed", "request.failed")), None)
    evidence = {
        "format": format,
        "request": {"request_id": request_id, "received_at": first["received_at"],
                    "deadline": first["deadline"], "requested_by": first.get("requested_by"),
                    "reason": first.get("reason"), "legal_basis": first.get("legal_basis"),
                    "status": st.status,
                    "finished_at": finished.ts if finished else None},
        "subject": {"hmac": st.subject_hmac, "scheme": "HMAC-SHA256 under a key held apart"},
        "plan": st.plan.to_json() if st.plan else None,
        "steps": steps,
        "table_history": histories,
        "ledger_checkpoint": cp,
        "request_entries": [e.seq for e in entries],
    }
    if format in GOVERNANCE_FORMATS:
        evidence["governance"] = governance_block(ledger, entries, st, cp["entries"])
    return evidence


def governance_block(ledger: Ledger, entries: list, st: Any, upto: int) -> dict[str, Any]:
    """Who acted on the request and what governed it, from the ledger up to seq `upto` only
    (the request's entries `entries`, folded into `st`, and the ledger-wide hold entries):
    never from the configuration, never from a later entry, so a verifier rebuilds the same.

    - actors: submitted_by (the submission's actor); approved_by (the distinct approvers,
      not the submitter, of the plan that ran: whose approval's plan_digest is the digest of
      the latest recorded plan's view, `erasure.approvals`); ran_by (the actor of the
      request's completion entry, else of its latest plan); rejected_by;
    - ran: that entry's seq, time and kind;
    - plan_digest: that digest (None when no plan was recorded);
    - approvals, each with `counted` (it is one of approved_by's, first per actor);
      approval_stale: each time a run found the plan changed since it was approved;
    - rejection, extensions (who, when, why, the deadline before and after);
    - holds on the subject (its HMAC or an identity's among the hold's): who placed and
      released each and when, its reason, scope and last day. Never the hold's HMACs, nor
      its release reason (recorded without knowing whose data it is, so never checked for
      the person's id), nor its status today (that changes with the date).

    The plan's exempt, deferred and held datasets and the policy that decided them are in
    evidence["plan"]; the actor of every step is in evidence["steps"]."""
    from .approvals import plan_view, view_digest
    from .holds import HoldBook, request_hmacs

    submitted_by = entries[0].body.get("actor")
    plan_entry = next((e for e in reversed(entries) if e.kind == "plan.recorded"), None)
    digest = view_digest(plan_view(plan_entry.body["plan"])) if plan_entry else None
    completed = next((e for e in reversed(entries) if e.kind == "request.completed"), None)
    ran = completed or plan_entry
    approvals, approved_by = [], []
    for e in entries:
        if e.kind != "request.approved":
            continue
        who = e.body.get("actor")
        counted = (digest is not None and e.body["plan_digest"] == digest and who is not None
                   and who != submitted_by and who not in approved_by)
        if counted:
            approved_by.append(who)
        approvals.append({"seq": e.seq, "actor": who, "at": e.ts,
                          "plan_digest": e.body["plan_digest"], "counted": counted})
    stale = [{"seq": e.seq, "at": e.ts, "approved": e.body.get("approved"),
              "current": e.body.get("current")}
             for e in entries if e.kind == "request.approval_stale"]
    rejected = next((e for e in reversed(entries) if e.kind == "request.rejected"), None)
    extensions = [{"seq": e.seq, "actor": e.body.get("actor"), "at": e.ts,
                   "deadline_before": e.body["deadline_before"], "deadline": e.body["deadline"],
                   "months": e.body.get("months"), "reason": e.body["reason"]}
                  for e in entries if e.kind == "request.extended"]
    mine = request_hmacs(st.subject_hmac, st.identities)
    seqs = {(e.kind, e.body["hold_id"]): e.seq
            for kind in ("hold.added", "hold.released")
            for e in ledger.entries_of_kind(kind, upto) if e.request_id is None}
    holds = [{"hold_id": h.hold_id, "reason": h.reason, "scope": h.scope, "until": h.until,
              "added_seq": seqs.get(("hold.added", h.hold_id)), "added_at": h.added_at,
              "added_by": h.added_by,
              "released_seq": seqs.get(("hold.released", h.hold_id))
              if h.released_at is not None else None,
              "released_at": h.released_at, "released_by": h.released_by}
             for h in HoldBook.load(ledger, upto).holds.values() if h.hmacs & mine]
    return {
        "actors": {"submitted_by": submitted_by, "approved_by": approved_by,
                   "ran_by": ran.body.get("actor") if ran else None,
                   "rejected_by": rejected.body.get("actor") if rejected else None},
        "ran": {"seq": ran.seq, "at": ran.ts, "kind": ran.kind} if ran else None,
        "plan_digest": digest,
        "approvals": approvals,
        "approval_stale": stale,
        "rejection": ({"seq": rejected.seq, "actor": rejected.body.get("actor"),
                       "at": rejected.ts, "reason": rejected.body["reason"]}
                      if rejected else None),
        "extensions": extensions,
        "holds": holds,
    }


def in_format(evidence: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The evidence as format `fmt` records it: the formats before "erasure-evidence/3" have
    no `governance` block (a verifier rebuilding a /2 report compares without it)."""
    out = {**evidence, "format": fmt}
    if fmt not in GOVERNANCE_FORMATS:
        out.pop("governance", None)
    return out


def evidence_bytes(evidence: dict[str, Any]) -> bytes:
    """The canonical bytes of the evidence, in the scheme its `format` names: RFC 8785 for
    "erasure-evidence/3" and "/2", the old form for "erasure-evidence/1" (reports written
    before)."""
    fmt = evidence.get("format")
    if fmt in (FORMAT, V2_FORMAT):
        return canonical_bytes(evidence)
    if fmt == LEGACY_FORMAT:
        return legacy_canonical_v2(evidence).encode("utf-8")
    raise ErasureFailed(f"unknown evidence format {fmt!r}; this version reads {', '.join(FORMATS)}")


def evidence_matches(embedded_bytes: bytes, embedded: dict[str, Any],
                     rebuilt: dict[str, Any]) -> bool:
    """The embedded evidence (its bytes as signed, and parsed) is byte for byte the canonical
    form of the evidence rebuilt from the ledger, in the format the embedded evidence records
    (the rebuilt evidence is expressed in that format first, `in_format`: /1 and /2 differ
    in how the bytes are made, /3 adds the governance block). A rebuilt evidence of an older
    format than the embedded one lacks what that format records, and does not match."""
    fmt = embedded.get("format")
    if fmt not in FORMATS:
        raise ErasureFailed(f"the report's evidence has an unknown format {fmt!r}; this "
                            f"version reads {', '.join(FORMATS)}")
    return evidence_bytes(in_format(rebuilt, fmt)) == embedded_bytes


def evidence_digest(evidence: dict[str, Any]) -> str:
    return hashlib.sha256(evidence_bytes(evidence)).hexdigest()
