"""Signing keys: a project-local root CA and a signer certificate (EC P-256), or an
organisation's own key and certificate.

Where the files are, in order: env ERASURE_SIGNING_KEY / ERASURE_SIGNING_CERT /
ERASURE_SIGNING_ROOT (paths), else `[signing] dir` from the config (default
`.erasure/signing`) holding `signer.key`, `signer.pem`, `root.pem` (and `root.key`, which
only `keys init` needs; keep it offline after that). Never in the repository.

With `[keys] provider = "vault"` there is no private key file: the root and signer keys are
ECDSA P-256 keys in Vault's Transit engine (`[keys] root_key`, `signer_key`), `keys init`
writes only the public `root.pem` and `signer.pem`, and reports and ledger checkpoints are
signed by Transit (`SigningFiles.transit`, erasure/vault.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENV = {"key": "ERASURE_SIGNING_KEY", "cert": "ERASURE_SIGNING_CERT", "root": "ERASURE_SIGNING_ROOT"}


@dataclass(frozen=True)
class SigningFiles:
    key: Path
    cert: Path
    root: Path
    # `[keys] provider = "vault"`: a TransitSigner, which signs with the Transit signer key
    # (then `key` is never read, and no key file exists)
    transit: Any = None

    def require(self) -> "SigningFiles":
        need: tuple[tuple[str, Path], ...] = (("signer certificate", self.cert),
                                              ("root certificate", self.root))
        if self.transit is None:
            need = (("signing key", self.key),) + need
        env = [v for k, v in ENV.items() if self.transit is None or k != "key"]
        for label, p in need:
            if not p.is_file():
                raise ConfigError(f"{label} not found at {p}: run `erasure keys init`, or set "
                                  f"{', '.join(env)}")
        return self


class TransitSigner:
    """Signs as the certificate `cert` says, with the Transit key `name`: the key version
    whose public key is the certificate's (checked once), ECDSA over SHA-256, DER."""

    def __init__(self, section: Any, cert: Path):
        self.section = section
        self.name: str = section.signer_key
        self.cert = cert
        self._signing: Any = None

    @property
    def signing(self) -> Any:
        if self._signing is None:
            from ..vault import TransitSigning

            self._signing = TransitSigning(self.section)
        return self._signing

    def sign(self, data: bytes, digest_algorithm: str = "sha256") -> bytes:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        spki = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        version = self.signing.key_version(self.name, spki)
        return self.signing.sign(self.name, data, digest_algorithm, version)


def signing_files(config) -> SigningFiles:
    d = config.signing_dir          # `[signing] dir`, resolved against the config's folder
    files = SigningFiles(Path(os.environ.get(ENV["key"], d / "signer.key")),
                         Path(os.environ.get(ENV["cert"], d / "signer.pem")),
                         Path(os.environ.get(ENV["root"], d / "root.pem")))
    section = getattr(config, "keys", None)
    if section is not None and section.provider == "vault":
        return SigningFiles(files.key, files.cert, files.root, TransitSigner(section, files.cert))
    return files


def fingerprint(pem_path: Path) -> str:
    """SHA-256 of the certificate's DER encoding, colon-separated (as viewers show it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def init_keys(directory: Path, organisation: str = "Erasure engine (project-local)",
              force: bool = False) -> dict[str, str]:
    """Create root CA and signer certificate. Refuses to overwrite unless `force`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    paths = {n: directory / n for n in ("root.key", "root.pem", "signer.key", "signer.pem")}
    if not force and any(p.exists() for p in paths.values()):
        raise ConfigError(f"signing keys already exist in {directory}; use --force to replace "
                          "them (reports signed before stay verifiable with the old root)")
    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def usage(**on) -> x509.KeyUsage:
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                     crl_sign=False, encipher_only=False, decipher_only=False)
        return x509.KeyUsage(**{**flags, **on})

    root_key = ec.generate_private_key(ec.SECP256R1())
    signer_key = ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder().subject_name(name("Erasure proof root CA"))
            .issuer_name(name("Erasure proof root CA")).public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    signer = (x509.CertificateBuilder().subject_name(name("Erasure proof signer"))
              .issuer_name(root.subject).public_key(signer_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=1825))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              # non-repudiation (content_commitment): pyHanko refuses signers without it
              .add_extension(usage(digital_signature=True, content_commitment=True), critical=True)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  root_key.public_key()), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                  signer_key.public_key()), critical=False)
              .sign(root_key, hashes.SHA256()))

    def write(path: Path, data: bytes, private: bool) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    write(paths["root.key"], root_key.private_bytes(pem, pkcs8, serialization.NoEncryption()), True)
    write(paths["signer.key"], signer_key.private_bytes(pem, pkcs8, serialization.NoEncryption()), True)
    write(paths["root.pem"], root.public_bytes(pem), False)
    write(paths["signer.pem"], signer.public_bytes(pem), False)
    return {"directory": str(directory), "root_fingerprint_sha256": fingerprint(paths["root.pem"]),
            **{k: str(v) for k, v in paths.items()}}


def init_vault_keys(files: SigningFiles, section: Any,
                    organisation: str = "Erasure engine (project-local)",
                    force: bool = False) -> dict[str, str]:
    """`keys init` with `[keys] provider = "vault"`: the Transit keys `root_key` and
    `signer_key` (ECDSA P-256, created when missing, never exportable), and two PUBLIC
    certificates built here and signed by Transit: `root.pem` (self-signed CA) and
    `signer.pem` (issued by the root), with the extensions `init_keys` gives them. No private
    key is written anywhere. Refuses to overwrite the certificates unless `force`."""
    from cryptography.hazmat.primitives import serialization

    from ..vault import TransitSigning

    paths = {"root.pem": files.root, "signer.pem": files.cert}
    if not force and any(p.exists() for p in paths.values()):
        raise ConfigError(f"signing certificates already exist ({files.root}, {files.cert}); "
                          "use --force to replace them (reports signed before stay verifiable "
                          "with the old root)")
    transit = TransitSigning(section)
    root_pub = serialization.load_pem_public_key(transit.ensure_key(section.root_key).encode())
    signer_pub = serialization.load_pem_public_key(transit.ensure_key(section.signer_key).encode())
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    root_spki, signer_spki = root_pub.public_bytes(der, spki), signer_pub.public_bytes(der, spki)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    def sign_root(tbs: bytes) -> bytes:
        return transit.sign(section.root_key, tbs, "sha256",
                            transit.key_version(section.root_key, root_spki))

    root = _certificate(organisation, "Erasure proof root CA", "Erasure proof root CA",
                        root_spki, root_spki, now, 3650, ca=True, sign=sign_root)
    signer = _certificate(organisation, "Erasure proof signer", "Erasure proof root CA",
                          signer_spki, root_spki, now, 1825, ca=False, sign=sign_root)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    for path, cert in ((files.root, root), (files.cert, signer)):
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(cert)
        tmp.replace(path)
    return {"directory": str(files.cert.parent), "provider": "vault", "vault": section.url,
            "root_key": f"{section.mount}/keys/{section.root_key}",
            "signer_key": f"{section.mount}/keys/{section.signer_key}",
            "root_fingerprint_sha256": fingerprint(files.root),
            "root.pem": str(files.root), "signer.pem": str(files.cert)}


def _certificate(organisation: str, cn: str, issuer_cn: str, spki_der: bytes,
                 issuer_spki_der: bytes, now: dt.datetime, days: int, ca: bool, sign) -> bytes:
    """A PEM X.509 v3 certificate built with asn1crypto, its TBSCertificate signed by `sign`
    (DER bytes -> DER ECDSA-with-SHA256 signature). Extensions as `init_keys` sets them: a
    CA (basicConstraints ca, path length 0; keyCertSign and cRLSign) or an end entity
    (digitalSignature and nonRepudiation, pyHanko refuses a signer without it), key ids."""
    import secrets

    from asn1crypto import keys as akeys  # type: ignore[import-untyped]
    from asn1crypto import pem as apem
    from asn1crypto import x509 as ax

    def name(common: str) -> Any:
        return ax.Name.build({"organization_name": organisation, "common_name": common})

    def when(t: dt.datetime) -> Any:
        return ax.Time({"utc_time": t} if t.year < 2050 else {"general_time": t})

    spki = akeys.PublicKeyInfo.load(spki_der)
    issuer_spki = akeys.PublicKeyInfo.load(issuer_spki_der)
    extensions = [
        {"extn_id": "basic_constraints", "critical": True,
         "extn_value": {"ca": True, "path_len_constraint": 0} if ca else {"ca": False}},
        {"extn_id": "key_usage", "critical": True,
         "extn_value": {"key_cert_sign", "crl_sign"} if ca
         else {"digital_signature", "non_repudiation"}},
    ]
    if not ca:
        extensions.append({"extn_id": "authority_key_identifier", "critical": False,
                           "extn_value": {"key_identifier": issuer_spki.sha1}})
    extensions.append({"extn_id": "key_identifier", "critical": False,
                       "extn_value": spki.sha1})
    tbs = ax.TbsCertificate({
        "version": "v3",
        "serial_number": int.from_bytes(secrets.token_bytes(19), "big") >> 1 or 1,
        "signature": {"algorithm": "sha256_ecdsa"},
        "issuer": name(issuer_cn),
        "validity": {"not_before": when(now - dt.timedelta(minutes=5)),
                     "not_after": when(now + dt.timedelta(days=days))},
        "subject": name(cn),
        "subject_public_key_info": spki,
        "extensions": extensions,
    })
    cert = ax.Certificate({"tbs_certificate": tbs,
                           "signature_algorithm": {"algorithm": "sha256_ecdsa"},
                           "signature_value": sign(tbs.dump())})
    return apem.armor("CERTIFICATE", cert.dump())


def sign_bytes(files: SigningFiles, data: bytes) -> str:
    """Detached signature (ECDSA P-256/SHA-256, or RSA PKCS#1 v1.5) as hex; made by Vault's
    Transit signer key when `files.transit` is set."""
    if files.transit is not None:
        return files.transit.sign(data).hex()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256())).hex()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256()).hex()
    raise ConfigError("the signing key must be EC or RSA")


def verify_bytes(cert_pem: Path, data: bytes, signature_hex: str) -> bool:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    pub = x509.load_pem_x509_certificate(cert_pem.read_bytes()).public_key()
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(bytes.fromhex(signature_hex), data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(bytes.fromhex(signature_hex), data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
        return True
    except (InvalidSignature, ValueError):
        return False
