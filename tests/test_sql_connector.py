"""The SQL connector on the machine's PostgreSQL (127.0.0.1:5432, trust auth, user postgres,
database `test`) and on SQLite files: a subject's rows are counted, deleted in one
transaction and verified gone; nobody else's rows are touched, whatever the id holds; the
guard rolls the delete back; and the CLI erases a subject from both end to end. Each test
works in a schema (PostgreSQL) or a file (SQLite) of its own, dropped afterwards."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Lake
from sql_helpers import Db, sql_database
from test_proof_report import _pdf_decoded

from connectors import default_registry
from connectors.sql import SqlConnector
from erasure.config import load_config
from erasure.errors import ConfigError, ConnectorError, GuardTripped, UnknownDatasetError

HOSTILE = ["x' OR '1'='1", "'; DROP TABLE accounts; --", "o'neil", 'dq"uote', "b\\",
           "émile ✓ 日本", "%", "_", "a" * 512, "Alice"]
OTHERS = ["alice", "ALICE", "bob", "x", "1", "42", "o'neil2", "a" * 511, "%%", "émile"]


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request, tmp_path, monkeypatch):
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    monkeypatch.delenv("ERASURE_CONFIG", raising=False)
    with sql_database(request.param, tmp_path) as d:
        yield d


def _users(db: Db) -> sa.Table:
    t = db.table("users", sa.Column("user_id", sa.BigInteger), sa.Column("email", sa.Text))
    with db.engine.begin() as c:
        c.execute(t.insert(), [{"user_id": u, "email": f"user{u}@example.com"}
                               for u in (1, 2, 42, 42, 42, 7, 420, 4)])
    return t


def _accounts(db: Db, column_type: Any = sa.Text) -> sa.Table:
    t = db.table("accounts", sa.Column("account", column_type), sa.Column("n", sa.Integer))
    with db.engine.begin() as c:
        c.execute(t.insert(), [{"account": a, "n": i} for i, a in enumerate(HOSTILE + OTHERS)])
    return t


# ---- the protocol ------------------------------------------------------------------------------
def test_count_erase_verify_removes_the_subjects_rows_and_keeps_everyone_elses(db):
    users = _users(db)
    conn = db.connector()
    name = db.name("users")
    others = [r for r in db.rows(users) if r[0] != 42]

    assert conn.handles(db.namespace, name) and not conn.handles("file", name)
    assert conn.key_type(db.namespace, name, "user_id") == "int64"
    assert conn.key_type(db.namespace, name, "email") == "string"
    assert conn.key_type(db.namespace, name, "nope") is None
    counted = conn.count(db.namespace, name, "user_id", [42, 7, 999])
    assert counted.rows == {42: 3, 7: 1, 999: 0}
    assert counted.files == {42: [], 7: [], 999: []} and counted.version is None

    res = conn.erase_within(db.namespace, name, "user_id", [42], "run-x", 3, 3)

    assert res.rows_deleted == 3
    assert conn.live_rows(db.namespace, name, "user_id", [42]) == {42: 0}
    assert db.rows(users) == others
    # a second erase finds nothing and deletes nothing
    assert conn.erase(db.namespace, name, "user_id", [42], "run-y").rows_deleted == 0
    # a row written back afterwards is what verification counts
    with db.engine.begin() as c:
        c.execute(users.insert(), [{"user_id": 42, "email": "back@example.com"}])
    assert conn.live_rows(db.namespace, name, "user_id", [42]) == {42: 1}
    conn.dispose()


def test_a_missing_table_is_an_unknown_dataset_and_a_bad_name_says_the_rule(db):
    conn = db.connector()
    with pytest.raises(UnknownDatasetError, match="no table"):
        conn.key_type(db.namespace, db.name("no_such_table"), "user_id")
    rule = "database.schema.table" if db.backend == "postgresql" else "main.table"
    with pytest.raises(UnknownDatasetError, match=rule):
        conn.key_type(db.namespace, "users", "user_id")
    conn.dispose()


@pytest.mark.parametrize("subject", HOSTILE)
def test_a_hostile_id_erases_exactly_its_own_rows(db, subject):
    accounts = _accounts(db)
    conn = db.connector()
    name = db.name("accounts")
    before = db.rows(accounts)

    assert conn.count(db.namespace, name, "account", [subject]).rows == {subject: 1}
    res = conn.erase_within(db.namespace, name, "account", [subject], "run-x", 1, 1)

    assert res.rows_deleted == 1
    assert db.rows(accounts) == [r for r in before if r[0] != subject]   # the table stands
    assert conn.count(db.namespace, name, "account", [subject]).rows == {subject: 0}
    conn.dispose()


def test_many_subjects_are_erased_in_chunks_of_one_transaction(db):
    t = db.table("events", sa.Column("k", sa.Integer))
    with db.engine.begin() as c:
        c.execute(t.insert(), [{"k": i} for i in range(1500)])
    conn = db.connector()
    ids = list(range(0, 1500, 2)) + [5000]      # 751 keys: two statements

    res = conn.erase_within(db.namespace, db.name("events"), "k", ids, "run-x", 750, 750)

    assert res.rows_deleted == 750
    assert [r[0] for r in db.rows(t)] == list(range(1, 1500, 2))
    conn.dispose()


def test_the_guard_rolls_the_delete_back_and_names_no_subject(db):
    accounts = _accounts(db)
    conn = db.connector()
    before = db.rows(accounts)
    subject = "'; DROP TABLE accounts; --"

    for low, high in ((2, 5), (0, 0)):       # the plan said 2+ rows / none; there is 1
        with pytest.raises(GuardTripped) as err:
            conn.erase_within(db.namespace, db.name("accounts"), "account",
                              [subject, "bob"], "run-x", low + 1, high + 1)
        assert "rolled back" in str(err.value) and subject not in str(err.value)
        assert "bob" not in str(err.value)
        assert db.rows(accounts) == before
    conn.dispose()


def test_a_case_insensitive_column_stops_the_erase_instead_of_reaching_another_subject(db):
    if db.backend == "postgresql":
        with db.engine.begin() as c:
            c.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citext"))
        from sqlalchemy.dialects.postgresql import CITEXT

        accounts = _accounts(db, CITEXT())
    else:
        accounts = _accounts(db, sa.Text(collation="NOCASE"))
    conn = db.connector()
    before = db.rows(accounts)

    with pytest.raises(ConnectorError, match="differs from every subject key") as err:
        conn.count(db.namespace, db.name("accounts"), "account", ["Alice"])
    with pytest.raises(ConnectorError, match="nothing was deleted"):
        conn.erase_within(db.namespace, db.name("accounts"), "account", ["Alice"], "r", 0, 9)

    assert "Alice" not in str(err.value) and "alice" not in str(err.value)
    assert db.rows(accounts) == before
    conn.dispose()


# SQLite enforces foreign keys only on connections that ask (PRAGMA foreign_keys), which this
# connector does not: docs/connectors/sql.md says what that leaves
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_row_another_table_references_fails_the_delete_with_the_database_error(db):
    users = db.table("parents", sa.Column("user_id", sa.BigInteger, primary_key=True))
    orders = db.table("orders", sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("user_id", sa.BigInteger,
                                sa.ForeignKey(users.c.user_id)))
    with db.engine.begin() as c:
        c.execute(users.insert(), [{"user_id": 424242}, {"user_id": 1}])
        c.execute(orders.insert(), [{"id": 1, "user_id": 424242}])
    conn = db.connector()

    with pytest.raises(ConnectorError, match="ForeignKeyViolation|IntegrityError") as err:
        conn.erase_within(db.namespace, db.name("parents"), "user_id", [424242], "r", 1, 1)

    assert "424242" not in str(err.value)        # the DETAIL line's key is redacted
    assert db.rows(users) == [(1,), (424242,)]
    conn.dispose()


# ---- configuration -------------------------------------------------------------------------------
def test_a_missing_password_variable_is_a_config_error_naming_it(db, monkeypatch):
    monkeypatch.delenv("ERASURE_TEST_NO_SUCH_PW", raising=False)
    cfg = db.config([(db.name("users"), "user_id")],
                    extra='password_env = "ERASURE_TEST_NO_SUCH_PW"\n')
    with pytest.raises(ConfigError, match="ERASURE_TEST_NO_SUCH_PW is not set"):
        default_registry(load_config(cfg))


def test_unsupported_urls_and_unknown_keys_are_refused(tmp_path):
    root = '[[roots]]\nnamespace = "a"\nname = "b"\ncolumn = "c"\n'
    for sql, message in (
            ('url = "mysql://h/db"\nnamespace = "n"', "[[sql]] #1 url must be an SQLAlchemy url"),
            ('url = "sqlite:///x.db"\nnamespace = "n"\npassword = "p"',
             "[[sql]] #1 unknown key 'password'"),
            ('url = "sqlite:///x.db"', "[[sql]] #1 needs 'namespace'")):
        cfg = tmp_path / "erasure.toml"
        cfg.write_text(root + "[[sql]]\n" + sql + "\n")
        with pytest.raises(ConfigError) as err:
            load_config(cfg)
        assert message in str(err.value), str(err.value)


def test_a_relative_sqlite_path_resolves_against_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "erasure.toml"
    cfg.write_text('[[roots]]\nnamespace = "crm"\nname = "main.t"\ncolumn = "c"\n'
                   '[[sql]]\nnamespace = "crm"\nurl = "sqlite:///data/crm.db"\n')
    conn = default_registry(load_config(cfg)).get("sql")
    assert isinstance(conn, SqlConnector)
    assert conn.servers["crm"].url.database == str(tmp_path / "data" / "crm.db")


# ---- end to end, with the CLI ----------------------------------------------------------------
SUBJECT = "cust-'; DROP TABLE customers; --ÿ-93c1"


def _event(db: Db, source: str, target: str) -> str:
    """orders' customer_ref is an IDENTITY copy of customers' ref (column lineage)."""
    return json.dumps({
        "eventType": "COMPLETE", "eventTime": "2026-11-01T00:00:00Z", "producer": "tests",
        "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "crm", "name": "orders"},
        "inputs": [{"namespace": db.namespace, "name": source}],
        "outputs": [{"namespace": db.namespace, "name": target, "facets": {"columnLineage": {
            "fields": {"customer_ref": {"inputFields": [{
                "namespace": db.namespace, "name": source, "field": "ref",
                "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}]}}}}}]}) + "\n"


def test_the_cli_erases_a_subject_from_sql_tables_end_to_end(db, capsys, monkeypatch):
    customers = db.table("customers", sa.Column("ref", sa.String(600), primary_key=True),
                         sa.Column("email", sa.Text))
    orders = db.table("orders", sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("customer_ref", sa.Text), sa.Column("amount", sa.Integer))
    refs = [SUBJECT, "cust-1", "CUST-'; drop table customers; --ÿ-93C1", "cust-2"]
    with db.engine.begin() as c:
        c.execute(customers.insert(), [{"ref": r, "email": f"{i}@example.com"}
                                       for i, r in enumerate(refs)])
        c.execute(orders.insert(), [{"id": i, "customer_ref": refs[i % 4], "amount": i}
                                    for i in range(12)])
    others = ([r for r in db.rows(customers) if r[0] != SUBJECT],
              [r for r in db.rows(orders) if r[1] != SUBJECT])
    (db.root / "events.jsonl").write_text(_event(db, db.name("customers"), db.name("orders")))
    monkeypatch.setenv("ERASURE_TEST_PG_PASSWORD", "not-printed-7c1e")   # trust auth ignores it
    cfg = db.config([(db.name("customers"), "ref")], "events.jsonl",
                    'password_env = "ERASURE_TEST_PG_PASSWORD"\n'
                    if db.backend == "postgresql" else "")
    lake = Lake(db.root, cfg, {}, db.root / "events.jsonl")
    printed: list[str] = []

    def cli(*args: str) -> tuple[int, dict]:
        code, out = lake.cli(*args, "--json", capsys=capsys)
        printed.append(out + lake.last_err)
        return code, json.loads(out)

    assert cli("keys", "init")[0] == 0
    code, plan = cli("plan", "--subject-id", SUBJECT)
    assert code == 0, plan
    assert {(t["name"], t["column"], t["how"], t["connector"], t["rows"], t["key_type"])
            for t in plan["targets"]} == {
        (db.name("customers"), "ref", "root", "sql", 1, "string"),
        (db.name("orders"), "customer_ref", "column_lineage", "sql", 3, "string")}
    code, sub = cli("request", "submit", "--subject-id", SUBJECT,
                    "--requested-by", "dpo@example.com")
    assert code == 0, sub
    code, res = cli("run", sub["request_id"])
    assert code == 0 and res["status"] == "completed", res
    assert {t["rows_deleted"] for t in res["requests"][0]["targets"]} == {1, 3}
    assert all(t["verified"] for t in res["requests"][0]["targets"])
    pdf = db.root / "proof.pdf"
    code, rep = cli("report", sub["request_id"], "--output", str(pdf))
    assert code == 0 and pdf.is_file(), rep
    code, checked = cli("verify-report", str(pdf))
    assert code == 0 and checked["ok"] is True, checked

    # the rows are gone, everyone else's remain
    assert ([r for r in db.rows(customers)], [r for r in db.rows(orders)]) == others
    # the plain id (and the password) are in no output, ledger file or the report
    for needle in (SUBJECT, "not-printed-7c1e"):
        assert not any(needle in out for out in printed)
        for f in (db.root / ".erasure").rglob("*"):
            if f.is_file():
                assert needle.encode() not in f.read_bytes(), f
        assert needle.encode() not in pdf.read_bytes()
        assert needle not in _pdf_decoded(pdf)
