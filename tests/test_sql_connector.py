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


def _json_cli(db, cfg, capsys):
    """The CLI on `cfg` with --json, in-process: (call, everything it printed so far)."""
    lake = Lake(db.root, cfg, {}, db.root / "events.jsonl")
    printed: list[str] = []

    def cli(*args: str) -> tuple[int, dict]:
        code, out = lake.cli(*args, "--json", capsys=capsys)
        printed.append(out + lake.last_err)
        return code, json.loads(out)

    return cli, printed


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
    cli, printed = _json_cli(db, cfg, capsys)
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


# ---- key variants and lookups (FindsKeyVariants, LooksUp) ----------------------------------
ALICE = ["alice@example.com", "Alice@Example.COM", " alice@example.com ",
         "\tALICE@example.com\u00a0"]            # tab and no-break space: Python's strip()
NEAR = ["alice@example.org", "malice@example.com", "alice@example.co", "bob@example.com"]
EMILE = ["émile@example.com", "ÉMILE@Example.com"]   # SQLite's lower() folds ASCII only


def _contacts(db: Db, column_type: Any = sa.Text) -> sa.Table:
    t = db.table("contacts", sa.Column("email", column_type),
                 sa.Column("customer_id", sa.BigInteger), sa.Column("phone", sa.Text))
    rows = ([(e, 42) for e in ALICE] + [(ALICE[1], 42), (ALICE[2], 43)]
            + [(e, 100 + i) for i, e in enumerate(NEAR)] + [(e, 50) for e in EMILE]
            + [(None, 60), ("carol@example.com", None)])
    phones = ["+49 30 1234", "(49) 30-1234", "49301234", "4930 12345", "unknown"]
    with db.engine.begin() as c:
        c.execute(t.insert(), [{"email": e, "customer_id": cid, "phone": phones[i % 5]}
                               for i, (e, cid) in enumerate(rows)])
    return t


def _all(db: Db, t: sa.Table) -> list[str]:
    """Every row, NULLs too (as text, to sort)."""
    with db.engine.connect() as c:
        return sorted(repr(tuple(r)) for r in c.execute(sa.select(t)))


def test_the_connector_declares_key_variants_and_lookup(db):
    from connectors.base import FindsKeyVariants, LooksUp, abilities

    conn = db.connector()
    assert isinstance(conn, FindsKeyVariants) and isinstance(conn, LooksUp)
    assert abilities(conn)["key_variants"] is True and abilities(conn)["lookup"] is True
    conn.dispose()


def test_key_variants_lists_every_stored_spelling_exactly_and_no_near_miss(db):
    contacts = _contacts(db)
    conn = db.connector()
    name = db.name("contacts")

    found = conn.key_variants(db.namespace, name, "email", "lower",
                              ["alice@example.com", "émile@example.com", "nobody@example.com"])

    assert found == {"alice@example.com": sorted(ALICE),
                     "émile@example.com": sorted(EMILE),
                     "nobody@example.com": []}
    # digits: every spelling of the number, not the one with a digit more
    assert conn.key_variants(db.namespace, name, "phone", "digits", ["49301234", "n/a"]) == {
        "49301234": ["(49) 30-1234", "+49 30 1234", "49301234"], "n/a": []}
    # a hostile value finds nothing and changes nothing
    before = _all(db, contacts)
    assert conn.key_variants(db.namespace, name, "email", "lower",
                             ["x' or '1'='1", "'; drop table contacts; --"]) == {
        "x' or '1'='1": [], "'; drop table contacts; --": []}
    assert _all(db, contacts) == before
    conn.dispose()


def _case_insensitive_contacts(db) -> None:
    """The contacts table with a key column the database compares without case: citext on
    PostgreSQL, NOCASE on SQLite."""
    if db.backend == "postgresql":
        with db.engine.begin() as c:
            c.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citext"))
        from sqlalchemy.dialects.postgresql import CITEXT

        _contacts(db, CITEXT())
    else:
        _contacts(db, sa.Text(collation="NOCASE"))


def test_key_variants_on_a_case_insensitive_column_keeps_every_spelling_apart(db):
    _case_insensitive_contacts(db)
    conn = db.connector()

    found = conn.key_variants(db.namespace, db.name("contacts"), "email", "lower",
                              ["alice@example.com"])

    # DISTINCT on the exact text: the collation does not fold Alice and alice into one
    assert found == {"alice@example.com": sorted(ALICE)}
    conn.dispose()


def test_lookup_maps_each_key_exactly_and_leaves_nulls_out(db):
    _contacts(db)
    conn = db.connector()
    name = db.name("contacts")

    found, version = conn.lookup(db.namespace, name, "email", "customer_id",
                                 [ALICE[0], ALICE[2], "carol@example.com", "x' OR '1'='1",
                                  "ALICE@EXAMPLE.COM"])

    assert version is None
    assert found == {ALICE[0]: [42], ALICE[2]: [42, 43], "carol@example.com": [],
                     "x' OR '1'='1": [], "ALICE@EXAMPLE.COM": []}
    # the other way round, by an integer key, across two statements (600 keys)
    found, _ = conn.lookup(db.namespace, name, "customer_id", "email", [42, 60] + list(
        range(1000, 1598)))
    assert found[42] == sorted(ALICE) and found[60] == [] and found[1000] == []
    conn.dispose()


def test_lookup_on_a_case_insensitive_column_gives_only_the_exact_keys_values(db):
    _case_insensitive_contacts(db)
    conn = db.connector()

    found, _ = conn.lookup(db.namespace, db.name("contacts"), "email", "customer_id",
                           ["ALICE@EXAMPLE.COM", ALICE[2]])

    # the database matches Alice@Example.COM for ALICE@EXAMPLE.COM; Python does not
    assert found == {"ALICE@EXAMPLE.COM": [], ALICE[2]: [42, 43]}
    conn.dispose()


def test_a_request_by_email_erases_every_spelling_and_the_orders_of_the_ids_it_maps_to(
        db, capsys):
    """customers (a root by e-mail, normalize lower) gives alice's customer ids through
    [[enrich]]; orders (a root by customer_id) is erased by them. Every spelling of her address
    is erased by exact match, nobody else's row, and her address is printed and recorded
    nowhere."""
    customers = db.table("customers", sa.Column("customer_id", sa.BigInteger),
                         sa.Column("email", sa.Text), sa.Column("name", sa.Text))
    orders = db.table("orders", sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("customer_id", sa.BigInteger), sa.Column("amount", sa.Integer))
    spelled = {"alice@example.com": 1, "Alice@Example.COM": 2, " ALICE@example.com ": 1}
    rows = ([(42, "alice@example.com"), (42, "Alice@Example.COM"), (42, "Alice@Example.COM"),
             (43, " ALICE@example.com ")]
            + [(100 + i, e) for i, e in enumerate(NEAR)] + [(None, "dora@example.com")])
    uids = [42, 43, 7, 100, 101, 42, 420, 103, 42]
    with db.engine.begin() as c:
        c.execute(customers.insert(), [{"customer_id": u, "email": e, "name": f"n{i}"}
                                       for i, (u, e) in enumerate(rows)])
        c.execute(orders.insert(), [{"id": i, "customer_id": u, "amount": i}
                                    for i, u in enumerate(uids)])
    with db.engine.connect() as c:
        keep_customers = sorted(repr(tuple(r)) for r in c.execute(sa.select(customers).where(
            sa.or_(customers.c.customer_id.is_(None),
                   customers.c.customer_id.not_in([42, 43])))))
    assert len(keep_customers) == len(NEAR) + 1
    keep_orders = sorted(r for r in db.rows(orders) if r[1] not in (42, 43))
    cfg = db.root / "erasure.toml"
    cfg.write_text(
        '[lineage]\nevents = []\n'
        '[[identities]]\nname = "email"\nnormalize = "lower"\n'
        f'[[roots]]\nnamespace = "{db.namespace}"\nname = "{db.name("customers")}"\n'
        'column = "email"\nidentity = "email"\n'
        f'[[roots]]\nnamespace = "{db.namespace}"\nname = "{db.name("orders")}"\n'
        'column = "customer_id"\nidentity = "customer_id"\n'
        f'[[enrich]]\nnamespace = "{db.namespace}"\nname = "{db.name("customers")}"\n'
        'from_column = "email"\nto_column = "customer_id"\n'
        'from_identity = "email"\nto_identity = "customer_id"\n'
        f'[[sql]]\nnamespace = "{db.namespace}"\nurl = "{db.url}"\n')
    cli, printed = _json_cli(db, cfg, capsys)
    assert cli("keys", "init")[0] == 0
    code, plan = cli("plan", "--identity", "email=ALICE@example.com")
    assert code == 0, plan
    by_name = {t["name"]: t for t in plan["targets"]}
    assert set(by_name) == {db.name("customers"), db.name("orders")}
    cust, ords = by_name[db.name("customers")], by_name[db.name("orders")]
    assert (cust["rows"], ords["rows"]) == (4, 4)
    assert not cust["not_verified"] and not ords["not_verified"]
    # one HMAC and row count per spelling, by the subject key's HMAC of "email\x1f<spelling>"
    from erasure.subject import SubjectKeys

    keys = SubjectKeys.load(db.root / ".erasure" / "keys" / "subject.key", create=False)
    assert {v["hmac"]: v["rows"] for v in cust["values"]} == {
        keys.subject_hmac(f"email\x1f{s}"): n for s, n in spelled.items()}
    derived = [i for i in plan["identities"] if i["source"] != "request"]
    assert sorted(i["type"] for i in derived) == ["customer_id", "customer_id"]
    assert all(i["version"] is None for i in derived)

    code, sub = cli("request", "submit", "--identity", "email=ALICE@example.com",
                    "--requested-by", "dpo@example.com")
    assert code == 0, sub
    code, res = cli("run", sub["request_id"])
    assert code == 0 and res["status"] == "completed", res
    assert sorted(t["rows_deleted"] for t in res["requests"][0]["targets"]) == [4, 4]
    assert all(t["verified"] for t in res["requests"][0]["targets"])

    assert _all(db, customers) == keep_customers
    assert db.rows(orders) == keep_orders
    # a spelling written back afterwards is found by verify (the variants are listed again)
    with db.engine.begin() as c:
        c.execute(customers.insert(), [{"customer_id": 44, "email": "aLiCe@EXAMPLE.com  ",
                                        "name": "back"}])
    code, res = cli("verify", sub["request_id"])
    assert code == 5 and res["status"] == "violated", res

    raw = b"".join(f.read_bytes() for f in (db.root / ".erasure").rglob("*") if f.is_file())
    for spelling in [*spelled, "ALICE@example.com"]:
        assert not any(spelling.lower() in out.lower() for out in printed), spelling
        assert spelling.strip().lower().encode() not in raw.lower()
