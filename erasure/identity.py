"""Typed identities: what a request says about the person, and how it meets a key column.

A request carries an untyped subject id (`--subject-id X`: applied to every dataset whose key
column can hold it) and/or typed identities (`--identity email=a@example.com`: applied to the
datasets keyed by that identity type). Each `[[roots]]` entry names the identity type its key
column holds (`identity = "email"`; without it, the column's name), and every dataset the
lineage trace reaches from a root holds that root's type. `[[identities]]` declares a type's
`normalize` rule and `pattern`.

A request's identities are one text, so that sealing, HMACs and idempotent submission treat a
request by e-mail exactly like a request by id: an untyped id alone is the id itself (as it
always was); anything else is MARK followed by the canonical JSON (RFC 8785) of
`{"identities": [[type, value], ...], "subject_id": id or null}`. MARK is a control character,
which no subject id may hold (`subject.check_subject_id`), so the two forms never collide.
Values are normalized (by their type's rule) before they are sealed and HMAC'd.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Mapping

from .errors import InputError

MARK = "\x1e"          # ASCII record separator: refused in every subject id
NORMALIZE = ("lower", "digits")


def normalized(rule: str | None, value: str) -> str:
    """`lower`: trimmed and lowercased; `digits`: the ASCII digits only; None: as given."""
    if rule == "lower":
        return value.strip().lower()
    if rule == "digits":
        return "".join(ch for ch in value if "0" <= ch <= "9")
    return value


@dataclass(frozen=True)
class IdentityType:
    """A declared identity type (`[[identities]]`)."""

    name: str
    normalize: str | None = None
    pattern: str | None = None

    @cached_property
    def _regex(self) -> re.Pattern[str] | None:
        # the pattern is the operator's, from the config, never built from an id
        return re.compile(self.pattern) if self.pattern else None

    def accept(self, value: str, where: str) -> str:
        """The value normalized, once it matches the type's pattern (checked on the value as
        given, trimmed); InputError (exit 4) naming `where` and never the value otherwise."""
        rx = self._regex
        if rx is not None and rx.fullmatch(value.strip()) is None:
            raise InputError(f"{where}: the {self.name} identity does not match the pattern "
                             f"declared for {self.name} in [[identities]]; nothing was recorded")
        out = normalized(self.normalize, value)
        if not out:
            raise InputError(f"{where}: the {self.name} identity is empty once normalized "
                             f"({self.normalize}); nothing was recorded")
        return out


@dataclass(frozen=True)
class Subject:
    """What one request says about the person: an untyped id and/or typed identities."""

    subject_id: str | None = None
    identities: tuple[tuple[str, str], ...] = ()     # (type, normalized value), sorted

    def text(self) -> str:
        """The one text sealed and HMAC'd for the request (see the module's docstring)."""
        if not self.identities and self.subject_id is not None:
            return self.subject_id
        from .canonical import canonical_text

        return MARK + canonical_text({"identities": [list(p) for p in self.identities],
                                      "subject_id": self.subject_id})

    @classmethod
    def parse(cls, text: str) -> "Subject":
        if not text.startswith(MARK):
            return cls(subject_id=text)
        d = json.loads(text[len(MARK):])
        return cls(d.get("subject_id"), tuple((t, v) for t, v in d["identities"]))

    def values(self) -> list[str]:
        """Every value the request holds (for the --reason guard and redaction)."""
        return ([self.subject_id] if self.subject_id is not None else []) + [
            v for _, v in self.identities]

    def of_type(self, identity: str) -> list[str]:
        return [v for t, v in self.identities if t == identity]

    def types(self) -> list[str]:
        return sorted({t for t, _ in self.identities})


def build_subject(subject_id: str | None, pairs: Iterable[tuple[str, str]],
                  types: Mapping[str, IdentityType], known: Iterable[str],
                  where: str = "--identity") -> Subject:
    """A Subject from `--subject-id` and `--identity TYPE=VALUE` pairs: each type must be a
    declared identity type or the identity of a root (`known`), each value must pass its
    type's pattern, and is normalized. InputError (exit 4) otherwise; no value in messages."""
    from .subject import check_subject_id

    allowed = set(known) | set(types)
    out: set[tuple[str, str]] = set()
    for typ, value in pairs:
        if typ not in allowed:
            # the type is named back only when it looks like a type name: a client that
            # swapped type and value must not get the value echoed
            named = f" {typ!r}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", typ) else ""
            raise InputError(f"{where}: unknown identity type{named}; declared types and root "
                             f"identities are: {', '.join(sorted(allowed)) or 'none'}")
        spec = types.get(typ) or IdentityType(typ)
        if spec.normalize is None:
            check_subject_id(value, f"{where} {typ}")
        pair = (typ, spec.accept(value, f"{where} {typ}"))
        # the rules of every subject id hold for the value as it will be matched
        check_subject_id(pair[1], f"{where} {typ}")
        out.add(pair)       # several values of one type: the person's several addresses
    if subject_id is not None:
        check_subject_id(subject_id, "--subject-id")
    if subject_id is None and not out:
        raise InputError("give --subject-id or at least one --identity TYPE=VALUE")
    return Subject(subject_id, tuple(sorted(out)))


def split_pair(text: str, where: str = "--identity") -> tuple[str, str]:
    """`TYPE=VALUE` split at the first '='."""
    typ, sep, value = text.partition("=")
    if not sep or not typ:
        raise InputError(f"{where} takes TYPE=VALUE (an identity type, '=', the value)")
    return typ, value


def describe(subject: Subject, hmac_of: Any) -> list[dict[str, Any]]:
    """The request's identities as the ledger records them: type and HMAC, never a value.
    `hmac_of(text)` is the subject key's HMAC; a typed value is HMAC'd with its type."""
    out: list[dict[str, Any]] = []
    if subject.subject_id is not None:
        out.append({"type": None, "hmac": hmac_of(subject.subject_id), "source": "request"})
    for t, v in subject.identities:
        out.append({"type": t, "hmac": hmac_of(f"{t}\x1f{v}"), "source": "request"})
    return out
