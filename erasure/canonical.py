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
from typing import Any, Iterable

import rfc8785

SCHEME = "rfc8785"
LEGACY_SCHEME = "python-json-sorted/default-str"
_INT_LIMIT = 2 ** 53 - 1


class NotCanonicalJSON(TypeError):
    """A value that has no canonical JSON form: convert it explicitly before hashing."""


class _Refused(Exception):
    """`_fast` met something it does not pass: `_check` walks again to say where."""


class _Encoder:
    """Python's JSON encoder with sorted keys, compact separators and non-ASCII kept; the C
    encoder made once (JSONEncoder.encode builds it again on every call)."""

    def __init__(self) -> None:
        from json import encoder

        c_make_encoder = getattr(encoder, "c_make_encoder", None)   # absent without _json
        encode_basestring = encoder.encode_basestring
        self._py = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        self._c = (c_make_encoder(None, None, encode_basestring, None, ":", ",", True, False,
                                  False) if c_make_encoder is not None else None)

    def encode(self, obj: Any) -> str:
        if self._c is not None and isinstance(obj, (dict, list, tuple)):
            return "".join(self._c(obj, 0))
        return self._py.encode(obj)


_ENCODER = _Encoder()
_PLAIN = (str, bool, type(None))


def _fast(obj: Any) -> bool:
    """`_check` without building a path for every element (the common case: nothing to
    refuse). Raises _Refused for anything `_check` must look at."""
    t = type(obj)
    if t is dict:
        return _fast_dict(obj)
    if t is list or t is tuple:
        return _fast_items(obj)
    if t is str or t is bool or obj is None:
        return True
    if t is int:
        if -_INT_LIMIT <= obj <= _INT_LIMIT:
            return True
        raise _Refused
    if t is float and math.isfinite(obj):
        return False
    raise _Refused


def _fast_dict(obj: dict) -> bool:
    """`_fast` of an object: its keys here, its values as an array's items."""
    fast = True
    for k in obj:
        if type(k) is not str:
            raise _Refused
        if not k.isascii() and max(k) >= "\ud800":
            fast = False
    return _fast_items(obj.values()) and fast


def _fast_items(items: Iterable[Any]) -> bool:
    """`_fast` of an array's items (or an object's values): the leaves (strings, None,
    booleans, integers) checked in the loop, containers and the rest by `_fast`."""
    fast = True
    for v in items:
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if t is int:
            if -_INT_LIMIT <= v <= _INT_LIMIT:
                continue
            raise _Refused
        if not _fast(v):
            fast = False
    return fast


def _check(obj: Any, where: str) -> bool:
    """Refuses what is not a JSON value; True when Python's sorted compact `json.dumps`
    gives exactly the RFC 8785 bytes (no float, and no object key whose UTF-16 order could
    differ from its code-point order: every key below U+D800)."""
    if obj is None or obj is True or obj is False or type(obj) is str:
        return True
    if type(obj) is int:
        if not -_INT_LIMIT <= obj <= _INT_LIMIT:
            raise NotCanonicalJSON(
                f"canonical JSON (RFC 8785): {where} is the integer {obj}, outside the range a "
                f"JSON number holds exactly (+-{_INT_LIMIT}); store it as a string")
        return True
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise NotCanonicalJSON(
                f"canonical JSON (RFC 8785): {where} is {obj!r}, which JSON cannot represent "
                "(NaN and infinities have no JSON form); convert it explicitly (e.g. None)")
        return False
    if isinstance(obj, (list, tuple)):
        fast = True
        for i, v in enumerate(obj):
            fast = _check(v, f"{where}[{i}]") and fast
        return fast
    if isinstance(obj, dict):
        fast = True
        for k, v in obj.items():
            if not isinstance(k, str):
                raise NotCanonicalJSON(
                    f"canonical JSON (RFC 8785): {where} has the key {k!r} "
                    f"({type(k).__name__}); object keys must be strings")
            fast = _check(v, f"{where}.{k}") and fast and (k.isascii() or max(k) < "\ud800")
        return fast
    if isinstance(obj, (str, int)):    # a subclass (an IntEnum, a str enum): the general path
        if isinstance(obj, int) and not -_INT_LIMIT <= obj <= _INT_LIMIT:
            raise NotCanonicalJSON(
                f"canonical JSON (RFC 8785): {where} is the integer {obj}, outside the range a "
                f"JSON number holds exactly (+-{_INT_LIMIT}); store it as a string")
        return False
    raise NotCanonicalJSON(
        f"canonical JSON (RFC 8785): {where} is a {type(obj).__module__}.{type(obj).__qualname__} "
        f"({obj!r:.80}), not a JSON value; the caller must convert it explicitly "
        "(a datetime with .isoformat(), a Path with str(), a set with sorted(), ...)")


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value; `NotCanonicalJSON` for anything that is not one.

    Most values the engine hashes (ledger entries: strings, integers, lists, objects with
    ASCII keys) take a fast path: Python's sorted compact `json.dumps` without ASCII escaping
    writes exactly the RFC 8785 bytes for them (the same escapes: the short forms and lowercase
    \\u00XX for control characters, nothing else; integers alike; keys below U+D800 sort the
    same by code point as by UTF-16 unit). Floats, such keys and lone surrogates take the
    `rfc8785` package; tests/test_canonical_json.py checks both give the same bytes."""
    try:
        fast = _fast(obj)
    except _Refused:
        fast = _check(obj, "$")      # raises NotCanonicalJSON naming where, or says slow
    if fast:
        try:
            return _ENCODER.encode(obj).encode("utf-8")
        except UnicodeEncodeError:
            pass                  # a lone surrogate: rfc8785 names it below
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:   # e.g. a lone surrogate in a string
        raise NotCanonicalJSON(f"canonical JSON (RFC 8785): {exc}") from None


def canonical_text(obj: Any) -> str:
    """`canonical_bytes` as text (for a TEXT column holding the canonical form)."""
    try:
        fast = _fast(obj)
    except _Refused:
        fast = False
    if fast:
        text = _ENCODER.encode(obj)
        if text.isascii():     # no lone surrogate can hide in it: the bytes are these
            return text
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
