"""The ledger on PostgreSQL (`[ledger] url = "postgresql://..."`), for service deployments
where several processes share one ledger. SQLite stays the embedded default.

The same tables, the same keyed hash chain and the same verification as on SQLite
(erasure/ledger.py); what differs is said here once:

- **Connection.** `PgConnection` gives the ledger the part of sqlite3's connection API it uses
  (`execute` with `?` parameters, `executemany`, `executescript`, iteration, `fetchone`,
  `fetchall`), over psycopg2 in autocommit mode with explicit BEGIN/COMMIT. Byte columns come
  back as `bytes`, as from SQLite.
- **SQL.** The few SQLite functions the engine's queries use are created in the ledger's
  schema with SQLite's meaning: `json_extract(text, '$.a.b')` (a string as its value, an
  object or array as its JSON text, JSON null as NULL), `instr`. PostgreSQL's JSON refuses
  the escape `\u0000`, which a body may hold (a dataset name an OpenLineage event gave,
  listed as unresolved in a plan): one such entry, kept for good, would break every later
  query; so the function reads the body with that escape as U+FFFD (the entry, and its hash,
  are untouched: only what this function extracts changes, and no status, HMAC or target
  key holds a NUL). Everything else is written
  in SQL both understand (`coalesce`, `IS NOT DISTINCT FROM`, `ON CONFLICT`).
- **Writers.** A transaction takes a transaction-scoped advisory lock first (`BEGIN
  IMMEDIATE` on SQLite): appends from all processes are serialised, so the chain stays exact.
  The run lock (`Ledger.exclusive`) is a session advisory lock held on its own connection:
  two processes never run at the same time, so never the same request twice.
- **Append-only.** Triggers refuse UPDATE and DELETE on `entries` and `meta`.
- **Head anchor.** The anchored head (HMAC'd under the chain key, as in `<ledger>.head`) is a
  row of `head_anchor`, written after each commit. Unlike the file beside a SQLite ledger it
  lives in the same database: someone who can write the database can put back an older
  ledger together with its older anchor; a later signed report or checkpoint still catches
  that (docs/proof-reports.md names this limit for both).

The schema is chosen by the URL (`?options=-csearch_path%3Dmyschema`); the tables and
functions are created there on first use, under an advisory lock.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, Sequence

from .errors import ConfigError

# advisory lock keys (64-bit): appends, the run lock, schema creation
APPEND_LOCK = 0x45524153455F4C31       # "ERASE_L1"
RUN_LOCK = 0x45524153455F5231          # "ERASE_R1"
SCHEMA_LOCK = 0x45524153455F5331       # "ERASE_S1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq BIGINT PRIMARY KEY,
    ts TEXT NOT NULL,
    request_id TEXT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_request ON entries(request_id, seq);
CREATE INDEX IF NOT EXISTS entries_kind ON entries(kind, seq);
CREATE TABLE IF NOT EXISTS sealed_subjects (request_id TEXT PRIMARY KEY, sealed BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS head_anchor (id INTEGER PRIMARY KEY, anchor TEXT NOT NULL);
CREATE OR REPLACE FUNCTION erasure_append_only() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    RAISE EXCEPTION 'ledger % are append-only (% refused)', TG_TABLE_NAME, TG_OP;
END
$f$;
DO $d$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                    WHERE t.tgname = 'entries_append_only'
                      AND c.relnamespace = current_schema()::regnamespace) THEN
        CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
            FOR EACH ROW EXECUTE FUNCTION erasure_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                    WHERE t.tgname = 'meta_write_once'
                      AND c.relnamespace = current_schema()::regnamespace) THEN
        CREATE TRIGGER meta_write_once BEFORE UPDATE OR DELETE ON meta
            FOR EACH ROW EXECUTE FUNCTION erasure_append_only();
    END IF;
END
$d$;
CREATE OR REPLACE FUNCTION json_extract(doc TEXT, path TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $f$
    SELECT CASE json_typeof(v) WHEN 'string' THEN v #>> '{}' WHEN 'null' THEN NULL
                ELSE v::text END
      FROM (SELECT (replace(doc, '\\u0000', '\\ufffd')::json)
                   #> string_to_array(substr(path, 3), '.') AS v) s
$f$;
CREATE OR REPLACE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS INTEGER
LANGUAGE sql IMMUTABLE AS $f$ SELECT strpos(haystack, needle) $f$;
"""


def redact_url(url: str) -> str:
    """The URL without a password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def _translate(sql: str) -> str:
    """sqlite3's `?` parameters as psycopg2's `%s` (and a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _row(r: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(bytes(x) if isinstance(x, memoryview) else x for x in r)


class _Cursor:
    def __init__(self, cur: Any):
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def fetchone(self) -> tuple[Any, ...] | None:
        r = self._cur.fetchone()
        return None if r is None else _row(r)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [_row(r) for r in self._cur.fetchall()]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while True:
            rows = self._cur.fetchmany(2000)
            if not rows:
                return
            for r in rows:
                yield _row(r)


def connect(url: str) -> Any:
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None:
        raise ConfigError("[ledger] url is a PostgreSQL URL but psycopg2 is not installed: "
                          "pip install 'erasure[postgres]'")
    import psycopg2  # type: ignore[import-untyped]

    try:
        db = psycopg2.connect(url)
    except psycopg2.Error as exc:
        raise ConfigError(f"cannot open the ledger database {redact_url(url)}: "
                          f"{str(exc).strip().splitlines()[0]}") from None
    db.autocommit = True
    return db


class PgConnection:
    """The sqlite3-like connection the Ledger uses, over psycopg2 (see the module)."""

    backend = "postgres"

    def __init__(self, url: str):
        self.url = url
        self._db = connect(url)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> _Cursor:
        import psycopg2

        args = tuple(params)
        cur = self._db.cursor()
        try:
            if args:
                cur.execute(_translate(sql), args)
            else:
                cur.execute(sql)
        except psycopg2.errors.RaiseException as exc:      # the append-only triggers
            import sqlite3

            raise sqlite3.IntegrityError(str(exc).strip().splitlines()[0]) from None
        return _Cursor(cur)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        from psycopg2.extras import execute_batch  # type: ignore[import-untyped]

        with self._db.cursor() as cur:
            execute_batch(cur, _translate(sql), list(rows), page_size=1000)

    def executescript(self, script: str) -> None:
        with self._db.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
            try:
                cur.execute(script)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))

    def begin_exclusive(self) -> None:
        """BEGIN, then wait for the append lock (held until COMMIT or ROLLBACK)."""
        with self._db.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))

    def tables(self) -> set[str]:
        cur = self.execute("SELECT table_name FROM information_schema.tables "
                           "WHERE table_schema = current_schema()")
        return {r[0] for r in cur}

    def read_anchor(self) -> str | None:
        if "head_anchor" not in self.tables():
            return None
        row = self.execute("SELECT anchor FROM head_anchor WHERE id = 1").fetchone()
        return None if row is None else row[0]

    def write_anchor(self, text: str) -> None:
        self.execute("INSERT INTO head_anchor VALUES (1, ?) ON CONFLICT (id) DO UPDATE "
                     "SET anchor = excluded.anchor", (text,))

    def try_run_lock(self) -> "PgConnection | None":
        """The run lock on a connection of its own (released when it is closed), or None
        when another process holds it."""
        other = PgConnection(self.url)
        got = other.execute("SELECT pg_try_advisory_lock(?)", (RUN_LOCK,)).fetchone()
        if got is None or not got[0]:
            other.close()
            return None
        return other

    def close(self) -> None:
        self._db.close()


def count_entries(url: str) -> int:
    """How many entries the ledger at `url` holds (0 when there is no ledger yet)."""
    db = PgConnection(url)
    try:
        if "entries" not in db.tables():
            return 0
        row = db.execute("SELECT count(*) FROM entries").fetchone()
        return int(row[0]) if row else 0
    finally:
        db.close()
