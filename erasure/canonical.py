"""Canonical JSON: the one place JSON is canonicalized for a hash or a signature.

`canonical_bytes` is RFC 8785, the JSON Canonicalization Scheme (JCS), through the `rfc8785`
package: object keys sorted by their UTF-16 code units, no whitespace, strings as UTF-8 with
only the escapes JSON requires, numbers as ECMAScript prints them (1.0 -> 1, 1e21 -> 1e+21).
A verifier outside Python (any JCS library) rebuilds the same bytes from the same JSON value.

Only JSON values go in: dict (string keys), list or tuple, str, int (within +-(2**53 - 1)),
finite float, bool, None. Anything else (a datetime, a Path, a set, bytes, a NumPy number,
NaN or infinity) raises `NotCanonicalJSON` naming where it is; the caller converts it
explicitly (`.isoformat()`, `str(path)`, `sorted(...)`). Nothing is converted silently.

`legacy_canonical_v2` is the form written before RFC 8785 (ledger format 2 and
`erasure-evidence/1`: Python's `json.dumps` with sorted keys, compact separators, non-ASCII
kept, and `default=str`). It is kept only to verify what was written then; nothing new is
written with it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import rfc8785

SCHEME = "rfc8785"
LEGACY_SCHEME = "python-json-sorted/default-str"
_INT_LIMIT = 2 ** 53 - 1


class NotCanonicalJSON(TypeError):
    """A value that has no canonical JSON form: convert it explicitly before hashing."""


def _check(obj: Any, where: str) -> None:
    if obj is None or isinstance(obj, (bool, str)):
        return
    if isinstance(obj, int):
        if not -_INT_LIMIT <= obj <= _INT_LIMIT:
            raise NotCanonicalJSON(
                f"canonical JSON (RFC 8785): {where} is the integer {obj}, outside the range a "
                f"JSON number holds exactly (+-{_INT_LIMIT}); store it as a string")
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise NotCanonicalJSON(
                f"canonical JSON (RFC 8785): {where} is {obj!r}, which JSON cannot represent "
                "(NaN and infinities have no JSON form); convert it explicitly (e.g. None)")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise NotCanonicalJSON(
                    f"canonical JSON (RFC 8785): {where} has the key {k!r} "
                    f"({type(k).__name__}); object keys must be strings")
            _check(v, f"{where}.{k}")
        return
    raise NotCanonicalJSON(
        f"canonical JSON (RFC 8785): {where} is a {type(obj).__module__}.{type(obj).__qualname__} "
        f"({obj!r:.80}), not a JSON value; the caller must convert it explicitly "
        "(a datetime with .isoformat(), a Path with str(), a set with sorted(), ...)")


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value; `NotCanonicalJSON` for anything that is not one."""
    _check(obj, "$")
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:   # e.g. a lone surrogate in a string
        raise NotCanonicalJSON(f"canonical JSON (RFC 8785): {exc}") from None


def canonical_text(obj: Any) -> str:
    """`canonical_bytes` as text (for a TEXT column holding the canonical form)."""
    return canonical_bytes(obj).decode("utf-8")


def legacy_canonical_v2(obj: Any) -> str:
    """The pre-RFC 8785 form, to verify ledger format 2 entries and `erasure-evidence/1`
    reports only. Never used to write."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


__all__ = [
    "LEGACY_SCHEME",
    "SCHEME",
    "NotCanonicalJSON",
    "canonical_bytes",
    "canonical_text",
    "legacy_canonical_v2",
]
