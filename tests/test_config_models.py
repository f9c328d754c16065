"""Typed configuration per connector (issue 10, item 3): pydantic models, unknown keys
forbidden, each connector's section modelled in its own module, and docs/configuration.md's key
table equal to the models, key for key."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "configuration.md"
R = [{"namespace": "file", "name": "tables/raw/reviews", "column": "user_id"}]


# ---- the models, walked ----------------------------------------------------------------------
def _strip(annotation: Any) -> Any:
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = typing.get_args(annotation)
        if type(None) in args and len(args) == 2:
            annotation = next(a for a in args if a is not type(None))
            continue
        return annotation


def _is_model(t: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(t, type) and issubclass(t, BaseModel)


def _walk(model, header: str, dotted: str, keys: set[str], tables: set[str], models: list):
    models.append(model)
    for name, field in model.model_fields.items():
        t = _strip(field.annotation)
        path = f"{dotted}.{name}" if dotted else name
        origin, args = typing.get_origin(t), typing.get_args(t)
        if _is_model(t):
            tables.add(f"[{path}]")
            _walk(t, f"[{path}]", path, keys, tables, models)
        elif origin is list and _is_model(_strip(args[0])):
            tables.add(f"[[{path}]]")
            _walk(_strip(args[0]), f"[[{path}]]", path, keys, tables, models)
        elif origin is dict:
            tables.add(f"[{path}]")
            keys.add(f"[{path}] <any>")
        else:
            assert header, f"a top-level key that is not a table: {name}"
            keys.add(f"{header} {name}")


def _model_keys() -> tuple[set[str], set[str], list]:
    from erasure.config import file_model

    keys: set[str] = set()
    tables: set[str] = set()
    models: list = []
    _walk(file_model(), "", "", keys, tables, models)
    return keys, tables, models


def _documented() -> tuple[set[str], set[str]]:
    """Key paths in the first column of the key table: "`[[roots]] namespace`, `name`" names
    two keys of [[roots]]; "`[[roots]]`" alone names the table."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Keys\n", 1)[1].split("\n### ", 1)[0]
    keys: set[str] = set()
    tables: set[str] = set()
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 15, rows
    for row in rows:
        cell = row.split("|")[1]
        first, *more = re.findall(r"`([^`]+)`", cell)
        m = re.fullmatch(r"(\[\[?[\w.]+\]\]?)(?: (\S+))?", first)
        assert m, f"a key table row that names no key path: {row}"
        header, key = m.groups()
        if key is None:
            assert not more, row
            tables.add(header)
        else:
            keys |= {f"{header} {k}" for k in (key, *more)}
    return keys, tables


def test_every_documented_key_is_in_the_models_and_every_model_key_is_documented():
    doc_keys, doc_tables = _documented()
    keys, tables, _ = _model_keys()
    assert doc_keys - keys == set(), "documented but in no model"
    assert keys - doc_keys == set(), "in a model but not in docs/configuration.md's key table"
    assert doc_tables <= tables, doc_tables - tables
    # spot checks that the walk and the parse see the shapes the brief names
    assert {"[delta] residue", "[[roots]] column", "[delta.storage_options] <any>",
            "[[feast]] repo", "[mlflow] registry_uri", "[signing] dir"} <= keys


def test_every_section_model_forbids_unknown_keys_and_is_strict():
    _, _, models = _model_keys()
    assert len(models) >= 10
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
        assert model.model_config.get("strict") is True, model


def test_each_connector_owns_its_section_model_in_its_own_module():
    import erasure.config as config
    from connectors import config_sections
    from connectors.delta.config import DeltaSettings
    from connectors.mlflow_config import MlflowConfig

    owners = {name: _strip(annotation) for name, (annotation, _) in config_sections().items()}
    owners = {n: _strip(typing.get_args(m)[0]) if typing.get_origin(m) is list else m
              for n, m in owners.items()}
    assert {n: owners[n].__module__ for n in ("delta", "feast", "mlflow")} == {
        "delta": "connectors.delta.config", "feast": "connectors.feast.config",
        "mlflow": "connectors.mlflow_config"}
    # every section comes from a connector's plug-in, none from the core
    assert all(m.__module__.startswith("connectors.") for m in owners.values()), owners
    core = {n: _strip(f.annotation) for n, f in config.CoreFile.model_fields.items()}
    for name in ("ledger", "keys", "lineage", "signing"):
        assert core[name].__module__ == "erasure.config", name
    # the core names no connector's model
    assert not hasattr(config, "DeltaSettings") and not hasattr(config, "MlflowConfig")
    assert owners["delta"] is DeltaSettings and owners["mlflow"] is MlflowConfig


def test_help_loads_no_pydantic_and_the_config_models_load_no_connector_library():
    help_probe = ("import io, sys, contextlib\n"
                  "from erasure.cli import run_cli\n"
                  "with contextlib.redirect_stdout(io.StringIO()):\n"
                  "    rc = run_cli(['--help'])\n"
                  "print(rc, 'pydantic' in sys.modules, 'erasure.config' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", help_probe], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    assert out == ["0", "False", "False"], out
    models_probe = ("import sys\n"
                    "import connectors.delta.config, connectors.feast.config, "
                    "connectors.mlflow_config\n"
                    "from erasure.config import file_model\n"
                    "file_model()\n"
                    "print([m for m in ('deltalake', 'pyarrow', 'feast', 'mlflow', 'yaml', "
                    "'redis', 'sqlalchemy') if m in sys.modules], 'pydantic' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", models_probe], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert res.stdout.split("\n")[0] == "[] True", res.stdout + res.stderr


WRONG = {
    "missing-required-key": ({"roots": [{"namespace": "file", "name": "x"}]},
                             "[[roots]] #1 needs 'column' (a non-empty string)"),
    "mlflow-without-tracking-uri": ({"roots": R, "mlflow": {}},
                                    "[mlflow] needs 'tracking_uri' (a non-empty string)"),
    "mlflow-registry-not-string": (
        {"roots": R, "mlflow": {"tracking_uri": "sqlite:///m.db", "registry_uri": 3}},
        "[mlflow] registry_uri must be a non-empty string"),
    "table-as-a-value": ({"roots": R, "delta": "purge"}, "delta must be a table ([delta])"),
    "nested-table-as-a-value": (
        {"roots": R, "delta": {"storage_options": "x"}},
        "[delta] storage_options must be a table ([delta.storage_options])"),
    "array-item-not-a-table": ({"roots": ["x"]},
                               "roots must be an array of tables ([[roots]] entries)"),
    "feast-one-table-not-an-array": ({"roots": R, "feast": {"repo": "x"}},
                                     "feast must be an array of tables ([[feast]] entries)"),
    "residue-not-a-mode": ({"roots": R, "delta": {"residue": "keep"}},
                           '[delta] residue must be one of "purge", "keep-history"'),
    "retries-negative": ({"roots": R, "delta": {"max_conflict_retries": -1}},
                         "[delta] max_conflict_retries must be a non-negative integer"),
    "retries-float": ({"roots": R, "delta": {"max_conflict_retries": 5.0}},
                      "[delta] max_conflict_retries must be a non-negative integer"),
    "events-not-a-list": ({"roots": R, "lineage": {"events": 5}},
                          "[lineage] events must be a non-empty string or a list of them"),
    "events-item-empty": ({"roots": R, "lineage": {"events": [""]}},
                          "[lineage] events[0] must be a non-empty string"),
    "ledger-path-int": ({"roots": R, "ledger": {"path": 1}},
                        "[ledger] path must be a non-empty string"),
    "no-roots": ({}, "at least one [[roots]] entry (namespace, name, column) is required"),
    "empty-roots": ({"roots": []}, "at least one [[roots]] entry"),
    "both-column-and-exclude": (
        {"roots": R, "datasets": [{"namespace": "file", "name": "x", "column": "c",
                                   "exclude": "r"}]},
        "[[datasets]] #1: give exactly one of 'column' or 'exclude' (a reason)"),
    "feast-repo-without-feature-store": (
        {"roots": R, "feast": [{"repo": "no_such_repo"}]},
        "[[feast]] #1 repo: no feature_store.yaml in "),
    "unknown-array-of-tables": ({"roots": R, "dataset": [{"namespace": "file"}]},
                                "unknown table [[dataset]] (did you mean [[datasets]]?)"),
    "unknown-key-no-near-miss": ({"roots": R, "ledger": {"x": "y"}},
                                 "[ledger] unknown key 'x' (known: path, url)"),
    "unknown-top-level-key": ({"roots": R, "zzz": 1}, "unknown key 'zzz' (known: [ledger], "),
    # two problems: the one first in the file is named
    "first-in-file-order": ({"ledger": {"path": ""}, "roots": R,
                             "lineage": {"lenient": "false"}},
                            "[ledger] path must be a non-empty string"),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_a_model_error_is_said_with_the_key_path(case, tmp_path):
    from erasure.config import check
    from erasure.errors import ConfigError

    raw, message = WRONG[case]
    with pytest.raises(ConfigError) as err:
        check(raw, tmp_path)
    assert message in str(err.value), str(err.value)


def test_models_are_strict_and_frozen_when_built_in_code():
    from pydantic import ValidationError

    from connectors.delta.config import DeltaSettings

    with pytest.raises(ValidationError):
        DeltaSettings(max_conflict_retries=True)
    with pytest.raises(ValidationError):
        DeltaSettings(residu="keep-history")
    s = DeltaSettings(residue="keep-history")
    with pytest.raises(ValidationError):
        s.residue = "purge"
    assert (s.residue, s.max_conflict_retries, s.storage_options) == ("keep-history", 5, {})


def test_the_typed_config_holds_each_connectors_section_as_its_model(lake):
    from connectors.delta.config import DeltaSettings
    from connectors.mlflow import settings_from
    from connectors.mlflow_config import MlflowConfig
    from erasure.config import load_config

    cfg = lake.root / "typed.toml"
    cfg.write_text(lake.config.read_text().replace(
        'residue = "purge"', 'residue = "keep-history"\nmax_conflict_retries = 2')
        + '\n[delta.storage_options]\nAWS_REGION = "eu-central-1"\n'
        '\n[[datasets]]\nnamespace = "file"\nname = "tables/agg/daily_ratings"\n'
        'exclude = "legal hold"\n'
        '\n[mlflow]\ntracking_uri = "sqlite:///mlflow.db"\n'
        '\n[signing]\ndir = "keys/signing"\n')

    c = load_config(cfg)

    delta, mlflow = c.section("delta"), c.section("mlflow")
    assert isinstance(delta, DeltaSettings)
    assert (delta.residue, delta.max_conflict_retries, delta.storage_options) == (
        "keep-history", 2, {"AWS_REGION": "eu-central-1"})
    assert isinstance(mlflow, MlflowConfig) and mlflow.registry_uri is None
    assert settings_from(mlflow, c.base_dir).tracking_uri == (
        "sqlite:///" + str(lake.root.resolve() / "mlflow.db"))
    assert c.signing_dir == lake.root.resolve() / "keys" / "signing"
    assert c.roots[0].name == str((lake.root / "tables/raw/reviews").resolve())
    o = c.override_for("file", str((lake.root / "tables/agg/daily_ratings").resolve()))
    assert o is not None and (o.column, o.exclude) == (None, "legal hold")
    assert c.section("feast") == [] and c.lenient_events is False
    assert c.event_globs == (str(lake.root.resolve() / "events" / "*.jsonl"),)


@pytest.mark.heavy
def test_the_sample_lake_config_as_make_demo_builds_it_loads(tmp_path):
    from connectors.mlflow_config import MlflowConfig
    from erasure.config import load_config
    from sample_lake.generate import generate

    info = generate(tmp_path / "lake", rows=500, seed=3, feast=True, mlflow=True, crm=True)

    c = load_config(Path(info["config"]))
    # requests by e-mail: the CRM root, its identity type and the enrichment through it
    assert [(r.column, r.identity) for r in c.roots] == [("user_id", "user_id"),
                                                         ("email", "email")]
    assert c.identities["email"].normalize == "lower"
    [e] = c.enrich
    assert (e.from_identity, e.to_identity, e.max_values) == ("email", "user_id", 20)

    assert [Path(e.repo).name for e in c.section("feast")] == [Path(info["feast_repo"]).name]
    mlflow = c.section("mlflow")
    assert isinstance(mlflow, MlflowConfig) and mlflow.tracking_uri == "sqlite:///mlflow.db"
    assert c.section("delta").residue == "purge" and len(c.roots) == 2
