"""Lineage from OpenLineage events that real producers emitted (Marquez, dbt, Spark+Delta).

The files are copied unchanged into tests/data/openlineage-events (see tests/data/PROVENANCE.md).
Tests read them with the project's parser, store and graph, and build synthetic events with
the openlineage-python client itself where a story needs column lineage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from erasure.lineage.events import parse_file, validate_event
from erasure.lineage.graph import LineageGraph, trace_subject_keys
from erasure.lineage.store import LineageStore

from conftest import TESTDATA as _DATA

EVENTS = _DATA / "openlineage-events"
MARQUEZ = EVENTS / "marquez"
DBT = EVENTS / "openlineage-dbt"
SPARK = EVENTS / "openlineage-spark-delta"


# ---- helpers shared by the tests of this file ---------------------------------------------

def object_start_lines(path: Path) -> set[int]:
    """Lines on which a JSON object starts in a pretty-printed file or array."""
    return {i for i, line in enumerate(path.read_text().splitlines(), start=1)
            if line.strip() in ("{", "[{", "[ {")}


def missing_top_level(obj: dict) -> set[str]:
    return {k for k in ("eventTime", "producer", "run", "job", "runId", "name")
            if k not in obj and k not in (obj.get("run") or {}) and k not in (obj.get("job") or {})}


def client_event_json(job: str, inputs: list, outputs: list, run_id: str | None = None) -> str:
    """A COMPLETE run event built and serialized by openlineage-python itself."""
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.serde import Serde
    from openlineage.client.uuid import generate_new_uuid

    ev = RunEvent(eventType=RunState.COMPLETE, eventTime="2024-05-01T10:00:00.123456789Z",
                  producer="https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python",
                  run=Run(runId=run_id or str(generate_new_uuid())),
                  job=Job(namespace="erasure-tests", name=job), inputs=inputs, outputs=outputs)
    return Serde.to_json(ev)


def dataset(name: str, fields: list[str] | None = None, lineage: dict | None = None,
            output: bool = False):
    """lineage: {out_col: [(input dataset name, input field, subtype, masking)]}"""
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import column_lineage_dataset as cl
    from openlineage.client.facet_v2 import schema_dataset as sd

    facets: dict = {}
    if fields is not None:
        facets["schema"] = sd.SchemaDatasetFacet(
            fields=[sd.SchemaDatasetFacetFields(name=f, type="string") for f in fields])
    if lineage is not None:
        facets["columnLineage"] = cl.ColumnLineageDatasetFacet(fields={
            col: cl.Fields(inputFields=[
                cl.InputField(namespace="file", name=src, field=fld, transformations=[
                    cl.Transformation(type="DIRECT", subtype=sub, description="", masking=mask)])
                for src, fld, sub, mask in srcs])
            for col, srcs in lineage.items()})
    cls = OutputDataset if output else InputDataset
    return cls(namespace="file", name=name, facets=facets)


# ---- 1. Marquez's own API test events -----------------------------------------------------

MARQUEZ_FILES = sorted(p.name for p in MARQUEZ.glob("*.json") if p.name != "metadata.template.json")


@pytest.mark.parametrize("name", MARQUEZ_FILES)
def test_every_marquez_event_is_accepted_or_rejected_with_file_and_line(name):
    path = MARQUEZ / name
    events, rejected, _warnings = parse_file(path)          # strict; must never raise
    assert events or rejected
    for r in rejected:
        assert r.file == str(path)
        assert r.line in object_start_lines(path), r
        assert r.reason
    # observed behaviour: all of Marquez's API test events are valid in strict mode
    assert rejected == [], [str(r) for r in rejected]
    assert len(events) == 1
    ev = events[0]
    obj = json.loads(path.read_text())
    assert ev.kind == ("run" if "run" in obj else "dataset" if "dataset" in obj else "job")
    if ev.kind == "run":
        assert ev.job == (obj["job"]["namespace"], obj["job"]["name"])
        assert ev.run_id == obj["run"]["runId"]
        assert [(d.namespace, d.name) for d in ev.inputs] == [
            (d["namespace"], d["name"]) for d in obj.get("inputs") or []]
        assert [(d.namespace, d.name) for d in ev.outputs] == [
            (d["namespace"], d["name"]) for d in obj.get("outputs") or []]


@pytest.mark.parametrize("name", ["event_required_nanoseconds.json",
                                  "event_required_no_timezone.json"])
def test_marquez_time_variants_are_accepted_and_normalized_to_utc(name):
    events, rejected, _ = parse_file(MARQUEZ / name)
    assert rejected == []
    assert len(events) == 1
    assert events[0].event_time.endswith("+00:00")
    assert events[0].event_time.startswith("2020-12-28T19:51:01.641499")


def test_nanosecond_and_zone_less_times_from_the_python_client():
    """Go/Java producers write 9 fraction digits; some write no zone (means UTC)."""
    base = json.loads(client_event_json("t", [], []))
    for given, want in [("2024-05-01T10:00:00.123456789Z", "2024-05-01T10:00:00.123456+00:00"),
                        ("2024-05-01T10:00:00.123456789", "2024-05-01T10:00:00.123456+00:00"),
                        ("2024-05-01T12:00:00.5+02:00", "2024-05-01T10:00:00.500000+00:00")]:
        base["eventTime"] = given
        assert validate_event(base).event_time == want


def test_unicode_names_survive_parsing_and_the_store(tmp_path):
    path = MARQUEZ / "event_unicode.json"
    obj = json.loads(path.read_text(encoding="utf-8"))
    store = LineageStore(tmp_path / "lineage.db")
    rep = store.ingest([path])
    assert rep.files_refused == [] and rep.events_new == 1
    ev = store.events()[0]
    assert ev.job == (obj["job"]["namespace"], obj["job"]["name"])
    names = {(d["namespace"], d["name"]) for d in (obj.get("inputs") or []) + (obj.get("outputs") or [])}
    assert set(LineageGraph(store.events()).datasets()) == names


# ---- 2. Marquez's seed template with {{...}} placeholders ---------------------------------

def test_marquez_template_placeholders_are_rejected_per_event_with_line_numbers():
    path = MARQUEZ / "metadata.template.json"
    raw = json.loads(path.read_text())                    # placeholders sit inside strings
    assert isinstance(raw, list) and len(raw) == 26

    events, rejected, _ = parse_file(path)                 # strict
    assert events == []
    assert len(rejected) == 26
    starts = object_start_lines(path)
    for r, obj in zip(rejected, raw):
        assert r.file == str(path)
        assert r.line in starts
        assert "eventTime" in r.reason and obj["eventTime"] in r.reason   # '{{RUN_START_TIME}}'
    assert len({r.line for r in rejected}) == 26
    assert rejected[0].line == 2

    lenient, rejected_l, warnings = parse_file(path, lenient=True)
    assert rejected_l == [] and len(lenient) == 26
    assert all(e.event_time is None for e in lenient)
    assert sum("{{" in w and "eventTime" in w for w in warnings) == 26
    g = LineageGraph(lenient)
    assert ("food_delivery", "etl_menus") in g.jobs()


def test_a_truncated_template_is_an_invalid_json_rejection_with_its_line(tmp_path):
    text = (MARQUEZ / "metadata.template.json").read_text()
    broken = tmp_path / "broken.json"
    broken.write_text(text[: len(text) // 2])             # cut mid-array
    events, rejected, _ = parse_file(broken)
    assert events == []
    assert len(rejected) == 1
    assert rejected[0].file == str(broken)
    assert rejected[0].reason.startswith("invalid JSON")
    assert 1 <= rejected[0].line <= text[: len(text) // 2].count("\n") + 1


# ---- 3. dbt integration results (JSON arrays) ----------------------------------------------

DBT_FILES = sorted(DBT.glob("*.json"))


def test_dbt_results_ingest_build_the_graph_and_reingest_is_idempotent(tmp_path):
    store = LineageStore(tmp_path / "lineage.db")
    first = store.ingest(DBT_FILES, lenient=True)         # the results hold test placeholders
    assert first.files_refused == [] and first.rejected == []
    assert first.files_read == len(DBT_FILES)
    assert first.events_new == first.events_seen > 0
    counts = store.counts()
    assert counts == {"files": len(DBT_FILES), "events": first.events_new}

    g = LineageGraph(store.events())
    for ds in [("postgres://POSTGRES_HOST:1234", "postgres.public.customers"),
               ("postgres://POSTGRES_HOST:1234", "postgres.public.stg_customers"),
               ("duckdb:///database/jaffle_shop.duckdb", "jaffle_shop.main.customers"),
               ("snowflake://ASDF1234.eu-central-1.aws", "DEMO_DB.public.orders"),
               ("spark://localhost:10000", "default.stg_payments")]:
        assert ds in g.datasets(), ds
    assert ("job-namespace", "postgres.public.jaffle_shop.customers") in g.jobs()
    assert (("job-namespace", "postgres.public.jaffle_shop.customers"),
            ("postgres://POSTGRES_HOST:1234", "postgres.public.customers")) in g.downstream(
        ("postgres://POSTGRES_HOST:1234", "postgres.public.stg_customers"))

    again = store.ingest(DBT_FILES, lenient=True)
    assert again.events_new == 0 and again.files_unchanged == len(DBT_FILES)
    forced = store.ingest(DBT_FILES, lenient=True, force=True)
    assert forced.events_new == 0 and forced.events_seen == first.events_seen
    copy = tmp_path / "copy-of-postgres.json"
    shutil.copy(DBT / "postgres-result.json", copy)     # same events under another path
    assert store.ingest([copy], lenient=True).events_new == 0
    assert store.counts()["events"] == counts["events"]
    store.close()
    reopened = LineageStore(tmp_path / "lineage.db")
    assert reopened.ingest(DBT_FILES, lenient=True).events_new == 0
    assert LineageGraph(reopened.events()).datasets() == g.datasets()


def test_dbt_results_in_strict_mode_refuse_files_with_template_values(tmp_path):
    store = LineageStore(tmp_path / "lineage.db")
    rep = store.ingest(DBT_FILES)
    refused = {Path(f).name for f in rep.files_refused}
    assert refused == {"duckdb-result.json", "large-result.json", "spark-thrift-result.json"}
    assert rep.events_new == 10                             # postgres-result.json only
    for r in rep.rejected:
        assert Path(r.file).name in refused and r.line >= 2
        assert any(k in r.reason for k in ("eventTime", "producer", "runId")), r
    datasets = LineageGraph(store.events()).datasets()
    assert datasets and all(ns == "postgres://POSTGRES_HOST:1234" for ns, _ in datasets)


# ---- 4. Spark + Delta partial templates -----------------------------------------------------

SPARK_FILES = sorted(SPARK.glob("*.json"))


@pytest.mark.parametrize("path", SPARK_FILES, ids=lambda p: p.name)
def test_spark_partial_event_strict_rejects_with_the_missing_field(path):
    obj = json.loads(path.read_text())
    events, rejected, _ = parse_file(path)
    assert events == []
    assert len(rejected) == 1 and rejected[0].file == str(path) and rejected[0].line == 1
    missing = missing_top_level(obj)
    assert any(m in rejected[0].reason for m in missing), (rejected[0].reason, missing)


@pytest.mark.parametrize("path", SPARK_FILES, ids=lambda p: p.name)
def test_spark_partial_event_lenient_keeps_its_datasets(path):
    obj = json.loads(path.read_text())
    events, rejected, warnings = parse_file(path, lenient=True)
    assert rejected == [], [str(r) for r in rejected]
    assert len(events) == 1
    assert warnings, "lenient acceptance says what was missing"
    want = {(d["namespace"], d["name"]) for d in (obj.get("inputs") or []) + (obj.get("outputs") or [])}
    got = {(d.namespace, d.name) for d in events[0].inputs + events[0].outputs}
    assert got == want


def test_spark_delta_lineage_graph_and_symlink_aliases(tmp_path):
    store = LineageStore(tmp_path / "lineage.db")
    rep = store.ingest(SPARK_FILES, lenient=True)
    assert rep.files_refused == []
    g = LineageGraph(store.events())
    for name in ["/tmp/delta/t1", "/tmp/delta/t2", "/tmp/delta/tbl", "/tmp/delta/updates",
                 "/tmp/delta/new-events", "/tmp/delta/movies"]:
        assert ("file", name) in g.datasets(), name
    # symlinks facets: the catalog name resolves to the physical table
    assert g.aliases_of(("file", "/tmp/delta/tbl")) == [("file:/tmp/delta", "default.tbl")]
    assert g.canonical(("file:/tmp/delta", "default.tbl")) == ("file", "/tmp/delta/tbl")
    assert g.aliases_of(("file", "/tmp/delta/updates")) == [("file:/tmp/delta", "default.updates")]
    assert (("delta-namespace", "delta_integration_test.execute_merge_into_command.delta_new-events"),
            ("file", "/tmp/delta/new-events")) in g.downstream(("file", "/tmp/delta/updates"))
    assert ("file:/tmp/delta", "default.tbl") not in g.datasets()


def test_spark_delta_merge_templates_without_run_or_job_are_kept_when_lenient(tmp_path):
    """deltaMergeCommandVerification*.json carry only eventType, inputs and outputs (with
    symlinks and column lineage): lenient mode must still use those datasets."""
    files = [SPARK / "deltaMergeCommandVerificationStart.json",
             SPARK / "deltaMergeCommandVerificationComplete.json"]
    store = LineageStore(tmp_path / "lineage.db")
    rep = store.ingest(files, lenient=True)
    assert rep.rejected == [], [str(r) for r in rep.rejected]
    g = LineageGraph(store.events())
    assert ("file", "/tmp/delta/events") in g.datasets()
    assert g.aliases_of(("file", "/tmp/delta/events")) == [("file:/tmp/delta", "default.events")]


def test_lenient_unnamed_jobs_do_not_join_unrelated_events(tmp_path):
    """pysparkDeltaSaveAsTableComplete.json writes /tmp/delta/movies with no inputs and a
    job without a name; the group-by/merge templates read /tmp/delta/t1 with a job without a
    name too. No event says that t1 or t2 feeds movies."""
    store = LineageStore(tmp_path / "lineage.db")
    store.ingest(SPARK_FILES, lenient=True)
    g = LineageGraph(store.events())
    for src in ("/tmp/delta/t1", "/tmp/delta/t2"):
        outs = [o for _job, o in g.downstream(("file", src))]
        assert ("file", "/tmp/delta/movies") not in outs, (src, g.downstream(("file", src)))
    tr = trace_subject_keys(g, [(("file", "/tmp/delta/t1"), "a")])
    assert ("file", "/tmp/delta/movies") not in {k.dataset for k in tr.keyed}


# ---- 5. one good and one bad line ----------------------------------------------------------

@pytest.mark.parametrize("bad_line,reason_part", [
    ('{"eventType": "COMPLETE", "eventTime": "2024-05-01T10:00:00Z", "run": {"runId": "x"', "invalid JSON"),
    ('{"eventType": "COMPLETE", "eventTime": "2024-05-01T10:00:00Z", "producer": "p", '
     '"run": {"runId": "r2"}}', "job"),
], ids=["broken-json", "event-without-job"])
def test_a_file_with_one_malformed_line(tmp_path, bad_line, reason_part):
    good = client_event_json("good_job", [dataset("/lake/users", ["user_id"])],
                             [dataset("/lake/users_copy", ["user_id"], output=True)])
    path = tmp_path / "mixed.jsonl"
    path.write_text(good + "\n\n" + bad_line + "\n")      # the bad event is on line 3

    strict = LineageStore(tmp_path / "strict.db")
    rep = strict.ingest([path])
    assert rep.files_refused == [str(path)]
    assert rep.events_new == 0 and strict.counts()["events"] == 0
    assert [(r.file, r.line) for r in rep.rejected] == [(str(path), 3)]
    assert reason_part in rep.rejected[0].reason

    lenient = LineageStore(tmp_path / "lenient.db")
    rep = lenient.ingest([path], lenient=True)
    assert rep.files_refused == []
    assert rep.events_new == 1
    assert [(r.file, r.line) for r in rep.rejected] == [(str(path), 3)]
    (ev,) = lenient.events()
    assert ev.job == ("erasure-tests", "good_job")
    assert ("file", "/lake/users_copy") in LineageGraph(lenient.events()).datasets()


# ---- 6. column lineage through renames -----------------------------------------------------

def test_column_lineage_traces_renames_and_classifies_derived_columns(tmp_path):
    users = "/lake/users"
    lines = [
        client_event_json("build_reviews", [dataset(users, ["user_id", "email"])], [
            dataset("/lake/reviews", ["review_id", "reviewer_id"], output=True,
                    lineage={"reviewer_id": [(users, "user_id", "IDENTITY", False)]})]),
        client_event_json("build_entities", [dataset("/lake/reviews", ["review_id", "reviewer_id"])], [
            dataset("/lake/entities", ["entity_id"], output=True,
                    lineage={"entity_id": [("/lake/reviews", "reviewer_id", "IDENTITY", False)]})]),
        client_event_json("user_stats", [dataset(users)], [
            dataset("/lake/user_stats", ["n_users"], output=True,
                    lineage={"n_users": [(users, "user_id", "AGGREGATION", False)]})]),
        client_event_json("user_hashes", [dataset(users)], [
            dataset("/lake/user_hashes", ["user_hash"], output=True,
                    lineage={"user_hash": [(users, "user_id", "TRANSFORMATION", True)]})]),
        client_event_json("copy_users", [dataset(users)], [
            dataset("/lake/user_copy", ["user_id", "email"], output=True)]),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    events, rejected, _ = parse_file(path)
    assert rejected == [] and len(events) == 5

    g = LineageGraph(events)
    tr = trace_subject_keys(g, [(("file", users), "user_id")])
    keyed = {(k.dataset[1], k.column, k.how) for k in tr.keyed}
    assert keyed == {(users, "user_id", "root"),
                     ("/lake/reviews", "reviewer_id", "column_lineage"),
                     ("/lake/entities", "entity_id", "column_lineage"),
                     ("/lake/user_copy", "user_id", "name_match")}
    entities = next(k for k in tr.keyed if k.dataset == ("file", "/lake/entities"))
    assert entities.via == (("file", "/lake/reviews"), "reviewer_id")
    assert entities.job == ("erasure-tests", "build_entities")
    copy = next(k for k in tr.keyed if k.dataset == ("file", "/lake/user_copy"))
    assert copy.needs_schema_check is False

    assert set(tr.out_of_scope) == {("file", "/lake/user_stats")}
    assert "aggregat" in tr.out_of_scope[("file", "/lake/user_stats")].lower()
    assert set(tr.unresolved) == {("file", "/lake/user_hashes")}
    assert "masked" in tr.unresolved[("file", "/lake/user_hashes")]


def test_store_round_trip_keeps_column_lineage(tmp_path):
    line = client_event_json("build_reviews", [dataset("/lake/users", ["user_id"])], [
        dataset("/lake/reviews", ["reviewer_id"], output=True,
                lineage={"reviewer_id": [("/lake/users", "user_id", "IDENTITY", False)]})])
    path = tmp_path / "one.jsonl"
    path.write_text(line + "\n")
    store = LineageStore(tmp_path / "lineage.db")
    assert store.ingest([path]).events_new == 1
    tr = trace_subject_keys(LineageGraph(store.events()), [(("file", "/lake/users"), "user_id")])
    assert {(k.dataset[1], k.column, k.how) for k in tr.keyed} == {
        ("/lake/users", "user_id", "root"), ("/lake/reviews", "reviewer_id", "column_lineage")}


def test_an_unnamed_job_is_named_by_the_events_canonical_json():
    """Lenient mode accepts an event without job.name and names the job by a hash of the
    event's RFC 8785 form: key order does not matter; an event with no canonical form (a
    number beyond 2**53) is refused, not named by Python's repr of it."""
    import pytest

    from erasure.errors import MalformedEventError
    from erasure.lineage.events import validate_event

    ev = {"eventType": "COMPLETE", "eventTime": "2026-01-01T00:00:00Z", "producer": "p",
          "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json",
          "job": {"namespace": "ns"}, "inputs": [], "outputs": []}
    a = validate_event(ev, lenient=True)
    b = validate_event(dict(reversed(list(ev.items()))), lenient=True)
    assert a.job == b.job and a.job[1].startswith("<unnamed job; event ")
    assert validate_event({**ev, "extra": 1}, lenient=True).job != a.job
    with pytest.raises(MalformedEventError, match="cannot be named by its content"):
        validate_event({**ev, "extra": 2 ** 60}, lenient=True)
