"""The ledger: an append-only, hash-chained record of every request, plan and step.

SQLite (path from config). Each entry's hash covers the previous entry's hash and the
entry's canonical JSON, so editing or deleting a past entry breaks the chain
(`verify_chain`). Triggers refuse UPDATE and DELETE on entries.
Subjects appear only as keyed HMACs; the one copy of a subject id that `run` needs is
sealed (AES-GCM, key outside the ledger) in a separate table, not in the chain.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import ErasureError, RetryableError, UnknownRequestError

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    request_id TEXT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_request ON entries(request_id, seq);
CREATE TABLE IF NOT EXISTS sealed_subjects (request_id TEXT PRIMARY KEY, sealed BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
"""
GENESIS = "0" * 64


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Entry:
    seq: int
    ts: str
    request_id: str | None
    kind: str
    body: dict[str, Any]
    prev_hash: str
    hash: str


def entry_hash(prev: str, seq: int, ts: str, request_id: str | None, kind: str, body: str) -> str:
    payload = canonical([seq, ts, request_id, kind, body])
    return hashlib.sha256((prev + payload).encode()).hexdigest()


class Ledger:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._in_tx = False
        self._tx_head: tuple[int, str] | None = None
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One `run` at a time per ledger: a second one fails fast (exit 75) instead of
        racing the first on the same tables."""
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RetryableError("another `erasure run` holds the ledger lock; "
                                     "try again when it finishes") from None
            yield
        finally:
            os.close(fd)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group appends into one durable commit (all or none). Re-entrant."""
        if self._in_tx:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self._in_tx = False
            self._tx_head = None

    def append(self, request_id: str | None, kind: str, body: dict[str, Any]) -> Entry:
        text = canonical(body)
        with self.transaction():
            # the head is read once per transaction: nobody else can write while we hold it
            if self._tx_head is None:
                self._tx_head = self.head()
            seq, prev = self._tx_head[0] + 1, self._tx_head[1]
            ts = now_iso()
            h = entry_hash(prev, seq, ts, request_id, kind, text)
            self.db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (seq, ts, request_id, kind, text, prev, h))
            self._tx_head = (seq, h)
        return Entry(seq, ts, request_id, kind, body, prev, h)

    def seal_subject(self, request_id: str, sealed: bytes) -> None:
        self.db.execute("INSERT INTO sealed_subjects VALUES (?, ?)", (request_id, sealed))

    def sealed_subject(self, request_id: str) -> bytes:
        row = self.db.execute("SELECT sealed FROM sealed_subjects WHERE request_id = ?",
                              (request_id,)).fetchone()
        if row is None:
            raise ErasureError(f"request {request_id} has no sealed subject in the ledger")
        return row[0]

    def entries(self, request_id: str | None = None) -> list[Entry]:
        if request_id is None:
            rows = self.db.execute("SELECT * FROM entries ORDER BY seq").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM entries WHERE request_id = ? ORDER BY seq",
                                   (request_id,)).fetchall()
        return [Entry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def request_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT request_id FROM entries WHERE kind = 'request.submitted' ORDER BY seq")]

    def require(self, request_id: str) -> list[Entry]:
        entries = self.entries(request_id)
        if not entries or entries[0].kind != "request.submitted":
            raise UnknownRequestError(f"unknown request id {request_id!r}")
        return entries

    def verify_chain(self) -> tuple[bool, int, str | None]:
        """(ok, entries checked, first problem). Recomputes every hash from the start."""
        prev, n = GENESIS, 0
        for seq, ts, rid, kind, body, prev_hash, h in self.db.execute(
                "SELECT * FROM entries ORDER BY seq"):
            n += 1
            if seq != n:
                return False, n, f"entry {n} is missing (found seq {seq})"
            if prev_hash != prev or entry_hash(prev, seq, ts, rid, kind, body) != h:
                return False, n, f"entry {seq} does not match its hash"
            prev = h
        return True, n, None

    def head(self) -> tuple[int, str]:
        row = self.db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)
