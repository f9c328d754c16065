"""SQL connector: rows in PostgreSQL and SQLite tables, through SQLAlchemy Core.

Datasets are named as OpenLineage names them. PostgreSQL: namespace `postgres://{host}:{port}`,
name `{database}.{schema}.{table}`; the database of the configured url is replaced by the
name's first part. SQLite (OpenLineage defines no naming for it): namespace as configured, name
`main.{table}`; the url names the file. Each server is one `[[sql]]` entry (`SqlEntry`).

Erasure is one DELETE transaction per table: every statement is parameterized (an expanding
bind parameter, 500 keys a statement), identifiers are quoted by SQLAlchemy from the reflected
table, and the rows deleted are compared with the guard's bounds before COMMIT; outside them
the transaction rolls back (`erase_within`). Rows are matched exactly: a string key is compared
byte for byte in Python after the database matched it, so a case-insensitive collation or
type (NOCASE, citext) that would reach another subject's rows stops the erase instead. What
the database keeps outside the table (WAL, backups, replicas, dead row versions until VACUUM)
is beyond any SQL statement: `capabilities.notes` and `residue_after` say so.
It lists the stored spellings of a normalized identity (`key_variants`: the column's distinct
values normalized in Python, no SQL prefilter) and reads `[[enrich]]` lookup tables
(`lookup`: one read-only transaction).
docs/connectors/sql.md has the details; docs/write-a-connector.md walks through this file.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Literal, Sequence

from pydantic import AfterValidator, BaseModel

from erasure.config import SECTION, Text, refuse, resolve_path
from erasure.errors import ConfigError, ConnectorError, GuardTripped, UnknownDatasetError

from .base import (Capabilities, ConnectorPlugin, ConnectorRegistry, EraseResult, Presentation,
                   TargetCount)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table
    from sqlalchemy.engine import URL

    from erasure.config import Config

Backend = Literal["postgresql", "sqlite"]
CHUNK = 500                 # keys per statement: well under every driver's parameter limit
VARIANT_BATCH = 10_000      # distinct keys fetched at a time when listing key variants


# ---- configuration: [[sql]] ------------------------------------------------------------------
def _backend(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""


def _supported(url: str) -> str:
    if _backend(url) not in ("postgresql", "sqlite"):
        raise refuse("must be an SQLAlchemy url of PostgreSQL (postgresql://user@host:port/) "
                     "or SQLite (sqlite:///file.db)")
    return url


class SqlEntry(BaseModel):
    """One database server (PostgreSQL) or file (SQLite) whose tables the lineage names."""

    model_config = SECTION
    namespace: Text                                     # as the lineage events name the server
    url: Annotated[Text, AfterValidator(_supported)]    # SQLAlchemy url
    password_env: Text | None = None                    # environment variable with the password


@dataclass(frozen=True)
class Server:
    namespace: str
    backend: Backend
    url: URL                            # driver named, password set, SQLite path absolute


def _server(i: int, e: SqlEntry, base_dir: Any) -> Server:
    from sqlalchemy.engine import make_url

    where = f"[[sql]] #{i}"
    try:
        url = make_url(e.url)
    except Exception:
        raise ConfigError(f"{where} url is not an SQLAlchemy url") from None
    backend: Backend = "postgresql" if url.get_backend_name() == "postgresql" else "sqlite"
    if e.password_env is not None:
        if url.password is not None:
            raise ConfigError(f"{where}: give the password in url or password_env, not both")
        secret = os.environ.get(e.password_env)
        if secret is None:
            raise ConfigError(f"{where} password_env: the environment variable "
                              f"{e.password_env} is not set")
        url = url.set(password=secret)
    if backend == "postgresql":
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the extra installs psycopg2
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg2")
        from . import extras

        if url.get_driver_name() == "psycopg2":
            extras.require(extras.SQL_POSTGRES)
    elif url.database and url.database != ":memory:":
        url = url.set(database=str(resolve_path(base_dir, url.database)))
    else:
        raise ConfigError(f"{where} url: a SQLite url must name a file (sqlite:///file.db)")
    return Server(e.namespace, backend, url)


# ---- the connector ------------------------------------------------------------------------
@dataclass(frozen=True)
class TableRef:
    server: Server
    database: str | None        # PostgreSQL's database; None for SQLite (the url's file)
    schema: str
    table: str


class SqlPresentation(Presentation):
    def plan_lines(self, t: dict[str, Any]) -> list[str]:
        return [f"rows {t['rows']} (deleted in one transaction, guard checked before COMMIT)"]


def _arrow_type(typ: Any, backend: Backend) -> str:
    """The Arrow type name the engine coerces subject ids to (integer and string keys match)."""
    import sqlalchemy as sa

    if isinstance(typ, sa.Enum):
        return "enum"
    if isinstance(typ, sa.BigInteger):
        return "int64"
    if isinstance(typ, sa.SmallInteger):
        return "int16"
    if isinstance(typ, sa.Integer):             # SQLite's INTEGER holds 64 bits
        return "int64" if backend == "sqlite" else "int32"
    if isinstance(typ, sa.String):              # VARCHAR, TEXT, CHAR (and citext)
        return "string"
    for kind, name in ((sa.Boolean, "bool"), (sa.Float, "double"), (sa.Numeric, "decimal128"),
                       (sa.DateTime, "timestamp[us]"), (sa.Date, "date32"),
                       (sa.LargeBinary, "binary"), (sa.Uuid, "uuid")):
        if isinstance(typ, kind):
            return name
    return type(typ).__name__.lower()           # any other: the engine refuses it by name


class SqlConnector:
    name = "sql"
    capabilities = Capabilities(
        residue_scan=False, batch=True, guard="exact", erase_order=0,
        notes=("rows are deleted in one transaction; the database's write-ahead log, its "
               "archives, backups and replicas keep the old rows until their own retention "
               "ends: outside this connector",
               "PostgreSQL keeps dead row versions in the table's pages until VACUUM; SQLite "
               "zeroes them here (secure_delete) but its journal file is unlinked, not wiped",
               "no versions: a change since the plan trips the guard; re-plan and run again"))
    presentation = SqlPresentation("SQL table", "SQL tables", "rows deleted", color="#3b6ea5")

    def __init__(self, servers: Sequence[Server]):
        self.servers = {s.namespace: s for s in servers}
        self._engines: dict[tuple[str, str | None], Engine] = {}

    # ---- naming, engines, reflection --------------------------------------------------
    def handles(self, namespace: str, name: str) -> bool:
        return namespace in self.servers

    def _ref(self, namespace: str, name: str) -> TableRef:
        server = self.servers.get(namespace)
        if server is None:
            raise UnknownDatasetError(f"no [[sql]] entry names namespace {namespace}")
        if server.backend == "postgresql":
            parts = name.split(".", 2)
            if len(parts) == 3 and all(parts):
                return TableRef(server, parts[0], parts[1], parts[2])
            raise UnknownDatasetError(f"{namespace}: PostgreSQL dataset names are "
                                      f"database.schema.table, not {name}")
        schema, _, table = name.partition(".")
        if schema != "main" or not table:
            raise UnknownDatasetError(f"{namespace}: SQLite dataset names are main.table, "
                                      f"not {name}")
        return TableRef(server, None, schema, table)

    def _engine(self, ref: TableRef) -> Engine:
        key = (ref.server.namespace, ref.database)
        if key not in self._engines:
            import sqlalchemy as sa

            url = ref.server.url
            if ref.database is not None:
                url = url.set(database=ref.database)
            # hide_parameters: a library error never quotes a subject id
            engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
            if ref.server.backend == "sqlite":
                @sa.event.listens_for(engine, "connect")
                def _wipe_freed_pages(dbapi_conn: Any, _: Any) -> None:
                    dbapi_conn.execute("PRAGMA secure_delete = ON")
            self._engines[key] = engine
        return self._engines[key]

    def _table(self, conn: Connection, ref: TableRef) -> Table:
        import sqlalchemy as sa

        try:
            return sa.Table(ref.table, sa.MetaData(), schema=ref.schema, autoload_with=conn,
                            resolve_fks=False)
        except sa.exc.NoSuchTableError:
            raise UnknownDatasetError(f"no table {ref.schema}.{ref.table} in "
                                      f"{ref.server.namespace}"
                                      + (f" database {ref.database}" if ref.database else ""))

    @contextmanager
    def _reading(self, name: str, values: Sequence[Any]) -> Iterator[None]:
        """The database's errors as ConnectorError, subject keys redacted (parameters are
        hidden already; a constraint's DETAIL may still quote a key)."""
        import sqlalchemy as sa

        from erasure.subject import redact

        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise ConnectorError(f"{name}: sql connector error: {type(exc).__name__}: "
                                 + redact(str(exc), values)[:500]) from None

    def _exact(self, table: Table, column: str, backend: Backend) -> Any:
        """The key as Python compares it: strings as the text they hold (bytes compared in
        Python), so a row matched only by a collation's or type's equality shows up."""
        import sqlalchemy as sa

        col = table.c[column]
        if backend == "postgresql" and isinstance(col.type, sa.String):
            return sa.cast(col, sa.Text).collate("C")
        if isinstance(col.type, sa.String):
            return col.collate("BINARY")
        return col

    @staticmethod
    def _strays(name: str, column: str, n: int) -> ConnectorError:
        return ConnectorError(
            f"{name}: the database matched {n} rows whose {column} differs from every "
            "subject key (a case-insensitive collation or type?); nothing was deleted. Erase "
            "by hand, or exclude the dataset with a reason")

    @staticmethod
    def _chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
        distinct = list(dict.fromkeys(values))
        for i in range(0, len(distinct), CHUNK):
            yield distinct[i:i + CHUNK]

    # ---- the protocol ------------------------------------------------------------------
    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        ref = self._ref(namespace, name)
        with self._reading(name, []), self._engine(ref).connect() as conn:
            table = self._table(conn, ref)
        if column not in table.c:
            return None
        return _arrow_type(table.c[column].type, ref.server.backend)

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount:
        import sqlalchemy as sa

        ref = self._ref(namespace, name)
        rows = {v: 0 for v in values}
        strays = 0
        with self._reading(name, values), self._engine(ref).connect() as conn:
            table = self._table(conn, ref)
            key = self._exact(table, column, ref.server.backend)
            stmt = (sa.select(key, sa.func.count())
                    .where(table.c[column].in_(sa.bindparam("keys", expanding=True)))
                    .group_by(key))
            for chunk in self._chunks(values):
                for k, n in conn.execute(stmt, {"keys": chunk}):
                    if k in rows:
                        rows[k] += n
                    else:
                        strays += n
        if strays:
            raise self._strays(name, column, strays)
        return TargetCount(rows=rows, files={v: [] for v in values}, version=None)

    def live_rows(self, namespace: str, name: str, column: str,
                  values: Sequence[Any]) -> dict[Any, int]:
        return self.count(namespace, name, column, values).rows

    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult:
        return self.erase_within(namespace, name, column, values, tag, 0, 1 << 62)

    def erase_within(self, namespace: str, name: str, column: str, values: Sequence[Any],
                     tag: str, low: int, high: int) -> EraseResult:
        """DELETE in one transaction; outside [low, high] rows it rolls back and raises
        GuardTripped, and nothing was deleted. `tag` is not stored: a committed DELETE leaves
        no mark in the table (an interrupted attempt cannot be traced)."""
        import sqlalchemy as sa

        ref = self._ref(namespace, name)
        wanted = set(values)
        deleted = strays = 0
        with self._reading(name, values), self._engine(ref).begin() as conn:
            table = self._table(conn, ref)
            key = self._exact(table, column, ref.server.backend)
            stmt = (table.delete()
                    .where(table.c[column].in_(sa.bindparam("keys", expanding=True)))
                    .returning(key))
            for chunk in self._chunks(values):
                for (k,) in conn.execute(stmt, {"keys": chunk}):
                    deleted += 1
                    strays += k not in wanted
            # raised inside the transaction: leaving it by an exception rolls it back
            if strays:
                raise self._strays(name, column, strays)
            if not low <= deleted <= high:
                raise GuardTripped(
                    f"{name}: the delete matched {deleted} rows, outside the {low}..{high} the "
                    "plan allows; rolled back, nothing was deleted. Re-plan with `erasure run "
                    "--replan` after checking the table")
        return EraseResult(rows_deleted=deleted, version_before=None, version_after=None,
                           files_removed=0, files_added=0)

    # ---- optional capabilities: FindsKeyVariants, LooksUp -------------------------------
    def key_variants(self, namespace: str, name: str, column: str, rule: str,
                     values: Sequence[str]) -> dict[str, list[str]]:
        """For each normalized value, the distinct stored values of the string column whose
        normalized form equals it, exactly as stored (FindsKeyVariants).

        No prefilter in SQL: the distinct keys are read (one statement, streamed in batches
        of VARIANT_BATCH) and normalized in Python by erasure.identity.normalized, the same
        function that normalized the request. A `lower(trim(col)) IN (...)` prefilter would
        miss spellings: PostgreSQL's trim() strips spaces only (not tabs or no-break spaces,
        which Python's strip() removes) and lower() follows the database's locale; SQLite's
        lower() folds ASCII only (`ÉMILE` stays `Émile`). The cost is one scan of the column
        per call, linear in the table's rows (measured on PostgreSQL: 0.2 s for 100,000
        distinct keys, 2.2 s for a million, index or not; docs/connectors/sql.md). DISTINCT
        runs on the exact text (`_exact`), so a case-insensitive collation does not fold two
        spellings into one. Values that are not text (SQLite's dynamic typing) are skipped; a
        value empty once normalized finds nothing (it would match every unrelated key)."""
        import sqlalchemy as sa

        from erasure.identity import normalized

        ref = self._ref(namespace, name)
        wanted: dict[str, list[str]] = {}
        for v in values:
            if normalized(rule, v):
                wanted.setdefault(normalized(rule, v), []).append(v)
        found: dict[str, set[str]] = {v: set() for v in values}
        with self._reading(name, values), self._engine(ref).connect() as conn:
            table = self._table(conn, ref)
            key = self._exact(table, column, ref.server.backend)
            stmt = sa.select(key).where(table.c[column].is_not(None)).distinct()
            rows = conn.execution_options(stream_results=True,
                                          yield_per=VARIANT_BATCH).execute(stmt)
            for (stored,) in rows:
                if not isinstance(stored, str):
                    continue
                for v in wanted.get(normalized(rule, stored), ()):
                    found[v].add(stored)
        return {v: sorted(x) for v, x in found.items()}

    def lookup(self, namespace: str, name: str, from_column: str, to_column: str,
               values: Sequence[Any]) -> tuple[dict[Any, list[Any]], int | None]:
        """`to_column` values per `from_column` value (LooksUp), NULLs left out: one
        statement per 500 keys, all in one transaction (PostgreSQL: REPEATABLE READ, one
        snapshot; SQLite: an explicit BEGIN, so every statement reads the same state). Keys
        are bound parameters; a string key is compared exactly in Python after the database
        matched it (rows a case-insensitive collation matched for another key are left out).
        No versions: the version is None."""
        import sqlalchemy as sa

        ref = self._ref(namespace, name)
        out: dict[Any, set[Any]] = {v: set() for v in values}
        with self._reading(name, values), self._snapshot(ref) as conn:
            table = self._table(conn, ref)
            key = self._exact(table, from_column, ref.server.backend)
            to = self._exact(table, to_column, ref.server.backend)
            stmt = (sa.select(key, to).distinct()
                    .where(table.c[from_column].in_(sa.bindparam("keys", expanding=True)))
                    .where(table.c[to_column].is_not(None)))
            for chunk in self._chunks(values):
                for k, v in conn.execute(stmt, {"keys": chunk}):
                    if k in out:
                        out[k].add(v)
        return {k: sorted(v, key=str) for k, v in out.items()}, None

    @contextmanager
    def _snapshot(self, ref: TableRef) -> Iterator[Connection]:
        """A read-only transaction whose statements all see one state of the database."""
        if ref.server.backend == "postgresql":
            with self._engine(ref).connect() as conn:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                    yield conn
            return
        with self._engine(ref).connect() as conn:
            # pysqlite begins no transaction for a SELECT: ask for one (deferred: the read
            # lock, or the WAL snapshot, is taken by the first read and held to the end)
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()

    def residue_after(self, namespace: str, name: str, mode: str | None = None) -> dict[str, Any]:
        server = self.servers.get(namespace)
        dead = ("dead row versions in the table's pages until VACUUM"
                if server is None or server.backend == "postgresql" else
                "the rollback journal's unlinked blocks on disk")
        return {"mode": "delete",
                "remains": [dead, "the write-ahead log and its archives, backups and replicas "
                                  "(the database's own retention)"],
                "until": None,
                "note": "rows deleted in one transaction; the database keeps old row versions "
                        "outside the table until its own cleanup"}

    def dispose(self) -> None:
        """Close every pooled connection (tests, long-lived processes)."""
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


def _build(config: Config, registry: ConnectorRegistry) -> SqlConnector | None:
    entries: list[SqlEntry] = config.section("sql") or []
    if not entries:
        return None
    from . import extras

    extras.require(extras.SQL)
    seen: set[str] = set()
    for i, e in enumerate(entries, 1):
        if e.namespace in seen:
            raise ConfigError(f"[[sql]] #{i} namespace {e.namespace} is named by an earlier "
                              "[[sql]] entry")
        seen.add(e.namespace)
    return SqlConnector([_server(i, e, config.base_dir) for i, e in enumerate(entries, 1)])


PLUGIN = ConnectorPlugin("sql", SqlConnector.presentation, _build, section="sql",
                         model=list[SqlEntry], default=list, order=40)
