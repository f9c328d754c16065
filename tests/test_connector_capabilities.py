"""Optional connector capabilities are typed protocols, presentation comes from the connector,
and target keys keep their recorded format (issue 10, item 1)."""

from __future__ import annotations

from pathlib import Path

from connectors import presentations
from connectors.base import (ConnectorRegistry, DerivesTargets, FileVersions, Presentation,
                             ReaderView, ReadsVersions, VerifiesItself)
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
    for path in ERASURE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "hasattr(" not in text and "wants_context" not in text, path


def test_presentation_comes_from_the_connector():
    shown = presentations()
    assert list(shown) == ["delta", "parquet", "feast", "mlflow"]
    assert (shown["delta"].kind, shown["delta"].kinds) == ("Delta Lake table", "Delta Lake tables")
    assert shown["mlflow"].action == "flagged for retraining"
    assert shown["parquet"].short("/lake/a/b/c.parquet") == "b/c.parquet"
    assert shown["feast"].short("a/b/c") == "a/b/c"
    reg = ConnectorRegistry([ParquetConnector()])
    assert reg.presentation("parquet") is ParquetConnector.presentation
    other = reg.presentation("sql")            # a connector no installed one has
    assert (other.kind, other.kinds, other.action) == ("sql dataset", "sql datasets", "erased")
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
