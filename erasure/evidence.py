"""Evidence: the canonical, machine-readable record of one request, rebuilt from the ledger.

The same function builds the evidence embedded in a signed report and the evidence a
verifier rebuilds from the ledger to compare, so they match byte for byte when nothing was
tampered with. It holds no personal data: the subject appears only as its keyed HMAC.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .errors import ErasureFailed
from .ledger import GENESIS, Ledger, canonical
from .requests import fold

FORMAT = "erasure-evidence/1"


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
    body["signature"] = sign_bytes(files, canonical(cp).encode())
    ledger.append(None, "ledger.checkpoint", body)
    return body


def verify_checkpoints(ledger: Ledger, cert_pem) -> list[str]:
    """Problems with the signed checkpoints recorded in the ledger (empty when all hold)."""
    from .report.keys import verify_bytes

    entries = ledger.entries()
    problems, hashes = [], {e.seq: e.hash for e in entries}
    for e in entries:
        if e.kind != "ledger.checkpoint":
            continue
        cp = {"entries": e.body["entries"], "head_hash": e.body["head_hash"]}
        if hashes.get(cp["entries"], GENESIS if cp["entries"] == 0 else None) != cp["head_hash"]:
            problems.append(f"checkpoint at entry {e.seq} does not match the chain at entry "
                            f"{cp['entries']}")
        elif cert_pem is not None and not verify_bytes(cert_pem, canonical(cp).encode(),
                                                       e.body["signature"]):
            problems.append(f"checkpoint at entry {e.seq} has a signature that does not verify")
    return problems


def build_evidence(ledger: Ledger, request_id: str, upto: int | None = None) -> dict[str, Any]:
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
    for e in ledger.entries():
        if e.seq > cp["entries"]:
            break
        if e.kind == "table.history" and request_id in e.body.get("requests", []):
            histories.append({"seq": e.seq, "target": e.body["target"],
                              "history": e.body["history"]})
    finished = next((e for e in reversed(entries)
                     if e.kind in ("request.completed", "request.failed")), None)
    evidence = {
        "format": FORMAT,
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
    return evidence


def evidence_bytes(evidence: dict[str, Any]) -> bytes:
    return canonical(evidence).encode("utf-8")


def evidence_digest(evidence: dict[str, Any]) -> str:
    return hashlib.sha256(evidence_bytes(evidence)).hexdigest()
