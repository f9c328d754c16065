"""Signed proof-of-erasure reports: keys, the PDF, signing and verification.

reportlab and pyHanko are imported only inside these modules' functions."""


def write_report(eng, request_id: str, output) -> dict:
    """Write request `request_id`'s signed proof-of-erasure PDF to `output` (a Path) and
    record the report's signed ledger checkpoint; what `erasure report --json` prints.
    Refuses a ledger that does not verify (an entry whose keyed hash does not match, a
    missing entry, a chain that does not reach its head anchor)."""
    import tempfile
    from pathlib import Path

    from ..evidence import build_evidence, evidence_bytes, signed_checkpoint
    from .keys import fingerprint, signing_files
    from .pdf import render
    from .sign import sign_report

    files = signing_files(eng.config).require()
    evidence = build_evidence(eng.ledger, request_id)
    with tempfile.TemporaryDirectory() as tmp:
        unsigned = Path(tmp) / "unsigned.pdf"
        render(evidence, fingerprint(files.root), unsigned)
        sign_report(unsigned, evidence_bytes(evidence), files, Path(output))
    # the report's state, signed into the ledger too (the chain was verified just above)
    signed_checkpoint(eng.ledger, files, evidence["ledger_checkpoint"])
    return {"report": str(output), "request_id": request_id,
            "ledger_checkpoint": evidence["ledger_checkpoint"],
            "root_fingerprint_sha256": fingerprint(files.root)}
