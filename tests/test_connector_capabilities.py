"""Optional connector capabilities are typed protocols, presentation comes from the connector,
and target keys keep their recorded format (issue 10, item 1)."""

from __future__ import annotations

from pathlib import Path

from connectors import presentations
from connectors.base import (ConnectorPlugin, ConnectorRegistry, DerivesTargets,
                             ErasesInTransaction, FileVersions, Presentation, Purges, ReaderView,
                             ReadsVersions, TracesAttempts, Versioned, VerifiesItself,
                             abilities, ability_lines)
from connectors.delta import DeltaConnector
from connectors.feast import FeastConnector
from connectors.mlflow import MlflowConnector, MlflowSettings
from connectors.parquet import ParquetConnector
from erasure.planning import Plan, Target, target_key

ERASURE = Path(__file__).resolve().parent.parent / "erasure"


def test_capabilities_are_found_by_protocol_not_by_name():
    delta, parquet = DeltaConnector(), ParquetConnector()
    feast = FeastConnector([])
    mlflow = MlflowConnector(MlflowSettings("sqlite:///unused.db"))
    assert [isinstance(c, DerivesTargets) for c in (delta, parquet, feast, mlflow)] == [
        False, False, True, True]
    assert [isinstance(c, VerifiesItself) for c in (delta, parquet, feast, mlflow)] == [
        False, False, False, True]
    assert [isinstance(c, FileVersions) for c in (delta, parquet, feast, mlflow)] == [
        True, False, False, False]
    assert [isinstance(c, ReadsVersions) for c in (delta, parquet, feast, mlflow)] == [
        True, False, False, False]
    assert [isinstance(c, ReaderView) for c in (delta, parquet, feast, mlflow)] == [
        False, False, True, False]
    assert [c.capabilities.provenance_context for c in (delta, parquet, feast, mlflow)] == [
        False, False, False, True]
    # the Delta-shaped methods are Delta's own capabilities now: no connector stubs them
    assert [isinstance(c, Versioned) for c in (delta, parquet, feast, mlflow)] == [
        True, False, False, False]
    assert [isinstance(c, TracesAttempts) for c in (delta, parquet, feast, mlflow)] == [
        True, False, False, False]
    assert [isinstance(c, Purges) for c in (delta, parquet, feast, mlflow)] == [
        True, False, False, False]
    assert [isinstance(c, ErasesInTransaction) for c in (delta, parquet, feast, mlflow)] == [
        False, False, False, False]
    for c in (parquet, feast, mlflow):
        for stub in ("table_version", "rows_written_since", "rows_deleted_by_tags", "history",
                     "purge"):
            assert not hasattr(c, stub), (c.name, stub)
    assert [c.capabilities.guard for c in (delta, parquet, feast, mlflow)] == [
        "versioned", "exact", "subject-keys", "exact"]
    for path in ERASURE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "hasattr(" not in text and "wants_context" not in text, path


def test_abilities_are_data_and_say_what_a_connector_cannot_do():
    parquet, feast = ParquetConnector(), FeastConnector([])
    a = abilities(parquet)
    assert (a["purge"], a["versions"], a["traces_attempts"], a["guard"]) == (
        False, False, False, "exact")
    assert a["notes"] == list(ParquetConnector.capabilities.notes)
    lines = ability_lines(a)
    assert lines[0].startswith("no physical purge")
    assert any("cannot trace an interrupted attempt" in x for x in lines)
    assert any(x.startswith("guard: counts compared with the plan, no tolerance") for x in lines)
    d = abilities(DeltaConnector())
    assert (d["purge"], d["versions"], d["traces_attempts"]) == (True, True, True)
    assert not any(x.startswith("no physical purge") for x in ability_lines(d))
    f = ability_lines(abilities(feast))
    assert any("keys built from the subject's own id" in x for x in f)


def test_connectors_are_plugins_named_by_entry_points():
    from importlib.metadata import entry_points

    import connectors

    found = {ep.name: ep.value for ep in entry_points(group=connectors.GROUP)}
    for name in ("delta", "parquet", "feast", "mlflow"):
        assert found[name] == connectors.BUILTIN[name]
        plugin = connectors.plugins()[name]
        assert isinstance(plugin, ConnectorPlugin) and plugin.name == name
    # the registry asks Delta before Parquet (a Delta folder holds Parquet files)
    order = list(connectors.plugins())
    assert order.index("delta") < order.index("parquet")


def test_no_connector_is_named_in_the_core():
    """The core (erasure/) has no connector name in its code: rows, fields, findings and
    settings of a system come from its connector (comments and docstrings may give examples)."""
    import ast
    import io
    import tokenize

    names = {"delta", "parquet", "feast", "mlflow", "redis"}   # (the ledger itself is SQLite)
    for path in ERASURE.rglob("*.py"):
        src = path.read_text(encoding="utf-8")
        doc_lines = {n.body[0].value.lineno for n in ast.walk(ast.parse(src))
                     if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                     and n.body and isinstance(n.body[0], ast.Expr)
                     and isinstance(n.body[0].value, ast.Constant)}
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type not in (tokenize.NAME, tokenize.STRING) or tok.start[0] in doc_lines:
                continue
            words = {w.lower() for w in tok.string.replace(".", " ").replace("_", " ")
                     .replace('"', " ").replace("'", " ").split()}
            assert not (words & names), f"{path.name}:{tok.start[0]}: {tok.string[:60]}"


def test_presentation_comes_from_the_connector():
    shown = presentations()
    # spark asks first: it takes the Delta tables its [spark] tables patterns name
    assert list(shown)[:3] == ["spark", "delta", "parquet"]
    assert {"delta", "parquet", "feast", "mlflow", "sql"} <= set(shown)
    assert shown["spark"].kind == "Delta Lake table (Spark)"
    assert (shown["delta"].kind, shown["delta"].kinds) == ("Delta Lake table", "Delta Lake tables")
    assert shown["mlflow"].action == "flagged for retraining"
    assert shown["parquet"].short("/lake/a/b/c.parquet") == "b/c.parquet"
    assert shown["feast"].short("a/b/c") == "a/b/c"
    reg = ConnectorRegistry([ParquetConnector()])
    assert reg.presentation("parquet") is ParquetConnector.presentation
    other = reg.presentation("nosuch")         # a connector no installed one has
    assert (other.kind, other.kinds, other.action) == (
        "nosuch dataset", "nosuch datasets", "erased")
    assert isinstance(other, Presentation)


def _plan(targets: list[Target]) -> Plan:
    return Plan("ab" * 32, "2026-01-01T00:00:00+00:00", targets, [], [])


def test_model_target_key_is_stored_and_old_plans_keep_their_keys():
    derived = {"namespace": "file", "name": "/lake/raw/users", "column": "user_id",
               "job": "run:1", "dataset_version": 3}
    model = Target("mlflow:sqlite", "churn/2", "mlflow", "user_id", "int64", "trained_on",
                   derived, 1, [], None, [], {"mode": "flag"}, key_suffix="|/lake/raw/users@3")
    table = Target("file", "/lake/raw/users", "delta", "user_id", "int64", "root", None, 1,
                   [], 3, [], {"mode": "purge"})
    assert model.key == "mlflow|mlflow:sqlite|churn/2|user_id|/lake/raw/users@3"
    assert table.key == "delta|file|/lake/raw/users|user_id"
    d = _plan([model, table]).to_json()
    assert d["targets"][0]["key_suffix"] == "|/lake/raw/users@3"
    assert "key_suffix" not in d["targets"][1]        # other targets' plans read as before
    back = Plan.from_json(d)
    assert [t.key for t in back.targets] == [model.key, table.key]
    assert [target_key(t) for t in d["targets"]] == [model.key, table.key]
    # a plan recorded before the suffix was stored: the key is what it was then
    old = {k: v for k, v in d["targets"][0].items() if k != "key_suffix"}
    assert Plan.from_json({**d, "targets": [old]}).targets[0].key == model.key
    assert target_key(old) == model.key
    unversioned = {**old, "derived_from": {**derived, "dataset_version": None}}
    assert target_key(unversioned) == "mlflow|mlflow:sqlite|churn/2|user_id|/lake/raw/users@None"


def test_plan_run_status_and_report_say_what_each_connector_cannot_do(lake, capsys, tmp_path):
    """The abilities are recorded with the plan and shown by plan, run, status and the PDF:
    the sample lake's Parquet export has no purge and no traceable attempts, said plainly."""
    import subprocess

    code, plan = lake.cli_json(capsys, "plan", "--subject-id", "42")
    assert code == 0
    assert set(plan["connectors"]) == {"delta", "parquet"}
    assert plan["connectors"]["parquet"] == abilities(ParquetConnector())
    assert plan["connectors"]["delta"]["purge"] is True
    code, text = lake.cli("plan", "--subject-id", "42", capsys=capsys)
    assert "parquet can and cannot:" in text
    assert "no physical purge: nothing beyond the erase is removed" in text
    code, sub = lake.cli_json(capsys, "request", "submit", "--subject-id", "42")
    rid = sub["request_id"]
    code, res = lake.cli_json(capsys, "run", rid)
    assert code == 0 and res["connectors"] == plan["connectors"]
    code, st = lake.cli_json(capsys, "status", rid)
    assert st["connectors"] == plan["connectors"]
    code, text = lake.cli("status", rid, capsys=capsys)
    assert "cannot trace an interrupted attempt" in text
    assert lake.cli("keys", "init", capsys=capsys)[0] == 0
    pdf = tmp_path / "r.pdf"
    assert lake.cli("report", rid, "--output", str(pdf), capsys=capsys)[0] == 0
    shown = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True,
                                    text=True, check=True).stdout.split())
    assert "What each system can and cannot do" in shown
    assert "Parquet files: no physical purge" in shown


def test_a_library_error_is_translated_once_with_the_keys_redacted(lake, capsys, monkeypatch):
    from erasure import errors
    from erasure.errors import ConnectorError, GuardTripped, translated

    err = translated(ValueError("no row for 'x-77' in part-x-77.parquet"), "t: read", ["x-77"])
    assert isinstance(err, ConnectorError) and "x-77" not in str(err)
    assert str(err) == "t: read: ValueError: no row for '<subject>' in part-<subject>.parquet"
    ours = GuardTripped("kept as it is")
    assert translated(ours, "anywhere", ["kept"]) is ours
    # the CLI's last boundary: an unexpected error's text loses the ids the command carried
    import erasure.planning

    def boom(*a, **k):
        raise RuntimeError("planner fell over on 4242 and on user 4242's rows")

    monkeypatch.setattr(erasure.planning, "plan_erasures", boom)
    code, _ = lake.cli("plan", "--subject-id", "4242", capsys=capsys)
    assert code == errors.ExitCode.INTERNAL
    assert lake.last_err.strip() == ("internal error: RuntimeError: planner fell over on "
                                     "<subject> and on user <subject>'s rows")
    assert errors.subject_args(["plan", "--subject-id", "4242", "--identity=email=a@b.c"]) == [
        "4242", "email=a@b.c", "a@b.c"]
