"""Persisted lineage: validated events in SQLite, so commands never re-parse unchanged files.

Ingest is idempotent: a file whose size, mtime and hash are unchanged is skipped, and events
are keyed by the hash of their normalized content, so the same event ingested twice (from
the same or another file) counts once.

A file holding any malformed event is refused as a whole in strict mode (nothing from it is
applied); in lenient mode only the malformed events are skipped. Either way every rejected
event is reported with its file and line. One event posted to the service (POST
/api/v1/lineage) goes through `ingest_event`: the same validation (strict), the same key.

An event's key is the SHA-256 of its RFC 8785 canonical JSON (`erasure.canonical`). A store
written before (keys over Python's sorted `json.dumps`) is re-keyed once when opened, so the
same event ingested again still counts once; the scheme is recorded in the `meta` table.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..canonical import SCHEME, NotCanonicalJSON, canonical_bytes
from ..errors import MalformedEventError
from .events import LineageEvent, Rejected, parse_file, validate_event

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,
                                  sha256 TEXT, events INTEGER);
CREATE TABLE IF NOT EXISTS events (hash TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def event_key(event_json: dict) -> tuple[str, str]:
    """(key, body): the event's canonical JSON (RFC 8785) and its SHA-256."""
    data = canonical_bytes(event_json)
    return hashlib.sha256(data).hexdigest(), data.decode("utf-8")


@dataclass
class IngestReport:
    files_read: int = 0
    files_unchanged: int = 0
    files_refused: list[str] = field(default_factory=list)
    events_new: int = 0
    events_seen: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"files_read": self.files_read, "files_unchanged": self.files_unchanged,
                "files_refused": self.files_refused, "events_new": self.events_new,
                "events_seen": self.events_seen,
                "rejected": [{"file": r.file, "line": r.line, "reason": r.reason}
                             for r in self.rejected],
                "warnings": self.warnings}


def expand_globs(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches and not glob.has_magic(pattern):
            matches = [pattern]   # a plain missing path is reported, not ignored
        out.extend(Path(m) for m in matches)
    return out


class LineageStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # several service processes may write events at once: wait for each other's
        # commits (WAL lets readers go on meanwhile) instead of failing after 5 s
        self.db = sqlite3.connect(path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self._rekey()

    def _rekey(self) -> None:
        """Key every stored event by its RFC 8785 form, once (a store written before)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'canonical'").fetchone()
        if row is not None and row[0] == SCHEME:
            return
        with self.db:
            bodies = [b for (b,) in self.db.execute("SELECT body FROM events")]
            self.db.execute("DELETE FROM events")
            for b in bodies:
                self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?)",
                                event_key(json.loads(b)))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('canonical', ?)", (SCHEME,))

    def close(self) -> None:
        self.db.close()

    def ingest(self, files: list[Path], lenient: bool = False, force: bool = False) -> IngestReport:
        rep = IngestReport()
        for f in files:
            if not f.is_file():
                rep.files_refused.append(str(f))
                rep.rejected.append(Rejected(str(f), 0, "file not found"))
                continue
            st = f.stat()
            key = str(f.resolve())
            row = self.db.execute("SELECT size, mtime_ns, sha256 FROM files WHERE path = ?",
                                  (key,)).fetchone()
            if row and not force and row[0] == st.st_size and row[1] == st.st_mtime_ns:
                rep.files_unchanged += 1
                continue
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            if row and not force and row[2] == digest:
                rep.files_unchanged += 1
                continue
            rep.files_read += 1
            try:
                events, rejected, warnings = parse_file(f, lenient)
            except (UnicodeDecodeError, OSError) as exc:
                events, rejected, warnings = [], [Rejected(str(f), 0, f"unreadable: {exc}")], []
            keyed = []
            for ev in events:
                try:
                    keyed.append(event_key(ev.to_json()))
                except NotCanonicalJSON as exc:    # e.g. a lone surrogate in a name
                    rejected.append(Rejected(str(f), 0, f"event has no canonical JSON: {exc}"))
            rep.rejected.extend(rejected)
            rep.warnings.extend(warnings)
            if rejected and not lenient:
                rep.files_refused.append(str(f))
                continue
            with self.db:
                for h, body in keyed:
                    rep.events_seen += 1
                    cur = self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?)", (h, body))
                    rep.events_new += cur.rowcount
                self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                                (key, st.st_size, st.st_mtime_ns, digest, len(events)))
        return rep

    def ingest_event(self, obj: object) -> tuple[str, bool]:
        """Validate one event (parsed JSON) as `ingest` validates each event of a file, in
        strict mode, and store it under the same content key: (key, new). Idempotent: an
        event stored before (from a file or here) is not stored again. MalformedEventError
        saying what is wrong, and nothing stored, for a bad event."""
        ev = validate_event(obj, lenient=False)
        try:
            h, body = event_key(ev.to_json())
        except NotCanonicalJSON as exc:      # e.g. a lone surrogate in a name
            raise MalformedEventError(f"event has no canonical JSON: {exc}") from None
        with self.db:
            cur = self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?)", (h, body))
        return h, cur.rowcount == 1

    def ingest_text(self, text: str) -> tuple[str, bool]:
        """`ingest_event` of one event's JSON text (an OpenLineage HTTP transport's body)."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MalformedEventError(f"invalid JSON: {exc.msg} at line {exc.lineno} column "
                                      f"{exc.colno}") from None
        return self.ingest_event(obj)

    def events(self) -> list[LineageEvent]:
        return [LineageEvent.from_json(json.loads(b))
                for (b,) in self.db.execute("SELECT body FROM events ORDER BY hash")]

    def counts(self) -> dict[str, int]:
        return {"files": self.db.execute("SELECT count(*) FROM files").fetchone()[0],
                "events": self.db.execute("SELECT count(*) FROM events").fetchone()[0]}
