"""Signing keys: a project-local root CA and a signer certificate (EC P-256), or an
organisation's own key and certificate.

Where the files are, in order: env ERASURE_SIGNING_KEY / ERASURE_SIGNING_CERT /
ERASURE_SIGNING_ROOT (paths), else `[signing] dir` from the config (default
`.erasure/signing`) holding `signer.key`, `signer.pem`, `root.pem` (and `root.key`, which
only `keys init` needs; keep it offline after that). Never in the repository.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

ENV = {"key": "ERASURE_SIGNING_KEY", "cert": "ERASURE_SIGNING_CERT", "root": "ERASURE_SIGNING_ROOT"}


@dataclass(frozen=True)
class SigningFiles:
    key: Path
    cert: Path
    root: Path

    def require(self) -> "SigningFiles":
        for label, p in (("signing key", self.key), ("signer certificate", self.cert),
                         ("root certificate", self.root)):
            if not p.is_file():
                raise ConfigError(f"{label} not found at {p}: run `erasure keys init`, or set "
                                  f"{', '.join(ENV.values())}")
        return self


def signing_files(config) -> SigningFiles:
    d = config.signing_dir          # `[signing] dir`, resolved against the config's folder
    return SigningFiles(Path(os.environ.get(ENV["key"], d / "signer.key")),
                        Path(os.environ.get(ENV["cert"], d / "signer.pem")),
                        Path(os.environ.get(ENV["root"], d / "root.pem")))


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


def sign_bytes(files: SigningFiles, data: bytes) -> str:
    """Detached signature (ECDSA P-256/SHA-256, or RSA PKCS#1 v1.5) as hex."""
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
