"""A database of a test's own for the SQL connector: a schema in the machine's PostgreSQL
(127.0.0.1:5432, trust auth, user postgres, database `test`), dropped afterwards, or a SQLite
file in the test's folder. `Db` names its tables as OpenLineage does and writes the
[[sql]] entry."""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import sqlalchemy as sa

from connectors import default_registry
from erasure.config import load_config

if TYPE_CHECKING:
    from connectors.sql import SqlConnector

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
PG_NAMESPACE = "postgres://127.0.0.1:5432"


@dataclass
class Db:
    """One test's database: the [[sql]] entry naming it and how to name a table in it."""

    backend: str
    root: Path                  # the folder the config file goes into
    namespace: str
    url: str                    # as written in the config
    engine: sa.Engine           # the test's own engine, to set up and inspect tables
    schema: str | None          # PostgreSQL: this test's schema

    def name(self, table: str) -> str:
        """The table as OpenLineage names it."""
        return f"test.{self.schema}.{table}" if self.backend == "postgresql" else f"main.{table}"

    def table(self, table: str, *columns: sa.Column) -> sa.Table:
        t = sa.Table(table, sa.MetaData(), *columns, schema=self.schema)
        t.create(self.engine)
        return t

    def rows(self, t: sa.Table) -> list[tuple]:
        with self.engine.connect() as c:
            return sorted(tuple(r) for r in c.execute(sa.select(t)))

    def config(self, roots: list[tuple[str, str]], events: str | None = None,
               extra: str = "") -> Path:
        cfg = self.root / "erasure.toml"
        text = f'[lineage]\nevents = [{json.dumps(events) if events else ""}]\n'
        for name, column in roots:
            text += (f'[[roots]]\nnamespace = "{self.namespace}"\nname = "{name}"\n'
                     f'column = "{column}"\n')
        cfg.write_text(text + f'[[sql]]\nnamespace = "{self.namespace}"\nurl = "{self.url}"\n'
                       + extra)
        return cfg

    def connector(self) -> SqlConnector:
        from connectors.sql import SqlConnector

        cfg = self.config([(self.name("none"), "x")])
        conn = default_registry(load_config(cfg)).get("sql")
        assert isinstance(conn, SqlConnector)
        return conn


@contextmanager
def sql_database(backend: str, root: Path) -> Iterator[Db]:
    """A Db of its own: a SQLite file `crm.db` in `root`, or a new PostgreSQL schema
    (dropped with everything in it afterwards)."""
    if backend == "sqlite":
        engine = sa.create_engine(f"sqlite:///{root / 'crm.db'}")
        try:
            yield Db("sqlite", root, f"sqlite:///{root / 'crm.db'}", "sqlite:///crm.db",
                     engine, None)
        finally:
            engine.dispose()
        return
    schema = f"erasure_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as c:
        c.execute(sa.schema.CreateSchema(schema))
    try:
        # the url's database is replaced by the dataset name's first part (test)
        yield Db("postgresql", root, PG_NAMESPACE,
                 "postgresql://postgres@127.0.0.1:5432/postgres", engine, schema)
    finally:
        with engine.begin() as c:
            c.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()
