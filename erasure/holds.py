"""Legal holds: a person's data frozen (litigation, an authority's order) until released.

A hold names the person the way a request does (an untyped id and/or typed identities) and
is stored only as keyed HMACs: of the subject text, of every value, of every typed value
("type\\x1fvalue"), and, for an untyped id, of the id as each known identity type. A request
is held when one of its HMACs (its subject, the identities it was submitted with, the
identities its plan derived) is among a hold's. So a hold by e-mail catches a request by
user id once enrichment has derived the e-mail, and a hold by id catches a request by the
same id typed.

A hold covers the datasets its `scope` glob matches (fnmatch on the dataset's name and on
"namespace:name"; "*" by default: everything). A request held for everything waits in
`on_hold` and is not planned; a request held for some datasets has the others erased and
waits in `on_hold` for the held ones. A hold ends when it is released (`hold release`, with a
reason) or after its `until` date; the next run then finishes the request. Sweeps never
re-erase a held subject.

Ledger entries (no request id): `hold.added` {hold_id, hmacs, reason, scope, until} and
`hold.released` {hold_id, reason}; each records its actor like every entry.
"""

from __future__ import annotations

import fnmatch
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable

from .errors import InputError
from .identity import Subject
from .ledger import Ledger

ALL = "*"


def hold_hmacs(subject: Subject, known_types: Iterable[str],
               hmac_of: Callable[[str], str]) -> list[str]:
    """Every HMAC a hold on `subject` matches requests by (see the module's docstring)."""
    texts = {subject.text()}
    texts.update(subject.values())
    texts.update(f"{t}\x1f{v}" for t, v in subject.identities)
    if subject.subject_id is not None:
        texts.update(f"{t}\x1f{subject.subject_id}" for t in known_types)
    return sorted({hmac_of(t) for t in texts})


def request_hmacs(subject_hmac: str, identities: Iterable[dict[str, Any]]) -> set[str]:
    """The HMACs a request is matched against holds by: its subject's and its identities'
    (as submitted, and as its plan derived them)."""
    return {subject_hmac} | {i["hmac"] for i in identities if i.get("hmac")}


def parse_until(text: str | None) -> str | None:
    """`--until` as an ISO date (YYYY-MM-DD); InputError otherwise."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise InputError(f"--until {text!r}: give a date as YYYY-MM-DD") from None


@dataclass
class Hold:
    hold_id: str
    hmacs: frozenset[str]
    reason: str
    scope: str
    until: str | None
    added_at: str
    added_by: str | None
    released_at: str | None = None
    released_by: str | None = None
    release_reason: str | None = None

    def active(self, today: date | None = None) -> bool:
        if self.released_at is not None:
            return False
        if self.until is None:
            return True
        return (today or datetime.now(timezone.utc).date()) <= date.fromisoformat(self.until)

    @property
    def status(self) -> str:
        if self.released_at is not None:
            return "released"
        return "active" if self.active() else "expired"

    def covers_everything(self) -> bool:
        return self.scope == ALL

    def covers(self, namespace: str, name: str) -> bool:
        return (self.scope == ALL or fnmatch.fnmatchcase(name, self.scope)
                or fnmatch.fnmatchcase(f"{namespace}:{name}", self.scope))

    def to_json(self) -> dict[str, Any]:
        """What `hold list` and the policy input show: never a subject value or HMAC."""
        return {"hold_id": self.hold_id, "reason": self.reason, "scope": self.scope,
                "until": self.until, "status": self.status, "added_at": self.added_at,
                "added_by": self.added_by, "released_at": self.released_at,
                "released_by": self.released_by, "release_reason": self.release_reason}

    def policy_json(self) -> dict[str, Any]:
        """The hold as the policy input's `holds` lists it."""
        return {"hold_id": self.hold_id, "reason": self.reason, "scope": self.scope,
                "until": self.until}


@dataclass
class HoldBook:
    """Every hold in the ledger, folded from its hold entries (one query)."""

    holds: dict[str, Hold] = field(default_factory=dict)

    @classmethod
    def load(cls, ledger: Ledger, upto: int | None = None) -> "HoldBook":
        """`upto`: only the hold entries up to that seq (the holds as a ledger checkpoint
        knew them, erasure/evidence.py); default all."""
        import json

        book = cls()
        for seq, ts, kind, body in ledger.db.execute(
                "SELECT seq, ts, kind, body FROM entries WHERE request_id IS NULL AND kind IN "
                "('hold.added', 'hold.released') AND seq <= ? ORDER BY seq",
                ((1 << 62) if upto is None else upto,)):
            b = json.loads(body)
            if kind == "hold.added":
                book.holds[b["hold_id"]] = Hold(b["hold_id"], frozenset(b["hmacs"]), b["reason"],
                                                b["scope"], b.get("until"), ts, b.get("actor"))
            elif b["hold_id"] in book.holds:
                h = book.holds[b["hold_id"]]
                h.released_at, h.released_by, h.release_reason = ts, b.get("actor"), b["reason"]
        return book

    def active_for(self, hmacs: set[str]) -> list[Hold]:
        """The active holds on a request with these HMACs (`request_hmacs`)."""
        return [h for h in self.holds.values() if h.active() and h.hmacs & hmacs]

    def released_for(self, hmacs: set[str]) -> list[Hold]:
        return [h for h in self.holds.values() if h.released_at is not None and h.hmacs & hmacs]

    def require(self, hold_id: str) -> Hold:
        h = self.holds.get(hold_id)
        if h is None:
            raise InputError(f"unknown hold id {hold_id!r}; `erasure hold list` shows them")
        return h


def add_hold(ledger: Ledger, hmacs: list[str], reason: str, until: str | None,
             scope: str | None) -> str:
    """Record a hold; its id."""
    if not reason.strip():
        raise InputError("--reason must say why the data is held")
    scope = (scope or ALL).strip() or ALL
    hold_id = "hold-" + uuid.uuid4().hex[:16]
    ledger.append(None, "hold.added", {"hold_id": hold_id, "hmacs": hmacs, "reason": reason,
                                       "scope": scope, "until": until})
    return hold_id


def release_hold(ledger: Ledger, hold_id: str, reason: str) -> Hold:
    """Record the release of an active hold."""
    if not reason.strip():
        raise InputError("--reason must say why the hold is released")
    with ledger.transaction():
        h = HoldBook.load(ledger).require(hold_id)
        if h.released_at is not None:
            raise InputError(f"hold {hold_id} was already released ({h.released_at})")
        ledger.append(None, "hold.released", {"hold_id": hold_id, "reason": reason})
    return h
