"""Exemptions as policy code (issue 14, the policy engine): real Rego files evaluated with
regopy, decisions checked against the contract, the policy's hash, and the dataset input built
from real OpenLineage events."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from erasure.errors import ConfigError, ExitCode
from erasure.lineage.events import parse_file
from erasure.lineage.graph import LineageGraph
from erasure.lineage.store import LineageStore
from erasure.policy import (Decision, OpaPolicy, PolicyError, dataset_input, load_policy,
                            load_rego, policy_input, request_input)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "policy" / "erasure.rego"
DBT_EVENTS = REPO / "tests" / "data" / "openlineage-events" / "openlineage-dbt" / "duckdb-result.json"

RULES = """package erasure

import rego.v1

decision := {"action": "exempt", "basis": "kept for the tax office"} if {
	input.dataset.name == "billing.invoices"
}

decision := {"action": "defer", "basis": "litigation hold"} if {
	some hold in input.holds
	hold == input.dataset.name
}
"""


def _input(name: str, namespace: str = "postgres://db:5432", reason: str = "consent withdrawn",
           facets: dict | None = None, holds: list | None = None) -> dict:
    ds = {"namespace": namespace, "name": name, "columns": ["user_id"], "facets": facets or {}}
    return policy_input(ds, request_input(reason, "2026-03-01", ["email"]), holds or [])


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return folder


def _policy_with(tmp_path: Path, rule: str):
    """A policy whose decision for every dataset is the given Rego value."""
    f = tmp_path / "p.rego"
    f.write_text(f"package erasure\n\ndecision := {rule}\n", encoding="utf-8")
    return load_rego(f)


# ---- decisions ---------------------------------------------------------------------------------
def test_a_policy_file_exempts_defers_and_leaves_everything_else_to_be_erased(tmp_path):
    policy = load_rego(_write(tmp_path, {"retention.rego": RULES}) / "retention.rego")

    assert policy.decide(_input("billing.invoices")) == Decision("exempt",
                                                                 "kept for the tax office")
    assert policy.decide(_input("crm.contacts", holds=["crm.contacts"])) == Decision(
        "defer", "litigation hold")
    # no rule applies: the decision is undefined, which means erase, with no basis
    assert policy.decide(_input("crm.contacts")) == Decision("erase", "")
    assert policy.source == f"rego:{tmp_path / 'retention.rego'}"


def test_an_explicit_erase_needs_no_basis_and_keeps_one_given(tmp_path):
    assert _policy_with(tmp_path, '{"action": "erase"}').decide(_input("a")) == Decision(
        "erase", "")
    assert _policy_with(tmp_path, '{"action": "erase", "basis": "no retention applies"}'
                        ).decide(_input("a")) == Decision("erase", "no retention applies")


@pytest.mark.parametrize("rule, what", [
    ('{"action": "keep", "basis": "because"}', 'action "keep", not one of erase, exempt, defer'),
    ('{"basis": "because"}', "action null"),
    ('{"action": "exempt"}', "exempt without a basis"),
    ('{"action": "defer", "basis": "  "}', "defer without a basis"),
    ('{"action": "exempt", "basis": 10}', "basis that is not a string"),
    ('{"action": "exempt", "basis": "x", "until": "2030"}', "unknown key(s) until"),
    ('"exempt"', "is not an object"),
    ('5', "is not an object"),
    ('["exempt", "tax"]', "is not an object"),
])
def test_a_decision_outside_the_contract_is_exit_3_naming_the_dataset(tmp_path, rule, what):
    policy = _policy_with(tmp_path, rule)
    with pytest.raises(PolicyError) as err:
        policy.decide(_input("billing.invoices"))
    assert isinstance(err.value, ConfigError) and err.value.exit_code == ExitCode.CONFIG == 3
    assert "postgres://db:5432:billing.invoices" in str(err.value)
    assert what in str(err.value)


def test_conflicting_decisions_and_runtime_errors_are_policy_errors(tmp_path):
    f = _write(tmp_path, {"p.rego": """package erasure

decision := {"action": "exempt", "basis": "a"} if input.dataset.name == "both"
decision := {"action": "defer", "basis": "b"} if input.dataset.name == "both"
decision := {"action": "exempt", "basis": sprintf("%d", [1 / 0])} if input.dataset.name == "div"
"""}) / "p.rego"
    policy = load_rego(f)
    with pytest.raises(PolicyError, match=r"db:5432:both: .*multiple outputs"):
        policy.decide(_input("both"))
    # a failing built-in is an error, not a silent "no decision, erase"
    with pytest.raises(PolicyError, match=r"db:5432:div: divide by zero"):
        policy.decide(_input("div"))
    assert policy.decide(_input("other")) == Decision("erase", "")


# ---- loading -----------------------------------------------------------------------------------
def test_a_folder_policy_reads_every_rego_file_under_it(tmp_path):
    folder = _write(tmp_path / "policy", {
        "main.rego": """package erasure
import rego.v1
decision := {"action": "exempt", "basis": data.erasure.lib.basis} if "finance" in input.dataset.columns
""",
        "lib/basis.rego": 'package erasure.lib\nbasis := "finance data is kept"\n',
        "README.md": "not a module",
    })
    policy = load_rego(folder, "policy")
    assert policy.source == "rego:policy/"
    decided = policy.decide(policy_input(
        {"namespace": "n", "name": "t", "columns": ["finance"], "facets": {}},
        request_input("r", "2026-01-01", []), []))
    assert decided == Decision("exempt", "finance data is kept")


def test_the_hash_is_stable_independent_of_the_folder_and_changes_with_any_module(tmp_path):
    files = {"main.rego": RULES, "lib/more.rego": "package erasure.lib\nx := 1\n"}
    one = load_rego(_write(tmp_path / "here", files)).hash
    two = load_rego(_write(tmp_path / "else" / "where", files)).hash
    assert one == two and one.startswith("sha256:") and len(one) == 7 + 64
    assert load_rego(tmp_path / "here").hash == one             # and again: stable

    (tmp_path / "else" / "where" / "lib" / "more.rego").write_text(
        "package erasure.lib\nx := 2\n", encoding="utf-8")
    assert load_rego(tmp_path / "else" / "where").hash != one   # a module's bytes
    renamed = _write(tmp_path / "renamed", {"main.rego": RULES,
                                            "lib/other.rego": files["lib/more.rego"]})
    assert load_rego(renamed).hash != one                       # a module's path


@pytest.mark.skipif(not shutil.which("sha256sum"), reason="needs coreutils' sha256sum")
def test_the_hash_is_what_sha256sum_over_the_policy_folder_gives(tmp_path):
    folder = _write(tmp_path / "policy", {"main.rego": RULES,
                                          "lib/b.rego": "package erasure.lib\nx := 1\n"})
    out = subprocess.run(
        "find . -name '*.rego' -type f | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum "
        "| sha256sum", shell=True, cwd=folder, capture_output=True, text=True, check=True)
    assert load_rego(folder).hash == "sha256:" + out.stdout.split()[0]


def test_a_module_that_does_not_parse_is_named_and_nothing_reaches_stdout(tmp_path, capfd):
    folder = _write(tmp_path / "policy", {
        "good.rego": RULES,
        "broken.rego": 'package erasure\n\ndecision := {"action": if {\n'})
    with pytest.raises(PolicyError) as err:
        load_rego(folder)
    message = str(err.value)
    assert str(folder / "broken.rego") in message and "does not parse" in message
    assert "broken.rego:3:" in message                     # rego-cpp's reason, with its line
    out, _ = capfd.readouterr()
    assert out == ""                                       # rego-cpp printed "Pass parse failed"


def test_a_policy_without_package_erasure_or_without_modules_is_refused(tmp_path):
    _write(tmp_path / "other", {"a.rego": "package retention\ndecision := 1\n",
                                "b.rego": "package erasure.lib\nx := 1\n"})
    with pytest.raises(PolicyError, match=r"no module declares `package erasure`.*a\.rego"):
        load_rego(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match="no .rego file under"):
        load_rego(tmp_path / "empty")
    with pytest.raises(PolicyError, match="no such file or folder"):
        load_rego(tmp_path / "missing")


def test_a_rego_policy_without_regopy_installed_names_the_pip_command(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "regopy" else real(name, *a))
    with pytest.raises(PolicyError, match=r"regopy is not installed: pip install "
                                          r"'erasure\[policy\]'") as err:
        load_rego(_write(tmp_path, {"p.rego": RULES}) / "p.rego")
    assert err.value.exit_code == 3


def _config(tmp_path: Path, policy: str):
    from erasure.config import load_config

    cfg = tmp_path / "erasure.toml"
    cfg.write_text('[[roots]]\nnamespace = "file"\nname = "t"\ncolumn = "user_id"\n' + policy,
                   encoding="utf-8")
    return load_config(cfg)


def test_load_policy_reads_the_config_and_none_means_no_policy(tmp_path):
    assert load_policy(_config(tmp_path, "")) is None
    _write(tmp_path / "policy", {"erasure.rego": RULES})
    policy = load_policy(_config(tmp_path, '[policy]\nrego = "policy"\n'))
    assert policy is not None and policy.source == "rego:policy/"
    assert policy.hash == load_rego(tmp_path / "policy").hash
    assert policy.decide(_input("billing.invoices")).action == "exempt"
    with pytest.raises(PolicyError, match="no such file or folder"):
        load_policy(_config(tmp_path, '[policy]\nrego = "policies"\n'))


def test_decisions_are_cached_by_input_so_a_batch_asks_once_per_dataset(tmp_path):
    policy = load_rego(_write(tmp_path, {"p.rego": RULES}) / "p.rego")
    datasets = ["billing.invoices", "crm.contacts", "web.sessions"]
    for _request in range(1000):        # 1,000 requests, same reason, same datasets
        for name in datasets:
            policy.decide(_input(name))
    assert policy.evaluations == 3
    policy.decide(_input("crm.contacts", reason="objection (Art. 21)"))
    assert policy.evaluations == 4      # another input is asked again


# ---- the input ---------------------------------------------------------------------------------
def test_the_request_input_holds_the_reason_the_day_and_identity_types_only():
    assert request_input("consent withdrawn", datetime(2026, 3, 1, 23, 5, tzinfo=timezone.utc),
                         ["user_id", "email", "email"]) == {
        "reason": "consent withdrawn", "received": "2026-03-01",
        "identity_types": ["email", "user_id"]}
    assert request_input("r", date(2026, 3, 1), [])["received"] == "2026-03-01"
    assert request_input("r", "2026-03-01T10:00:00+00:00", [])["received"] == "2026-03-01"
    assert request_input(None, None, []) == {"reason": None, "received": None,
                                             "identity_types": []}
    with pytest.raises(ValueError):
        request_input("r", "March", [])
    assert set(policy_input({}, {}, [])) == {"dataset", "request", "holds"}


def _event(time: str, ns: str, name: str, facets: dict, job: str = "load") -> dict:
    return {"eventType": "COMPLETE", "eventTime": time, "producer": "https://example.com/test",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": "3f5e83fa-3480-44ff-99c5-ff943904e5e8"},
            "job": {"namespace": "jobs", "name": job}, "inputs": [],
            "outputs": [{"namespace": ns, "name": name, "facets": facets}]}


SCHEMA = {"schema": {"fields": [{"name": "user_id", "type": "BIGINT"},
                                {"name": "amount", "type": "DECIMAL"}]}}
TAGS = {"tags": {"tags": [{"key": "finance", "value": "true", "source": "CATALOG"}]}}
LITIGATION = {"tags": {"tags": [{"key": "finance", "value": "true", "source": "CATALOG"},
                                {"key": "litigation", "value": "case 2026-17",
                                 "source": "LEGAL"}]}}
OWNERSHIP = {"ownership": {"owners": [{"name": "team:billing", "type": "MAINTAINER"}]}}
DOCS = {"documentation": {"description": "Invoices sent to customers"}}


def _graph_through_the_store(tmp_path: Path, events: list[dict]) -> LineageGraph:
    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "events.jsonl"
    f.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    store = LineageStore(tmp_path / "lineage.db")
    try:
        rep = store.ingest([f])
        assert not rep.rejected, rep.rejected
        return LineageGraph(store.events())
    finally:
        store.close()


def test_tags_ownership_and_documentation_facets_reach_the_policy(tmp_path):
    ns, name = "postgres://db:5432", "billing.invoices"
    graph = _graph_through_the_store(tmp_path, [
        _event("2026-01-01T00:00:00Z", ns, name, {**SCHEMA, **TAGS, **OWNERSHIP}),
        # a later event tags it for litigation and documents it; the ownership facet stays
        _event("2026-02-01T00:00:00Z", ns, name, {**LITIGATION, **DOCS}, job="tag"),
    ])
    ds = dataset_input(graph, ns, name)
    assert ds == {"namespace": ns, "name": name, "columns": ["amount", "user_id"],
                  "facets": {**LITIGATION, **OWNERSHIP, **DOCS}}
    assert dataset_input(graph, ns, name, columns=["user_id"])["columns"] == ["user_id"]

    reads_tags = _write(tmp_path / "policy", {"p.rego": """package erasure
import rego.v1
decision := {"action": "defer", "basis": concat(" ", ["hold:", owner, desc])} if {
	some tag in input.dataset.facets.tags.tags
	tag.key == "litigation"
	owner := input.dataset.facets.ownership.owners[0].name
	desc := input.dataset.facets.documentation.description
}
"""}) / "p.rego"
    decided = load_rego(reads_tags).decide(policy_input(ds, request_input("r", "2026-03-01",
                                                                          ["email"]), []))
    assert decided == Decision("defer", "hold: team:billing Invoices sent to customers")


def test_the_latest_event_wins_per_facet_whatever_the_order_events_come_in(tmp_path):
    ns, name = "postgres://db:5432", "billing.invoices"
    later = _event("2026-02-01T00:00:00Z", ns, name, TAGS, job="tag")
    earlier = _event("2026-01-01T00:00:00Z", ns, name, {**LITIGATION, **DOCS})
    graph = _graph_through_the_store(tmp_path, [later, earlier])
    assert graph.info((ns, name))["facets"] == {**TAGS, **DOCS}
    # a facet sent as deleted (OpenLineage's "_deleted": true) is gone
    gone = _event("2026-03-01T00:00:00Z", ns, name, {"tags": {"_deleted": True}}, job="untag")
    graph = _graph_through_the_store(tmp_path / "2", [later, earlier, gone])
    assert graph.info((ns, name))["facets"] == DOCS


def test_facets_of_aliases_joined_by_symlinks_merge_into_one_dataset(tmp_path):
    physical = ("s3://lake", "billing/invoices")
    symlink = {"symlinks": {"identifiers": [{"namespace": "hive://metastore",
                                             "name": "billing.invoices", "type": "TABLE"}]}}
    graph = _graph_through_the_store(tmp_path, [
        _event("2026-01-01T00:00:00Z", *physical, {**symlink, **OWNERSHIP}),
        _event("2026-01-02T00:00:00Z", "hive://metastore", "billing.invoices", LITIGATION,
               job="tag"),
    ])
    facets = graph.info(("hive://metastore", "billing.invoices"))["facets"]
    assert facets == {**OWNERSHIP, **LITIGATION} == graph.info(physical)["facets"]
    assert "symlinks" not in facets and "schema" not in facets
    assert graph.info(("nowhere", "none"))["facets"] == {}


def test_events_without_descriptive_facets_keep_the_stored_form_they_had():
    # an event without such facets is stored as before, so its store key does not change
    from erasure.lineage.events import validate_event

    ev = validate_event(_event("2026-01-01T00:00:00Z", "n", "t", SCHEMA))
    assert "facets" not in ev.to_json()["outputs"][0]
    with_tags = validate_event(_event("2026-01-01T00:00:00Z", "n", "t", {**SCHEMA, **TAGS}))
    assert with_tags.to_json()["outputs"][0]["facets"] == TAGS


def test_a_real_dbt_events_documentation_facet_reaches_the_policy(tmp_path):
    events, rejected, _ = parse_file(DBT_EVENTS, lenient=True)     # dbt's test events have
    assert events and not rejected                                 # no eventTime
    graph = LineageGraph(events)
    ds = dataset_input(graph, "duckdb:///database/jaffle_shop.duckdb",
                       "jaffle_shop.main.customers")
    assert "customer_id" in ds["columns"] and "dataSource" in ds["facets"]
    policy = load_rego(_write(tmp_path, {"p.rego": """package erasure
decision := {"action": "exempt", "basis": "customer master data"} if {
	contains(input.dataset.facets.documentation.description, "information about a customer")
}
"""}) / "p.rego")
    assert policy.decide(policy_input(ds, request_input("r", "2026-03-01", []), [])).action \
        == "exempt"


# ---- the worked example --------------------------------------------------------------------------
def _tagged(name: str, *keys: str) -> dict:
    facets = {"tags": {"tags": [{"key": k, "value": "", "source": "CATALOG"} for k in keys]}}
    return _input(name, facets=facets if keys else {})


def test_the_worked_example_keeps_invoices_and_defers_litigation():
    policy = load_rego(EXAMPLE)
    invoices = policy.decide(_input("billing.invoices"))
    assert invoices.action == "exempt"
    assert "Art. 17(3)(b)" in invoices.basis and "10 years" in invoices.basis
    assert policy.decide(_tagged("ledger.entries", "finance")) == invoices
    assert policy.decide(_input("/lake/finance/invoice", namespace="file")) == invoices

    hold = policy.decide(_tagged("billing.invoices", "finance", "litigation"))
    assert hold.action == "defer" and "Art. 17(3)(e)" in hold.basis
    assert policy.decide(_tagged("web.sessions", "litigation")) == hold

    # everything else: no decision, erased
    for other in (_input("web.sessions"), _tagged("crm.contacts", "pii"),
                  _input("billing.invoices_by_month"), _input("invoice_templates")):
        assert policy.decide(other) == Decision("erase", "")


# ---- an OPA server -------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_opa_server_is_a_policy_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(PolicyError, match=r"OPA server: GET .*/v1/policies failed"):
        load_policy(_config(tmp_path, f'[policy]\nopa_url = "{url}"\ntimeout = "2s"\n'))
    with pytest.raises(PolicyError, match=r"/v1/data/erasure/decision \(dataset "
                                          r"postgres://db:5432:crm.contacts\) failed"):
        OpaPolicy(url, 2, "sha256:" + "0" * 64).decide(_input("crm.contacts"))
