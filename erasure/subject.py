"""Subject identifiers: keyed HMACs for every record, encryption for the one copy we must keep.

A subject id is what a person gives us (a string from the command line). It is stored only
as HMAC-SHA256 under a secret key (to name the subject in the ledger, logs and reports) and,
so that `run` can execute later, as AES-GCM ciphertext bound to its request id. Both keys
derive from one 32-byte master key kept outside the ledger: in the file `[keys] path`
(created with mode 0600 on first use) or in env `ERASURE_SUBJECT_KEY` (64 hex characters).
With `[keys] provider = "vault"` the keys are in Vault / OpenBao instead (erasure/vault.py,
`load_keys` picks one).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, SubjectKeyTypeError

ENV_KEY = "ERASURE_SUBJECT_KEY"


@dataclass(frozen=True)
class SubjectKeys:
    master: bytes
    # derived keys, computed once per label (submitting 100,000 ids derives them once)
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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
        key = self._derived.get(label)
        if key is None:
            key = self._derived[label] = hmac.new(self.master, label, hashlib.sha256).digest()
        return key

    def subject_hmac(self, subject_id: str) -> str:
        return hmac.new(self._derive(b"erasure/subject-hmac/v1"), subject_id.encode("utf-8"),
                        hashlib.sha256).hexdigest()

    def subject_hmacs(self, subject_ids: list[str]) -> list[str]:
        """`subject_hmac` of each id, in order (one call for a batch: VaultKeys asks Vault
        once per batch instead of once per id)."""
        key = self._derive(b"erasure/subject-hmac/v1")
        return [hmac.new(key, s.encode("utf-8"), hashlib.sha256).hexdigest() for s in subject_ids]

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


def load_keys(config, create: bool = True) -> SubjectKeys:
    """The subject keys `config` names: `[keys] provider = "vault"` gives VaultKeys
    (erasure/vault.py: HMACs, sealed ids and the chain key through Vault / OpenBao), the
    default `"file"` SubjectKeys from `[keys] path` or ERASURE_SUBJECT_KEY. `create`: a new
    key may be created (the ledger holds no entry yet)."""
    section = getattr(config, "keys", None)
    if section is not None and section.provider == "vault":
        import importlib.util

        if importlib.util.find_spec("hvac") is None:
            raise ConfigError("[keys] provider = \"vault\" is configured but hvac is not "
                              "installed: pip install 'erasure[vault]'")
        from .vault import VaultKeys

        return VaultKeys.open(section, create=create)
    return SubjectKeys.load(config.key_path, create=create)


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


# ---- what a subject id may be -----------------------------------------------------------
MAX_SUBJECT_ID_CHARS = 512
# Cc control characters (tab, CR, LF, NUL, the C1 block with U+0085), Cf invisible format
# characters (U+FEFF byte order mark, zero-width space and joiners, bidi overrides), Cs lone
# surrogates (undecodable bytes on the command line), Zl/Zp line and paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_CATEGORY_NAMES = {"Cc": "a control character", "Cf": "an invisible format character",
                   "Cs": "an undecodable byte (lone surrogate)", "Zl": "a line separator",
                   "Zp": "a paragraph separator"}


def refused_character(text: str) -> tuple[int, str] | None:
    """(1-based position, description) of the first character a subject id may not hold."""
    import unicodedata

    if text.isascii():
        for i, ch in enumerate(text):
            if ch < " " or ch == "\x7f":
                return i + 1, f"{_CATEGORY_NAMES['Cc']} (U+{ord(ch):04X})"
        return None
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat in REFUSED_CATEGORIES:
            return i + 1, f"{_CATEGORY_NAMES[cat]} (U+{ord(ch):04X})"
    return None


def check_subject_id(subject_id: str, where: str = "the subject id") -> str:
    """The one set of rules for a subject id, wherever it comes from (`plan`, `request
    submit`, a subjects file): not empty, no surrounding white space, at most
    MAX_SUBJECT_ID_CHARS characters, none of REFUSED_CATEGORIES. Raises InputError (exit 4)
    with a message that never quotes the id; returns the id unchanged."""
    from .errors import InputError

    if not subject_id:
        raise InputError(f"{where} is empty; nothing was recorded")
    if len(subject_id) > MAX_SUBJECT_ID_CHARS:
        raise InputError(f"{where} is {len(subject_id)} characters long; the limit is "
                         f"{MAX_SUBJECT_ID_CHARS}. Nothing was recorded")
    bad = refused_character(subject_id)
    if bad:
        raise InputError(f"{where} holds {bad[1]} at character {bad[0]}; subject ids must not "
                         "contain control, format or line/paragraph separator characters. "
                         "Nothing was recorded")
    if subject_id != subject_id.strip():
        raise InputError(f"{where} has white space before or after it; nothing was recorded")
    return subject_id


# ---- finding an id in text, without building a regex from it ------------------------------
def _wordch(ch: str) -> bool:
    """What `\\w` matches in a str pattern: alphanumerics (str.isalnum) and the underscore."""
    return ch == "_" or ch.isalnum()


def token_spans(text: str, value: str):
    """(start, end) of each non-overlapping occurrence of `value` in `text` as a whole token:
    where the value begins (ends) with a word character, the character before (after) it
    must not be one. Plain str.find; after a miss on the left boundary the search resumes
    past the current run of word characters, so the cost stays linear in the text."""
    if not value:
        return
    left, right = _wordch(value[0]), _wordch(value[-1])
    n, m = len(text), len(value)
    i = text.find(value)
    while i != -1:
        if left and i > 0 and _wordch(text[i - 1]):
            k = i          # no whole-token match can start inside this run of word chars
            while k < n and _wordch(text[k]):
                k += 1
            i = text.find(value, k + 1)
            continue
        j = i + m
        if not right or j == n or not _wordch(text[j]):
            yield i, j
            i = text.find(value, j)
        else:
            i = text.find(value, i + 1)


def has_token(text: str, value: str) -> bool:
    """Does `text` hold `value` as a whole token (see `token_spans`)?"""
    return next(token_spans(text, value), None) is not None


# CSI (colours: ESC [ ... m, cursor moves), OSC (ESC ] ... BEL or ESC \\), and two-character
# escapes: fixed patterns, never built from a subject id
_ANSI = None


def strip_ansi(text: str) -> str:
    global _ANSI
    if _ANSI is None:
        import re

        _ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                           r"|\x9b[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
    return _ANSI.sub("", text)


def redact(message: str, values) -> str:
    """Replace any subject key in a third-party error message with a placeholder, so
    library errors (which may quote predicates or values) can be logged and recorded.
    Each value is replaced where it stands as a whole token (`42` in `k = 42` and in
    `a-42.parquet`, not in `420`); ANSI colour escapes (delta-rs prints them) are removed
    first. No regex is built from a value: str.find and explicit word-boundary checks."""
    message = strip_ansi(message)
    for v in sorted({str(x) for x in values if str(x)}, key=len, reverse=True):
        parts, last = [], 0
        for i, j in token_spans(message, v):
            parts.append(message[last:i])
            parts.append("<subject>")
            last = j
        if parts:
            parts.append(message[last:])
            message = "".join(parts)
    return message


def redact_paths(paths: list[str], values) -> list[str]:
    """File names and traces as they are recorded (plan, verification, sweep findings): a
    key value standing in a path as a whole token, as the folder of a table partitioned by
    the key column does (`user_id=42/part-0.parquet`), becomes `<subject>`. The connector
    keeps the real paths; only what is written down loses the key."""
    return [redact(p, values) for p in paths] if paths else paths
