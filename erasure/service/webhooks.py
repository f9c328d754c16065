"""Webhooks: a signed POST to every `[[service.webhooks]]` URL when a request's status changes.

    status_changed(config, request_id, status, actor=None)

queues one delivery per configured webhook and returns at once; a background thread (one per
ledger) sends them. Each delivery is a POST of

    {"event": "request.status_changed", "request_id": ..., "status": ..., "at": ...,
     "delivery_id": ...}

(never a subject id) with `Content-Type: application/json`, `X-Erasure-Delivery: <id>`,
`X-Erasure-Timestamp: <unix seconds of this attempt>` and
`X-Erasure-Signature: sha256=<hex HMAC-SHA256 of the raw body under the webhook's secret>`.
A 2xx answer is success; a 3xx or a 4xx other than 408 and 429 is a final failure; anything
else (5xx, 408, 429, a timeout, a refused connection) is tried again after 0.5, 1, 2 and 4
seconds: MAX_ATTEMPTS (5) in all. The final outcome is recorded in the ledger as
`webhook.delivered` or `webhook.failed` on the request, with the URL (no query string, no
user info), the delivery id, the status, the attempts and the HTTP status or the error.

Queued deliveries are kept in an outbox, a small SQLite file next to the ledger
(`<ledger>-webhooks.db`; request ids, statuses and URLs, no subject id and no secret): a
process that stops or is killed before a delivery's outcome is recorded sends it again, with
the same delivery id, when the service starts next (at least once; receivers deduplicate by
`X-Erasure-Delivery`). A status change committed to the ledger by a process killed before it
called `status_changed` is never sent (docs/service-worker.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("erasure.service.webhooks")

EVENT = "request.status_changed"
MAX_ATTEMPTS = 5
FIRST_DELAY = 0.5           # seconds before the 2nd attempt; doubled before each next one
TIMEOUT = 10.0              # seconds per attempt (connect, read, write)
ACTOR = "service-webhooks"  # who records the outcomes in the ledger
RETRIED_4XX = (408, 429)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    delivery_id TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        BLOB NOT NULL,      -- the exact bytes signed and sent, every attempt
    changed_by  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     REAL NOT NULL,      -- unix time of the next attempt
    outcome     TEXT                -- the final outcome, once known, until it is recorded
);
CREATE INDEX IF NOT EXISTS outbox_next ON outbox (next_at);
"""


def sign(secret: str, body: bytes) -> str:
    """The X-Erasure-Signature header's value for `body`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def public_url(url: str) -> str:
    """The URL as recorded and logged: no user info, no query string, no fragment (where
    tokens usually hide)."""
    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{p.port}" if p.port is not None else "")
    return urlunsplit((p.scheme, netloc, p.path, "", ""))


def outbox_path(config: Any) -> Path:
    lp = Path(config.ledger_path)
    return lp.with_name(lp.name + "-webhooks.db")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Dispatcher:
    """The outbox of one ledger and the thread that delivers it."""

    def __init__(self, path: Path, config: Any):
        self.path = path
        self.config = config            # the latest config given (URLs and secrets)
        self._cv = threading.Condition()
        self._kick = False
        self._stop = False
        self._thread: threading.Thread | None = None

    # ---- producers -----------------------------------------------------------------
    def enqueue(self, config: Any, rows: list[tuple[str, str, str, str, bytes, str | None]]) -> None:
        db = _connect(self.path)
        try:
            db.executemany("INSERT INTO outbox (delivery_id, url, request_id, status, body, "
                           "changed_by, next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(*r, time.time()) for r in rows])
        finally:
            db.close()
        self.config = config
        self.start()

    def start(self) -> None:
        """Start (or restart) the delivery thread; it sends whatever the outbox holds."""
        with self._cv:
            self._stop = False
            self._kick = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"erasure-webhooks-{self.path.name}")
                self._thread.start()
            self._cv.notify_all()

    def left(self) -> int:
        """How many deliveries the outbox holds (queued, retrying, or not yet recorded)."""
        if not self.path.exists():
            return 0
        db = _connect(self.path)
        try:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        finally:
            db.close()

    def stop(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for the outbox to empty, then stop the thread (an
        attempt in flight ends first). Returns how many deliveries are left for the next
        start."""
        deadline = time.monotonic() + timeout
        while self.left() and time.monotonic() < deadline and self._alive():
            time.sleep(0.05)
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        t = self._thread
        if t is not None:
            t.join(max(0.0, deadline - time.monotonic()) + TIMEOUT)
        return self.left()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- the delivery thread -----------------------------------------------------
    def _run(self) -> None:
        import httpx

        db = _connect(self.path)
        client = httpx.Client(timeout=TIMEOUT, follow_redirects=False)
        try:
            while True:
                with self._cv:
                    if self._stop:
                        return
                    self._kick = False
                row = db.execute("SELECT delivery_id, url, request_id, status, body, changed_by, "
                                 "attempts, outcome FROM outbox WHERE next_at <= ? "
                                 "ORDER BY next_at LIMIT 1", (time.time(),)).fetchone()
                if row is None:
                    nxt = db.execute("SELECT min(next_at) FROM outbox").fetchone()[0]
                    wait = 30.0 if nxt is None else max(0.0, min(30.0, nxt - time.time()))
                    with self._cv:
                        if not self._kick and not self._stop:
                            self._cv.wait(wait)
                    continue
                try:
                    self._handle(db, client, *row)
                except Exception as exc:     # never let one delivery stop the others
                    log.error("webhook delivery %s: %s", row[0], type(exc).__name__)
                    db.execute("UPDATE outbox SET next_at = ? WHERE delivery_id = ?",
                               (time.time() + 30, row[0]))
        finally:
            client.close()
            db.close()

    def _handle(self, db: sqlite3.Connection, client: Any, delivery_id: str, url: str,
                request_id: str, status: str, body: bytes, changed_by: str | None,
                attempts: int, outcome: str | None) -> None:
        if outcome is None:
            result = self._attempt(client, url, body, delivery_id, attempts + 1)
            attempts += 1
            if result is None:                # to be tried again
                delay = FIRST_DELAY * 2 ** (attempts - 1)
                db.execute("UPDATE outbox SET attempts = ?, next_at = ? WHERE delivery_id = ?",
                           (attempts, time.time() + delay, delivery_id))
                return
            kind, detail = result
            rec: dict[str, Any] = {"url": public_url(url), "delivery_id": delivery_id,
                                   "status": status, "attempts": attempts, **detail}
            if changed_by:
                rec["changed_by"] = changed_by
            outcome = json.dumps({"kind": kind, "body": rec})
            db.execute("UPDATE outbox SET attempts = ?, outcome = ? WHERE delivery_id = ?",
                       (attempts, outcome, delivery_id))
        o = json.loads(outcome)
        try:
            _record(self.config, request_id, o["kind"], o["body"])
        except Exception as exc:
            # delivered (or failed) but not recorded: record it later, never send it again
            log.error("webhook %s %s: not recorded in the ledger yet (%s); trying again in 5 s",
                      delivery_id, o["kind"], type(exc).__name__)
            db.execute("UPDATE outbox SET next_at = ? WHERE delivery_id = ?",
                       (time.time() + 5, delivery_id))
            return
        db.execute("DELETE FROM outbox WHERE delivery_id = ?", (delivery_id,))
        (log.info if o["kind"] == "webhook.delivered" else log.warning)(
            "%s %s request %s status %s to %s after %d attempt(s)", o["kind"], delivery_id,
            request_id, status, public_url(url), attempts)

    def _attempt(self, client: Any, url: str, body: bytes, delivery_id: str,
                 attempt: int) -> tuple[str, dict[str, Any]] | None:
        """One POST: ("webhook.delivered" | "webhook.failed", detail), or None to retry."""
        import httpx

        secret = next((w.secret for w in self.config.service.webhooks if w.url == url), None)
        if secret is None:
            return "webhook.failed", {"error": "the webhook is no longer configured"}
        headers = {"Content-Type": "application/json", "X-Erasure-Delivery": delivery_id,
                   "X-Erasure-Timestamp": str(int(time.time())),
                   "X-Erasure-Signature": sign(secret, body),
                   "User-Agent": "erasure-webhooks/1"}
        try:
            r = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # the class only: a message can repeat the URL with its query string
            err = type(exc).__name__
            log.info("webhook %s attempt %d: %s", delivery_id, attempt, err)
            return None if attempt < MAX_ATTEMPTS else ("webhook.failed", {"error": err})
        code = r.status_code
        if 200 <= code < 300:
            return "webhook.delivered", {"http_status": code}
        final = (300 <= code < 500 and code not in RETRIED_4XX) or attempt >= MAX_ATTEMPTS
        log.info("webhook %s attempt %d: HTTP %d%s", delivery_id, attempt, code,
                 "" if final else ", trying again")
        return ("webhook.failed", {"http_status": code}) if final else None


def _record(config: Any, request_id: str, kind: str, body: dict[str, Any]) -> None:
    """Append the outcome to the ledger (its own Engine: SQLite connections are per thread),
    unless an earlier try already did (a process killed between the append and the outbox
    delete)."""
    from ..engine import Engine

    eng = Engine(config, actor=ACTOR)
    try:
        ledger = eng.ledger
        done = any(e.kind in ("webhook.delivered", "webhook.failed")
                   and e.body.get("delivery_id") == body["delivery_id"]
                   for e in ledger.entries(request_id))
        if not done:
            ledger.append(request_id, kind, dict(body))
    finally:
        eng.close()


_dispatchers: dict[Path, Dispatcher] = {}
_lock = threading.Lock()


def _dispatcher(config: Any) -> Dispatcher:
    path = outbox_path(config)
    with _lock:
        d = _dispatchers.get(path)
        if d is None:
            d = _dispatchers[path] = Dispatcher(path, config)
        d.config = config
        return d


def status_changed(config: Any, request_id: str, status: str, actor: str | None = None) -> list[str]:
    """Queue a signed POST of this status change to every configured webhook; returns the
    delivery ids (none without webhooks). Never blocks on the network, never raises for a
    receiver's failure (the outcome is recorded in the ledger)."""
    hooks = list(config.service.webhooks)
    if not hooks:
        return []
    at = _now_iso()
    rows = []
    for w in hooks:
        did = uuid.uuid4().hex
        body = json.dumps({"event": EVENT, "request_id": request_id, "status": status,
                           "at": at, "delivery_id": did},
                          separators=(",", ":"), sort_keys=True).encode("utf-8")
        rows.append((did, w.url, request_id, status, body, actor))
    _dispatcher(config).enqueue(config, rows)
    return [r[0] for r in rows]


def resume(config: Any) -> int:
    """Start delivering what a previous process left in the outbox; how many it holds."""
    if not config.service.webhooks and not outbox_path(config).exists():
        return 0
    d = _dispatcher(config)
    n = d.left()
    if n:
        log.info("webhooks: %d delivery(ies) left by a previous run, sending them", n)
        d.start()
    return n


def shutdown(timeout: float = 5.0) -> int:
    """Give the outboxes up to `timeout` seconds to empty, then stop their threads; how many
    deliveries are left (kept in the outboxes for the next start)."""
    with _lock:
        ds = list(_dispatchers.values())
    left = 0
    for d in ds:
        if d._alive():
            left += d.stop(timeout)
    if left:
        log.warning("webhooks: %d delivery(ies) not finished at shutdown; kept in the outbox "
                    "for the next start", left)
    return left
