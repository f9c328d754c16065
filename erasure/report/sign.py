"""Embed the evidence, sign (PAdES, pyHanko), and verify a report check by check."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .keys import SigningFiles, fingerprint

EVIDENCE_NAME = "evidence.json"


def sign_report(unsigned: Path, evidence: bytes, files: SigningFiles, out: Path) -> None:
    from pyhanko.pdf_utils import embed
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    signer: signers.Signer | None
    if files.transit is not None:
        signer = _transit_signer(files)
    else:
        signer = signers.SimpleSigner.load(str(files.key), str(files.cert),
                                           ca_chain_files=(str(files.root),))
    if signer is None:
        from ..errors import ConfigError
        raise ConfigError(f"cannot load the signing key {files.key} with {files.cert}")
    with open(unsigned, "rb") as inf:
        w = IncrementalPdfFileWriter(inf)
        ef = embed.EmbeddedFileObject.from_file_data(w, data=evidence, mime_type="application/json")
        embed.embed_file(w, embed.FileSpec(
            file_spec_string=EVIDENCE_NAME, file_name=EVIDENCE_NAME, embedded_data=ef,
            description="Canonical JSON evidence of the erasure (no personal data)"))
        meta = signers.PdfSignatureMetadata(
            field_name="ProofOfErasure", subfilter=fields.SigSeedSubFilter.PADES,
            md_algorithm="sha256", reason="GDPR Article 17 proof of erasure")
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "wb") as outf:
            signers.sign_pdf(w, meta, signer=signer, output=outf)
    tmp.replace(out)


# the largest DER ECDSA P-256 signature: what a dry run reserves room for
_ECDSA_P256_MAX_DER = 72


def _transit_signer(files: SigningFiles):
    """A pyHanko Signer whose raw signature comes from Vault's Transit signer key
    (`files.transit`, erasure/report/keys.py TransitSigner). pyHanko hands `async_sign_raw`
    the DER of the CMS signed attributes (not a digest) and the digest algorithm; the
    TransitSigner hashes them and Transit signs the digest (prehashed), returning the DER
    ECDSA signature `SimpleSigner` would. The certificates are the public ones on disk."""
    from pyhanko.keys import load_cert_from_pemder
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    class TransitPdfSigner(signers.Signer):
        def __init__(self) -> None:
            store = SimpleCertificateStore()
            store.register_multiple([load_cert_from_pemder(str(files.root))])
            super().__init__(signing_cert=load_cert_from_pemder(str(files.cert)),
                             cert_registry=store)

        async def async_sign_raw(self, data: bytes, digest_algorithm: str,
                                 dry_run: bool = False) -> bytes:
            if dry_run:
                return bytes(_ECDSA_P256_MAX_DER)
            return files.transit.sign(data, digest_algorithm)

    return TransitPdfSigner()


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False


@dataclass
class ReportVerification:
    checks: list[Check] = field(default_factory=list)
    evidence: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail,
                                           "skipped": c.skipped} for c in self.checks],
                "request_id": (self.evidence or {}).get("request", {}).get("request_id")}


@contextmanager
def _quiet_pyhanko() -> Iterator[None]:
    """pyHanko and its certificate validator log expected failures (an untrusted or
    corrupted signature) as warnings with a traceback; with no logging configured Python
    prints them to stderr. While verifying, the verdict is in the named checks."""
    import logging

    logs = [logging.getLogger(n) for n in ("pyhanko", "pyhanko_certvalidator")]
    before = [log.disabled for log in logs]
    for log in logs:
        log.disabled = True
    try:
        yield
    finally:
        for log, was in zip(logs, before):
            log.disabled = was


def _signature_problem(exc: Exception) -> str:
    """What a pyHanko exception on a signature means, in words (its class names the
    library's internals, not what is wrong with the report)."""
    from pyhanko.sign.validation.errors import SignatureValidationError

    if isinstance(exc, SignatureValidationError):
        return f"the signature could not be validated: {exc.failure_message}"
    first = str(exc).strip().splitlines()[0] if isinstance(exc, ValueError) and str(exc).strip() else ""
    return ("the CMS signature could not be parsed, or is malformed (corrupted, or not a "
            "PAdES signature)"
            + (f": {first}" if first else ""))


def verify_report(path: Path, root_pem: Path | None, rebuild=None) -> ReportVerification:
    """Checks, in order, each named: the file parses; exactly one signature; it is intact
    and valid; it chains to the pinned root; it covers the whole file (no later incremental
    update); the embedded evidence is there and parses; and, when `rebuild` is given (a
    function from the evidence to the evidence rebuilt from the ledger), that they match.
    A corrupted signature fails `signature-valid` with a detail naming the problem."""
    with _quiet_pyhanko():
        return _verify_report(path, root_pem, rebuild)


def _verify_report(path: Path, root_pem: Path | None, rebuild) -> ReportVerification:
    from pyhanko.keys import load_cert_from_pemder
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    rep = ReportVerification()
    try:
        f = open(path, "rb")
    except OSError as exc:
        rep.add("file", False, str(exc))
        return rep
    with f:
        try:
            reader = PdfFileReader(f, strict=False)
            reader.root
        except Exception as exc:
            rep.add("pdf-structure", False, f"not a readable PDF: {type(exc).__name__}: {exc}")
            return rep
        rep.add("pdf-structure", True)
        try:
            sigs = reader.embedded_signatures
        except Exception as exc:
            # the signature dictionary is there but its CMS blob does not parse
            from pyhanko.sign.fields import enumerate_sig_fields

            try:
                n = sum(1 for _ in enumerate_sig_fields(reader, filled_status=True))
            except Exception:
                n = None
            if n is not None and not rep.add("signature-present", n == 1, f"{n} signatures"):
                return rep
            rep.add("signature-valid", False, _signature_problem(exc))
            return rep
        if not rep.add("signature-present", len(sigs) == 1, f"{len(sigs)} signatures"):
            return rep
        roots = [load_cert_from_pemder(str(root_pem))] if root_pem and root_pem.is_file() else []
        try:
            status = validate_pdf_signature(sigs[0], ValidationContext(trust_roots=roots))
        except Exception as exc:
            rep.add("signature-valid", False, _signature_problem(exc))
            return rep
        rep.add("signature-intact", bool(status.intact),
                "the signed bytes match the signature" if status.intact else
                "the signed bytes were changed after signing")
        rep.add("signature-valid", bool(status.valid), "cryptographically valid"
                if status.valid else "the signature does not verify")
        # judged on the certificate path alone: pyHanko's `trusted` also turns false when
        # the digest does not match, which would blame the signer for an edited document
        chain_ok = (bool(roots) and getattr(status, "trust_problem_indic", None) is None
                    and getattr(status, "validation_path", None) is not None)
        rep.add("signer-trusted", chain_ok,
                f"chains to the pinned root {fingerprint(root_pem)}" if chain_ok and root_pem
                else "does not chain to the pinned root" if roots else "no root certificate given")
        rep.add("covers-whole-file", status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
                f"coverage {status.coverage.name if status.coverage else 'unknown'}")
        try:
            # the evidence as signed: read from the signed revision, not a later one
            root = reader.get_historical_root(sigs[0].signed_revision)
            names = root["/Names"]["/EmbeddedFiles"]["/Names"]
            data = None
            for i in range(0, len(names), 2):
                if str(names[i]) == EVIDENCE_NAME:
                    data = names[i + 1].get_object()["/EF"]["/F"].get_object().data
            if data is None:
                raise KeyError(EVIDENCE_NAME)
            data = bytes(data)
            rep.evidence = json.loads(data)
            rep.add("evidence-embedded", True, f"{len(data)} bytes")
        except Exception as exc:
            rep.add("evidence-embedded", False, f"no readable {EVIDENCE_NAME}: {exc}")
            return rep
    if rebuild is None:
        rep.add("evidence-matches-ledger", True, "skipped: no ledger available here; only the "
                "PDF and its signature were checked")
        rep.checks[-1].skipped = True
    else:
        from ..evidence import evidence_matches

        try:
            expected = rebuild(rep.evidence)
            # byte for byte, in the canonical scheme the report's evidence records
            same = evidence_matches(data, rep.evidence, expected)
            rep.add("evidence-matches-ledger", same, "identical to the evidence rebuilt from "
                    "the ledger at the report's checkpoint" if same else
                    "differs from the evidence rebuilt from the ledger")
        except Exception as exc:
            rep.add("evidence-matches-ledger", False, f"{type(exc).__name__}: {exc}")
    return rep
