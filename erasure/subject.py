"""Subject identifiers: keyed HMACs for every record, encryption for the one copy we must keep.

A subject id is what a person gives us (a string from the command line). It is stored only
as HMAC-SHA256 under a secret key (to name the subject in the ledger, logs and reports) and,
so that `run` can execute later, as AES-GCM ciphertext bound to its request id. Both keys
derive from one 32-byte master key kept outside the ledger: in the file `[keys] path`
(created with mode 0600 on first use) or in env `ERASURE_SUBJECT_KEY` (64 hex characters).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, SubjectKeyTypeError

ENV_KEY = "ERASURE_SUBJECT_KEY"


@dataclass(frozen=True)
class SubjectKeys:
    master: bytes

    @classmethod
    def load(cls, key_path: Path, create: bool = True) -> "SubjectKeys":
        env = os.environ.get(ENV_KEY)
        if env:
            try:
                master = bytes.fromhex(env.strip())
            except ValueError as exc:
                raise ConfigError(f"{ENV_KEY} must be 64 hex characters") from exc
            if len(master) != 32:
                raise ConfigError(f"{ENV_KEY} must be 64 hex characters (32 bytes)")
            return cls(master)
        if key_path.is_file():
            master = bytes.fromhex(key_path.read_text().strip())
            if len(master) != 32:
                raise ConfigError(f"subject key file {key_path} is not a 32-byte hex key")
            return cls(master)
        if not create:
            raise ConfigError(f"subject key file {key_path} does not exist and {ENV_KEY} is unset")
        key_path.parent.mkdir(parents=True, exist_ok=True)
        master = secrets.token_bytes(32)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(master.hex() + "\n")
        return cls(master)

    def _derive(self, label: bytes) -> bytes:
        return hmac.new(self.master, label, hashlib.sha256).digest()

    def subject_hmac(self, subject_id: str) -> str:
        return hmac.new(self._derive(b"erasure/subject-hmac/v1"), subject_id.encode("utf-8"),
                        hashlib.sha256).hexdigest()

    def seal(self, subject_id: str, request_id: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(self._derive(b"erasure/subject-vault/v1")).encrypt(
            nonce, subject_id.encode("utf-8"), request_id.encode())

    def unseal(self, blob: bytes, request_id: str) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            return AESGCM(self._derive(b"erasure/subject-vault/v1")).decrypt(
                blob[:12], blob[12:], request_id.encode()).decode("utf-8")
        except InvalidTag as exc:
            raise ConfigError(
                f"cannot decrypt the subject of request {request_id}: wrong subject key") from exc


def short(subject_hmac: str) -> str:
    """How a subject is named in messages: a prefix of its HMAC, never the identifier."""
    return f"subject#{subject_hmac[:12]}"


INT_TYPES = {"int8": (-2**7, 2**7 - 1), "int16": (-2**15, 2**15 - 1),
             "int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1),
             "uint8": (0, 2**8 - 1), "uint16": (0, 2**16 - 1), "uint32": (0, 2**32 - 1),
             "uint64": (0, 2**64 - 1)}
STRING_TYPES = {"string", "large_string", "string_view", "utf8", "large_utf8"}


def key_kind(arrow_type_name: str) -> str | None:
    """'int' or 'string' for a key column type we can match exactly, else None."""
    if arrow_type_name in INT_TYPES:
        return "int"
    if arrow_type_name in STRING_TYPES:
        return "string"
    return None


def coerce_subject_id(subject_id: str, arrow_type_name: str, subject_hmac: str,
                      where: str) -> int | str:
    """The typed value to match in a key column: 42 for an int64 column, "42" for a string one."""
    kind = key_kind(arrow_type_name)
    if kind == "string":
        return subject_id
    if kind == "int":
        text = subject_id.strip()
        try:
            value = int(text, 10)
        except ValueError:
            raise SubjectKeyTypeError(
                f"{short(subject_hmac)} is not an integer, but the key column {where} is "
                f"{arrow_type_name}; nothing was changed") from None
        lo, hi = INT_TYPES[arrow_type_name]
        if not lo <= value <= hi or text != str(value):
            raise SubjectKeyTypeError(
                f"{short(subject_hmac)} is not a canonical {arrow_type_name} value for the key "
                f"column {where}; nothing was changed")
        return value
    raise SubjectKeyTypeError(
        f"the key column {where} has type {arrow_type_name}, which cannot be matched exactly "
        "(supported: integer and string columns); nothing was changed")


def redact(message: str, values) -> str:
    """Replace any subject key in a third-party error message with a placeholder, so
    library errors (which may quote predicates or values) can be logged and recorded."""
    import re

    for v in sorted({str(x) for x in values if str(x)}, key=len, reverse=True):
        left = r"(?<!\w)" if re.match(r"\w", v[:1]) else ""
        right = r"(?!\w)" if re.match(r"\w", v[-1:]) else ""
        message = re.sub(left + re.escape(v) + right, "<subject>", message)
    return message
