"""Conformance: every connector passes the same properties through the real engine (issue 10,
item 8).

Each case builds a small real dataset (Delta, Parquet, Feast with a SQLite or a Redis online
store, SQL on PostgreSQL and on SQLite) holding several rows of the subject and rows of
other subjects, writes an erasure.toml for it, and drives the engine the way an operator
does: `erasure plan` (the CLI), then requests run by the Runner with the connectors the
config builds. What each case exposes (`World`) is read independently of the connector:
every byte of the files, every key of the online store, every row of the table.

The properties:
 (a) the dry run changes nothing;
 (b) an erase removes exactly the planned rows and no other;
 (c) a second run of a finished request writes nothing (no ledger entry, no data), and a new
     request for the erased subject finds nothing and changes no data;
 (d) re-verification catches a row of the subject written back afterwards;
 (e) the guard stops an over-deleting connector: a wrapper, defined here, that delegates
     every method of the real connector (and so presents exactly its capabilities) but whose
     erase also deletes another subject's rows. What then survives depends on the connector
     and is asserted as far as it can do it: SQL rolls the transaction back (nothing
     deleted); Delta keeps the version before the delete (the rows restore by time travel)
     and the purge is withheld; Parquet keeps no earlier version, which the error says.
     Feast's guard is "subject-keys": see `test_guard`.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator
from uuid import uuid4

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors import base, default_registry
from connectors.base import (ConnectorRegistry, DerivesTargets, ErasesInTransaction,
                             FileVersions, Purges, ReaderView, ReadsVersions, TracesAttempts,
                             Versioned, VerifiesItself, abilities)
from erasure.cli import run_cli
from erasure.config import load_config
from erasure.engine import Engine
from erasure.errors import GuardTripped
from erasure.execution import Runner
from erasure.requests import load_state, submit

from conftest import read_table
from feast_helpers import (STATS, T0, materialize, stats_rows, stats_table, stats_view,
                          write_repo)
from sql_helpers import sql_database

SUBJECT, VICTIM = "7", "8"        # every case: 7 is erased; 8 is whom a faulty erase reaches
# every optional capability protocol connectors/base.py declares (a new one is wrapped too)
OPTIONAL = tuple(p for p in vars(base).values()
                 if isinstance(p, type) and getattr(p, "_is_runtime_protocol", False))
assert {Versioned, TracesAttempts, Purges, ErasesInTransaction, DerivesTargets, VerifiesItself,
        FileVersions, ReadsVersions, ReaderView} <= set(OPTIONAL)
CORE = ("handles", "key_type", "count", "live_rows", "erase", "residue_after")


# ---- what a case exposes ------------------------------------------------------------------
Rows = dict[str, dict[Any, list]]     # target name -> key value -> the units the plan counts


@dataclass
class World:
    config: Path
    connector: str                       # the connector under test
    typed: Callable[[str], Any]          # a subject id as the connector's key value
    state: Callable[[], Any]             # everything the systems hold (bytes, keys, rows)
    rows: Callable[[], Rows]             # per target: each subject's rows (keys online)
    reinsert: Callable[[], None]         # writes one row of the subject back
    # after the guard tripped on the over-deleting wrapper: what the connector can say of the
    # victim's rows (rows before, the error, the wrapper's recorded erase results)
    after_guard: Callable[[Rows, str, list], None] | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def by_key(records: list[dict], column: str) -> dict[Any, list]:
    """Each key's rows, every column's value in them, in a stable order."""
    out: dict[Any, list] = {}
    for r in records:
        out.setdefault(r[column], []).append(tuple(sorted((k, repr(v)) for k, v in r.items())))
    return {k: sorted(v) for k, v in out.items()}


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def write_config(tmp: Path, roots: list[tuple[str, str, str]], feast: tuple[Path, ...] = (),
                 extra: str = "") -> Path:
    """erasure.toml in its own folder (ledger and keys go beside it, not into the data)."""
    ctl = tmp / "ctl"
    ctl.mkdir()
    text = extra
    for ns, name, column in roots:
        text += (f"[[roots]]\nnamespace = {json.dumps(ns)}\nname = {json.dumps(name)}\n"
                 f"column = {json.dumps(column)}\n")
    for repo in feast:
        text += f"[[feast]]\nrepo = {json.dumps(str(repo))}\n"
    cfg = ctl / "erasure.toml"
    cfg.write_text(text)
    return cfg


def user(i: int, n: int) -> dict:
    return {"user_id": i, "email": f"user{i}.{n}@example.com", "score": i * 100 + n}


def users_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("user_id", pa.int64()), ("email", pa.string()), ("score", pa.int64())]))


# rows of 7 (the subject) in both files, of 8 (the victim), 9, 10 and 70 (a key that only
# looks like the subject's)
FIRST = [user(7, 0), user(8, 0), user(9, 0), user(7, 1), user(70, 0)]
SECOND = [user(7, 2), user(8, 1), user(10, 0), user(9, 1)]


# ---- Delta ----------------------------------------------------------------------------------
def build_delta(tmp: Path, request) -> World:
    from deltalake import DeltaTable, write_deltalake

    data = tmp / "data"
    path = data / "users"
    write_deltalake(path, users_table(FIRST))
    write_deltalake(path, users_table(SECOND), mode="append")

    def rows() -> Rows:
        return {str(path): by_key(read_table(str(path)).to_pylist(), "user_id")}

    def after_guard(before: Rows, error: str, results: list) -> None:
        # the faulty delete committed; the purge was withheld, so the version before it is
        # still readable and restores the victim's rows
        [res] = results
        assert "purge withheld" in error
        assert f"restored from version {res.version_before}" in error
        assert int(VICTIM) not in rows()[str(path)]
        old = DeltaTable(path, version=res.version_before).to_pyarrow_table()
        assert by_key(old.to_pylist(), "user_id")[int(VICTIM)] == before[str(path)][int(VICTIM)]
        DeltaTable(path).restore(res.version_before)
        assert rows() == before

    return World(
        write_config(tmp, [("file", str(path), "user_id")]), "delta", int,
        lambda: file_bytes(data), rows,
        lambda: write_deltalake(path, users_table([user(7, 9)]), mode="append"), after_guard)


# ---- Parquet --------------------------------------------------------------------------------
def build_parquet(tmp: Path, request) -> World:
    data = tmp / "data"
    folder = data / "users"
    folder.mkdir(parents=True)
    pq.write_table(users_table(FIRST), folder / "part-0.parquet")
    pq.write_table(users_table(SECOND), folder / "part-1.parquet")

    def rows() -> Rows:
        return {str(folder): by_key(read_table(str(folder)).to_pylist(), "user_id")}

    def after_guard(before: Rows, error: str, results: list) -> None:
        # Parquet keeps no earlier version: the guard names the over-delete, it cannot undo it
        assert "the connector keeps no earlier version to restore them from" in error
        assert int(VICTIM) not in rows()[str(folder)]

    return World(
        write_config(tmp, [("file", str(folder), "user_id")]), "parquet", int,
        lambda: file_bytes(data), rows,
        lambda: pq.write_table(users_table([user(7, 9)]), folder / "part-2.parquet"),
        after_guard)


# ---- Feast ----------------------------------------------------------------------------------
VIEWS = ("driver_stats", "driver_stats_copy")   # two views of one source: two online rows


def build_feast(tmp: Path, request, online: str) -> World:
    """A Parquet source (4 hourly rows per driver) feeding two feature views, materialized
    into a SQLite or Redis online store; the root is the source."""
    feast = request.getfixturevalue("feast")
    from feast.infra.key_encoding_utils import deserialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3
    from feast.types import Int64

    project = (request.getfixturevalue("redis_project") if online == "redis"
               else f"t{uuid4().hex[:8]}")
    data = tmp / "data"
    data.mkdir()
    src = data / "stats.parquet"
    ids = [7, 8, 9, 10, 70]
    pq.write_table(stats_table(stats_rows(ids), pa.int64()), src)
    repo = write_repo(data / "repo", project, online)
    entity = feast.Entity(name="driver", join_keys=["entity_id"],
                          value_type=feast.ValueType.INT64)
    store = feast.FeatureStore(repo_path=str(repo))
    store.apply([entity, *(stats_view(feast, v, entity, "entity_id", Int64, src, delta=False)
                           for v in VIEWS)])
    materialize(store)
    suffix = project.encode()

    def entity_id(key: bytes) -> int:
        return deserialize_entity_key(key, entity_key_serialization_version=3) \
            .entity_values[0].int64_val

    def redis_client():
        import redis

        from feast_helpers import REDIS
        return redis.Redis.from_url(f"redis://{REDIS}")

    def online_units() -> dict[str, dict[Any, list]]:
        """Per view, per entity: the entity's stored record in the online store, read raw."""
        out: dict[str, dict[Any, list]] = {v: {} for v in VIEWS}
        if online == "sqlite":
            db = sqlite3.connect(repo / "data" / "online_store.db")
            try:
                for v in VIEWS:
                    recs: dict[Any, list] = {}
                    for key, *rest in db.execute(
                            f'SELECT entity_key, feature_name, value, event_ts FROM "{project}_{v}"'):
                        recs.setdefault(entity_id(key), []).append(tuple(rest))
                    out[v] = {k: [tuple(sorted(r))] for k, r in recs.items()}
            finally:
                db.close()
            return out
        client = redis_client()
        try:
            for key in client.scan_iter(b"*" + suffix, count=1000):
                h = client.hgetall(key)
                for v in VIEWS:
                    ts = f"_ts:{v}".encode()
                    if ts in h:
                        mine = {_mmh3(f"{v}:{f}") for f in STATS} | {ts}
                        out[v][entity_id(key[:-len(suffix)])] = [
                            tuple(sorted((f, x) for f, x in h.items() if f in mine))]
        finally:
            client.close()
        return out

    def state():
        files = file_bytes(data)
        if online == "sqlite":
            return files
        client = redis_client()
        try:
            return files, {k: client.hgetall(k) for k in client.scan_iter(b"*" + suffix)}
        finally:
            client.close()

    def rows() -> Rows:
        return {str(src): by_key(pq.read_table(src).to_pylist(), "entity_id"), **online_units()}

    def reinsert() -> None:
        import pandas as pd

        # newer than what was materialized: a store that keeps the latest row takes it
        row = stats_rows([7], hours=1, tag="back", start=T0 + timedelta(days=30))
        feast.FeatureStore(repo_path=str(repo)).write_to_online_store(VIEWS[0], pd.DataFrame(row))

    def after_guard(before: Rows, error: str, results: list) -> None:
        # the online store keeps no earlier version: the guard names the over-delete after
        # the fact and stops the request before its other view
        assert "the connector keeps no earlier version to restore them from" in error
        now = rows()
        hit = [v for v in VIEWS if int(VICTIM) not in now[v]]
        assert len(hit) == 1 and len(results) == 1, (hit, results)
        [untouched] = [v for v in VIEWS if v not in hit]
        assert now[untouched] == before[untouched]      # never reached: the run stopped

    return World(write_config(tmp, [("file", str(src), "entity_id")], feast=(repo,)), "feast",
                 int, state, rows, reinsert, after_guard)


# ---- SQL --------------------------------------------------------------------------------------
def build_sql(tmp: Path, request, backend: str) -> World:
    """A users table in a PostgreSQL schema or a SQLite file of the test's own."""
    import sqlalchemy as sa

    stack = ExitStack()
    db = stack.enter_context(sql_database(backend, tmp))
    users = db.table("users", sa.Column("user_id", sa.BigInteger), sa.Column("email", sa.Text),
                     sa.Column("score", sa.Integer))
    with db.engine.begin() as c:
        c.execute(users.insert(), FIRST + SECOND)
    name = db.name("users")
    # the url as an absolute one: the config is not in the SQLite file's folder
    url = db.url if backend == "postgresql" else db.engine.url.render_as_string()

    def records() -> list[dict]:
        with db.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(users))]

    def state():
        if backend == "sqlite":
            return file_bytes(tmp / "data") | {"crm.db": (tmp / "crm.db").read_bytes()}, \
                sorted(map(repr, records()))
        # where each row version lives and which transaction wrote it: a rewrite shows
        with db.engine.connect() as c:
            return sorted(tuple(map(str, r)) for r in c.execute(sa.text(
                f'SELECT ctid, xmin, * FROM "{db.schema}".users')))

    def reinsert() -> None:
        with db.engine.begin() as c:
            c.execute(users.insert(), [user(7, 9)])

    (tmp / "data").mkdir()
    cfg = write_config(tmp, [(db.namespace, name, "user_id")],
                       extra=f"[[sql]]\nnamespace = {json.dumps(db.namespace)}\n"
                             f"url = {json.dumps(url)}\n")
    return World(cfg, "sql", int, state, lambda: {name: by_key(records(), "user_id")}, reinsert,
                 cleanup=[stack.close])


BUILDERS: dict[str, Callable[[Path, Any], World]] = {
    "delta": build_delta,
    "parquet": build_parquet,
    "feast-sqlite": lambda tmp, request: build_feast(tmp, request, "sqlite"),
    "feast-redis": lambda tmp, request: build_feast(tmp, request, "redis"),
    "sql-postgres": lambda tmp, request: build_sql(tmp, request, "postgresql"),
    "sql-sqlite": lambda tmp, request: build_sql(tmp, request, "sqlite"),
}


@pytest.fixture(params=list(BUILDERS))
def world(request, tmp_path, monkeypatch) -> Iterator[World]:
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    monkeypatch.delenv("ERASURE_CONFIG", raising=False)
    w = BUILDERS[request.param](tmp_path, request)
    yield w
    for f in w.cleanup:
        f()


# ---- the engine, as an operator drives it ---------------------------------------------------
@contextmanager
def engine(w: World, registry: ConnectorRegistry | None = None) -> Iterator[Engine]:
    from connectors.sql import SqlConnector

    cfg = load_config(w.config)
    registry = registry or default_registry(cfg)
    eng = Engine(cfg, registry=registry)
    try:
        yield eng
    finally:
        eng.close()
        for c in registry.connectors:      # pooled database connections (a wrapper's inner)
            if isinstance(getattr(c, "inner", c), SqlConnector):
                getattr(c, "inner", c).dispose()


def dry_run(w: World, capsys) -> dict:
    capsys.readouterr()      # drop what the setup printed (Feast does)
    code = run_cli(["--config", str(w.config), "plan", "--subject-id", SUBJECT, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def request_for(w: World, subject: str = SUBJECT) -> str:
    with engine(w) as eng:
        return submit(eng.ledger, eng.keys, subject, "conformance", None)


class GuardWatch(Runner):
    """The real runner; remembers the guard's exception when an erase step trips it (the
    run records only its message)."""

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.tripped: list[GuardTripped] = []

    def _erase(self, conn, members):
        try:
            return super()._erase(conn, members)
        except GuardTripped as exc:
            self.tripped.append(exc)
            raise


def run(w: World, rid: str, registry: ConnectorRegistry | None = None):
    """Run one request: (its outcome, the guard's exceptions, every ledger entry after)."""
    with engine(w, registry) as eng:
        runner = GuardWatch(eng)
        [out] = runner.run([rid])
        return out, runner.tripped, list(eng.ledger.entries())


def ledger_entries(w: World) -> list:
    with engine(w) as eng:
        return list(eng.ledger.entries())


def recorded_plan(w: World, rid: str):
    with engine(w) as eng:
        return load_state(eng.ledger, rid).plan


def planned_rows(plan_targets: list[dict], before: Rows, key: Any) -> None:
    """Every target the plan names is one the case observes, and its planned rows are the
    subject's rows there (several in all)."""
    assert {t["name"] for t in plan_targets} == set(before)
    for t in plan_targets:
        assert t["rows"] == len(before[t["name"]].get(key, [])), t["name"]
    assert sum(t["rows"] for t in plan_targets) >= 2


def others(rows: Rows, but: set) -> Rows:
    return {name: {k: v for k, v in keyed.items() if k not in but} for name, keyed in rows.items()}


# ---- the faulty wrapper ---------------------------------------------------------------------
def wrapper(inner, extra: list) -> Any:
    """A connector that delegates every method of `inner`'s protocols to it, method by
    method (runtime_checkable protocols look methods up on the class, so each is defined
    there); its erase (and erase_within) also passes `extra` values: an over-deleting
    connector when `extra` names another subject, a recording one when it is empty."""

    def delegate(method: str):
        def call(self, *args, **kw):
            return getattr(self.inner, method)(*args, **kw)
        call.__name__ = method
        return call

    methods = set(CORE) | {m for p in OPTIONAL if isinstance(inner, p)
                           for m in (n for n, v in vars(p).items()
                                     if callable(v) and not n.startswith("_"))}
    body: dict[str, Any] = {m: delegate(m) for m in methods}

    def __init__(self, inner, extra):
        self.inner, self.extra, self.calls = inner, list(extra), []

    def erase(self, namespace, name, column, values, tag, **ctx):
        res = self.inner.erase(namespace, name, column, [*values, *self.extra], tag, **ctx)
        self.calls.append((name, list(values), res))
        return res

    def erase_within(self, namespace, name, column, values, tag, low, high):
        self.calls.append((name, list(values), None))
        res = self.inner.erase_within(namespace, name, column, [*values, *self.extra], tag,
                                      low, high)
        self.calls[-1] = (name, list(values), res)
        return res

    body.update(__init__=__init__, erase=erase, name=inner.name,
                capabilities=inner.capabilities, presentation=inner.presentation)
    if "erase_within" in methods:
        body["erase_within"] = erase_within
    cls = type(f"Faulty{type(inner).__name__}", (), body)
    w = cls(inner, extra)
    # it presents exactly the inner connector's capabilities
    assert [isinstance(w, p) for p in OPTIONAL] == [isinstance(inner, p) for p in OPTIONAL]
    assert abilities(w) == abilities(inner)
    return w


def registry_wrapping(w: World, extra: list):
    reg = default_registry(load_config(w.config))
    wrapped = {c.name: wrapper(c, extra) for c in reg.connectors if c.name == w.connector}
    return (ConnectorRegistry([wrapped.get(c.name, c) for c in reg.connectors]),
            wrapped[w.connector])


# ---- (a) --------------------------------------------------------------------------------------
def test_dry_run_changes_nothing(world, capsys):
    before_state, before = world.state(), world.rows()
    plan = dry_run(world, capsys)
    assert world.state() == before_state
    assert world.rows() == before
    planned_rows(plan["targets"], before, world.typed(SUBJECT))
    assert ledger_entries(world) == []          # a dry run records nothing either


# ---- (b) --------------------------------------------------------------------------------------
def test_erase_removes_exactly_the_planned_rows(world, capsys):
    key, before = world.typed(SUBJECT), world.rows()
    dry = dry_run(world, capsys)
    rid = request_for(world)
    out, _, entries = run(world, rid)
    assert out.status == "completed", out.errors
    plan = recorded_plan(world, rid)
    targets = [t.to_json() for t in plan.targets]
    planned_rows(targets, before, key)
    assert {t["name"]: t["rows"] for t in dry["targets"]} == {t["name"]: t["rows"] for t in targets}

    after = world.rows()
    assert {name: keyed.get(key, []) for name, keyed in after.items()} == {
        name: [] for name in before}
    assert others(after, {key}) == others(before, {key})
    # the counts recorded are the plan's, and the connector's own count of what it deleted
    by_name = {t["name"]: t for t in targets}
    for t in out.targets:
        assert t["rows_deleted"] == t["rows_planned"] == by_name[t["name"]]["rows"], t
        assert t["verified"] is True and t["rows_remaining"] == 0, t
    erased = [e.body for e in entries if e.kind == "step.completed" and e.body["phase"] == "erase"]
    assert sorted((e["name"], e["batch_rows_deleted"]) for e in erased) == sorted(
        (t["name"], t["rows"]) for t in targets)


# ---- (c) --------------------------------------------------------------------------------------
def test_second_run_writes_nothing(world):
    rid = request_for(world)
    first, _, entries = run(world, rid)
    assert first.status == "completed", first.errors
    state, rows = world.state(), world.rows()

    again, _, entries_again = run(world, rid)
    assert again.status == "completed"
    assert again.notes == ["already finished; nothing was repeated"]
    assert entries_again == entries             # not one ledger entry more
    assert world.state() == state and world.rows() == rows

    # a new request for the erased subject finds nothing and changes no data
    rid2 = request_for(world)
    assert rid2 != rid
    fresh, _, _ = run(world, rid2)
    assert fresh.status == "not_found", (fresh.status, fresh.errors, fresh.targets)
    assert all(t["rows_planned"] == 0 and not t["rows_deleted"] for t in fresh.targets)
    assert world.state() == state and world.rows() == rows


# ---- (d) --------------------------------------------------------------------------------------
def test_verify_catches_a_row_written_back(world):
    rid = request_for(world)
    out, _, _ = run(world, rid)
    assert out.status == "completed", out.errors
    with engine(world) as eng:
        [holds] = Runner(eng).reverify([rid])
    assert holds.status == "holds", holds.errors

    world.reinsert()
    assert any(keyed.get(world.typed(SUBJECT)) for keyed in world.rows().values())
    with engine(world) as eng:
        [again] = Runner(eng).reverify([rid])
        failed = [e.body for e in eng.ledger.entries(rid)
                  if e.kind == "step.failed" and e.body["phase"] == "reverify"]
    assert again.status == "violated", again
    assert failed and all(f["rows_remaining"] >= 1 for f in failed)
    assert any("still readable" in e for e in again.errors), again.errors


# ---- (e) --------------------------------------------------------------------------------------
def test_guard(world):
    """A wrapper that erases the subject and also the victim (8). Every connector's guard
    must fail the request with GuardTripped, before any purge or verification, and keep what
    its design keeps of the victim's rows. Feast's guard is "subject-keys" (the plan is no
    bound, since a materialize may rewrite the subject's keys): it trips when the delete
    removed more keys than the subject had present just before it."""
    before = world.rows()
    rid = request_for(world)
    conn = default_registry(load_config(world.config)).get(world.connector)
    registry, faulty = registry_wrapping(world, [world.typed(VICTIM)])
    out, tripped, entries = run(world, rid, registry)
    assert out.status == "failed"
    assert len(tripped) == 1 and isinstance(tripped[0], GuardTripped)
    assert out.errors == [str(tripped[0])]
    assert faulty.calls, "the faulty erase ran"
    mine = [e for e in entries if e.request_id == rid]
    assert [e.body["phase"] for e in mine if e.kind == "step.failed"] == ["erase"]
    # the wrapped connector's targets got no step past the erase (a source another connector
    # erased first, Feast's, completed its own)
    assert not [e for e in mine if e.kind.startswith("step.") and e.body["phase"] != "erase"
                and e.body["target"].startswith(world.connector + "|")]
    assert not [e for e in entries if e.kind == "table.history"]      # no purge began
    assert [e.kind for e in mine][-1] == "request.failed"
    if isinstance(conn, ErasesInTransaction):
        # the delete's own transaction was rolled back: nothing at all was deleted
        assert world.rows() == before
    else:
        world.after_guard(before, str(tripped[0]), [res for _, _, res in faulty.calls])
