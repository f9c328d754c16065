"""Failures are injected with connectors built for that (real Delta tables underneath):
a crash between steps, a crash right after the delete commits, a connector that deletes
more than planned, and a concurrent writer that wins the commit race."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from connectors.base import ConnectorRegistry
from connectors.delta import DeltaConnector
from connectors.parquet import ParquetConnector
from erasure.config import load_config
from erasure.engine import Engine
from erasure.evidence import build_evidence
from erasure.execution import Runner
from erasure.requests import load_state, submit

from conftest import files_holding, read_table, rows_without


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing handles it."""


class CrashBeforePurge(DeltaConnector):
    def purge(self, *a, **kw):
        raise Crash()


class CrashAfterDeleteCommit(DeltaConnector):
    def erase(self, *a, **kw):
        super().erase(*a, **kw)
        raise Crash()


class OverDeleting(DeltaConnector):
    """A buggy connector: deletes one extra subject besides the ones asked for."""

    def erase(self, namespace, name, column, values, tag):
        return super().erase(namespace, name, column, list(values) + [values[0] + 1], tag)


def engine_with(lake, connector_cls, **kw) -> Engine:
    cfg = load_config(lake.config)
    return Engine(cfg, registry=ConnectorRegistry([connector_cls(cfg.section("delta"), **kw),
                                                   ParquetConnector()]))


def submit_for(lake, subject: str) -> str:
    eng = Engine(load_config(lake.config))
    rid = submit(eng.ledger, eng.keys, subject, "test", None)
    eng.close()
    return rid


def erase_steps(eng, rid) -> list:
    return [e for e in eng.ledger.entries(rid)
            if e.kind == "step.completed" and e.body["phase"] == "erase"]


def test_crash_between_steps_resumes_without_repeating_the_delete(lake):
    rid = submit_for(lake, "42")
    crashing = engine_with(lake, CrashBeforePurge)
    with pytest.raises(Crash):
        Runner(crashing).run([rid])
    st = load_state(crashing.ledger, rid)
    assert st.status == "running"
    raw = lake.tables["raw/reviews"]
    version_after_delete = DeltaTable(raw).version()
    assert 42 not in read_table(raw).column("user_id").to_pylist()   # logically gone already
    crashing.close()

    eng = engine_with(lake, DeltaConnector)
    [out] = Runner(eng).run([rid])
    assert out.status == "completed", out.errors
    # the raw table's erase step completed once, in the crashed run, and was not repeated
    raw_erases = [e for e in erase_steps(eng, rid) if e.body["name"] == raw]
    assert len(raw_erases) == 1
    assert DeltaTable(raw).history()[-1]["version"] >= version_after_delete
    assert files_holding(lake.root / "tables", [b"user42@example.com"],
                         {"user_id": 42, "reviewer_id": 42, "entity_id": 42}) == []


def test_crash_after_the_delete_commit_is_rechecked_not_tripped(lake):
    raw = lake.tables["raw/reviews"]
    planned = sum(1 for k in read_table(raw).column("user_id").to_pylist() if k == 9)
    assert planned > 0
    rid = submit_for(lake, "9")
    with pytest.raises(Crash):
        Runner(engine_with(lake, CrashAfterDeleteCommit)).run([rid])
    eng = engine_with(lake, DeltaConnector)
    [out] = Runner(eng).run([rid])
    assert out.status == "completed", out.errors
    [step] = [e for e in erase_steps(eng, rid) if e.body["name"] == raw]
    assert step.body["rows_deleted_earlier_attempt"] == planned
    assert step.body["batch_rows_deleted"] == 0
    # the evidence counts what the interrupted attempt deleted (issue 9, item 8): not 0 / 0
    [t] = [t for t in out.targets if t["name"] == raw]
    assert t["rows_deleted"] == planned
    ev = build_evidence(eng.ledger, rid)
    [ev_step] = [s for s in ev["steps"] if s["kind"] == "step.completed"
                 and s["phase"] == "erase" and s["name"] == raw]
    assert ev_step["rows_live_before"] == planned
    assert ev_step["subject_rows_deleted_earlier_attempt"] == planned
    assert ev_step["earlier_attempt_traced"] is True


def test_guard_stops_a_connector_that_deletes_more_than_planned(lake):
    raw = lake.tables["raw/reviews"]
    rid = submit_for(lake, "4")
    eng = engine_with(lake, OverDeleting)
    [out] = Runner(eng).run([rid])
    assert out.status == "failed"
    assert any("purge withheld" in e for e in out.errors)
    st = load_state(eng.ledger, rid)
    failed = [v for (k, ph), v in st.steps.items() if v["state"] == "failed"]
    assert failed and all(v["phase"] == "erase" for v in failed)
    # nothing was purged: the over-deleted subject 5 is still in the version the message names
    import re
    msg = next(e for e in out.errors if "purge withheld" in e)
    version = int(re.search(r"from version (\d+)", msg).group(1))
    assert 5 not in read_table(raw).column("user_id").to_pylist()
    assert 5 in DeltaTable(raw, version=version).to_pyarrow_table().column("user_id").to_pylist()


def test_concurrent_writer_loses_nothing_when_it_wins_the_race(lake):
    raw = lake.tables["raw/reviews"]
    current = DeltaTable(raw).to_pyarrow_table()
    new_rows = current.filter(pa.compute.equal(current["user_id"], 6)).slice(0, 1)
    new_rows = new_rows.set_column(0, "user_id", pa.array([999_999], pa.int64()))
    calls = []

    def other_writer(uri, attempt):
        if attempt == 0 and uri == raw:
            calls.append(attempt)
            write_deltalake(uri, new_rows, mode="append")
            DeltaTable(uri).optimize.compact()   # rewrites the files our merge has read

    others_before = rows_without(raw, "user_id", 42)
    rid = submit_for(lake, "42")
    eng = engine_with(lake, DeltaConnector, before_commit=other_writer)
    [out] = Runner(eng).run([rid])
    assert out.status == "completed", out.errors
    assert calls == [0]
    ids = read_table(raw).column("user_id").to_pylist()
    assert 999_999 in ids and 42 not in ids
    assert rows_without(raw, "user_id", 42) == sorted(
        others_before + rows_without_from(new_rows))
    [step] = [e for e in erase_steps(eng, rid) if e.body["name"] == raw]
    assert step.body["conflicts_retried"] >= 1


def rows_without_from(t: pa.Table) -> list[tuple]:
    names = sorted(t.column_names)
    return [tuple(str(r[n]) for n in names) for r in t.to_pylist()]


def test_lost_commit_races_are_retryable_and_exit_75(lake):
    raw = lake.tables["raw/reviews"]

    def always_compact(uri, attempt):
        if uri == raw:
            write_deltalake(uri, DeltaTable(uri).to_pyarrow_table().slice(0, 1), mode="append")
            DeltaTable(uri).optimize.compact()

    rid = submit_for(lake, "42")
    cfg = load_config(lake.config)
    from dataclasses import replace
    cfg = replace(cfg, sections={**cfg.sections, "delta": cfg.section("delta").model_copy(
        update={"max_conflict_retries": 1})})
    eng = Engine(cfg, registry=ConnectorRegistry([
        DeltaConnector(cfg.section("delta"), before_commit=always_compact), ParquetConnector()]))
    [out] = Runner(eng).run([rid])
    assert out.status == "failed" and out.retryable
    assert "commit attempts lost" in out.errors[0]
    assert 42 in read_table(raw).column("user_id").to_pylist()   # nothing half-done
    # the next run (no more competing writer) finishes the job
    [out] = Runner(engine_with(lake, DeltaConnector)).run([rid])
    assert out.status == "completed", out.errors


def test_erasing_an_absent_subject_changes_no_table(lake):
    versions = {n: DeltaTable(p).version() for n, p in lake.delta_tables.items()}
    rid = submit_for(lake, "987654321")
    eng = engine_with(lake, DeltaConnector)
    [out] = Runner(eng).run([rid])
    assert out.status == "not_found"      # said plainly, not a plain "completed" erasure
    assert {n: DeltaTable(p).version() for n, p in lake.delta_tables.items()} == versions
    purges = [e.body for e in eng.ledger.entries(rid)
              if e.kind == "step.completed" and e.body["phase"] == "purge"]
    assert len(purges) == 3 and all(p["skipped"] for p in purges)


def _normal(obj):
    """A JSON value as the ledger gives it back (tuples become lists)."""
    import json

    return json.loads(json.dumps(obj))


def test_the_runners_state_is_what_the_ledger_folds_and_the_sweep_reads_the_same(lake):
    """The runner folds each entry it appends into its in-memory state instead of reading
    the request back (issue 12): after failed, crashed, resumed, re-planned and not_found
    requests its states equal `load_state`, and the sweep's reduced read of the finished
    requests (`requests.finished`) equals the full fold of each."""
    from erasure.requests import Finished, all_states, finished, load_states

    rids = {s: submit_for(lake, s) for s in ("42", "9", "4", "987654321", "7")}
    with pytest.raises(Crash):
        Runner(engine_with(lake, CrashBeforePurge)).run([rids["42"], rids["9"]])
    eng = engine_with(lake, OverDeleting)
    [out] = Runner(eng).run([rids["4"]])
    assert out.status == "failed"
    eng.close()
    eng = engine_with(lake, DeltaConnector)
    runner = Runner(eng)
    outs = runner.run([rids["42"], rids["9"], rids["987654321"], rids["7"]])
    assert {o.status for o in outs} == {"completed", "not_found"}
    again = Runner(eng)
    [out] = again.run([rids["4"]], replan=True)       # a new plan resets its steps
    assert out.status == "completed", out.errors
    for r, rid in [(runner, rids[s]) for s in ("42", "9", "987654321", "7")] + \
            [(again, rids["4"])]:
        mine, read = r.states[rid], load_state(eng.ledger, rid)
        assert (mine.status, mine.entries, mine.tags) == (read.status, read.entries, read.tags)
        assert _normal({str(k): v for k, v in mine.steps.items()}) == \
            _normal({str(k): v for k, v in read.steps.items()})
        assert _normal(mine.plan.to_json()) == read.plan.to_json()
        assert mine.errors == read.errors
    assert load_states(eng.ledger, [rids["9"], rids["42"]]).keys() == {rids["9"], rids["42"]}
    order = {rid: n for n, rid in enumerate(eng.ledger.request_ids())}
    full = sorted((Finished.of(st) for st in all_states(eng.ledger) if st.done),
                  key=lambda f: order[f.request_id])
    assert finished(eng.ledger) == full
    assert len(full) == 5 and any(f.erased for f in full)
