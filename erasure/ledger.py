"""The ledger: an append-only, keyed hash chain of every request, plan and step.

SQLite (path from config). Each entry's hash is HMAC-SHA256, under a chain key derived from
the subject master key (kept outside the ledger), of the previous entry's hash and the
entry's canonical JSON: editing, deleting or appending an entry without the key breaks the
chain (`verify_chain`). After every committed transaction the head (seq, hash) is written,
with an HMAC under the same key, to `<ledger>.head` beside the ledger: removing entries from
the end then shows too, because the chain no longer reaches the anchored head.
Triggers refuse UPDATE and DELETE on entries. The chain scheme is recorded in the `meta`
table; a ledger written with the old unkeyed SHA-256 chain is refused, not trusted.

Canonical JSON (the entry's body and the hashed payload) is RFC 8785 (`erasure.canonical`)
in format 3. A format-2 ledger (Python's sorted `json.dumps`) keeps verifying and is upgraded
in place: the first append by this version records, in the same transaction, the meta row
`format3_from_seq` = its seq; entries before it verify in the format-2 form, that entry and
every later one in RFC 8785. Old entries are never rewritten. A new ledger records format 3
and `format3_from_seq` = 1. (docs/architecture.md, "Evidence".)

Subjects appear only as keyed HMACs; the one copy of a subject id that `run` needs is
sealed (AES-GCM, key outside the ledger) in a separate table, not in the chain.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .canonical import SCHEME as CANONICAL_SCHEME
from .canonical import canonical_bytes, canonical_text, legacy_canonical_v2
from .errors import (
    ConfigError,
    ErasureError,
    ErasureFailed,
    RetryableError,
    UnknownRequestError,
)

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
BEGIN SELECT RAISE(ABORT, 'ledger meta is write-once'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
BEGIN SELECT RAISE(ABORT, 'ledger meta is write-once'); END;
"""
GENESIS = "0" * 64
# format 3: format 2's keyed chain and anchor, with RFC 8785 canonical JSON.
# format 2: keyed chain (HMAC-SHA256 under CHAIN_LABEL's key) plus a signed head anchor;
#   canonical JSON was Python's sorted json.dumps (default=str). Still verified, and upgraded
#   in place from the meta row FORMAT3_FROM on.
# Format 1 (no meta table) chained plain SHA-256, which anyone can recompute: refused.
FORMAT = "3"
FORMATS_READ = ("2", "3")
CHAIN_SCHEME = "hmac-sha256/erasure-ledger-chain-v1"
CHAIN_LABEL = b"erasure/ledger-chain/v1"
ANCHOR_FORMAT = "erasure-ledger-head/1"
FORMAT3_FROM = "format3_from_seq"


def canonical(obj: Any) -> str:
    """The canonical JSON text of a new entry's body: RFC 8785 (`erasure.canonical`)."""
    return canonical_text(obj)


_second: list[Any] = [None, ""]      # (a whole second, its ISO text up to the seconds)


def now_iso() -> str:
    """The time now in UTC, ISO 8601 with microseconds (`datetime.isoformat`'s text); the
    text of the second is made once per second, the microseconds appended."""
    us = time.time_ns() // 1000
    sec, frac = divmod(us, 1_000_000)
    if sec != _second[0]:
        _second[0] = sec
        _second[1] = datetime.fromtimestamp(sec, timezone.utc).isoformat()[:-6]
    return f"{_second[1]}.{frac:06d}+00:00"


def chain_key(keys) -> bytes:
    """The ledger's chain key, derived from the subject master key (a `SubjectKeys`)."""
    return keys._derive(CHAIN_LABEL)


def count_entries(path: Path, url: str | None = None) -> int:
    """How many entries the ledger file holds, read with plain SQLite (no key, no schema
    changes, the file is not created): 0 when there is no ledger yet. With `url`, the
    PostgreSQL ledger's (erasure/ledger_pg.py)."""
    if url is not None:
        from .ledger_pg import count_entries as count_pg

        return count_pg(url)
    if not path.exists():
        return 0
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
                      ).fetchone() is None:
            return 0
        return db.execute("SELECT count(*) FROM entries").fetchone()[0]
    finally:
        db.close()


@dataclass(frozen=True)
class Entry:
    seq: int
    ts: str
    request_id: str | None
    kind: str
    body: dict[str, Any]
    prev_hash: str
    hash: str


_INT_LIMIT = 2 ** 53 - 1
_enc = json.encoder.encode_basestring     # the C encoder; non-ASCII kept, as RFC 8785


def _payload3(seq: int, ts_json: str, request_id: str | None, kind: str,
              body_json: str) -> bytes:
    """Format 3's payload when `ts` and the body text are already JSON strings (`_enc`):
    [seq, ts, request_id, kind, body text] in RFC 8785 form, the same bytes canonical_bytes
    gives for an integer and strings. UnicodeEncodeError for a lone surrogate."""
    rid = "null" if request_id is None else _enc(request_id)
    return f"[{seq},{ts_json},{rid},{_enc(kind)},{body_json}]".encode("utf-8")


def entry_payload(fmt: str, seq: int, ts: str, request_id: str | None, kind: str,
                  body: str) -> bytes:
    """The bytes an entry's HMAC covers after the previous hash: the canonical JSON of
    [seq, ts, request_id, kind, body text], RFC 8785 in format 3, the old form in format 2."""
    fields = [seq, ts, request_id, kind, body]
    if fmt == "3":
        if type(seq) is int and -_INT_LIMIT <= seq <= _INT_LIMIT:
            # a list of an integer and strings: its RFC 8785 form written directly with the
            # C string encoder JSON uses (the same escapes); a lone surrogate cannot be
            # UTF-8 encoded and takes canonical_bytes, which refuses it
            try:
                return _payload3(seq, _enc(ts), request_id, kind, _enc(body))
            except (UnicodeEncodeError, TypeError):
                pass
        return canonical_bytes(fields)
    if fmt == "2":
        return legacy_canonical_v2(fields).encode()
    raise ValueError(f"unknown ledger entry format {fmt!r}")


def entry_hash(key: bytes, prev: str, seq: int, ts: str, request_id: str | None, kind: str,
               body: str, fmt: str = FORMAT) -> str:
    """HMAC-SHA256(key, prev_hash (hex, ASCII) + payload)."""
    payload = entry_payload(fmt, seq, ts, request_id, kind, body)
    return hmac.digest(key, prev.encode() + payload, "sha256").hex()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class ChainMac:
    """HMAC-SHA256 under one key (RFC 2104) with the key's inner and outer SHA-256 states
    made once and copied per message: the same digest as `hmac.digest(key, msg, "sha256")`
    (tests/test_ledger_and_subjects.py), without setting the key up again for every entry."""

    def __init__(self, key: bytes):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def hexdigest(self, msg: bytes) -> str:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def entry_hash(self, prev: str, seq: int, ts: str, request_id: str | None, kind: str,
                   body: str, fmt: str = FORMAT) -> str:
        """`entry_hash` under this key."""
        return self.hexdigest(prev.encode() + entry_payload(fmt, seq, ts, request_id, kind, body))


@dataclass
class WriteStats:
    """What this process wrote to ledgers, and the time spent writing it: every `append`
    (canonical JSON, hash) and every commit (the batched INSERT, COMMIT, head anchor).
    bench/bench_pending.py reads it to report entries/s of the write path alone."""

    entries: int = 0
    transactions: int = 0
    seconds: float = 0.0


WRITE_STATS = WriteStats()
# rows appended in a transaction are inserted together (one executemany) at its commit, or
# before anything reads the database; at most this many wait in memory
FLUSH_ROWS = 10_000


def anchor_mac(key: bytes, seq: int, head: str) -> str:
    # an ASCII string, an integer, a hex string: RFC 8785 gives the same bytes the format-2
    # form gave, so anchors written before keep verifying unchanged
    return hmac.digest(key, canonical_bytes([ANCHOR_FORMAT, seq, head]), "sha256").hex()


def _entry_format(seq: int, format3_from: int | None) -> str:
    return "3" if format3_from is not None and seq >= format3_from else "2"


def _grouped(rows: Iterator[tuple]) -> Iterator[list[Entry]]:
    """Entry rows ordered by request id, grouped per request."""
    group: list[Entry] = []
    for r in rows:
        if group and group[-1].request_id != r[2]:
            yield group
            group = []
        group.append(Entry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]))
    if group:
        yield group


class Ledger:
    def __init__(self, path: Path, key: bytes | None = None, actor: str | None = None,
                 url: str | None = None):
        """`key`: the chain key (`chain_key(subject_keys)`). Without it the ledger can be
        read, but not appended to or verified. `actor`: who appends (erasure/actors.py);
        every entry's body records it as "actor" (a body that names its own keeps it).
        `url`: a PostgreSQL ledger (`[ledger] url`, erasure/ledger_pg.py) instead of the
        SQLite file `path`."""
        self.url = url
        if url is None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.anchor_path = path.with_name(path.name + ".head")
        self._key = key
        self._mac = ChainMac(key) if key is not None else None
        # who acts: recorded as "actor" in the body of every entry appended (erasure/actors.py)
        self.actor: str | None = actor
        self._db: Any
        if url is not None:
            from .ledger_pg import PgConnection, redact_url

            self._db = PgConnection(url)
            self.where = redact_url(url)      # how messages name the ledger
        else:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.where = str(path)
        self._in_tx = False
        self._tx_head: tuple[int, str] | None = None
        self._tx_format3: bool | None = None    # whether format 3 is recorded (per transaction)
        # entries appended in the open transaction, hashed in order, not yet inserted
        self._pending: list[tuple[int, str, str | None, str, str, str, str]] = []
        try:
            if url is None:
                self._db.execute("PRAGMA journal_mode=WAL")
            new = self._check_format()
            if url is None:
                self._db.executescript(SCHEMA)
            else:
                from .ledger_pg import SCHEMA as PG_SCHEMA

                self._db.executescript(PG_SCHEMA)
            if new:
                self._db.execute("INSERT INTO meta VALUES ('format', ?), ('chain', ?), "
                                 "('canonical', ?), (?, '1') ON CONFLICT (key) DO NOTHING",
                                 (FORMAT, CHAIN_SCHEME, CANONICAL_SCHEME, FORMAT3_FROM))
                if key is not None and self.read_anchor() == (None, None):
                    # a new ledger is anchored at its (empty) head at once: a process that
                    # appends while another's first commit has not yet written its anchor
                    # finds an anchor one transaction behind (which verifies), not none
                    # (which would mean entries were removed)
                    self._write_anchor(0, GENESIS)
        except BaseException:
            self._db.close()
            raise

    @property
    def _anchor_name(self) -> str:
        return (f"(the head_anchor row of {self.where})" if self.url is not None
                else str(self.anchor_path))

    @property
    def db(self) -> Any:
        """The ledger's SQLite connection. Entries appended in the open transaction are
        inserted first, so whoever reads through it sees them (the same transaction)."""
        if self._pending:
            self._flush()
        return self._db

    def _flush(self) -> None:
        t0 = time.perf_counter()
        rows, self._pending = self._pending, []
        self._db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        WRITE_STATS.seconds += time.perf_counter() - t0

    def _format3_from(self) -> int | None:
        """The first seq written in format 3 (RFC 8785); None while a format-2 ledger has
        not been appended to by this version."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (FORMAT3_FROM,)).fetchone()
        if row is not None:
            return int(row[0])
        fmt = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        return 1 if fmt is not None and fmt[0] == "3" else None

    def entry_format(self, seq: int) -> str:
        """The format entry `seq` was written in: "3" (RFC 8785) or "2" (before)."""
        return _entry_format(seq, self._format3_from())

    def _check_format(self) -> bool:
        """Refuse a ledger this version cannot verify (before changing anything in it).
        True for a new ledger, whose scheme is still to be recorded."""
        tables = (self._db.tables() if self.url is not None else
                  {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")})
        meta = (dict(self.db.execute("SELECT key, value FROM meta").fetchall())
                if "meta" in tables else {})
        has_entries = ("entries" in tables
                       and self.db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is not None)
        if not meta:
            if has_entries:
                raise ErasureFailed(
                    f"the ledger does not verify: {self.where} records no chain scheme, so it "
                    "was written with the old unkeyed SHA-256 chain, in which forged or removed "
                    "entries cannot be detected. Refusing it; keep it as an archive and start "
                    "a new ledger (docs/operators-guide.md)")
            return True
        if meta.get("format") not in FORMATS_READ or meta.get("chain") != CHAIN_SCHEME \
                or (meta.get("format") == "3" and (meta.get("canonical") != CANONICAL_SCHEME
                                                   or meta.get(FORMAT3_FROM) != "1")):
            raise ErasureFailed(
                f"the ledger does not verify: {self.where} uses format {meta.get('format')!r}, chain "
                f"{meta.get('chain')!r}, canonical JSON {meta.get('canonical')!r}; this version "
                f"reads formats {', '.join(FORMATS_READ)} ({CHAIN_SCHEME})")
        if FORMAT3_FROM in meta and not meta[FORMAT3_FROM].isdigit():
            raise ErasureFailed(f"the ledger does not verify: {self.where} records "
                                f"{FORMAT3_FROM} = {meta[FORMAT3_FROM]!r}, not an entry number")
        return False

    def _require_key(self, what: str) -> bytes:
        if self._key is None:
            raise ConfigError(f"cannot {what} the ledger {self.where} without its chain key "
                              "(derived from the subject key)")
        return self._key

    def close(self) -> None:
        self._pending = []
        self._db.close()

    @contextmanager
    def acting_as(self, actor: str) -> Iterator[None]:
        """Entries appended inside are recorded as done by `actor` (a service's caller)."""
        before, self.actor = self.actor, actor
        try:
            yield
        finally:
            self.actor = before

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One `run` at a time per ledger: a second one fails fast (exit 75) instead of
        racing the first on the same tables. On PostgreSQL, a session advisory lock: one
        run among every process sharing the ledger."""
        if self.url is not None:
            held = self._db.try_run_lock()
            if held is None:
                raise RetryableError("another `erasure run` (or the service's worker) holds "
                                     "the ledger lock; try again when it finishes")
            try:
                yield
            finally:
                held.close()
            return
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
        """Group appends into one durable commit (all or none). Re-entrant. After the
        commit, the new head is anchored once (not once per entry)."""
        if self._in_tx:
            yield
            return
        t0 = time.perf_counter()
        if self.url is not None:
            self._db.begin_exclusive()    # appends from every process, one at a time
        else:
            self._db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        head = None
        try:
            t1 = time.perf_counter()
            yield
            if self._pending:
                self._flush()
            t2 = time.perf_counter()
            self._db.execute("COMMIT")
            head = self._tx_head
        except BaseException:
            self._pending = []
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._in_tx = False
            self._tx_head = None
            self._tx_format3 = None
        if head is not None:
            self._write_anchor(*head)
            WRITE_STATS.transactions += 1
            WRITE_STATS.seconds += (t1 - t0) + (time.perf_counter() - t2)

    def _write_anchor(self, seq: int, head: str) -> None:
        """Atomically replace `<ledger>.head` with the head and its HMAC. A crash between
        the commit and this write leaves the anchor one transaction behind the ledger,
        which verifies (the next commit re-anchors); an anchor ahead of the ledger never
        happens, so it means entries were removed."""
        data = canonical_text({"format": ANCHOR_FORMAT, "seq": seq, "hash": head,
                               "hmac": anchor_mac(self._require_key("anchor"), seq, head)})
        if self.url is not None:          # a row of the database (erasure/ledger_pg.py)
            self._db.write_anchor(data)
            return
        fd, tmp = tempfile.mkstemp(prefix=self.anchor_path.name + ".", suffix=".tmp",
                                   dir=self.anchor_path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.anchor_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def read_anchor(self) -> tuple[dict[str, Any] | None, str | None]:
        """(anchor, problem): the anchor when it exists and its HMAC verifies."""
        key = self._require_key("verify")
        if self.url is not None:
            found = self._db.read_anchor()
            if found is None:
                return None, None
            text = found
        else:
            try:
                text = self.anchor_path.read_text()
            except FileNotFoundError:
                return None, None
        try:
            a = json.loads(text)
            seq, head, mac = a["seq"], a["hash"], a["hmac"]
            if a.get("format") != ANCHOR_FORMAT or not isinstance(seq, int) \
                    or not isinstance(head, str) or not isinstance(mac, str):
                raise ValueError("unexpected fields")
        except (ValueError, KeyError, TypeError) as exc:
            return None, f"the head anchor {self._anchor_name} is unreadable ({exc})"
        if not hmac.compare_digest(mac, anchor_mac(key, seq, head)):
            return None, (f"the head anchor {self._anchor_name} does not verify under this "
                          "subject key (edited, or the wrong key)")
        return a, None

    def append(self, request_id: str | None, kind: str, body: dict[str, Any]) -> Entry:
        """Append one entry; `body` gets the ledger's actor as "actor" (in place: the caller's
        copy is what the ledger holds). Inside `transaction()` its hash is computed now, in order (the
        chain is exact), and the row is inserted with the transaction's others at its
        commit (one `executemany`), or before anything reads `db`; all or none commit."""
        if not self._in_tx:     # its own transaction (one durable commit and anchor)
            with self.transaction():
                return self.append(request_id, kind, body)
        t0, spent = time.perf_counter(), WRITE_STATS.seconds
        key = self._require_key("append to")
        if self.actor is not None:
            body.setdefault("actor", self.actor)
        text = canonical(body)
        ts = now_iso()
        row = self._add(key, request_id, kind, text, _enc(text), ts, _enc(ts))
        WRITE_STATS.entries += 1
        WRITE_STATS.seconds = spent + time.perf_counter() - t0   # a flush's time included once
        return Entry(row[0], ts, request_id, kind, body, row[5], row[6])

    def append_many(self, entries: Iterable[tuple[str | None, str, dict[str, Any]]]) -> int:
        """Append (request_id, kind, body) entries in order, in one transaction (the
        caller's, or one of their own): all or none; how many. One step's record for every
        request of a batch: a body object given for several entries is made canonical once,
        and the entries take one timestamp, the time of this call."""
        with self.transaction():
            t0, spent = time.perf_counter(), WRITE_STATS.seconds
            key = self._require_key("append to")
            ts = now_iso()
            ts_json = _enc(ts)
            # by object: each body is held here, so its id is not reused meanwhile
            texts: dict[int, tuple[dict[str, Any], str, str]] = {}
            n = 0
            for request_id, kind, body in entries:
                known = texts.get(id(body))
                if known is None:
                    if self.actor is not None:
                        body.setdefault("actor", self.actor)
                    text = canonical(body)
                    known = texts[id(body)] = (body, text, _enc(text))
                self._add(key, request_id, kind, known[1], known[2], ts, ts_json)
                n += 1
            WRITE_STATS.entries += n
            WRITE_STATS.seconds = spent + time.perf_counter() - t0
        return n

    def _add(self, key: bytes, request_id: str | None, kind: str, text: str, text_json: str,
             ts: str, ts_json: str) -> tuple[int, str, str | None, str, str, str, str]:
        """The next entry's row, hashed in order and queued for the transaction's INSERT.
        `text_json` and `ts_json` are `text` and `ts` as JSON strings (encoded once for
        every entry sharing them)."""
        # the head is read (and checked) once per transaction: nobody else can write
        # while we hold it
        if self._tx_head is None:
            self._tx_head = self._checked_head(key)
        seq, prev = self._tx_head[0] + 1, self._tx_head[1]
        if self._tx_format3 is None:
            self._tx_format3 = self._format3_from() is not None
        if not self._tx_format3:
            # a format-2 ledger: from this entry on, format 3 (recorded in this same
            # transaction, so the entry and the record of its format commit together)
            self._db.execute("INSERT INTO meta VALUES (?, ?)", (FORMAT3_FROM, str(seq)))
            self._tx_format3 = True
        assert self._mac is not None
        try:   # entry_payload's format-3 text, its JSON strings encoded once
            if seq > _INT_LIMIT:
                raise TypeError
            payload = _payload3(seq, ts_json, request_id, kind, text_json)
        except (UnicodeEncodeError, TypeError):
            payload = entry_payload("3", seq, ts, request_id, kind, text)   # refuses it
        h = self._mac.hexdigest(prev.encode() + payload)
        row = (seq, ts, request_id, kind, text, prev, h)
        self._pending.append(row)
        if len(self._pending) >= FLUSH_ROWS:
            self._flush()
        self._tx_head = (seq, h)
        return row

    def _checked_head(self, key: bytes) -> tuple[int, str]:
        """The head, before a transaction appends to it: its last entry must verify under
        this key and the chain must still reach the anchor. Otherwise appending would
        chain new entries under a wrong key, or re-anchor a truncated ledger and so erase
        the evidence of the truncation."""
        row = self.db.execute("SELECT * FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        anchor, problem = self.read_anchor()
        if problem is None and row is not None:
            seq, ts, rid, kind, body, prev, h = row
            if not hmac.compare_digest(entry_hash(key, prev, seq, ts, rid, kind, body,
                                                  self.entry_format(seq)), h):
                problem = (f"its last entry ({seq}) does not verify under this subject key "
                           "(a different key, or the entry was altered)")
            elif anchor is None:
                problem = f"its head anchor {self._anchor_name} is missing"
        if problem is None and anchor is not None:
            n = row[0] if row else 0
            at = self.db.execute("SELECT hash FROM entries WHERE seq = ?",
                                 (anchor["seq"],)).fetchone()
            if anchor["seq"] > n:
                problem = (f"it was truncated: the head anchor records {anchor['seq']} "
                           f"entries, the ledger holds {n}")
            elif anchor["seq"] > 0 and (at is None or at[0] != anchor["hash"]):
                problem = f"entry {anchor['seq']} differs from the head anchor"
        if problem:
            raise ErasureFailed(f"the ledger does not verify, nothing was appended: {problem}. "
                                "Run `erasure ledger verify`")
        return (row[0], row[6]) if row else (0, GENESIS)

    def seal_subject(self, request_id: str, sealed: bytes) -> None:
        self._db.execute("INSERT INTO sealed_subjects VALUES (?, ?)", (request_id, sealed))

    def seal_plan_subject(self, request_id: str, sealed: bytes) -> None:
        """The subject a request's latest plan was made for (derived identities included):
        replaced when the request is planned again."""
        self._db.execute("INSERT INTO sealed_subjects VALUES (?, ?) ON CONFLICT (request_id) "
                         "DO UPDATE SET sealed = excluded.sealed",
                        (request_id + "#plan", sealed))

    def sealed_plan_subject(self, request_id: str) -> bytes | None:
        row = self._db.execute("SELECT sealed FROM sealed_subjects WHERE request_id = ?",
                              (request_id + "#plan",)).fetchone()
        return row[0] if row else None

    def sealed_many(self, names: list[str], chunk: int = 500) -> dict[str, bytes]:
        """The sealed subjects stored under these names (request ids, or `<id>#plan`), read
        with one query per `chunk` names; a name with none is left out."""
        out: dict[str, bytes] = {}
        for i in range(0, len(names), chunk):
            part = names[i:i + chunk]
            out.update(self._db.execute(
                "SELECT request_id, sealed FROM sealed_subjects WHERE request_id IN "
                f"({','.join('?' * len(part))})", part))
        return out

    def forget_sealed(self, names: list[str], chunk: int = 500) -> int:
        """Delete the sealed subjects stored under these names (request ids, or `<id>#plan`):
        `erasure shred` does, once their key is destroyed. The table is not in the hash
        chain; the shredding itself is recorded as an entry. Returns how many were deleted."""
        n = 0
        for i in range(0, len(names), chunk):
            part = names[i:i + chunk]
            n += self._db.execute("DELETE FROM sealed_subjects WHERE request_id IN "
                                  f"({','.join('?' * len(part))})", part).rowcount
        return n

    def idempotent(self, key_sha256: str, body_mac: str,
                   make: Callable[[], tuple[int, dict[str, Any]]]
                   ) -> tuple[bool, str, int, dict[str, Any]]:
        """An HTTP `Idempotency-Key` (the service's POST /v1/requests): the first call with
        `key_sha256` runs `make()` -> (status, response with "request_id") and keeps that
        response under the key, in the same transaction as what `make` appends (all or
        none); a later call with the key returns it without calling `make`. Returns
        (replayed, the body MAC stored with the key, status, response): the caller compares
        the MACs (the same key with another body is an error). Kept in the table
        `idempotency_keys`, not in the hash chain; only the key's SHA-256 and a keyed MAC
        of the body are stored, never the key or the body."""
        with self.transaction():
            self._db.execute("CREATE TABLE IF NOT EXISTS idempotency_keys (key_sha256 TEXT "
                             "PRIMARY KEY, request_id TEXT NOT NULL, body_mac TEXT NOT NULL, "
                             "status INTEGER NOT NULL, response TEXT NOT NULL, at TEXT NOT NULL)")
            row = self.db.execute("SELECT body_mac, status, response FROM idempotency_keys "
                                  "WHERE key_sha256 = ?", (key_sha256,)).fetchone()
            if row is not None:
                return True, row[0], row[1], json.loads(row[2])
            status, response = make()
            self.db.execute("INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?, ?)",
                            (key_sha256, response["request_id"], body_mac, status,
                             canonical(response), now_iso()))
            return False, body_mac, status, response

    def sealed_subject(self, request_id: str) -> bytes:
        row = self._db.execute("SELECT sealed FROM sealed_subjects WHERE request_id = ?",
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

    def entries_by_request(self) -> Iterator[list[Entry]]:
        """Every request's entries, one request at a time (in request id order, each in
        sequence order), streamed from one query: reading all requests costs one pass, not
        one query per request, and holds one request's entries at a time."""
        return _grouped(self.db.execute("SELECT * FROM entries WHERE request_id IS NOT NULL "
                                        "ORDER BY request_id, seq"))

    def entries_of(self, request_ids: list[str], chunk: int = 500) -> Iterator[list[Entry]]:
        """The entries of these requests, one request at a time (each in sequence order),
        read with one query per `chunk` requests instead of one per request. A request with
        no entry is left out."""
        for i in range(0, len(request_ids), chunk):
            ids = request_ids[i:i + chunk]
            yield from _grouped(self.db.execute(
                f"SELECT * FROM entries WHERE request_id IN ({','.join('?' * len(ids))}) "
                "ORDER BY request_id, seq", ids))

    def entries_of_kind(self, kind: str, upto: int | None = None) -> list[Entry]:
        """The entries of one kind (up to seq `upto`), without reading the others."""
        rows = self.db.execute("SELECT * FROM entries WHERE kind = ? AND seq <= ? ORDER BY seq",
                               (kind, (1 << 62) if upto is None else upto)).fetchall()
        return [Entry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def hash_at(self, seq: int) -> str | None:
        row = self.db.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    def request_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT request_id FROM entries WHERE kind = 'request.submitted' ORDER BY seq")]

    def require(self, request_id: str) -> list[Entry]:
        entries = self.entries(request_id)
        if not entries or entries[0].kind != "request.submitted":
            raise UnknownRequestError(f"unknown request id {request_id!r}")
        return entries

    def verify_chain(self) -> tuple[bool, int, str | None]:
        """(ok, entries checked, first problem). Recomputes every keyed hash from the start,
        then checks the chain against the head anchor: it must exist once there are
        entries, verify, and name an entry of the chain with that hash (the ledger may be
        ahead of it by a transaction whose anchor write crashed, never behind)."""
        mac = ChainMac(self._require_key("verify"))
        anchor, problem = self.read_anchor()
        if problem:
            return False, 0, problem
        prev, n, anchored_hash = GENESIS, 0, None
        start = self._format3_from()
        for seq, ts, rid, kind, body, prev_hash, h in self.db.execute(
                "SELECT * FROM entries ORDER BY seq"):
            n += 1
            if seq != n:
                return False, n, f"entry {n} is missing (found seq {seq})"
            if prev_hash != prev or not hmac.compare_digest(
                    mac.entry_hash(prev, seq, ts, rid, kind, body,
                                   _entry_format(seq, start)), h):
                return False, n, f"entry {seq} does not match its hash"
            if anchor is not None and seq == anchor["seq"]:
                anchored_hash = h
            prev = h
        if anchor is None:
            if n:
                return False, n, (f"the head anchor {self._anchor_name} is missing: the ledger "
                                  f"has {n} entries and nothing shows none were removed from "
                                  "its end")
            return True, 0, None
        if anchor["seq"] > n:
            return False, n, (f"the ledger was truncated: the head anchor records "
                              f"{anchor['seq']} entries, the ledger holds {n}")
        if anchor["seq"] > 0 and anchored_hash != anchor["hash"]:
            return False, n, (f"entry {anchor['seq']} differs from the head anchor (the chain "
                              "was rewritten)")
        return True, n, None

    def head(self) -> tuple[int, str]:
        row = self.db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)
